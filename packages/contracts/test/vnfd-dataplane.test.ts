/** `resources.dataplane: {kind: dpdk}` in the VNFD: accepted when it fits, refused naming the field when not. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkVnfd, dataplaneInterfaces, guestDataplaneUsesVfio, guestDpdkDriver, type Vnfd } from '../src/index.js';

const base = (): Vnfd => ({
  name: 'tp',
  replicas: 1,
  resources: { vcpus: 2, memoryMiB: 768, dataplane: { kind: 'dpdk', hugepagesMiB: 128 } },
  image: { ref: 'builtin:testpmd' },
  interfaces: [
    { name: 'mgmt', type: 'tap', network: 'mgmt' },
    { name: 'dp0', type: 'vhostuser', network: 'provider' },
    { name: 'dp1', type: 'vhostuser', network: 'provider' },
  ],
});

test('a DPDK data plane that fits is accepted; its interfaces default to the vhostuser and sriov ones', () => {
  assert.deepEqual(checkVnfd(base(), 'descriptor'), []);
  assert.deepEqual(dataplaneInterfaces(base()), ['dp0', 'dp1']);
  const named = base();
  named.resources.dataplane = { kind: 'dpdk', interfaces: ['mgmt'], driver: 'vfio-pci' };
  assert.deepEqual(checkVnfd(named, 'descriptor'), []);
  assert.deepEqual(dataplaneInterfaces(named), ['mgmt']);
  const vf = base();
  vf.interfaces!.push({ name: 'vf0', type: 'sriov', physnet: 'physnet1', network: 'radio' });
  assert.deepEqual(dataplaneInterfaces(vf), ['dp0', 'dp1', 'vf0']);
});

test('a DPDK data plane that does not fit is refused naming the field', () => {
  const cases: Array<[string, (d: Vnfd) => void, string, RegExp]> = [
    ['one vCPU', (d) => (d.resources.vcpus = 1), 'descriptor.resources.vcpus', /at least 2 vCPUs/],
    ['hugepages beyond memory', (d) => (d.resources.dataplane!.hugepagesMiB = 512), 'descriptor.resources.dataplane.hugepagesMiB', /512 MiB of guest hugepages plus 384 MiB/],
    ['unknown interface', (d) => (d.resources.dataplane!.interfaces = ['dp0', 'eth7']), 'descriptor.resources.dataplane.interfaces[1]', /names no interface of this VNF \("eth7"\)/],
    ['nothing to hand to DPDK', (d) => (d.interfaces = [{ name: 'mgmt', type: 'tap', network: 'mgmt' }]), 'descriptor.resources.dataplane.interfaces', /no vhostuser or sriov interface/],
    ['another kind', (d) => ((d.resources.dataplane as { kind: string }).kind = 'vpp'), 'descriptor.resources.dataplane.kind', /./],
  ];
  for (const [name, change, field, re] of cases) {
    const d = base();
    change(d);
    const issues = checkVnfd(d, 'descriptor');
    const hit = issues.find((i) => i.field === field);
    assert.ok(hit, `${name}: ${JSON.stringify(issues)}`);
    assert.match(hit.message, re, name);
  }
});

test('which data planes put a NIC on vfio-pci in the guest (the tenant VM then needs a virtual IOMMU)', () => {
  assert.equal(guestDataplaneUsesVfio(base()), false, 'virtio NICs default to uio_pci_generic');
  assert.equal(guestDpdkDriver(base(), 'dp0'), 'uio_pci_generic');
  const asks = base();
  asks.resources.dataplane = { kind: 'dpdk', driver: 'vfio-pci' };
  assert.equal(guestDataplaneUsesVfio(asks), true);
  const vf = base();
  vf.interfaces!.push({ name: 'vf0', type: 'sriov', physnet: 'physnet1', network: 'radio' });
  assert.equal(guestDpdkDriver(vf, 'vf0'), 'vfio-pci', 'a VF has no INTx for uio');
  assert.equal(guestDataplaneUsesVfio(vf), true);
  const vfOutside = base();
  vfOutside.interfaces!.push({ name: 'vf0', type: 'sriov', physnet: 'physnet1', network: 'radio' });
  vfOutside.resources.dataplane = { kind: 'dpdk', interfaces: ['dp0'] };
  assert.equal(guestDataplaneUsesVfio(vfOutside), false, 'a VF the data plane does not take stays with the guest kernel');
  const none = base();
  delete none.resources.dataplane;
  assert.equal(guestDataplaneUsesVfio(none), false);
});
