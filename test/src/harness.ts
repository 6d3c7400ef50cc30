/**
 * Test harness: a real nats-server per suite on a random loopback port, scheduler processes started from the
 * built code (so tests can SIGKILL them), and an API client that speaks the v1 envelope.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, type NatsConnection } from 'nats';
import { spawnTied, startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const SCHEDULER_MAIN = join(REPO_ROOT, 'services/scheduler/dist/src/main.js');

export class Api {
  constructor(readonly nc: NatsConnection) {}
  /** Sends raw bytes; returns the decoded envelope. */
  async raw(subject: string, data: Uint8Array | string, timeoutMs = 5_000): Promise<any> {
    const msg = await this.nc.request(subject, typeof data === 'string' ? new TextEncoder().encode(data) : data, {
      timeout: timeoutMs,
    });
    return JSON.parse(new TextDecoder().decode(msg.data));
  }
  async call(subject: string, body: unknown = {}, timeoutMs = 5_000): Promise<any> {
    return this.raw(subject, JSON.stringify(body), timeoutMs);
  }
  /** The result of a call that must succeed. */
  async ok<T = any>(subject: string, body: unknown = {}): Promise<T> {
    const r = await this.call(subject, body);
    if (!r.ok) throw new Error(`${subject} failed: ${r.error.code} ${r.error.message}`);
    return r.result as T;
  }
  admin(op: string, body: unknown = {}): Promise<any> {
    return this.call(`nfv.v1.admin.${op}`, body);
  }
  tenant(t: string, op: string, body: unknown = {}): Promise<any> {
    return this.call(`nfv.v1.tenant.${t}.${op}`, body);
  }
  /** Polls an op occurrence until it is terminal, or FAILED_TEMP (where it waits for retry, rollback or fail). */
  async waitOp(t: string, opOccId: string, timeoutMs = 60_000): Promise<any> {
    const t0 = Date.now();
    const until = t0 + timeoutMs;
    for (;;) {
      // one poll that times out (a loaded host, a scheduler failover) is not the op's outcome: only the deadline is
      const r = await this.tenant(t, 'opoccs.get', { id: opOccId }).catch((err: Error) => ({ ok: false, error: { code: 'POLL', message: err.message } }));
      if (r.ok && ['COMPLETED', 'FAILED', 'ROLLED_BACK', 'FAILED_TEMP'].includes(r.result.operationState)) return r.result;
      if (Date.now() > until) throw new Error(`op ${opOccId} not terminal after ${timeoutMs} ms: ${JSON.stringify(r)}`);
      // every 100 ms for the first minute, then every second (a nested boot waits tens of minutes)
      await new Promise((res) => setTimeout(res, Date.now() - t0 < 60_000 ? 100 : 1000));
    }
  }
}

export interface SchedulerProc {
  child: ChildProcess;
  exited: Promise<number | null>;
  logs: string[];
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export async function startScheduler(env: Record<string, string>): Promise<SchedulerProc> {
  const logs: string[] = [];
  const child = spawnTied(process.execPath, [SCHEDULER_MAIN], {
    env: { ...process.env, EDGENFV_SCHEDULER_METRICS_PORT: '0', EDGENFV_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let buf = '';
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        logs.push(line);
        if (line.includes('scheduler serving')) resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exited.then((code) => reject(new Error(`scheduler exited ${code}: ${logs.slice(-5).join('\n')}`)));
  });
  return {
    child,
    exited,
    logs,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

export interface Cluster {
  dir: string;
  nats: NatsServerHandle;
  scheduler: SchedulerProc;
  nc: NatsConnection;
  api: Api;
  configFile: string;
  env: Record<string, string>;
  close(): Promise<void>;
}

export const TEST_NETWORKS = [
  { name: 'mgmt', cidr: '10.77.0.0/24', gateway: '10.77.0.1', range: { start: '10.77.0.10', end: '10.77.0.250' } },
  { name: 'uplink-net', cidr: '10.78.0.0/24', gateway: '10.78.0.1' },
];

/** nats-server + one scheduler process + a client. */
export async function startCluster(opts: { networks?: unknown[]; env?: Record<string, string>; config?: Record<string, unknown> } = {}): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), 'edgenfv-test-'));
  const nats = await startNatsServer({ storeDir: join(dir, 'jetstream') });
  const configFile = join(dir, 'scheduler.yaml');
  writeFileSync(configFile, JSON.stringify({ ...(opts.config ?? {}), networks: opts.networks ?? TEST_NETWORKS }));
  // nodes registered by tests never heartbeat: a long grace keeps them Ready unless a test asks otherwise
  const env = { EDGENFV_NATS_URL: nats.url, EDGENFV_CONFIG: configFile, EDGENFV_HEARTBEAT_GRACE_MS: '600000', ...(opts.env ?? {}) };
  const scheduler = await startScheduler(env);
  const nc = await connect({ servers: nats.url });
  const c: Cluster = {
    dir,
    nats,
    scheduler,
    nc,
    api: new Api(nc),
    configFile,
    env,
    async close() {
      await c.nc.close().catch(() => undefined);
      await c.scheduler.stop();
      await c.nats.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return c;
}

export function vnfd(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name,
    replicas: 1,
    resources: { vcpus: 1, memoryMiB: 512 },
    image: { ref: 'builtin:vrouter' },
    ...extra,
  };
}

/** Polls `cond` until it holds; fails naming `what` after `ms`. */
export async function until(what: string, cond: () => Promise<boolean>, ms = 30_000): Promise<void> {
  await probeUntil(what, ms, async () => ((await cond()) ? true : undefined), 100);
}

/** Polls `probe` until it gives a value (not undefined) and returns it; fails naming `what` after `timeoutMs`. */
export async function probeUntil<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, intervalMs = 250): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
