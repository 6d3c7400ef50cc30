import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  applyReservation,
  checkReservation,
  defaultCandidateLimit,
  mulberry32,
  place,
  removeReservation,
  reservationFor,
  seededOrder,
  type NodeView,
} from '../../src/placement/index.js';
import { nodeView, occupy, pinAll, request, vnfd } from './helpers.js';

const sriov = (n: number, physnet = 'physnet1') =>
  Array.from({ length: n }, (_, i) => ({ name: `vf${i}`, type: 'sriov' as const, physnet }));

function cluster(n: number, spec: Parameters<typeof nodeView>[0] = {}): NodeView[] {
  return Array.from({ length: n }, (_, i) => nodeView({ ...spec, nodeId: `n${i}` }));
}

test('seededOrder visits every index exactly once, and replays with the same seed', () => {
  for (const n of [1, 2, 3, 10, 97, 1000]) {
    const a = [...seededOrder(n, mulberry32(42))];
    assert.equal(a.length, n);
    assert.equal(new Set(a).size, n);
    assert.deepEqual([...seededOrder(n, mulberry32(42))], a);
  }
  assert.notDeepEqual([...seededOrder(1000, mulberry32(1))], [...seededOrder(1000, mulberry32(2))]);
});

test('a decision replays: same seed, same views -> same node', () => {
  const nodes = cluster(50);
  const req = request(vnfd());
  const a = place(req, nodes, { seed: 7 });
  const b = place(req, nodes, { seed: 7 });
  assert.ok(a.ok && b.ok);
  assert.equal(a.nodeId, b.nodeId);
  const others = new Set(Array.from({ length: 20 }, (_, s) => (place(req, nodes, { seed: s }) as { nodeId: string }).nodeId));
  assert.ok(others.size > 1, 'different seeds spread decisions over equal nodes');
});

test('NUMA strict: VFs on NUMA node 1, free CPUs only on NUMA node 0 -> UNSCHEDULABLE with the reason', () => {
  const node = nodeView({ pfs: [{ physnet: 'physnet1', numaNode: 1, vfs: 4 }] });
  pinAll(node, 1);
  const req = request(vnfd({ resources: { vcpus: 2, cpuPolicy: 'dedicated', numa: 'strict' }, interfaces: sriov(2) }));
  const r = place(req, [node], { seed: 1 });
  assert.equal(r.ok, false);
  if (r.ok) return;
  assert.deepEqual(r.explanation.rejected, [
    { filter: 'numa', reason: 'no NUMA node with 2 free dedicated CPUs and 2 free VFs on physnet1 together (numa: strict)', nodes: 1 },
  ]);
  assert.equal(
    r.explanation.message,
    '0/1 nodes fit: 1 node: no NUMA node with 2 free dedicated CPUs and 2 free VFs on physnet1 together (numa: strict) (numa)',
  );
});

test('NUMA preferred: same node -> placed, CPUs on NUMA node 0, VFs on NUMA node 1, not aligned', () => {
  const node = nodeView({ pfs: [{ physnet: 'physnet1', numaNode: 1, vfs: 4 }] });
  pinAll(node, 1);
  const req = request(vnfd({ resources: { vcpus: 2, cpuPolicy: 'dedicated', numa: 'preferred' }, interfaces: sriov(2) }));
  const r = place(req, [node], { seed: 1 });
  assert.ok(r.ok);
  assert.equal(r.assignment.numaNode, 0);
  assert.deepEqual(r.assignment.cpus, [1, 2]); // CPU 0 is the housekeeping CPU (not isolated)
  assert.deepEqual(
    r.assignment.vfs.map((v) => [v.interface, v.vfIndex, v.numaNode, v.pfPciAddress]),
    [
      ['vf0', 0, 1, '0000:10:00.0'],
      ['vf1', 1, 1, '0000:10:00.0'],
    ],
  );
  assert.equal(r.assignment.numaAligned, false);
});

