/** What a VM books: its tenant VM's overhead once per node, and a hugepage-backed guest's real pages. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyReservation, checkReservation, place, removeReservation, reservationFor, runFilters, DEFAULT_FILTERS, type NodeView, type PlacementRequest } from '../../src/placement/index.js';
import { nodeView, request, vnfd } from './helpers.js';

const OVERHEAD = { guestBaseMiB: 512, hypervisorMiB: 96 };

/** Places and books one replica on the single node; returns its reservation (throws when it does not fit). */
function book(v: NodeView, req: PlacementRequest, allocId: string) {
  const r = place(req, [v], { seed: 1 });
  if (!r.ok) throw new Error(r.explanation.message);
  const res = reservationFor(req, allocId, v.epoch, r.assignment);
  assert.deepEqual(checkReservation(v, res), { ok: true });
  applyReservation(v, res);
  return res;
}

test('the first replica of a tenant on a node books its VM overhead; later replicas join the VM without it', () => {
  // 1 NUMA node, 4096 MiB, no hugepages: 2 VMs of 1024 + 608 MiB and one more 1024 MiB replica in the first = 4288 > 4096
  const v = nodeView({ numaNodes: 1, cpusPerNuma: 8, memoryMiBPerNuma: 4096, hugepages2MPerNuma: 0, vmOverhead: OVERHEAD });
  const a0 = book(v, request(vnfd({ resources: { vcpus: 1, memoryMiB: 1024 } }), { tenantId: 'a', replica: 0 }), 'a-0');
  assert.deepEqual(a0.vmOverhead, { memoryMiB: 608 });
  assert.equal(v.memoryMiBUsed, 1024 + 608);
  const a1 = book(v, request(vnfd({ resources: { vcpus: 1, memoryMiB: 1024 } }), { tenantId: 'a', replica: 1 }), 'a-1');
  assert.equal(a1.vmOverhead, undefined, 'the second replica joins the VM');
  assert.equal(v.memoryMiBUsed, 2 * 1024 + 608);
  // 4096 - 2656 = 1440 free: tenant a's 1024 MiB replica fits, tenant b's 1024 + 608 does not
  const b = request(vnfd({ resources: { vcpus: 1, memoryMiB: 1024 } }), { tenantId: 'b' });
  assert.deepEqual(runFilters(DEFAULT_FILTERS, b, v), { filter: 'resources', reason: 'less than 1632 MiB of free memory (incl. 608 MiB of VM overhead)' });
  assert.deepEqual(runFilters(DEFAULT_FILTERS, request(vnfd({ resources: { vcpus: 1, memoryMiB: 1024 } }), { tenantId: 'a', replica: 2 }), v), undefined);
  // the commit-time re-check charges the overhead too, even when the reservation forgot to carry it
  const { vmOverhead: _, ...bare } = reservationFor(b, 'b-0', v.epoch, { vfs: [], numaAligned: true });
  assert.deepEqual(checkReservation(v, bare), { ok: false, reason: 'not enough memory' });
});

test('the booking replica leaves, the VM stays: the overhead stays charged until the last replica goes', () => {
  const v = nodeView({ numaNodes: 1, memoryMiBPerNuma: 8192, hugepages2MPerNuma: 0, vmOverhead: OVERHEAD });
  book(v, request(vnfd({ resources: { vcpus: 1, memoryMiB: 1024 } }), { tenantId: 'a', replica: 0 }), 'a-0');
  book(v, request(vnfd({ resources: { vcpus: 1, memoryMiB: 512 } }), { tenantId: 'a', replica: 1 }), 'a-1');
  removeReservation(v, 'a-0');
  assert.equal(v.memoryMiBUsed, 512 + 608);
  // a view rebuilt from the ledger (no reservation left that booked it) charges the node's default
  const rebuilt = nodeView({ numaNodes: 1, memoryMiBPerNuma: 8192, hugepages2MPerNuma: 0, vmOverhead: OVERHEAD });
  applyReservation(rebuilt, v.reservations.get('a-1')!);
  assert.equal(rebuilt.memoryMiBUsed, 512 + 608);
  removeReservation(v, 'a-1');
  assert.equal(v.memoryMiBUsed, 0);
  assert.equal(v.tenantOverheads.size, 0);
});

test('a hugepage-backed guest books all its memory in pages, and its VM base memory in pages of the same size', () => {
  const v = nodeView({ numaNodes: 1, memoryMiBPerNuma: 8192, hugepages2MPerNuma: 1024, vmOverhead: OVERHEAD });
  // the VNFD asks 128 of its 1024 MiB in 2 MiB pages; the node agent backs all of the VM's RAM with them
  const req = request(vnfd({ resources: { vcpus: 1, memoryMiB: 1024, hugepages: { sizeKiB: 2048, count: 128 } } }), { tenantId: 'a' });
  assert.deepEqual(req.hugepages, { sizeKiB: 2048, count: 512 });
  const a0 = book(v, req, 'a-0');
  assert.deepEqual(a0.hugepages, { sizeKiB: 2048, count: 512, numaNode: 0 });
  assert.deepEqual(a0.vmOverhead, { memoryMiB: 96, hugepages: { sizeKiB: 2048, count: 256, numaNode: 0 } });
  assert.equal(v.numa[0]!.hugepages.get(2048)!.used, 512 + 256);
  assert.equal(v.memoryMiBUsed, 96, 'only the hypervisor process outside the pools');
  // 256 pages left: another tenant's 256-page guest needs 256 more for its base memory
  const b = request(vnfd({ resources: { vcpus: 1, memoryMiB: 512, hugepages: { sizeKiB: 2048, count: 256 } } }), { tenantId: 'b' });
  assert.deepEqual(runFilters(DEFAULT_FILTERS, b, v), { filter: 'hugepages', reason: "no NUMA node with 512 free 2048 KiB hugepages (incl. 256 for the VM's base memory)" });
  // tenant a's next replica joins its VM: its own 256 pages fit exactly
  book(v, request(vnfd({ resources: { vcpus: 1, memoryMiB: 512, hugepages: { sizeKiB: 2048, count: 256 } } }), { tenantId: 'a', replica: 1 }), 'a-1');
  assert.equal(v.numa[0]!.hugepages.get(2048)!.used, 1024);
  removeReservation(v, 'a-1');
  removeReservation(v, 'a-0');
  assert.equal(v.numa[0]!.hugepages.get(2048)!.used, 0);
  assert.equal(v.memoryMiBUsed, 0);
});

test('a node that reports no overhead books only the replicas (older node agents)', () => {
  const v = nodeView({ numaNodes: 1, memoryMiBPerNuma: 4096, hugepages2MPerNuma: 0 });
  const a0 = book(v, request(vnfd({ resources: { vcpus: 1, memoryMiB: 4096 } }), { tenantId: 'a' }), 'a-0');
  assert.equal(a0.vmOverhead, undefined);
  assert.equal(v.memoryMiBUsed, 4096);
});
