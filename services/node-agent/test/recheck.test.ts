import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Allocation, NodeInventory } from '@edgenfv/contracts';
import { recheck } from '../src/recheck.js';
import { makeAlloc } from './helpers/alloc.js';

const inv: NodeInventory = {
  nodeId: 'n1',
  hostname: 'h',
  labels: {},
  cpuCount: 8,
  isolatedCpus: [2, 3, 6, 7],
  memoryMiB: 16384,
  numaNodes: [
    { id: 0, cpus: [0, 1, 2, 3], memoryMiB: 8192, hugepages: [{ sizeKiB: 2048, total: 512, free: 512 }] },
    { id: 1, cpus: [4, 5, 6, 7], memoryMiB: 8192, hugepages: [{ sizeKiB: 2048, total: 100, free: 100 }] },
  ],
  sriovPfs: [{ pciAddress: '0000:3b:00.0', numaNode: 1, totalVfs: 4, numVfs: 2, physnet: 'p1', vfs: [{ index: 0, pciAddress: '0000:3b:10.0' }, { index: 1, pciAddress: '0000:3b:10.2' }] }],
  dataplanes: [],
  hypervisors: [],
  kvm: false,
  agentVersion: '0',
};
const vf = (pci: string) => ({ name: 'up', type: 'sriov' as const, mac: '02:00:00:00:00:01', sriov: { pfPciAddress: '0000:3b:00.0', vfPciAddress: pci, vfIndex: 0, physnet: 'p1' } });
const A = (id: string, res: Partial<Allocation['resources']>, ifs: Allocation['interfaces'] = []) =>
  makeAlloc({ allocId: id, tenantId: 't', resources: { vcpus: 1, memoryMiB: 256, ...res } }, ifs);

test('node re-check of allocations (table)', () => {
  const cases: { name: string; alloc: Allocation; held: Allocation[]; reason?: RegExp }[] = [
    { name: 'plain fits', alloc: A('a', {}), held: [] },
    { name: 'pinned CPUs on their node', alloc: A('a', { cpus: [6, 7], numaNode: 1 }), held: [] },
    { name: 'CPU missing', alloc: A('a', { cpus: [9] }), held: [], reason: /CPUs 9 do not exist/ },
    { name: 'CPU pinned by another', alloc: A('a', { cpus: [2] }), held: [A('b', { cpus: [2, 3] })], reason: /pinned by another/ },
    { name: 'CPU on the wrong NUMA node', alloc: A('a', { cpus: [2], numaNode: 1 }), held: [], reason: /not on NUMA node 1/ },
    { name: 'no such NUMA node', alloc: A('a', { numaNode: 4 }), held: [], reason: /NUMA node 4/ },
    { name: 'VF free', alloc: A('a', {}, [vf('0000:3b:10.2')]), held: [A('b', {}, [vf('0000:3b:10.0')])] },
    { name: 'VF held', alloc: A('a', {}, [vf('0000:3b:10.0')]), held: [A('b', {}, [vf('0000:3b:10.0')])], reason: /held by another/ },
    { name: 'VF unknown', alloc: A('a', {}, [vf('0000:3b:11.0')]), held: [], reason: /do not exist/ },
    { name: 'hugepages fit on node 1', alloc: A('a', { numaNode: 1, hugepages: { sizeKiB: 2048, count: 60 } }), held: [A('b', { numaNode: 1, hugepages: { sizeKiB: 2048, count: 40 } })] },
    { name: 'hugepages short on node 1', alloc: A('a', { numaNode: 1, hugepages: { sizeKiB: 2048, count: 61 } }), held: [A('b', { numaNode: 1, hugepages: { sizeKiB: 2048, count: 40 } })], reason: /61 hugepages .* 60 free on NUMA node 1/ },
    { name: 'memory exhausted', alloc: A('a', { memoryMiB: 9000 }), held: [A('b', { memoryMiB: 8000 })], reason: /memory/ },
    { name: 'itself is not "another"', alloc: A('a', { cpus: [2] }), held: [A('a', { cpus: [2] })] },
  ];
  for (const c of cases) {
    const v = recheck(c.alloc, inv, c.held);
    if (c.reason) {
      assert.equal(v.ok, false, c.name);
      assert.match((v as { reason: string }).reason, c.reason, c.name);
    } else assert.deepEqual(v, { ok: true }, c.name);
  }
});

test('node re-check counts each tenant VM overhead once, and the base memory pages a hugepage-backed VM holds', () => {
  const withOverhead: NodeInventory = { ...inv, vmOverhead: { guestBaseMiB: 512, hypervisorMiB: 128 } };
  const T = (id: string, tenantId: string, res: Partial<Allocation['resources']>) =>
    makeAlloc({ allocId: id, tenantId, resources: { vcpus: 1, memoryMiB: 256, ...res } }, []);
  // 16384 MiB: two tenants' VMs (2 x 640) + 7000 + 8000 = 16280 fits; a third tenant's VM does not
  assert.deepEqual(recheck(T('a', 'ta', { memoryMiB: 7000 }), withOverhead, [T('b', 'tb', { memoryMiB: 8000 })]), { ok: true });
  const v = recheck(T('c', 'tc', { memoryMiB: 100 }), withOverhead, [T('a', 'ta', { memoryMiB: 7000 }), T('b', 'tb', { memoryMiB: 8000 })]);
  assert.equal(v.ok, false);
  assert.match((v as { reason: string }).reason, /incl\. 1920 MiB for 3 VMs' overhead/);
  // the same tenant's second replica joins its VM: no second overhead
  assert.deepEqual(recheck(T('c', 'ta', { memoryMiB: 100 }), withOverhead, [T('a', 'ta', { memoryMiB: 7000 }), T('b', 'tb', { memoryMiB: 8000 })]), { ok: true });
  // 100 pages on node 1: 40 held + the other VM's 30 base pages leave 30
  const hp = (id: string, tenantId: string, count: number, base?: number) =>
    T(id, tenantId, { numaNode: 1, hugepages: { sizeKiB: 2048, count }, ...(base ? { vmOverhead: { memoryMiB: 128, hugepages: { sizeKiB: 2048, count: base, numaNode: 1 } } } : {}) });
  assert.deepEqual(recheck(hp('a', 'ta', 30), withOverhead, [hp('b', 'tb', 40, 30)]), { ok: true });
  const short = recheck(hp('a', 'ta', 20, 11), withOverhead, [hp('b', 'tb', 40, 30)]);
  assert.match((short as { reason: string }).reason, /31 hugepages .* 30 free on NUMA node 1/);
});