test('NUMA strict: aligned assignment takes CPUs, hugepages and VFs from one NUMA node', () => {
  const node = nodeView({ pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 1 }, { physnet: 'physnet1', numaNode: 1, vfs: 4 }] });
  const req = request(
    vnfd({
      resources: { vcpus: 3, memoryMiB: 512, cpuPolicy: 'dedicated', numa: 'strict', hugepages: { sizeKiB: 2048, count: 256 } },
      interfaces: sriov(2),
    }),
  );
  const r = place(req, [node], { seed: 1 });
  assert.ok(r.ok);
  assert.equal(r.assignment.numaNode, 1);
  assert.deepEqual(r.assignment.cpus, [9, 10, 11]);
  assert.deepEqual(r.assignment.hugepages, { sizeKiB: 2048, count: 256, numaNode: 1 });
  assert.deepEqual(r.assignment.vfs.map((v) => v.numaNode), [1, 1]);
  assert.equal(r.assignment.numaAligned, true);
});

test('preferred prefers the node that can align over one that cannot', () => {
  const bad = nodeView({ nodeId: 'bad', pfs: [{ physnet: 'physnet1', numaNode: 1, vfs: 4 }] });
  pinAll(bad, 1);
  const good = nodeView({ nodeId: 'good', pfs: [{ physnet: 'physnet1', numaNode: 1, vfs: 4 }] });
  const req = request(vnfd({ resources: { vcpus: 2, cpuPolicy: 'dedicated', numa: 'preferred' }, interfaces: sriov(1) }));
  for (let seed = 0; seed < 10; seed++) {
    const r = place(req, [bad, good], { seed });
    assert.ok(r.ok);
    assert.equal(r.nodeId, 'good');
  }
});

test('UNSCHEDULABLE explains itself: per filter, how many nodes and why', () => {
  const nodes = [
    ...cluster(3, { pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 1 }] }).map((n, i) => ({ ...n, nodeId: `a${i}` })),
    nodeView({ nodeId: 'c0' }, { cordoned: true }),
    nodeView({ nodeId: 'c1' }, { cordoned: true }),
    nodeView({ nodeId: 'd0' }, { health: 'NotReady' }),
    nodeView({ nodeId: 'e0', labels: { site: 'other' } }),
    nodeView({ nodeId: 'f0', pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 1 }, { physnet: 'physnet1', numaNode: 1, vfs: 1 }] }),
  ];
  const req = request(
    vnfd({ resources: { vcpus: 2, cpuPolicy: 'dedicated', numa: 'strict' }, interfaces: sriov(2), placement: { nodeSelector: {} } }),
  );
  const r = place(req, nodes, { seed: 3 });
  assert.equal(r.ok, false);
  if (r.ok) return;
  assert.equal(r.explanation.nodes, 8);
  assert.deepEqual(r.explanation.rejected, [
    { filter: 'health', reason: 'node is NotReady', nodes: 1 },
    { filter: 'cordon', reason: 'node is cordoned', nodes: 2 },
    { filter: 'sriov-vfs', reason: 'fewer than 2 free VFs on physnet1', nodes: 4 },
    { filter: 'numa', reason: 'no NUMA node with 2 free dedicated CPUs and 2 free VFs on physnet1 together (numa: strict)', nodes: 1 },
  ]);
  assert.equal(r.explanation.rejected.reduce((s, x) => s + x.nodes, 0), 8, 'every node accounted for');
  assert.match(r.explanation.message, /^0\/8 nodes fit: 1 node: node is NotReady \(health\); 2 nodes: node is cordoned \(cordon\); 4 nodes: fewer than 2 free VFs on physnet1/);
});

