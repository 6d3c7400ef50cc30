import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import { SchedulerCore } from '../../src/leader/index.js';
import {
  allocationResources,
  buildPlacementRequest,
  getJson,
  simulatedInventory,
  sriovOf,
  type AllocationBuilder,
  type NodeLedger,
  type ScheduleResult,
} from '../../src/placement/index.js';
import { buckets, natsFixture, waitFor, type NatsFixture } from '../placement/nats-helpers.js';
import { SimAgent } from '../nodes/sim-agent.js';

let fx: NatsFixture;
before(async () => {
  fx = await natsFixture();
});
after(async () => {
  await fx.close();
});

const TTL = 1500;

test('3 scheduler replicas: the leader dies mid-way through 40 placements; the new leader finishes them, none booked twice', async () => {
  const cores: { nc: NatsConnection; core: SchedulerCore; elected: number[] }[] = [];
  for (let i = 0; i < 3; i++) {
    const nc = await fx.connect();
    const elected: number[] = [];
    const core = await SchedulerCore.create({ nc, candidateId: `sched-${i}`, leaseTtlMs: TTL, registry: { graceMs: 3000 }, onElected: (t) => void elected.push(t) });
    cores.push({ nc, core, elected });
  }
  const agentNc = await fx.connect();
  const b = await buckets(agentNc);
  const agents = Array.from(
    { length: 4 },
    (_, i) => new SimAgent(agentNc, b, simulatedInventory({ nodeId: `ha-${i}`, cpusPerNuma: 8, isolatedPerNuma: 7, pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 6 }, { physnet: 'physnet1', numaNode: 1, vfs: 6 }] }), 200),
  );
  try {
    await Promise.all(cores.map((c) => c.core.start()));
    for (const a of agents) await a.start();
    const leader = await waitFor('a leader', () => cores.find((c) => c.core.isLeader()));
    await waitFor('leader sees the nodes', () => (leader.core.cluster.nodes().filter((n) => n.health === 'Ready').length === 4 ? true : undefined));

    const descriptor = {
      name: 'vr',
      replicas: 1,
      image: { ref: 'builtin:vr' },
      resources: { vcpus: 2, memoryMiB: 1024, cpuPolicy: 'dedicated' as const, numa: 'strict' as const },
      interfaces: [{ name: 'up', type: 'sriov' as const, physnet: 'physnet1' }],
    };
    const req = (i: number) => buildPlacementRequest({ tenantId: `t${i % 5}`, vnfId: `vnf-${i}`, replica: 0, descriptor });
    const build = (allocId: string): AllocationBuilder => (d, r) => ({
      allocId,
      nodeId: d.nodeId,
      epoch: d.epoch,
      tenantId: r.tenantId,
      vnfId: r.vnfId,
      replica: r.replica,
      resources: allocationResources(r, d),
      image: { ref: 'builtin:vr' },
      interfaces: d.assignment.vfs.map((v) => ({ name: v.interface, type: 'sriov', mac: '02:00:00:00:00:01', sriov: sriovOf(v) })),
      createdAt: new Date().toISOString(),
    });
    // capacity: 4 nodes x 2 NUMA nodes x 3 replicas (7 pinnable CPUs, 6 VFs) = 24; ask for 40
    const N = 40;
    const first: (ScheduleResult | Error)[] = [];
    // the leader dies mid-way: 4 placements in flight at a time; once 8 are committed, its connection closes
    // while it builds the next one
    let closed: Promise<void> | undefined;
    const dying = (allocId: string): AllocationBuilder => (d, r) => {
      if (!closed && leader.core.cluster.stats.reservationsCommitted >= 8) closed = leader.nc.close();
      return build(allocId)(d, r);
    };
    let nextI = 0;
    const inflight = Array.from({ length: 4 }, async () => {
      while (nextI < N) {
        const i = nextI++;
        await leader.core.cluster.schedule(req(i), `vnf-${i}-r0`, dying(`vnf-${i}-r0`)).then(
          (r) => void (first[i] = r),
          (e: Error) => void (first[i] = e),
        );
      }
    });
    await Promise.allSettled(inflight);
    await closed;
    const byOld = first.filter((f) => f && !(f instanceof Error) && f.ok).length;
    const failed = first.filter((f) => f instanceof Error).length;
    assert.ok(byOld >= 1 && byOld < 24 && failed > 0, `the old leader placed ${byOld} and failed ${failed} before dying`);
    console.log(`old leader placed ${byOld}, ${failed} failed with it`);
    const survivors = cores.filter((c) => c !== leader);
    const next = await waitFor('a new leader', () => survivors.find((c) => c.core.isLeader()), 3 * TTL + 5000);
    assert.ok(next.elected.length === 1 && next.elected[0]! > leader.elected[0]!);
    // the new leader finishes every placement (the API's work loop replays the in-flight operations)
    const results: ScheduleResult[] = [];
    for (let i = 0; i < N; i++) results.push(await next.core.cluster.schedule(req(i), `vnf-${i}-r0`, build(`vnf-${i}-r0`)));
    const placed = results.filter((r) => r.ok);
    const unsched = results.filter((r) => !r.ok);
    assert.equal(placed.length, 24, 'capacity is used exactly');
    assert.equal(unsched.length, 16);
    for (const u of unsched) if (!u.ok) assert.match(u.explanation.message, /^0\/4 nodes fit: /);
    // every placement the old leader reported done is the one the new leader sees (not done twice)
    for (let i = 0; i < N; i++) {
      const f = first[i];
      if (f && !(f instanceof Error) && f.ok) {
        const r = results[i]!;
        assert.ok(r.ok && r.alreadyCommitted && r.decision.nodeId === f.decision.nodeId, `vnf-${i} kept its placement`);
      }
    }
    // no allocId in two ledgers, no VF or CPU twice on a node; every placed replica has its allocation record
    const seen = new Set<string>();
    for (const a of agents) {
      const l = (await getJson<NodeLedger>(b.ledger, a.nodeId))!.value;
      const rs = Object.values(l.reservations);
      for (const r of rs) {
        assert.ok(!seen.has(r.allocId), `${r.allocId} booked twice`);
        seen.add(r.allocId);
      }
      const vfs = rs.flatMap((r) => r.vfs);
      const cpus = rs.flatMap((r) => r.cpus ?? []);
      assert.equal(new Set(vfs).size, vfs.length);
      assert.equal(new Set(cpus).size, cpus.length);
    }
    assert.equal(seen.size, 24);
    for (const r of placed) if (r.ok) assert.ok(await getJson(b.allocs, `${r.decision.nodeId}.${r.allocation.allocId}`));
    await waitFor('agents run 24 sandboxes', () => (agents.reduce((s, a) => s + a.sandboxes.size, 0) === 24 ? true : undefined));
  } finally {
    for (const a of agents) a.stop();
    await Promise.all(cores.map((c) => c.core.stop().catch(() => undefined)));
  }
});

