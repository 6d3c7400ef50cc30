import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { allocKey } from '@edgenfv/contracts';
import { getJson } from '../../src/placement/kv.js';
import { commitAllocation, releaseAllocation, unfence, type NodeLedger } from '../../src/placement/ledger.js';
import { applyReservation, buildNodeView, place, reservationFor, simulatedInventory } from '../../src/placement/index.js';
import type { SchedulerBuckets } from '../../src/placement/kv.js';
import { allocationFor, buckets, natsFixture, putNode, type NatsFixture } from './nats-helpers.js';
import { request, vnfd } from './helpers.js';
import { encodeJson } from '../../src/placement/kv.js';

let fx: NatsFixture;
let b1: SchedulerBuckets; // "scheduler replica" 1
let b2: SchedulerBuckets; // "scheduler replica" 2, own connection

before(async () => {
  fx = await natsFixture();
  b1 = await buckets(await fx.connect());
  b2 = await buckets(await fx.connect());
});
after(async () => {
  await fx.close();
});

const oneVf = { interfaces: [{ name: 'up', type: 'sriov' as const, physnet: 'physnet1' }], resources: { vcpus: 1, memoryMiB: 256 } };

test('two schedulers race for the last VF: exactly one wins, the loser is told why', async () => {
  const inv = simulatedInventory({ nodeId: 'race1', pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 1 }] });
  const rec = await putNode(b1, inv);
  // Both decide on their own (identical) view: both pick the one VF.
  const decide = () => {
    const view = buildNodeView({ nodeId: rec.id, epoch: rec.epoch, health: 'Ready', cordoned: false, inventory: inv });
    const r = place(request(vnfd(oneVf)), [view], { seed: 1 });
    assert.ok(r.ok);
    return { nodeId: r.nodeId, epoch: r.node.epoch, assignment: r.assignment };
  };
  const [d1, d2] = [decide(), decide()];
  assert.equal(d1.assignment.vfs[0]!.vfPciAddress, d2.assignment.vfs[0]!.vfPciAddress);
  const [r1, r2] = await Promise.all([
    commitAllocation(b1, allocationFor(d1, { allocId: 'a-one', vnfId: 'v1' })),
    commitAllocation(b2, allocationFor(d2, { allocId: 'a-two', vnfId: 'v2' })),
  ]);
  const wins = [r1, r2].filter((r) => r.ok);
  assert.equal(wins.length, 1, `exactly one commit wins: ${JSON.stringify([r1, r2])}`);
  const loser = [r1, r2].find((r) => !r.ok) as { ok: false; reason: string };
  assert.match(loser.reason, /VF 0000:10:01\.0 already held by a-(one|two)/);
  const ledger = (await getJson<NodeLedger>(b1.ledger, 'race1'))!.value;
  assert.equal(Object.keys(ledger.reservations).length, 1);
  const keys: string[] = [];
  for await (const k of await b1.allocs.keys('race1.>')) keys.push(k);
  assert.equal(keys.length, 1, 'one allocation record');
});

test('many racing commits on shared nodes: no VF or CPU booked twice', async () => {
  const nodes = await Promise.all(
    Array.from({ length: 4 }, (_, i) =>
      putNode(b1, simulatedInventory({ nodeId: `many${i}`, cpusPerNuma: 4, isolatedPerNuma: 3, pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 3 }] })),
    ),
  );
  const d = vnfd({ resources: { vcpus: 1, memoryMiB: 256, cpuPolicy: 'dedicated', numa: 'strict' }, interfaces: oneVf.interfaces });
  // Each "scheduler" decides 12 placements on its own stale view (never seeing the other's), then commits all at once.
  const run = async (b: SchedulerBuckets, tag: string) => {
    const views = nodes.map((n) => buildNodeView({ nodeId: n.id, epoch: 1, health: 'Ready', cordoned: false, inventory: n.inventory }));
    const results = [];
    for (let i = 0; i < 12; i++) {
      const req = request(d, { vnfId: `${tag}-${i}` });
      const r = place(req, views, { seed: i });
      assert.ok(r.ok);
      const alloc = allocationFor({ nodeId: r.nodeId, epoch: 1, assignment: r.assignment }, { allocId: `${tag}-${i}`, vnfId: `${tag}-${i}`, vcpus: 1 });
      applyReservation(r.node, reservationFor(req, alloc.allocId, 1, r.assignment));
      results.push(commitAllocation(b, alloc));
    }
    return Promise.all(results);
  };
  const [x, y] = await Promise.all([run(b1, 'x'), run(b2, 'y')]);
  const ok = [...x, ...y].filter((r) => r.ok).length;
  assert.ok(ok >= 1 && ok <= 12, `${ok} commits won; the 4 nodes have 12 VFs`);
  for (const n of nodes) {
    const l = (await getJson<NodeLedger>(b1.ledger, n.id))!.value;
    const rs = Object.values(l.reservations);
    const vfs = rs.flatMap((r) => r.vfs);
    const cpus = rs.flatMap((r) => r.cpus ?? []);
    assert.equal(new Set(vfs).size, vfs.length, `no VF twice on ${n.id}`);
    assert.equal(new Set(cpus).size, cpus.length, `no CPU twice on ${n.id}`);
    assert.ok(vfs.length <= 3 && cpus.length <= 6);
  }
});

