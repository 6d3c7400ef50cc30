import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { allocKey, type Allocation } from '@edgenfv/contracts';
import {
  ClusterState,
  allocationResources,
  buildPlacementRequest,
  getJson,
  sriovOf,
  simulatedInventory,
  unfenceReservations,
  type AllocationBuilder,
  type NodeLedger,
  type SchedulerBuckets,
} from '../../src/placement/index.js';
import { encodeJson } from '../../src/placement/kv.js';
import { buckets, natsFixture, putNode, waitFor, type NatsFixture } from './nats-helpers.js';
import { vnfd } from './helpers.js';

let fx: NatsFixture;
let b: SchedulerBuckets;
let nc: import('nats').NatsConnection;

before(async () => {
  fx = await natsFixture();
  nc = await fx.connect();
  b = await buckets(nc);
});
after(async () => {
  await fx.close();
});

const build: AllocationBuilder = (d, req) => ({
  allocId: '', // filled below
  nodeId: d.nodeId,
  epoch: d.epoch,
  tenantId: req.tenantId,
  vnfId: req.vnfId,
  replica: req.replica,
  resources: allocationResources(req, d),
  image: { ref: 'builtin:test' },
  interfaces: d.assignment.vfs.map((v, i) => ({ name: v.interface, type: 'sriov', mac: `02:00:00:00:01:${i.toString(16).padStart(2, '0')}`, sriov: sriovOf(v) })),
  createdAt: new Date().toISOString(),
});
const builder = (allocId: string): AllocationBuilder => async (d, req) => ({ ...(await build(d, req)), allocId });

const sriovDed = vnfd({
  resources: { vcpus: 2, memoryMiB: 1024, cpuPolicy: 'dedicated', numa: 'strict' },
  interfaces: [{ name: 'up', type: 'sriov', physnet: 'physnet1' }],
});
const req = (tenantId: string, vnfId: string, replica = 0, d = sriovDed) => buildPlacementRequest({ tenantId, vnfId, replica, descriptor: d });

async function ledgerOf(nodeId: string): Promise<NodeLedger> {
  return (await getJson<NodeLedger>(b.ledger, nodeId))!.value;
}

test('schedule commits ledger + allocation; same allocId again books nothing twice', async () => {
  for (let i = 0; i < 3; i++)
    await putNode(b, simulatedInventory({ nodeId: `s${i}`, labels: { suite: 's' }, pfs: [{ physnet: 'physnet1', numaNode: 1, vfs: 4 }] }));
  const cs = new ClusterState(b, { seed: 1, nc });
  await cs.start();
  try {
    const d = vnfd({ ...sriovDed, placement: { nodeSelector: { suite: 's' } } });
    const r = await cs.schedule(req('ta', 'va', 0, d), 'va-0', builder('va-0'));
    assert.ok(r.ok);
    assert.equal(r.decision.assignment.numaNode, 1);
    const rec = await getJson<Allocation>(b.allocs, allocKey(r.decision.nodeId, 'va-0'));
    const vf = rec!.value.interfaces[0]!;
    assert.equal(vf.type === 'sriov' ? vf.sriov.vfPciAddress : vf.type, r.decision.assignment.vfs[0]!.vfPciAddress);
    assert.ok((await ledgerOf(r.decision.nodeId)).reservations['va-0']);
    const again = await cs.schedule(req('ta', 'va', 0, d), 'va-0', builder('va-0'));
    assert.ok(again.ok && again.alreadyCommitted);
    assert.equal(again.decision.nodeId, r.decision.nodeId);
    // a fresh ClusterState (a new leader) sees it too
    const cs2 = new ClusterState(b, { seed: 2 });
    await cs2.start();
    const third = await cs2.schedule(req('ta', 'va', 0, d), 'va-0', builder('va-0'));
    await cs2.stop();
    assert.ok(third.ok && third.alreadyCommitted && third.decision.nodeId === r.decision.nodeId);
    // tenant packing: another VNF of the tenant goes into the same VM's node
    const other = await cs.schedule(req('ta', 'vb', 0, d), 'vb-0', builder('vb-0'));
    assert.ok(other.ok);
    assert.equal(other.decision.nodeId, r.decision.nodeId);
  } finally {
    await cs.stop();
  }
});

