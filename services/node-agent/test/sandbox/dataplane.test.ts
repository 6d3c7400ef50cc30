/**
 * The node agent's side of a DPDK VNF in the guest (sandbox/dataplane.ts): the PrepareDataplane request and the EAL
 * arguments dpdk-config renders from the replica's allocation; refusals before the guest is asked anything. The real
 * guest runs it in test/guest/dpdk-vm.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PrepareDataplaneRequest } from '@edgenfv/contracts';
import { prepareGuestDataplane } from '../../src/sandbox/dataplane.js';
import type { GuestSession } from '../../src/sandbox/ports.js';
import type { ReplicaRecord } from '../../src/sandbox/records.js';

function session(asked: PrepareDataplaneRequest[]): GuestSession {
  return { prepareDataplane: async (r: PrepareDataplaneRequest) => void asked.push(r) } as unknown as GuestSession;
}
function replica(vcpus: number, pci: Record<string, string>): ReplicaRecord {
  return {
    containerId: 'vnf1-0',
    guestPciAddresses: pci,
    alloc: { replica: 0, resources: { vcpus, memoryMiB: 768, dataplane: { kind: 'dpdk', hugepagesMiB: 64, interfaces: ['dp0', 'dp1'] } } },
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
