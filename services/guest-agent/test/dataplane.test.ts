/**
 * PrepareDataplane's checks against a fake sysfs tree: every bad input is refused with an error naming its field
 * and nothing is changed (no driver_override written, no unbind, no hugepages, no files). Binding itself (the
 * kernel's side effects: uio_pci_generic taking a virtio NIC, /dev/uioN appearing) is tested in a real guest:
 * services/node-agent/test/guest/dpdk-vm.test.ts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '@edgenfv/contracts/internal/errors';
import { DataplaneState, prepareDataplane, releaseDataplane, type DataplaneDeps } from '../src/dataplane.js';

// A fake sysfs: two PCI functions bound to virtio-pci, the vfio module parameter, hugepage counters.
let root: string;
let deps: DataplaneDeps;
const calls: string[] = [];

before(() => {
  root = mkdtempSync(join(tmpdir(), 'ga-dp-'));
  const sys = join(root, 'sys');
  mkdirSync(join(sys, 'bus/pci/drivers/virtio-pci'), { recursive: true });
  for (const a of ['0000:00:04.0', '0000:00:05.0']) {
    mkdirSync(join(sys, 'devices/pci0000:00', a), { recursive: true });
    writeFileSync(join(sys, 'devices/pci0000:00', a, 'driver_override'), '\n');
    mkdirSync(join(sys, 'bus/pci/devices'), { recursive: true });
    symlinkSync(`../../../devices/pci0000:00/${a}`, join(sys, 'bus/pci/devices', a));
    symlinkSync('../../../bus/pci/drivers/virtio-pci', join(sys, 'devices/pci0000:00', a, 'driver'));
  }
  writeFileSync(join(sys, 'bus/pci/drivers/virtio-pci/unbind'), '');
  writeFileSync(join(sys, 'bus/pci/drivers_probe'), '');
  mkdirSync(join(sys, 'kernel/mm/hugepages/hugepages-2048kB'), { recursive: true });
  writeFileSync(join(sys, 'kernel/mm/hugepages/hugepages-2048kB/nr_hugepages'), '0');
  deps = {
    sysRoot: sys,
    fileRoot: join(root, 'files'),
    hugepageMount: join(root, 'hugepages'),
    modprobe: async (m) => void calls.push(`modprobe ${m}`),
    mountHugetlbfs: async (p, kib) => void calls.push(`mount ${p} ${kib}`),
    memAvailableKib: async () => 300 * 1024, // the guest has 300 MiB available
    state: new DataplaneState(),
  };
});
after(() => rmSync(root, { recursive: true, force: true }));

/** Everything the fake tree holds that a preparation would change. */
function snapshot(): string {
  const sys = deps.sysRoot;
  return JSON.stringify([
    ...['0000:00:04.0', '0000:00:05.0'].map((a) => readFileSync(join(sys, 'bus/pci/devices', a, 'driver_override'), 'utf8')),
    readFileSync(join(sys, 'bus/pci/drivers/virtio-pci/unbind'), 'utf8'),
    readFileSync(join(sys, 'bus/pci/drivers_probe'), 'utf8'),
    readFileSync(join(sys, 'kernel/mm/hugepages/hugepages-2048kB/nr_hugepages'), 'utf8'),
    existsSync(deps.fileRoot),
    calls,
  ]);
}

async function refused(req: Parameters<typeof prepareDataplane>[1], field: string, message: RegExp): Promise<void> {
  const before = snapshot();
  await assert.rejects(prepareDataplane(deps, req), (e: unknown) => {
    assert.ok(e instanceof InvalidArgumentError, String(e));
    const issue = e.issues.find((i) => i.field === field);
    assert.ok(issue, `no issue for ${field}: ${e.message}`);
    assert.match(issue.message, message);
    return true;
  });
  assert.equal(snapshot(), before, 'nothing changed');
  assert.deepEqual(deps.state!.exposure(), { devices: [] });
}

test('a bad PCI address is refused naming the field, nothing changed', async () => {
  await refused({ nics: [{ pciAddress: '00:04', driver: 'uio_pci_generic' }] }, 'nics[0].pciAddress', /not a PCI address: "00:04"/);
});

test('an unknown device is refused naming the field, nothing changed (the known one is not bound either)', async () => {
  await refused(
    { nics: [{ pciAddress: '0000:00:04.0', driver: 'uio_pci_generic' }, { pciAddress: '0000:00:09.0', driver: 'uio_pci_generic' }] },
    'nics[1].pciAddress',
    /no PCI device 0000:00:09.0 in this guest/,
  );
});

test('hugepages beyond the guest memory are refused naming the field, nothing changed', async () => {
  await refused(
    { nics: [{ pciAddress: '0000:00:04.0', driver: 'uio_pci_generic' }], hugepageSizeKib: 2048, hugepages: 200 },
    'hugepages',
    /200 x 2048 KiB \(400 MiB\) is more than this guest can reserve \(300 MiB available\)/,
  );
});

test('other bad input: unknown driver, the same NIC twice, a size the kernel lacks, files outside the allowed folders', async () => {
  await refused({ nics: [{ pciAddress: '0000:00:04.0', driver: 'igb_uio' }] }, 'nics[0].driver', /vfio-pci, uio_pci_generic/);
  await refused(
    { nics: [{ pciAddress: '0000:00:04.0', driver: 'uio_pci_generic' }, { pciAddress: '00:04.0', driver: 'uio_pci_generic' }] },
    'nics[1].pciAddress',
    /0000:00:04.0 is already nics\[0\]/,
  );
  await refused({ nics: [], hugepageSizeKib: 1048576, hugepages: 1 }, 'hugepageSizeKib', /no 1048576 KiB hugepages/);
  await refused({ nics: [], hugepages: 8 }, 'hugepageSizeKib', /needed when hugepages > 0/);
  await refused({ nics: [], files: [{ path: '/etc/edgenfv/../shadow', content: 'x' }] }, 'files[0].path', /normalized path under/);
});