test('a node-independent filter (tenant quota) is evaluated once and rejects every node', () => {
  const r = place(request(vnfd({ resources: { vcpus: 4 } }), { quota: { vcpus: 1 } }), cluster(5), { seed: 1 });
  assert.equal(r.ok, false);
  if (r.ok) return;
  assert.deepEqual(r.explanation.rejected, [{ filter: 'tenant-quota', reason: 'tenant quota: needs 4 vCPUs, 1 left', nodes: 5 }]);
});

test('no nodes at all', () => {
  const r = place(request(vnfd()), [], { seed: 1 });
  assert.equal(r.ok, false);
  if (!r.ok) assert.equal(r.explanation.message, 'no nodes registered');
});

test('sampling: stops after the candidate limit of feasible nodes (Nomad log2 limit)', () => {
  assert.equal(defaultCandidateLimit(1), 2);
  assert.equal(defaultCandidateLimit(1000), 10);
  assert.equal(defaultCandidateLimit(10000), 14);
  const nodes = cluster(1000);
  const r = place(request(vnfd()), nodes, { seed: 5 });
  assert.ok(r.ok);
  assert.equal(r.feasible, 10);
  assert.equal(r.evaluated, 10);
  const all = place(request(vnfd()), nodes, { seed: 5, candidateLimit: Infinity });
  assert.ok(all.ok);
  assert.equal(all.evaluated, 1000);
});

test('tenant packing: the node running the tenant VM is evaluated first and wins', () => {
  const nodes = cluster(200);
  const home = nodes[137]!;
  occupy(home, { tenantId: 't1', vnfId: 'v0' });
  for (let seed = 0; seed < 5; seed++) {
    const r = place(request(vnfd(), { tenantId: 't1', vnfId: 'v9' }), nodes, { seed, first: [home] });
    assert.ok(r.ok);
    assert.equal(r.nodeId, home.nodeId);
  }
});

test('anti-affinity spreads the replicas of one VNF', () => {
  const nodes = cluster(3);
  const req = (replica: number, other: string[]) =>
    request(vnfd({ placement: { antiAffinity: 'node' } }), { replica, other });
  const placed: string[] = [];
  for (let i = 0; i < 3; i++) {
    const r = place(req(i, placed), nodes, { seed: i });
    assert.ok(r.ok);
    placed.push(r.nodeId);
  }
  assert.equal(new Set(placed).size, 3);
  const r = place(req(3, placed), nodes, { seed: 9 });
  assert.equal(r.ok, false);
});

test('placing until full never over-commits a VF, CPU or hugepage (reservations applied as decided)', () => {
  const nodes = cluster(4, { cpusPerNuma: 6, isolatedPerNuma: 5, hugepages2MPerNuma: 1024, pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 3 }, { physnet: 'physnet1', numaNode: 1, vfs: 3 }] });
  const d = vnfd({
    resources: { vcpus: 2, memoryMiB: 512, cpuPolicy: 'dedicated', numa: 'strict', hugepages: { sizeKiB: 2048, count: 256 } },
    interfaces: sriov(1),
  });
  let placedCount = 0;
  for (let i = 0; i < 100; i++) {
    const req = request(d, { vnfId: `v${i}` });
    const r = place(req, nodes, { seed: i });
    if (!r.ok) {
      assert.match(r.explanation.message, /^0\/4 nodes fit/);
      break;
    }
    const res = reservationFor(req, `a${i}`, r.node.epoch, r.assignment);
    assert.deepEqual(checkReservation(r.node, res), { ok: true });
    applyReservation(r.node, res);
    placedCount++;
  }
  // per NUMA node: 5 pinnable CPUs -> 2 replicas; 3 VFs; 1024 pages -> 4: 2 per NUMA node, 16 in all
  assert.equal(placedCount, 16);
  for (const n of nodes) {
    const vfs = [...n.reservations.values()].flatMap((r) => r.vfs);
    assert.equal(new Set(vfs).size, vfs.length);
    for (const nv of n.numa) {
      for (const [, h] of nv.hugepages) assert.ok(h.used <= h.total);
      assert.ok(nv.pinned.size <= nv.pinnable.length);
    }
  }
});

