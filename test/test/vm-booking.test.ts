/**
 * What a VM books (issue 15 item 3), through the message API: the real scheduler process and nats-server, and a
 * simulated node (speaks the node protocol, boots nothing) that reports a per-VM overhead. Each tenant's first
 * replica on the node books its VM's overhead, later replicas join the VM; a node filled exactly to its capacity
 * takes nothing more, and the reason names the overhead. (The real QEMU's memory and CPU pinning against the
 * ledger: e2e-booking.test.ts, one real VM.)
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, vnfd, type Cluster } from '../src/harness.js';
import { SimNode } from '../src/sim-node.js';
import { inventory, waitNodeKnown } from '../src/state-fixtures.js';

let c: Cluster;
let node: SimNode;
const OVERHEAD = { guestBaseMiB: 512, hypervisorMiB: 128 }; // 640 MiB per tenant VM

before(async () => {
  c = await startCluster();
  const inv = inventory('book-a', {
    cpuCount: 6,
    memoryMiB: 8192,
    numaNodes: [{ id: 0, cpus: [0, 1, 2, 3, 4, 5], memoryMiB: 8192, hugepages: [] }],
    vmOverhead: OVERHEAD,
  });
  node = new SimNode(c.nc, inv, 500);
  await node.start();
  await waitNodeKnown(c.nc, 'book-a');
  for (const id of ['t1', 't2', 't3']) await c.api.ok('nfv.v1.admin.tenants.create', { id });
}, { timeout: 90_000 });

after(async () => {
  node?.stop();
  await c?.close();
});

async function instantiate(t: string, d: Record<string, unknown>): Promise<any> {
  const inst = await c.api.tenant(t, 'vnfs.instantiate', { descriptor: d });
  assert.equal(inst.ok, true, JSON.stringify(inst));
  return c.api.waitOp(t, inst.result.opOccId);
}

const dedicated = (memoryMiB: number) => ({ vcpus: 1, memoryMiB, cpuPolicy: 'dedicated' });

test('a node filled exactly to its capacity, overhead included, takes no further replica and says why', { timeout: 120_000 }, async () => {
  // t1: one VM, two replicas: 2 x 1728 + 640 = 4096 MiB; t2: 2816 + 640 = 3456 MiB; 640 MiB left
  assert.equal((await instantiate('t1', vnfd('a', { replicas: 2, resources: dedicated(1728) }))).operationState, 'COMPLETED');
  assert.equal((await instantiate('t2', vnfd('b', { resources: dedicated(2816) }))).operationState, 'COMPLETED');
  let n = (await c.api.admin('nodes.get', { id: 'book-a' })).result;
  assert.equal(n.free.memoryMiB, 640, JSON.stringify(n.free));
  const payers = n.reservations.filter((r: any) => r.vmOverhead);
  assert.deepEqual(payers.map((r: any) => [r.tenantId, r.vmOverhead]), [['t1', { memoryMiB: 640 }], ['t2', { memoryMiB: 640 }]], 'one booking per tenant VM');

  // a third tenant's 128 MiB would have fit the replicas' sum; its VM's overhead does not
  const t3 = await instantiate('t3', vnfd('c', { resources: { vcpus: 1, memoryMiB: 128 } }));
  assert.equal(t3.operationState, 'FAILED');
  assert.equal(t3.error.code, 'UNSCHEDULABLE');
  assert.match(t3.error.message, /less than 768 MiB of free memory \(incl\. 640 MiB of VM overhead\)/);

  // t1's next replica joins its VM: 640 MiB fits exactly, and the node is full
  assert.equal((await instantiate('t1', vnfd('d', { resources: { vcpus: 1, memoryMiB: 640 } }))).operationState, 'COMPLETED');
  n = (await c.api.admin('nodes.get', { id: 'book-a' })).result;
  assert.equal(n.free.memoryMiB, 0);
  assert.deepEqual(n.free.dedicatedCpus, { '0': 3 });
  const more = await instantiate('t1', vnfd('e', { resources: { vcpus: 1, memoryMiB: 64 } }));
  assert.equal(more.operationState, 'FAILED');
  assert.equal(more.error.code, 'UNSCHEDULABLE');
  assert.match(more.error.message, /less than 64 MiB of free memory/);
  assert.deepEqual(node.conflicts, []);
});