test('vfio-pci on a NIC without an IOMMU group (no vIOMMU) is refused unless the operator allows no-IOMMU mode; nothing bound', async () => {
  calls.length = 0;
  const before = snapshot();
  await assert.rejects(prepareDataplane(deps, { nics: [{ pciAddress: '0000:00:04.0', driver: 'vfio-pci' }] }), (e: Error & { field?: string }) => {
    assert.match(e.message, /0000:00:04\.0: no IOMMU in this guest .*guest\.vfioNoIommu/);
    return true;
  });
  assert.equal(snapshot(), before, 'nothing ran, not even modprobe');
  // allowed by the operator, but the kernel has no no-IOMMU mode (the cloud kernel): refused with that reason
  await assert.rejects(prepareDataplane(deps, { nics: [{ pciAddress: '0000:00:04.0', driver: 'vfio-pci' }], allowNoIommu: true }), /CONFIG_VFIO_NOIOMMU.*uio_pci_generic/);
  calls.length = 0; // the modprobe vfio-pci attempt is the only thing that ran
  assert.equal(snapshot(), before);
  const param = join(deps.sysRoot, 'module/vfio/parameters/enable_unsafe_noiommu_mode');
  assert.ok(!existsSync(param), 'no-IOMMU mode not switched on');
});

test('vfio-pci on a NIC in an IOMMU group (the VM\'s vIOMMU) needs no permission: vfio_iommu_type1 loaded, no-IOMMU mode left off', async () => {
  const sys = deps.sysRoot;
  const group = join(sys, 'kernel/iommu_groups/3');
  mkdirSync(group, { recursive: true });
  symlinkSync('../../../kernel/iommu_groups/3', join(sys, 'devices/pci0000:00/0000:00:05.0/iommu_group'));
  mkdirSync(join(sys, 'module/vfio/parameters'), { recursive: true });
  const param = join(sys, 'module/vfio/parameters/enable_unsafe_noiommu_mode');
  writeFileSync(param, '0');
  calls.length = 0;
  try {
    // the fake kernel does not move the NIC to vfio-pci: the preparation stops there, after the checks passed
    await assert.rejects(prepareDataplane(deps, { nics: [{ pciAddress: '0000:00:05.0', driver: 'vfio-pci' }] }), /vfio-pci did not take the device/);
    assert.deepEqual(calls, ['modprobe vfio-pci', 'modprobe vfio_iommu_type1']);
    assert.equal(readFileSync(param, 'utf8'), '0', 'no-IOMMU mode stays off behind an IOMMU');
  } finally {
    await releaseDataplane(deps, deps.state!);
    rmSync(join(sys, 'devices/pci0000:00/0000:00:05.0/iommu_group'));
    rmSync(join(sys, 'module'), { recursive: true, force: true });
    writeFileSync(join(sys, 'devices/pci0000:00/0000:00:05.0/driver_override'), '\n');
    for (const f of ['bus/pci/drivers/virtio-pci/unbind', 'bus/pci/drivers_probe']) writeFileSync(join(sys, f), '');
    calls.length = 0;
  }
});

test('hugepages only: reserved, mounted, files written; release restores the count and removes the files', async () => {
  calls.length = 0;
  const res = await prepareDataplane(deps, { nics: [], hugepageSizeKib: 2048, hugepages: 64, files: [{ path: '/etc/edgenfv/eal.args', content: '-l 0-1' }] });
  assert.equal(res.hugepageMount, deps.hugepageMount);
  const nr = join(deps.sysRoot, 'kernel/mm/hugepages/hugepages-2048kB/nr_hugepages');
  assert.equal(readFileSync(nr, 'utf8'), '64');
  assert.deepEqual(deps.state!.exposure(), { devices: [], hugepageMount: deps.hugepageMount });
  mkdirSync(deps.hugepageMount, { recursive: true });
  writeFileSync(join(deps.hugepageMount, 'rtemap_0'), 'left behind by a data plane');
  await releaseDataplane(deps, deps.state!);
  assert.equal(readFileSync(nr, 'utf8'), '0');
  assert.ok(!existsSync(join(deps.fileRoot, 'etc/edgenfv/eal.args')));
  assert.ok(!existsSync(join(deps.hugepageMount, 'rtemap_0')));
  assert.deepEqual(deps.state!.exposure(), { devices: [] });
});

test('the state survives an agent restart: a new agent process releases what the old one prepared', async () => {
  const file = join(root, 'state', 'dataplane.json');
  const first = await DataplaneState.load(file);
  await prepareDataplane({ ...deps, state: first }, { nics: [], hugepageSizeKib: 2048, hugepages: 16 });
  const nr = join(deps.sysRoot, 'kernel/mm/hugepages/hugepages-2048kB/nr_hugepages');
  assert.equal(readFileSync(nr, 'utf8'), '16');
  const second = await DataplaneState.load(file); // what a restarted agent reads
  assert.deepEqual(second.exposure(), { devices: [], hugepageMount: deps.hugepageMount });
  await releaseDataplane(deps, second);
  assert.equal(readFileSync(nr, 'utf8'), '0');
  assert.deepEqual((await DataplaneState.load(file)).exposure(), { devices: [] });
});
