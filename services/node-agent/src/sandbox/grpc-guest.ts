/** The GuestPort over the real host<->guest channel (virtio-serial, framed multiplexer, gRPC): see src/guest/. */
import type { Logger } from 'pino';
import { AppError, type PrepareDataplaneRequest } from '@edgenfv/contracts';
import { connectAgent, type AgentConnection } from '../guest/index.js';
import type { GuestContainer, GuestNic, GuestPort, GuestSession } from './ports.js';

/** Names the guest RPC in an error (the guest's own message says what failed inside). */
async function rpc<T>(name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof AppError) throw new AppError(err.code, `guest ${name}: ${err.message}`, { cause: err, retryable: err.retryable });
    throw err;
  }
}

/**
 * The guest loads a VF's driver on demand (modprobe, then up to 30 s for its netdev: docs/sriov.md), which in a
 * nested TCG guest alone outlasts the default 30 s deadline: a call with a VF waits for that on top of the hotplug.
 */
function vfCallOptions(nics: GuestNic[], hotplugTimeoutMs: number): { timeoutMs: number } | undefined {
  return nics.some((n) => n.pciPath) ? { timeoutMs: hotplugTimeoutMs + 120_000 } : undefined;
}

export class GrpcGuestSession implements GuestSession {
  constructor(readonly conn: AgentConnection) {}
  async updateInterfaces(nics: GuestNic[], hotplugTimeoutMs: number): Promise<{ name: string; pciAddress: string }[]> {
    const res = await rpc('UpdateInterfaces', () => this.conn.client.updateInterfaces({
      interfaces: nics.map((n) => ({
        mac: n.mac,
        pciPath: n.pciPath,
        name: n.name,
        ...(n.mtuBytes ? { mtu: n.mtuBytes } : {}),
        addresses: n.addresses,
      })),
      hotplugTimeoutMs,
    }, vfCallOptions(nics, hotplugTimeoutMs)));
    return res.interfaces.map((n) => ({ name: n.name, pciAddress: n.pciAddress }));
  }
  async updateRoutes(routes: { dst: string; via?: string; dev?: string }[]): Promise<void> {
    await rpc('UpdateRoutes', () => this.conn.client.updateRoutes({
      routes: routes.map((r) => ({ dst: r.dst, ...(r.via ? { gateway: r.via } : {}), ...(r.dev ? { device: r.dev } : {}) })),
    }));
  }
  async createContainer(c: GuestContainer): Promise<void> {
    try {
      await rpc('CreateContainer', () => this.conn.client.createContainer({ id: c.id, image: c.image, command: c.command, env: c.env, hostNetwork: true, memoryLimitMib: c.memoryLimitMiB, ...(c.dataplane ? { dataplane: true } : {}) }));
    } catch (err) {
      if (!(err instanceof AppError && err.code === 'ALREADY_EXISTS')) throw err;
    }
  }
  async runContainer(c: GuestContainer): Promise<void> {
    await this.createContainer(c);
    if (c.start === false) return;
    const st = await rpc('StartContainer', () => this.conn.client.startContainer(c.id)).catch(async (err: unknown) => {
      // already running is fine (idempotent)
      const list = await this.conn.client.listContainers();
      if (list.containers.some((x) => x.id === c.id && x.state === 'RUNNING')) return null;
      throw err;
    });
    void st;
  }
  async prepareDataplane(req: PrepareDataplaneRequest): Promise<void> {
    await rpc('PrepareDataplane', () => this.conn.client.prepareDataplane(req, { timeoutMs: 120_000 }));
  }
  async removeContainer(id: string, graceMs = 10_000): Promise<void> {
    const c = (await rpc('ListContainers', () => this.conn.client.listContainers())).containers.find((x) => x.id === id);
    if (!c) return;
    if (c.state === 'RUNNING') {
      // SIGTERM first: a VNF undoes what it set in the shared guest (builtin:vrouter turns forwarding off)
      await this.conn.client.signalContainer(id, 'SIGTERM').catch(() => undefined);
      try {
        await this.conn.client.waitContainer(id, { timeoutMs: graceMs });
      } catch {
        /* grace over: forced below */
      }
    }
    try {
      await this.conn.client.deleteContainer(id, true);
    } catch (err) {
      if (!(err instanceof AppError && err.code === 'NOT_FOUND')) throw err;
    }
  }
  async stopContainer(id: string, graceMs: number): Promise<void> {
    const st = (await this.conn.client.listContainers()).containers.find((c) => c.id === id);
    if (!st || st.state !== 'RUNNING') return;
    await this.conn.client.signalContainer(id, 'SIGTERM').catch(() => undefined);
    try {
      await this.conn.client.waitContainer(id, { timeoutMs: graceMs });
    } catch {
      await rpc('SignalContainer', () => this.conn.client.signalContainer(id, 'SIGKILL')).catch(() => undefined);
      await rpc('WaitContainer', () => this.conn.client.waitContainer(id, { timeoutMs: 10_000 }));
    }
  }
  async startContainer(id: string): Promise<void> {
    await rpc('StartContainer', () => this.conn.client.startContainer(id));
  }
  async logs(id: string, tailLines: number): Promise<string[]> {
    const out: string[] = [];
    await rpc('ReadLogs', async () => {
      for await (const chunk of this.conn.client.readLogs({ id, follow: false, tailLines })) out.push(...Buffer.from(chunk.data).toString('utf8').split('\n').filter(Boolean));
    });
    return out.slice(-tailLines);
  }
  async metrics(): Promise<{ agentRssBytes: number; nics: { name: string; rxPackets: number; txPackets: number }[] }> {
    const m = await rpc('GetMetrics', () => this.conn.client.getMetrics());
    return { agentRssBytes: m.agentRssBytes, nics: m.nics.map((n) => ({ name: n.name, rxPackets: n.rxPackets, txPackets: n.txPackets })) };
  }
  async addArpNeighbors(neighbors: { ip: string; mac: string; device: string }[]): Promise<void> {
    await rpc('AddArpNeighbors', () => this.conn.client.addArpNeighbors({ neighbors }));
  }
  async exec(containerId: string, argv: string[], timeoutMs = 30_000): Promise<{ exitCode: number; stdout: string; stderr: string }> {
    const r = await rpc('ExecProcess', () => this.conn.client.execProcess(containerId, argv, { timeoutMs }));
    return { exitCode: r.exitCode, stdout: Buffer.from(r.stdout).toString('utf8'), stderr: Buffer.from(r.stderr).toString('utf8') };
  }
  async details(): Promise<{ cpus: number; memoryTotalBytes: number; nics: { name: string; mac: string; pciAddress: string; addresses: string[] }[] }> {
    const d = await this.conn.client.guestDetails();
    return { cpus: d.cpus, memoryTotalBytes: d.memoryTotalBytes, nics: d.nics.map((n) => ({ name: n.name, mac: n.mac, pciAddress: n.pciAddress, addresses: n.addresses })) };
  }
  get instanceIdAtConnect(): string | undefined {
    return this.conn.client.readyInstanceId;
  }
  async health(timeoutMs: number): Promise<{ instanceId: string }> {
    const h = await rpc('Health', () => this.conn.client.health({ timeoutMs }));
    return { instanceId: h.instanceId };
  }
  async reidentify(entropy: Buffer, unixTimeMs: number): Promise<{ instanceId: string; previousInstanceId: string }> {
    const r = await rpc('Reidentify', () => this.conn.client.reidentify({ entropy, unixTimeMs }));
    // the liveness watch compares later Healths with the id at connect: the restored VM's own from now on
    this.conn.client.readyInstanceId = r.instanceId;
    return { instanceId: r.instanceId, previousInstanceId: r.previousInstanceId };
  }
  async containers(timeoutMs: number): Promise<{ id: string; state: string }[]> {
    const res = await rpc('ListContainers', () => this.conn.client.listContainers({ timeoutMs }));
    return res.containers.map((c) => ({ id: c.id, state: c.state }));
  }
  async close(): Promise<void> {
    await this.conn.close();
  }
}

export class GrpcGuestPort implements GuestPort {
  constructor(
    private readonly log: Logger,
    private readonly client: { keepaliveTimeoutMs?: number; rpcTimeoutScale?: number } = {},
  ) {}
  async connect(agentSocket: string, opts: { timeoutMs: number; signal?: AbortSignal }): Promise<GuestSession> {
    const conn = await connectAgent({
      chardevPath: agentSocket,
      client: this.client,
      timeoutMs: opts.timeoutMs,
      log: this.log.child({ component: 'guest-channel' }),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    return new GrpcGuestSession(conn);
  }
}