/**
 * Places replicas one after another on one node (each its own VNF and tenant, so anti-affinity and the VM per tenant
 * play no part), reserving each as decided; returns how many fit and the refusal that ended it.
 */
function fillNode(node: NodeView, resources: { vcpus: number; cpuPolicy?: 'dedicated' | 'shared' }, max = 20, tag = 'x'): { placed: number; refusal: unknown } {
  for (let i = 0; i < max; i++) {
    const req = request(vnfd({ resources: { ...resources, memoryMiB: 256 } }), { tenantId: `t${tag}${i}`, vnfId: `v${tag}${i}` });
    const r = place(req, [node], { seed: i });
    if (!r.ok) return { placed: i, refusal: r.explanation.rejected };
    const res = reservationFor(req, `a${tag}${i}`, r.node.epoch, r.assignment);
    assert.deepEqual(checkReservation(node, res), { ok: true }, `replica ${i}: the commit-time re-check agrees`);
    applyReservation(node, res);
  }
  return { placed: max, refusal: undefined };
}

test("shared vCPUs overcommit by the node's cpuAllocationRatio (inventory), pinned CPUs never", () => {
  const twoCpus = { numaNodes: 1, cpusPerNuma: 2, isolatedPerNuma: 2 };
  const full = [{ filter: 'resources', reason: 'fewer than 1 free vCPUs', nodes: 1 }];
  // ratio 2: 2 CPUs take 4 shared vCPUs of replicas, the 5th is refused by the resources filter
  const two = nodeView({ ...twoCpus, cpuAllocationRatio: 2 });
  assert.equal(two.cpuAllocationRatio, 2);
  assert.deepEqual(fillNode(two, { vcpus: 1 }), { placed: 4, refusal: full });
  // and the commit-time re-check refuses it too
  const fifth = { ...[...two.reservations.values()][0]!, allocId: 'a-fifth', tenantId: 't-fifth' };
  assert.deepEqual(checkReservation(two, fifth), { ok: false, reason: 'not enough vCPUs' });
  // ratio 1 (and a node that reports none): the 3rd is refused
  assert.deepEqual(fillNode(nodeView({ ...twoCpus, cpuAllocationRatio: 1 }), { vcpus: 1 }), { placed: 2, refusal: full });
  assert.deepEqual(fillNode(nodeView(twoCpus), { vcpus: 1 }), { placed: 2, refusal: full });
  // a value no node agent sends counts as 1 (neither unbounded nor no room at all)
  for (const bad of [0, -1, 0.5, Number.NaN, '4' as unknown as number]) {
    const v = nodeView({ ...twoCpus, cpuAllocationRatio: bad });
    assert.equal(v.cpuAllocationRatio, 1, String(bad));
  }
  // pinned CPUs never overcommit: ratio 2 still pins only the 2 CPUs there are
  const pinned = nodeView({ ...twoCpus, cpuAllocationRatio: 2 });
  assert.deepEqual(fillNode(pinned, { vcpus: 1, cpuPolicy: 'dedicated' }), { placed: 2, refusal: full });
  assert.equal(pinned.pinnedCount, 2);
  // ... and a pinned CPU leaves the shared pool: 1 pinned of 2 at ratio 2 leaves room for 2 shared vCPUs
  const mixed = nodeView({ ...twoCpus, cpuAllocationRatio: 2 });
  assert.equal(fillNode(mixed, { vcpus: 1, cpuPolicy: 'dedicated' }, 1, 'd').placed, 1);
  assert.deepEqual(fillNode(mixed, { vcpus: 1 }, 20, 's'), { placed: 2, refusal: full });
});

