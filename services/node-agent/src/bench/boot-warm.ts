/**
 * The warm part of `npm run bench:boot`: a VNF claiming a warm pool VM, timed from the placement's commit (the
 * allocation written into `edgenfv_allocs`, as the scheduler's leader does) to RUNNING (the node agent's status in
 * `edgenfv_status`), through the real node agent (buildApp: NATS watch, re-check, sandbox manager, QEMU, guest agent)
 * on a real nats-server. The bench plays the scheduler's part of register and heartbeat only. Each run is a new tenant
 * with one tap NIC (hot-plugged on claim) and `builtin:vrouter`; its allocation is then deleted (VM torn down) and
 * the next run waits for the pool to be refilled. With snapshot boot (on by default) the first pool VM makes the
 * template and is restored from it, every refill is restored: `restoreMs` has one figure per pool VM.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { connect, JSONCodec, type KV } from 'nats';
import { startNatsServer } from '@edgenfv/nats-launcher';
import { createLogger, createRegistry } from '@edgenfv/telemetry';
import { destination, type Logger } from 'pino';
import { KV_BUCKETS, allocKey, type Allocation, type ReplicaStatus } from '@edgenfv/contracts';
import { parseConfig } from '../config.js';
import { buildApp } from '../app.js';

const jc = JSONCodec();
const sleep = (n: number) => new Promise((r) => setTimeout(r, n));

/** A KV call on a loaded host may time out: tried again (the calls here are idempotent). */
async function retry<T>(fn: () => Promise<T>, tries = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= tries || (err as { code?: string }).code !== 'TIMEOUT') throw err;
    }
  }
}

async function waitStatus(status: KV, key: string, want: (s: ReplicaStatus) => boolean, timeoutMs: number): Promise<ReplicaStatus> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const e = await retry(() => status.get(key));
    const s = e && e.operation === 'PUT' ? (e.json<ReplicaStatus>()) : undefined;
    if (s && want(s)) return s;
    if (s?.state === 'FAILED') throw new Error(`${key} FAILED: ${JSON.stringify(s.error)}`);
    if (Date.now() > end) throw new Error(`${key}: no wanted status within ${timeoutMs} ms (last ${JSON.stringify(s)})`);
    await sleep(5);
  }
}

export interface WarmClaimFigures {
  /** placement commit -> RUNNING, one per run, ms. */
  claimMs: number[];
  /** Runs whose replica did not get a warm VM (booted cold instead): should be 0. */
  missed: number;
  /** Pool refill: a warm VM's boot (niced, in the background), ms. */
  refillMs: number[];
  /**
   * Snapshot boot (guest.snapshotBoot): each pool VM restored from the template, QEMU start to the guest agent ready
   * and reidentified, ms (the node agent's own histogram, edgenfv_warm_pool_restore_duration_seconds, per restore).
   */
  restoreMs: number[];
}

