/**
 * The node agent's first NATS connect, retried like a service's: a node that boots before the appliance, a server
 * being restarted, or a client too slow for the server's auth timeout (a loaded TCG node signing its JWT nonce: the
 * server closes the connection, nats.js says TIMEOUT) is not a reason to exit. Each failure is logged with the next
 * delay; the delay doubles from `initialDelayMs` up to `maxDelayMs`. Once connected, nats.js reconnects by itself
 * (`maxReconnectAttempts: -1`).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, type ConnectionOptions, type NatsConnection } from 'nats';
import type { Logger } from 'pino';

export interface ConnectRetryOptions {
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Stops the retries (the agent is stopping): the last error is thrown. */
  signal?: AbortSignal;
  /** The connect call (nats.js's `connect`; a test may count the calls). */
  connectFn?: (opts: ConnectionOptions) => Promise<NatsConnection>;
}

/** The delay before attempt `attempt + 1` (attempt counts from 1). */
export function connectRetryDelayMs(attempt: number, initialDelayMs: number, maxDelayMs: number): number {
  return Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(attempt - 1, 30));
}

export async function connectWithRetry(opts: ConnectionOptions, log: Logger, retry: ConnectRetryOptions = {}): Promise<NatsConnection> {
  const initial = retry.initialDelayMs ?? 500;
  const max = retry.maxDelayMs ?? 30_000;
  const connectFn = retry.connectFn ?? connect;
  for (let attempt = 1; ; attempt++) {
    try {
      const nc = await connectFn(opts);
      if (attempt > 1) log.info({ attempt, server: nc.getServer() }, `connected to NATS after ${attempt} attempts`);
      return nc;
    } catch (err) {
      if (retry.signal?.aborted) throw err;
      const e = err as Error & { code?: string };
      const delayMs = connectRetryDelayMs(attempt, initial, max);
      log.warn({ attempt, code: e.code, err: e.message, servers: opts.servers, retryInMs: delayMs }, `NATS connect failed (${e.code ?? e.message}): retrying in ${delayMs} ms`);
      try {
        await sleep(delayMs, undefined, retry.signal ? { signal: retry.signal } : {});
      } catch {
        throw err;
      }
    }
  }
}
