/**
 * `npm run bench:scheduler`: places 10,000 VNF replicas onto 1,000 and onto 10,000 simulated nodes (inventories
 * generated, nothing booted) through the real pipeline (ClusterState: filters, scorers, sampling) and the real KV
 * (a real nats-server; every placement a CAS on the node's ledger plus a CAS-created allocation record), with NUMA
 * and VF constraints on. Prints placements per second and p50/p99 decision latency; the last line is one JSON object.
 * Env: BENCH_REPLICAS (10000), BENCH_NODES ("1000,10000"), BENCH_INFLIGHT (64), BENCH_SEED (1).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { connect } from 'nats';
import { startNatsServer } from '@edgenfv/nats-launcher';
import type { Vnfd } from '@edgenfv/contracts';
import {
  ClusterState,
  allocationResources,
  buildPlacementRequest,
  emptyLedger,
  encodeJson,
  mulberry32,
  openSchedulerBuckets,
  simulatedInventory,
  sriovOf,
  type AllocationBuilder,
  type SimNodeSpec,
} from '@edgenfv/scheduler/internal/placement/index';

const REPLICAS = Number(process.env.BENCH_REPLICAS ?? 10_000);
const NODE_COUNTS = (process.env.BENCH_NODES ?? '1000,10000').split(',').map(Number);
const INFLIGHT = Number(process.env.BENCH_INFLIGHT ?? 64);
const SEED = Number(process.env.BENCH_SEED ?? 1);

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
const r3 = (x: number) => Math.round(x * 1000) / 1000;

async function pool<T>(items: T[], n: number, fn: (t: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i], i);
      }
    }),
  );
}

/** Heterogeneous edge nodes: 2 NUMA nodes, SR-IOV PFs on one or both, some with VPP. */
function nodeSpec(i: number, rng: () => number): SimNodeSpec {
  const kind = rng();
  const pfs =
    kind < 0.5
      ? [{ physnet: 'physnet1', numaNode: 0, vfs: 8 }, { physnet: 'physnet1', numaNode: 1, vfs: 8 }]
      : kind < 0.8
        ? [{ physnet: 'physnet1', numaNode: 1, vfs: 16 }, { physnet: 'physnet2', numaNode: 0, vfs: 8 }]
        : [{ physnet: 'physnet2', numaNode: 0, vfs: 8 }];
  return {
    nodeId: `node-${i}`,
    numaNodes: 2,
    cpusPerNuma: 16,
    isolatedPerNuma: 14,
    memoryMiBPerNuma: 32768,
    hugepages2MPerNuma: 4096,
    pfs,
    dataplanes: rng() < 0.3 ? ['vpp'] : [],
    labels: { site: `edge-${i % 10}` },
  };
}

/** VNF mix: NUMA-strict SR-IOV data planes, preferred ones, vhost-user, and plain shared control-plane VNFs. */
function descriptors(): Vnfd[] {
  const sriov = (n: number, physnet = 'physnet1') => Array.from({ length: n }, (_, k) => ({ name: `vf${k}`, type: 'sriov' as const, physnet }));
  return [
    {
      name: 'vrouter', replicas: 2, image: { ref: 'builtin:vrouter' }, placement: { antiAffinity: 'node' },
      resources: { vcpus: 2, memoryMiB: 2048, cpuPolicy: 'dedicated', numa: 'strict', hugepages: { sizeKiB: 2048, count: 512 } },
      interfaces: [{ name: 'mgmt', type: 'tap' }, ...sriov(2)],
    },
    {
      name: 'fw', replicas: 2, image: { ref: 'builtin:fw' }, placement: { antiAffinity: 'node' },
      resources: { vcpus: 2, memoryMiB: 1024, cpuPolicy: 'dedicated', numa: 'preferred' },
      interfaces: sriov(1, 'physnet2'),
    },
    {
      name: 'upf', replicas: 2, image: { ref: 'builtin:upf' },
      resources: { vcpus: 2, memoryMiB: 2048, cpuPolicy: 'dedicated', numa: 'strict', hugepages: { sizeKiB: 2048, count: 256 } },
      interfaces: [{ name: 'dp0', type: 'vhostuser', dataplane: 'vpp' }, ...sriov(1)],
    },
    {
      name: 'ctl', replicas: 2, image: { ref: 'builtin:ctl' },
      resources: { vcpus: 1, memoryMiB: 512 },
      interfaces: [{ name: 'mgmt', type: 'tap' }],
    },
  ];
}

interface Scenario {
  nodes: number;
  replicas: number;
  placed: number;
  unschedulable: number;
  errors: number;
  seconds: number;
  placementsPerSec: number;
  decisionP50Ms: number;
  decisionP99Ms: number;
  scheduleP50Ms: number;
  scheduleP99Ms: number;
  avgAttempts: number;
  loadSeconds: number;
  overcommitted: number;
  ledgerWrites: number;
  ledgerConflicts: number;
  maxBatch: number;
  nodesUsed: number;
}