test('reservations: check refuses a held VF or CPU; remove is idempotent and restores the counts', () => {
  const node = nodeView({ pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 2 }] });
  const req = request(vnfd({ resources: { vcpus: 2, cpuPolicy: 'dedicated', numa: 'strict' }, interfaces: sriov(1) }));
  const r = place(req, [node], { seed: 1 });
  assert.ok(r.ok);
  const a = reservationFor(req, 'a1', 1, r.assignment);
  applyReservation(node, a);
  assert.equal(node.freeVfs.get('physnet1'), 1);
  const clash = { ...a, allocId: 'a2' };
  const v = checkReservation(node, clash);
  assert.equal(v.ok, false);
  assert.match((v as { reason: string }).reason, /CPU 1 already pinned by a1/);
  assert.deepEqual(checkReservation(node, { ...clash, cpus: [3, 4] }), { ok: false, reason: 'VF 0000:10:01.0 already held by a1' });
  assert.ok(removeReservation(node, 'a1'));
  assert.equal(removeReservation(node, 'a1'), undefined);
  assert.equal(node.freeVfs.get('physnet1'), 2);
  assert.equal(node.pinnedCount, 0);
  assert.equal(node.tenants.size, 0);
  assert.deepEqual(checkReservation(node, clash), { ok: true });
});

test("commit-time re-check: a tenant's replicas on a node share its VM, within the node's vCPUs per VM", () => {
  const node = nodeView({ numaNodes: 1, cpusPerNuma: 8 });
  node.inventory = { ...node.inventory, vmMaxVcpus: 3 };
  const a = occupy(node, { allocId: 'a1', tenantId: 't1', vcpus: 2 });
  assert.equal(node.tenantVcpus.get('t1'), 2);
  const b = { ...a, allocId: 'a2', vcpus: 2 };
  assert.deepEqual(checkReservation(node, b), { ok: false, reason: "the tenant's VM would exceed the node's 3 vCPUs per VM" });
  assert.deepEqual(checkReservation(node, { ...b, tenantId: 't2' }), { ok: true }); // another tenant: another VM
  removeReservation(node, 'a1');
  assert.equal(node.tenantVcpus.has('t1'), false);
  assert.deepEqual(checkReservation(node, b), { ok: true });
});

test('summarizeView: what nodes.get shows', async () => {
  const { summarizeView } = await import('../../src/placement/index.js');
  const node = nodeView({ pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 2 }] });
  occupy(node, { tenantId: 'ta', vnfId: 'x', numaNode: 0, cpus: [1, 2], vcpus: 2, memoryMiB: 1024, vfs: [[...node.vfByPci.keys()][0]!] });
  occupy(node, { tenantId: 'tb', vnfId: 'y', vcpus: 1, memoryMiB: 512 });
  const s = summarizeView(node);
  assert.deepEqual(s.allocated, { vcpus: 3, memoryMiB: 1536, vfs: 1, replicas: 2 });
  assert.deepEqual(s.sandboxes, [{ tenantId: 'ta', replicas: 1 }, { tenantId: 'tb', replicas: 1 }]);
  assert.deepEqual(s.free.vfs, { physnet1: 1 });
  assert.deepEqual(s.free.dedicatedCpus, { '0': 5, '1': 7 });
  assert.equal(s.free.sharedVcpus, 16 - 2 - 1);
  // the node's cpuAllocationRatio multiplies the unpinned CPUs
  const over = nodeView({ cpuAllocationRatio: 1.5 });
  occupy(over, { numaNode: 0, cpus: [1, 2], vcpus: 2 });
  occupy(over, { vcpus: 3 });
  assert.equal(summarizeView(over).free.sharedVcpus, (16 - 2) * 1.5 - 3);
  // each replica's hold, for the dashboard's node picture
  assert.deepEqual(
    s.reservations.map((r) => ({ tenantId: r.tenantId, cpus: r.cpus, vfs: r.vfs.length })),
    [
      { tenantId: 'ta', cpus: [1, 2], vfs: 1 },
      { tenantId: 'tb', cpus: undefined, vfs: 0 },
    ],
  );
});