export async function benchWarmClaims(o: {
  runs: number;
  dir: string;
  accel: 'kvm' | 'tcg';
  image: { kernelPath: string; initrdPath: string; systemDisk?: { path: string; serial: string }; kernelArgs?: string };
  log: Logger;
}): Promise<WarmClaimFigures> {
  const nats = await startNatsServer({ storeDir: join(o.dir, 'warm-nats') });
  const nc = await connect({ servers: nats.url });
  const nodeId = 'bench-warm';
  const net = `bw${process.pid % 10000}`;
  const cgParent = `edgenfv-bw${process.pid}`;
  const js = nc.jetstream();
  const allocs = await js.views.kv(KV_BUCKETS.allocs);
  const status = await js.views.kv(KV_BUCKETS.status);
  // the scheduler's side of register and heartbeat
  for (const subj of [`nfv.v1.internal.nodes.${nodeId}.register`, `nfv.v1.internal.nodes.${nodeId}.heartbeat`]) {
    const sub = nc.subscribe(subj);
    void (async () => {
      for await (const m of sub) m.respond(jc.encode({ ok: true, result: subj.endsWith('register') ? { epoch: 1 } : {} }));
    })();
  }
  const cfg = parseConfig({
    nodeId,
    stateDir: join(o.dir, 'warm-state'),
    heartbeatIntervalMs: 1000,
    qemu: { accel: o.accel, maxVcpus: 2, maxMemoryMiB: 1024 },
    isolation: { cgroupParent: cgParent },
    guest: { bootTimeoutMs: 300_000 },
    warmPool: [{ vcpus: 1, memoryMiB: 64, count: 1 }],
    warmPoolCpuBudgetPercent: 100,
  });
  const registry = createRegistry('node-agent', { defaultMetrics: false });
  // BENCH_WARM_LOG=<file>: the node agent's log (debug) there, to see where a claim's time goes
  const logFile = process.env.BENCH_WARM_LOG;
  const logger = logFile ? createLogger({ service: 'node-agent', level: 'debug', destination: destination({ dest: logFile, sync: true }) }) : o.log;
  // with BENCH_WARM_LOG, the guest agents log at debug level too (each RPC's and each command's time) and each
  // claimed VM's console is copied to <BENCH_WARM_LOG>.console<run>
  const image = logFile ? { ...o.image, kernelArgs: `${o.image.kernelArgs ?? ''} edgenfv.agent_args=--log-level=debug`.trim() } : o.image;
  const app = buildApp({ cfg, logger, registry, nc, image, kvm: o.accel === 'kvm' });
  const out: WarmClaimFigures = { claimMs: [], missed: 0, refillMs: [], restoreMs: [] };
  // each restore's duration from the node agent's histogram (sum and count grow by one restore per refill)
  const restoreHist = { sum: 0, count: 0 };
  const takeRestores = async (): Promise<void> => {
    const m = registry.getSingleMetric('edgenfv_warm_pool_restore_duration_seconds');
    const values = (m ? (await m.get()).values : []) as { metricName?: string; value: number }[];
    const sum = values.find((v) => v.metricName?.endsWith('_sum'))?.value ?? 0;
    const count = values.find((v) => v.metricName?.endsWith('_count'))?.value ?? 0;
    if (count > restoreHist.count) out.restoreMs.push(((sum - restoreHist.sum) / (count - restoreHist.count)) * 1000);
    Object.assign(restoreHist, { sum, count });
  };
  try {
    await app.start();
    for (let i = 0; i < o.runs; i++) {
      const r0 = Date.now();
      while (!(app.manager.warm!.info()[0]!.ready >= 1)) {
        if (Date.now() - r0 > 600_000) throw new Error('the warm pool did not refill within 10 min');
        await sleep(20);
      }
      if (i > 0) out.refillMs.push(Date.now() - r0);
      await takeRestores();
      const alloc: Allocation = {
        allocId: `warm${i}`,
        nodeId,
        epoch: 1,
        tenantId: `benchw${i}`,
        vnfId: `vnf${i}`,
        replica: 0,
        resources: { vcpus: 1, memoryMiB: 64 },
        image: { ref: 'builtin:vrouter' },
        interfaces: [{ name: 'mgmt', type: 'tap', mac: `02:00:00:00:88:${(16 + i).toString(16)}`, network: net, ips: [`10.88.0.${10 + i}/24`] }],
        createdAt: new Date().toISOString(),
      };
      const key = allocKey(nodeId, alloc.allocId);
      const t0 = process.hrtime.bigint();
      await retry(() => allocs.put(key, jc.encode(alloc))); // the commit
      const st = await waitStatus(status, key, (s) => s.state === 'RUNNING', 300_000);
      const claimMs = Number(process.hrtime.bigint() - t0) / 1e6;
      if (st.sandboxId?.startsWith('sb-warm-')) out.claimMs.push(claimMs);
      else out.missed++;
      console.log(`warm claim ${i}: commit -> RUNNING ${Math.round(claimMs)} ms (${st.sandboxId})`);
      const rec = app.manager.sandboxes().find((x) => x.sandboxId === st.sandboxId);
      if (logFile && rec) copyFileSync(join(rec.runDir, 'console.log'), `${logFile}.console${i}`);
      await retry(() => allocs.delete(key));
      await waitStatus(status, key, (s) => s.state === 'STOPPED', 120_000);
    }
  } finally {
    await app.stop({ stopVms: true }).catch(() => undefined); // the agent first: nothing reconciles a VM back
    await app.manager.stopAll().catch(() => undefined);
    await nc.close().catch(() => undefined);
    await nats.stop();
    try {
      execFileSync('ip', ['link', 'del', `enfv-${net}`], { stdio: 'ignore' });
    } catch {
      /* never made, or gone */
    }
    for (const m of ['/sys/fs/cgroup/unified', '/sys/fs/cgroup']) {
      const d = join(m, cgParent);
      try {
        if (existsSync(d)) {
          for (const c of readdirSync(d, { withFileTypes: true })) if (c.isDirectory()) rmdirSync(join(d, c.name));
          rmdirSync(d);
        }
      } catch {
        /* in use or gone */
      }
    }
  }
  return out;
}