test('after a leader change the new leader declares a silent node lost (and not the healthy ones)', async () => {
  const lost: string[][] = [[], [], []];
  const cores: { nc: NatsConnection; core: SchedulerCore }[] = [];
  for (let i = 0; i < 3; i++) {
    const nc = await fx.connect();
    const core = await SchedulerCore.create({
      nc,
      candidateId: `nl-${i}`,
      leaseTtlMs: TTL,
      registry: { graceMs: 1500, checkIntervalMs: 100 },
      onNodeLost: (ev) => void lost[i]!.push(ev.nodeId),
    });
    cores.push({ nc, core });
  }
  const agentNc = await fx.connect();
  const b = await buckets(agentNc);
  const agents = ['nl-a', 'nl-b'].map((id) => new SimAgent(agentNc, b, simulatedInventory({ nodeId: id }), 100));
  try {
    await Promise.all(cores.map((c) => c.core.start()));
    for (const a of agents) await a.start();
    const first = await waitFor('a leader', () => cores.find((c) => c.core.isLeader()));
    await first.nc.close();
    const rest = cores.filter((c) => c !== first);
    const next = await waitFor('a new leader', () => rest.find((c) => c.core.isLeader()), 3 * TTL + 5000);
    assert.ok(next.core.registry.isActive());
    for (const c of rest) if (c !== next) assert.equal(c.core.registry.isActive(), false);
    agents[0]!.partition();
    const i = cores.indexOf(next);
    await waitFor('nl-a declared lost by the new leader', () => (lost[i]!.includes('nl-a') ? true : undefined), 1500 + 5000);
    await waitFor('the new leader\'s view fences nl-a', () => (next.core.cluster.node('nl-a')?.epoch === 2 ? true : undefined));
    assert.ok(!lost.flat().includes('nl-b'), 'the healthy node was never declared lost');
    assert.deepEqual(lost.filter((_, k) => k !== i).flat().filter((n) => n === 'nl-a'), [], 'only the leader declares');
  } finally {
    for (const a of agents) a.stop();
    await Promise.all(cores.map((c) => c.core.stop().catch(() => undefined)));
  }
});