test('two ClusterStates (two scheduler replicas) racing on the same nodes never double-book', async () => {
  const ids = Array.from({ length: 3 }, (_, i) => `r${i}`);
  for (const id of ids)
    await putNode(b, simulatedInventory({ nodeId: id, labels: { suite: 'r' }, cpusPerNuma: 5, isolatedPerNuma: 4, pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 2 }, { physnet: 'physnet1', numaNode: 1, vfs: 2 }] }));
  // capacity per node: 2 replicas per NUMA node (4 pinnable CPUs, 2 VFs): 4 per node, 12 in all
  const d = vnfd({ ...sriovDed, placement: { nodeSelector: { suite: 'r' } } });
  const c1 = new ClusterState(b, { seed: 11, nc }); // lean publisher
  const c2 = new ClusterState(b, { seed: 22 }); // nats.js KV calls
  await Promise.all([c1.start(), c2.start()]);
  try {
    const run = (cs: ClusterState, tag: string) =>
      Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          cs.schedule(req(`t-${tag}${i}`, `${tag}${i}`, 0, d), `${tag}${i}`, builder(`${tag}${i}`)).catch((err: Error) => ({ ok: 'error' as const, err })),
        ),
      );
    const [x, y] = await Promise.all([run(c1, 'x'), run(c2, 'y')]);
    const all = [...x, ...y];
    const placed = all.filter((r) => r.ok === true);
    const unsched = all.filter((r) => r.ok === false);
    const errors = all.filter((r) => r.ok === 'error');
    assert.equal(placed.length + unsched.length + errors.length, 20);
    assert.ok(placed.length <= 12);
    assert.ok(placed.length >= 8, `most fit: ${placed.length} placed, ${JSON.stringify(errors)}`);
    for (const u of unsched) if (u.ok === false) assert.match(u.explanation.message, /^0\/\d+ nodes fit/);
    const booked = new Set<string>();
    for (const id of ids) {
      const rs = Object.values((await ledgerOf(id)).reservations);
      const vfs = rs.flatMap((r) => r.vfs);
      const cpus = rs.flatMap((r) => r.cpus ?? []);
      assert.equal(new Set(vfs).size, vfs.length, `no VF twice on ${id}`);
      assert.equal(new Set(cpus).size, cpus.length, `no CPU twice on ${id}`);
      for (const r of rs) booked.add(r.allocId);
    }
    for (const p of placed) if (p.ok === true) assert.ok(booked.has(p.allocation.allocId), 'every success is in a ledger');
    assert.equal(booked.size, placed.length, 'nothing booked that was not reported placed');
  } finally {
    await Promise.all([c1.stop(), c2.stop()]);
  }
});

