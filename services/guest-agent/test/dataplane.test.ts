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

test('vfio-pci without the no-IOMMU parameter (the cloud kernel) is refused with a clear reason, nothing bound', async () => {
  const before = snapshot();
  await assert.rejects(prepareDataplane(deps, { nics: [{ pciAddress: '0000:00:04.0', driver: 'vfio-pci' }] }), /CONFIG_VFIO_NOIOMMU.*uio_pci_generic/);
  calls.length = 0; // the modprobe vfio-pci attempt is the only thing that ran
  assert.equal(snapshot(), before.replace('["modprobe vfio-pci"]', '[]'));
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