async function scenario(nodeCount: number): Promise<Scenario> {
  const dir = mkdtempSync(join(tmpdir(), 'edgenfv-bench-'));
  const server = await startNatsServer({ storeDir: join(dir, 'js') });
  // noAsyncTraces: no Error (stack capture) per request; the scheduler's connection should set it too
  const nc = await connect({ servers: server.url, noAsyncTraces: true });
  try {
    const b = await openSchedulerBuckets(nc.jetstream());
    const rng = mulberry32(SEED);
    const now = new Date().toISOString();
    const t0 = performance.now();
    await pool(Array.from({ length: nodeCount }, (_, i) => i), INFLIGHT, async (i) => {
      const inv = simulatedInventory(nodeSpec(i, rng));
      await b.nodes.put(inv.nodeId, encodeJson({ id: inv.nodeId, inventory: inv, health: 'Ready', cordoned: false, epoch: 1, registeredAt: now }));
      await b.ledger.put(inv.nodeId, encodeJson(emptyLedger(inv.nodeId, 1)));
    });
    const decisions: number[] = [];
    const cs = new ClusterState(b, { nc, seed: SEED, onDecision: (ms) => decisions.push(ms) });
    await cs.start();
    const loadSeconds = (performance.now() - t0) / 1000;
    if (cs.nodes().length !== nodeCount) throw new Error(`loaded ${cs.nodes().length} of ${nodeCount} nodes`);

    // The replicas: VNFs of 500 tenants, each VNF's replicas placed one after the other (anti-affinity needs the
    // nodes of the earlier ones), different VNFs concurrently, INFLIGHT at a time.
    const ds = descriptors();
    const vnfs: { tenantId: string; vnfId: string; d: Vnfd }[] = [];
    for (let n = 0; vnfs.length * 2 < REPLICAS; n++) vnfs.push({ tenantId: `t${n % 500}`, vnfId: `vnf-${n}`, d: ds[n % ds.length] });
    const schedMs: number[] = [];
    let placed = 0;
    let unschedulable = 0;
    let errors = 0;
    let attempts = 0;
    const build = (allocId: string): AllocationBuilder => (dec, req) => ({
      allocId,
      nodeId: dec.nodeId,
      epoch: dec.epoch,
      tenantId: req.tenantId,
      vnfId: req.vnfId,
      replica: req.replica,
      resources: allocationResources(req, dec),
      image: { ref: 'builtin:bench' },
      interfaces: dec.assignment.vfs.map((v) => ({ name: v.interface, type: 'sriov', mac: '02:00:00:00:00:01', sriov: sriovOf(v) })),
      createdAt: now,
    });
    const t1 = performance.now();
    await pool(vnfs, INFLIGHT, async (v) => {
      const nodesOfVnf: string[] = [];
      for (let replica = 0; replica < 2; replica++) {
        const req = buildPlacementRequest({ tenantId: v.tenantId, vnfId: v.vnfId, replica, descriptor: v.d, otherReplicaNodeIds: nodesOfVnf });
        const s0 = performance.now();
        try {
          const r = await cs.schedule(req, `${v.vnfId}-${replica}`, build(`${v.vnfId}-${replica}`));
          schedMs.push(performance.now() - s0);
          attempts += r.attempts;
          if (r.ok) {
            placed++;
            nodesOfVnf.push(r.decision.nodeId);
          } else unschedulable++;
        } catch {
          errors++;
        }
      }
    });
    const seconds = (performance.now() - t1) / 1000;
    // Sanity: no CPU, hugepage or VF over-committed in the views (which mirror the committed ledgers).
    let overcommitted = 0;
    for (const n of cs.nodes()) {
      const vfs = [...n.reservations.values()].flatMap((r) => r.vfs);
      if (new Set(vfs).size !== vfs.length) overcommitted++;
      for (const nv of n.numa) {
        if (nv.pinned.size > nv.pinnable.length) overcommitted++;
        for (const h of nv.hugepages.values()) if (h.used > h.total) overcommitted++;
      }
    }
    const stats = { ...cs.stats, nodesUsed: cs.nodes().filter((n) => n.reservations.size > 0).length };
    await cs.stop();
    decisions.sort((a, b) => a - b);
    schedMs.sort((a, b) => a - b);
    return {
      nodes: nodeCount,
      replicas: vnfs.length * 2,
      placed,
      unschedulable,
      errors,
      seconds: r3(seconds),
      placementsPerSec: Math.round(placed / seconds),
      decisionP50Ms: r3(pct(decisions, 50)),
      decisionP99Ms: r3(pct(decisions, 99)),
      scheduleP50Ms: r3(pct(schedMs, 50)),
      scheduleP99Ms: r3(pct(schedMs, 99)),
      avgAttempts: r3(attempts / Math.max(1, placed + unschedulable)),
      loadSeconds: r3(loadSeconds),
      overcommitted,
      ...stats,
    };
  } finally {
    await nc.close().catch(() => undefined);
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const results: Scenario[] = [];
for (const n of NODE_COUNTS) {
  const s = await scenario(n);
  results.push(s);
  console.log(
    `${s.nodes} nodes: ${s.placed}/${s.replicas} placed (${s.unschedulable} unschedulable, ${s.errors} errors) in ${s.seconds} s = ` +
      `${s.placementsPerSec} placements/s; decision p50 ${s.decisionP50Ms} ms p99 ${s.decisionP99Ms} ms; ` +
      `schedule+commit p50 ${s.scheduleP50Ms} ms p99 ${s.scheduleP99Ms} ms; over-committed: ${s.overcommitted}`,
  );
}
const last = results[results.length - 1];
console.log(
  JSON.stringify({
    bench: 'scheduler-placement',
    replicas: REPLICAS,
    inflight: INFLIGHT,
    nodes: last.nodes,
    placementsPerSec: last.placementsPerSec,
    p50Ms: last.decisionP50Ms,
    p99Ms: last.decisionP99Ms,
    results,
  }),
);
