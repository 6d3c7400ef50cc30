/**
 * One VM's connection to its guest agent: the host channel on QEMU's chardev socket plus a typed client over it.
 * `connectAgent` is what the hypervisor driver's readiness check calls: it resolves once the agent answered
 * Health and the Version handshake accepted it.
 */
import { dirname, join, basename } from 'node:path';
import type { Logger } from '@edgenfv/telemetry';
import type { VersionResponse } from '@edgenfv/contracts';
import { HostChannel } from './channel.js';
import { AgentClient } from './agent-client.js';

export interface AgentConnection {
  client: AgentClient;
  channel: HostChannel;
  version: VersionResponse;
  close(): Promise<void>;
}

export interface ConnectAgentOptions {
  /** QEMU's chardev socket of the agent port. */
  chardevPath: string;
  /** Local socket for grpc-js (default: `<chardev dir>/<chardev name>.mux`). */
  listenPath?: string;
  timeoutMs: number;
  signal?: AbortSignal;
  log: Logger;
  /** gRPC keepalive timeout and the scale of every call's deadline (node config guest.keepaliveTimeoutMs, rpcTimeoutScale). */
  client?: { keepaliveTimeoutMs?: number; rpcTimeoutScale?: number };
}

export async function connectAgent(opts: ConnectAgentOptions): Promise<AgentConnection> {
  const listenPath = opts.listenPath ?? join(dirname(opts.chardevPath), `${basename(opts.chardevPath)}.mux`);
  const channel = new HostChannel({ chardevPath: opts.chardevPath, listenPath, log: opts.log });
  await channel.start();
  const client = new AgentClient(`unix:${listenPath}`, opts.client ?? {});
  const close = async () => {
    client.close();
    await channel.close();
  };
  try {
    const version = await client.waitReady({ timeoutMs: opts.timeoutMs, ...(opts.signal ? { signal: opts.signal } : {}) });
    opts.log.info({ agentVersion: version.agentVersion, kernel: version.kernelRelease }, 'guest agent ready');
    return { client, channel, version, close };
  } catch (err) {
    await close();
    throw err;
  }
}