test('release frees; on a lost node it fences; a ledger change by another writer reaches the view', async () => {
  const inv = simulatedInventory({ nodeId: 'l0', labels: { suite: 'l' }, pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 1 }] });
  await putNode(b, inv);
  const d = vnfd({ ...sriovDed, resources: { ...sriovDed.resources, numa: 'none' }, placement: { nodeSelector: { suite: 'l' } } });
  const cs = new ClusterState(b, { seed: 3, nc });
  await cs.start();
  try {
    const r1 = await cs.schedule(req('tl', 'l1', 0, d), 'l1-0', builder('l1-0'));
    assert.ok(r1.ok);
    const full = await cs.schedule(req('tl', 'l2', 0, d), 'l2-0', builder('l2-0'));
    assert.equal(full.ok, false);
    if (!full.ok) assert.match(full.explanation.message, /fewer than 1 free VFs on physnet1 \(sriov-vfs\)/);
    assert.deepEqual(await cs.release('l1-0'), { released: true, fenced: false });
    assert.deepEqual(await cs.release('l1-0'), { released: false, fenced: false });
    assert.equal(await getJson(b.allocs, allocKey('l0', 'l1-0')), null);
    const r2 = await cs.schedule(req('tl', 'l2', 0, d), 'l2-0', builder('l2-0'));
    assert.ok(r2.ok, 'the VF is free again');
    // the node is lost (registry: NotReady, epoch 2); its replica is released -> fenced, VF stays booked
    await b.nodes.put('l0', encodeJson({ id: 'l0', inventory: inv, health: 'NotReady', cordoned: false, epoch: 2, registeredAt: 'x' }));
    await waitFor('view NotReady', () => cs.node('l0')?.health === 'NotReady');
    assert.deepEqual(await cs.release('l2-0'), { released: true, fenced: true });
    assert.equal(cs.node('l0')!.freeVfs.get('physnet1') ?? 0, 0);
    // the node comes back and confirms the sandbox is gone: another writer unfences
    await b.nodes.put('l0', encodeJson({ id: 'l0', inventory: inv, health: 'Ready', cordoned: false, epoch: 2, registeredAt: 'x' }));
    const lg = (await getJson<NodeLedger>(b.ledger, 'l0'))!;
    await b.ledger.update('l0', encodeJson({ ...lg.value, epoch: 2 }), lg.revision);
    assert.deepEqual((await unfenceReservations(b, 'l0', new Set())).map((r) => r.allocId), ['l2-0']);
    await waitFor('view sees the unfenced VF', () => (cs.node('l0')!.freeVfs.get('physnet1') ?? 0) === 1);
    const r3 = await cs.schedule(req('tl', 'l3', 0, d), 'l3-0', builder('l3-0'));
    assert.ok(r3.ok);
    assert.equal(r3.decision.epoch, 2);
  } finally {
    await cs.stop();
  }
});

test('a follower catches up on the leader\'s commits in batches; becoming active catches up at once', async () => {
  for (let i = 0; i < 2; i++)
    await putNode(b, simulatedInventory({ nodeId: `f${i}`, labels: { suite: 'f' }, pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 4 }] }));
  const d = vnfd({ ...sriovDed, resources: { ...sriovDed.resources, numa: 'none' }, placement: { nodeSelector: { suite: 'f' } } });
  const leader = new ClusterState(b, { seed: 4, nc });
  const follower = new ClusterState(b, { seed: 5, followerRefreshMs: 60_000 });
  await follower.setActive(false);
  await Promise.all([leader.start(), follower.start()]);
  try {
    const r = await leader.schedule(req('tf', 'f1', 0, d), 'f1-0', builder('f1-0'));
    assert.ok(r.ok);
    // the follower only marked the ledger dirty (its refresh is a minute away)...
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(follower.findReservation('f1-0'), undefined);
    // ...until it becomes active: then it sees the reservation before its first decision
    await follower.setActive(true);
    assert.equal(follower.findReservation('f1-0')?.nodeId, r.decision.nodeId);
    const again = await follower.schedule(req('tf', 'f1', 0, d), 'f1-0', builder('f1-0'));
    assert.ok(again.ok && again.alreadyCommitted);
  } finally {
    await Promise.all([leader.stop(), follower.stop()]);
  }
});

test('a replica that lost the lease commits nothing (canCommit)', async () => {
  await putNode(b, simulatedInventory({ nodeId: 'g0', labels: { suite: 'g' }, pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 1 }] }));
  const d = vnfd({ ...sriovDed, resources: { ...sriovDed.resources, numa: 'none' }, placement: { nodeSelector: { suite: 'g' } } });
  let leader = false;
  const cs = new ClusterState(b, { seed: 6, nc, canCommit: () => leader });
  await cs.start();
  try {
    await assert.rejects(cs.schedule(req('tg', 'g1', 0, d), 'g1-0', builder('g1-0')), { code: 'UNAVAILABLE' });
    assert.deepEqual((await ledgerOf('g0')).reservations, {});
    assert.equal(cs.node('g0')!.freeVfs.get('physnet1'), 1, 'the local reservation was undone');
    leader = true;
    assert.ok((await cs.schedule(req('tg', 'g1', 0, d), 'g1-0', builder('g1-0'))).ok);
  } finally {
    await cs.stop();
  }
});
