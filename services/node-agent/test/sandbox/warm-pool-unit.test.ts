/**
 * Warm pool rules without QEMU: which allocations may claim a flavour, and the room a cold boot takes back from idle
 * pool VMs (a fake host: records in memory, teardown removes them).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { silentLogger } from '@edgenfv/telemetry';
import type { Allocation } from '@edgenfv/contracts';
import { WarmPool, claimMismatch, flavourKey, type WarmPoolHost } from '../../src/sandbox/warm-pool.js';
import type { SandboxRecord } from '../../src/sandbox/records.js';

const alloc = (over: Partial<Allocation['resources']> = {}, interfaces: Allocation['interfaces'] = []): Allocation => ({
  allocId: 'a1', nodeId: 'n', epoch: 1, tenantId: 't1', vnfId: 'v1', replica: 0,
  resources: { vcpus: 1, memoryMiB: 512, ...over }, image: { ref: 'builtin:vrouter' }, interfaces, createdAt: '',
});
const flavour = { vcpus: 1, memoryMiB: 512, count: 2 };

test('claimMismatch: exactly the flavour, ordinary memory, its NUMA node, hot-pluggable NICs within the slots', () => {
  assert.equal(claimMismatch(alloc(), flavour, 4), undefined);
  assert.match(claimMismatch(alloc({ memoryMiB: 256 }), flavour, 4)!, /differ/);
  assert.match(claimMismatch(alloc({ vcpus: 2 }), flavour, 4)!, /differ/);
  assert.match(claimMismatch(alloc({ hugepages: { sizeKiB: 2048, count: 256 } }), flavour, 4)!, /hugepage/);
  assert.equal(claimMismatch(alloc({ numaNode: 1 }), { ...flavour, numaNode: 1 }, 4), undefined);
  assert.match(claimMismatch(alloc({ numaNode: 0 }), { ...flavour, numaNode: 1 }, 4)!, /NUMA node 0/);
  const tap = (name: string) => ({ name, type: 'tap' as const, mac: '02:00:00:00:00:01' });
  assert.equal(claimMismatch(alloc({}, [tap('a')]), flavour, 4), undefined);
  assert.match(claimMismatch(alloc({}, [{ name: 'm', type: 'macvtap', mac: '02:00:00:00:00:02', parent: 'eth0' }]), flavour, 4)!, /macvtap/);
  assert.match(claimMismatch(alloc({}, [tap('a'), tap('b')]), flavour, 1)!, /hotplug slots/);
  const vf = { name: 'vf', type: 'sriov' as const, mac: '02:00:00:00:00:03', sriov: { pfPciAddress: '0000:3b:00.0', vfPciAddress: '0000:3b:02.0', vfIndex: 0, physnet: 'p' } };
  // a VF is hot-plugged at claim time (staged vfio group, raised memlock) like a later replica's
  assert.equal(claimMismatch(alloc({}, [vf]), flavour, 4), undefined);
  // DPDK on the VF in the guest: vfio-pci there needs the vIOMMU only a boot gives, unless the operator allows no-IOMMU mode
  // (the scheduler writes the data plane's interfaces into the allocation: dataplaneInterfaces)
  const dpdk = { vcpus: 2, dataplane: { kind: 'dpdk' as const, interfaces: ['vf'] } };
  const f2 = { ...flavour, vcpus: 2 };
  assert.match(claimMismatch(alloc(dpdk, [vf]), f2, 4)!, /virtual IOMMU/);
  assert.equal(claimMismatch(alloc(dpdk, [vf]), f2, 4, true), undefined);
  // a virtio NIC the VNFD puts on vfio-pci: the same; on uio_pci_generic (the default) no IOMMU is needed
  const vhu = { name: 'dp0', type: 'vhostuser' as const, mac: '02:00:00:00:00:04', queues: 1 };
  assert.match(claimMismatch(alloc({ ...dpdk, dataplane: { kind: 'dpdk', driver: 'vfio-pci', interfaces: ['dp0'] } }, [vhu]), f2, 4)!, /virtual IOMMU/);
  assert.equal(claimMismatch(alloc({ ...dpdk, dataplane: { kind: 'dpdk', interfaces: ['dp0'] } }, [vhu]), f2, 4), undefined);
});

function fakePool(records: SandboxRecord[], cap: { memoryMiB: number; cpuCount: number; cpuAllocationRatio?: number }) {
  const capacity = { cpuAllocationRatio: 1, ...cap };
  const torn: string[] = [];
  const host = {
    vm: { alive: () => true, vmOf: () => ({ pid: 1 }), driver: { kind: 'qemu' }, allocUid: () => 1 },
    guest: {},
    list: () => records.filter((r) => !torn.includes(r.sandboxId)),
    put: () => undefined,
    teardown: async (r: SandboxRecord) => void torn.push(r.sandboxId),
  } as unknown as WarmPoolHost;
  const pool = new WarmPool(
    { flavours: [flavour], cpuBudgetPercent: 100, stateDir: '/nonexistent', bootTimeoutMs: 1000, logger: silentLogger(), capacity: async () => capacity, overhead: { guestBaseMiB: 512, hypervisorMiB: 128 } },
    host,
  );
  return { pool, torn };
}
const warmRec = (id: string): SandboxRecord => ({
  version: 1, sandboxId: id, tenantId: '', hypervisor: 'qemu', state: 'running', uid: 1, gid: 1, tenantDir: '/x', runDir: `/x/${id}`, netns: id,
  replicas: {}, warm: { flavour: flavourKey(flavour) }, createdAt: '', updatedAt: '',
});

test('makeRoom: a cold boot placed into the room of idle pool VMs tears down as many as it needs, no more', async () => {
  // 2 CPUs: two idle 1-vCPU pool VMs leave no vCPU for a 1-vCPU tenant VM: one goes
  const a = fakePool([warmRec('sb-warm-1'), warmRec('sb-warm-2')], { memoryMiB: 16_384, cpuCount: 2 });
  await a.pool.makeRoom(alloc({ memoryMiB: 256 }));
  assert.equal(a.torn.length, 1);
  assert.equal(a.pool.info()[0]!.ready, 1);
  // enough room: nothing goes
  const b = fakePool([warmRec('sb-warm-1'), warmRec('sb-warm-2')], { memoryMiB: 16_384, cpuCount: 8 });
  await b.pool.makeRoom(alloc({ memoryMiB: 256 }));
  assert.deepEqual(b.torn, []);
  // memory: each pool VM holds 512 + 640 MiB; a 2048 MiB tenant VM (+640) on a 3500 MiB node needs both gone
  const c = fakePool([warmRec('sb-warm-1'), warmRec('sb-warm-2')], { memoryMiB: 3500, cpuCount: 8 });
  await c.pool.makeRoom(alloc({ memoryMiB: 2048 }));
  assert.equal(c.torn.length, 2);
  // the node's cpuAllocationRatio counts as the scheduler counts it: 2 CPUs x 2 hold both pool VMs and the tenant's
  const d = fakePool([warmRec('sb-warm-1'), warmRec('sb-warm-2')], { memoryMiB: 16_384, cpuCount: 2, cpuAllocationRatio: 2 });
  await d.pool.makeRoom(alloc({ memoryMiB: 256 }));
  assert.deepEqual(d.torn, []);
  // ... and 3 more vCPUs (5 on room for 4) take one pool VM back
  await d.pool.makeRoom(alloc({ vcpus: 3, memoryMiB: 256 }));
  assert.equal(d.torn.length, 1);
  // pinned CPUs never overcommit: a VM pinning 1 of the 2 CPUs leaves room for 2 shared vCPUs (both pool VMs stay),
  // one pinning both leaves none (both go)
  const e = fakePool([warmRec('sb-warm-1'), warmRec('sb-warm-2')], { memoryMiB: 16_384, cpuCount: 2, cpuAllocationRatio: 2 });
  await e.pool.makeRoom(alloc({ vcpus: 1, memoryMiB: 256, cpus: [1] }));
  assert.deepEqual(e.torn, []);
  const f = fakePool([warmRec('sb-warm-1'), warmRec('sb-warm-2')], { memoryMiB: 16_384, cpuCount: 2, cpuAllocationRatio: 2 });
  await f.pool.makeRoom(alloc({ vcpus: 2, memoryMiB: 256, cpus: [0, 1] }));
  assert.equal(f.torn.length, 2);
});