test('commit is idempotent per allocId (a new leader finishing an operation does not book twice)', async () => {
  const inv = simulatedInventory({ nodeId: 'idem1', pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 2 }] });
  await putNode(b1, inv);
  const view = buildNodeView({ nodeId: 'idem1', epoch: 1, health: 'Ready', cordoned: false, inventory: inv });
  const r = place(request(vnfd(oneVf)), [view], { seed: 1 });
  assert.ok(r.ok);
  const alloc = allocationFor({ nodeId: 'idem1', epoch: 1, assignment: r.assignment }, { allocId: 'idem-a' });
  assert.deepEqual((await commitAllocation(b1, alloc)).ok, true);
  // the allocation record is lost (crash between the two writes): the retry recreates it
  await b1.allocs.delete(allocKey('idem1', 'idem-a'));
  const again = await commitAllocation(b2, alloc);
  assert.ok(again.ok && again.alreadyCommitted);
  assert.ok(await getJson(b1.allocs, allocKey('idem1', 'idem-a')));
  const l = (await getJson<NodeLedger>(b1.ledger, 'idem1'))!.value;
  assert.deepEqual(Object.keys(l.reservations), ['idem-a']);
});

test('commit refuses a stale epoch and a NotReady node', async () => {
  const inv = simulatedInventory({ nodeId: 'ep1', pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 2 }] });
  await putNode(b1, inv, { epoch: 3 });
  const view = buildNodeView({ nodeId: 'ep1', epoch: 2, health: 'Ready', cordoned: false, inventory: inv });
  const r = place(request(vnfd(oneVf)), [view], { seed: 1 });
  assert.ok(r.ok);
  const stale = await commitAllocation(b1, allocationFor({ nodeId: 'ep1', epoch: 2, assignment: r.assignment }, { allocId: 'ep-a' }));
  assert.deepEqual(stale, { ok: false, reason: 'node ep1 is at epoch 3, the allocation was made under 2' });
  await b1.nodes.put('ep1', encodeJson({ id: 'ep1', inventory: inv, health: 'NotReady', cordoned: false, epoch: 3, registeredAt: 'x' }));
  const down = await commitAllocation(b1, allocationFor({ nodeId: 'ep1', epoch: 3, assignment: r.assignment }, { allocId: 'ep-b' }));
  assert.deepEqual(down, { ok: false, reason: 'node ep1 is NotReady' });
});

test('release is idempotent; on a lost node it fences (resources stay booked) until unfenced', async () => {
  const inv = simulatedInventory({ nodeId: 'rel1', pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 1 }] });
  await putNode(b1, inv);
  const view = buildNodeView({ nodeId: 'rel1', epoch: 1, health: 'Ready', cordoned: false, inventory: inv });
  const r = place(request(vnfd(oneVf)), [view], { seed: 1 });
  assert.ok(r.ok);
  const d = { nodeId: 'rel1', epoch: 1, assignment: r.assignment };
  assert.ok((await commitAllocation(b1, allocationFor(d, { allocId: 'rel-a' }))).ok);
  assert.deepEqual(await releaseAllocation(b1, 'rel1', 'rel-a'), { fenced: false, released: true });
  assert.deepEqual(await releaseAllocation(b1, 'rel1', 'rel-a'), { fenced: false, released: false });
  assert.deepEqual(await releaseAllocation(b1, 'rel1', 'never-there'), { fenced: false, released: false });
  assert.equal(await getJson(b1.allocs, allocKey('rel1', 'rel-a')), null);
  // book it again, then lose the node
  assert.ok((await commitAllocation(b1, allocationFor(d, { allocId: 'rel-b' }))).ok);
  await b1.nodes.put('rel1', encodeJson({ id: 'rel1', inventory: inv, health: 'NotReady', cordoned: false, epoch: 2, registeredAt: 'x' }));
  assert.deepEqual(await releaseAllocation(b1, 'rel1', 'rel-b'), { fenced: true, released: true });
  assert.deepEqual(await releaseAllocation(b1, 'rel1', 'rel-b'), { fenced: true, released: false });
  let l = (await getJson<NodeLedger>(b1.ledger, 'rel1'))!.value;
  assert.equal(l.reservations['rel-b']!.fenced, true, 'the VF stays booked while the node is lost');
  assert.deepEqual(await unfence(b1, 'rel1', new Set(['rel-b'])), [], 'still running: stays fenced');
  assert.deepEqual(await unfence(b1, 'rel1', new Set()), ['rel-b']);
  l = (await getJson<NodeLedger>(b1.ledger, 'rel1'))!.value;
  assert.deepEqual(l.reservations, {});
});
