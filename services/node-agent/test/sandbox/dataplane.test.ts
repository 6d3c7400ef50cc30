/**
 * The node agent's side of a DPDK VNF in the guest (sandbox/dataplane.ts): the PrepareDataplane request and the EAL
 * arguments dpdk-config renders from the replica's allocation; refusals before the guest is asked anything. The real
 * guest runs it in test/guest/dpdk-vm.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PrepareDataplaneRequest } from '@edgenfv/contracts';
import { needsViommu, prepareGuestDataplane } from '../../src/sandbox/dataplane.js';
import type { GuestSession } from '../../src/sandbox/ports.js';
import type { ReplicaRecord } from '../../src/sandbox/records.js';

function session(asked: PrepareDataplaneRequest[]): GuestSession {
  return { prepareDataplane: async (r: PrepareDataplaneRequest) => void asked.push(r) } as unknown as GuestSession;
}
function replica(vcpus: number, pci: Record<string, string>): ReplicaRecord {
  return {
    containerId: 'vnf1-0',
    guestPciAddresses: pci,
    attachments: {},
    alloc: { replica: 0, resources: { vcpus, memoryMiB: 768, dataplane: { kind: 'dpdk', hugepagesMiB: 64, interfaces: ['dp0', 'dp1'] } }, interfaces: [{ name: 'dp0', type: 'vhostuser' }, { name: 'dp1', type: 'vhostuser' }] },
  } as unknown as ReplicaRecord;
}

test('the guest is asked to bind both NICs to uio_pci_generic with 32 x 2 MiB pages; EAL args for 3 vCPUs', async () => {
  const asked: PrepareDataplaneRequest[] = [];
  const eal = await prepareGuestDataplane(session(asked), replica(3, { dp0: '0000:02:00.0', dp1: '0000:03:00.0' }));
  assert.deepEqual(asked, [{ nics: [{ pciAddress: '0000:02:00.0', driver: 'uio_pci_generic' }, { pciAddress: '0000:03:00.0', driver: 'uio_pci_generic' }], hugepageSizeKib: 2048, hugepages: 32 }]);
  assert.deepEqual(eal, ['-l', '0-2', '--main-lcore', '0', '--file-prefix', 'vnf1-0', '--socket-mem', '64', '--huge-dir', '/dev/hugepages', '-a', '0000:02:00.0', '-a', '0000:03:00.0']);
});

test('refused before the guest is asked: one vCPU, an interface the guest did not report', async () => {
  const asked: PrepareDataplaneRequest[] = [];
  await assert.rejects(prepareGuestDataplane(session(asked), replica(1, { dp0: '0000:02:00.0', dp1: '0000:03:00.0' })), /resources\.vcpus: a DPDK data plane needs at least 2 vCPUs/);
  await assert.rejects(prepareGuestDataplane(session(asked), replica(2, { dp0: '0000:02:00.0' })), /did not report a PCI address for interface dp1/);
  assert.deepEqual(asked, []);
});

test('a VF in the data plane is vfio-pci in the guest (no INTx for uio), the virtio NICs what the VNFD asks; the VM gets a vIOMMU unless the operator allows no-IOMMU mode', async () => {
  const alloc = {
    replica: 0,
    resources: { vcpus: 2, memoryMiB: 768, dataplane: { kind: 'dpdk' as const, hugepagesMiB: 64, interfaces: ['dp0', 'vf0'] } },
    interfaces: [{ name: 'dp0', type: 'vhostuser' }, { name: 'vf0', type: 'sriov' }],
  };
  const r = { containerId: 'vnf1-0', guestPciAddresses: { dp0: '0000:02:00.0', vf0: '0000:03:00.0' }, attachments: {}, alloc } as unknown as ReplicaRecord;
  const asked: PrepareDataplaneRequest[] = [];
  await prepareGuestDataplane(session(asked), r);
  assert.deepEqual(asked[0]!.nics, [{ pciAddress: '0000:02:00.0', driver: 'uio_pci_generic' }, { pciAddress: '0000:03:00.0', driver: 'vfio-pci' }]);
  assert.equal(asked[0]!.allowNoIommu, undefined, 'no-IOMMU mode is not asked for unless the operator allows it');
  await prepareGuestDataplane(session(asked), r, { allowNoIommu: true });
  assert.equal(asked[1]!.allowNoIommu, true);
  assert.equal(needsViommu(alloc as never, false), true, 'a vfio-pci NIC: the VM gets a vIOMMU');
  assert.equal(needsViommu(alloc as never, true), false, 'the operator chose no-IOMMU mode instead');
  const virtioOnly = { ...alloc, resources: { ...alloc.resources, dataplane: { ...alloc.resources.dataplane, interfaces: ['dp0'] } } };
  assert.equal(needsViommu(virtioOnly as never, false), false, 'uio_pci_generic needs none');
  const asksVfio = { ...virtioOnly, resources: { ...virtioOnly.resources, dataplane: { ...virtioOnly.resources.dataplane, driver: 'vfio-pci' as const } } };
  assert.equal(needsViommu(asksVfio as never, false), true, 'the VNFD asks vfio-pci for its virtio NICs');
  assert.equal(needsViommu({ resources: { vcpus: 1, memoryMiB: 128 }, interfaces: [{ name: 'vf0', type: 'sriov' }] } as never, false), false, 'a VF without a data plane: the guest kernel drives it');
});

test('vfio-pci on a vhost-user NIC behind the vIOMMU: with the node\'s OVS-DPDK (vhost IOTLB) asked for; with a switch that cannot translate refused before the guest is asked, naming resources.dataplane.driver', async () => {
  const vfio = (dataplane: 'ovs-dpdk' | 'vpp'): ReplicaRecord => {
    const r = replica(2, { dp0: '0000:02:00.0', dp1: '0000:03:00.0' });
    r.alloc.resources.dataplane = { ...r.alloc.resources.dataplane!, driver: 'vfio-pci' };
    r.attachments = Object.fromEntries(['dp0', 'dp1'].map((n) => [n, { kind: 'vhostuser', dataplane, socketPath: `/s/${n}`, vmMode: 'server', queues: 1, portName: n } as never]));
    return r;
  };
  const asked: PrepareDataplaneRequest[] = [];
  await prepareGuestDataplane(session(asked), vfio('ovs-dpdk'), { viommu: true });
  assert.deepEqual(asked[0]!.nics.map((n) => n.driver), ['vfio-pci', 'vfio-pci']);
  await assert.rejects(prepareGuestDataplane(session(asked), vfio('vpp'), { viommu: true }), (err: Error & { issues?: { field: string; message: string }[] }) => {
    assert.equal(err.issues?.[0]?.field, 'resources.dataplane.driver');
    assert.match(err.issues![0]!.message, /interface dp0: .*its vpp switch does not: use uio_pci_generic/);
    return true;
  });
  assert.equal(asked.length, 1, 'the guest was not asked');
  // no vIOMMU (the operator's no-IOMMU mode): DPDK works on guest-physical addresses, any switch will do
  await prepareGuestDataplane(session(asked), vfio('vpp'), { allowNoIommu: true });
  assert.equal(asked.length, 2);
});
