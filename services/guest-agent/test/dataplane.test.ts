import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '@edgenfv/contracts/internal/errors';
import { prepareDataplane, type DataplaneDeps } from '../src/dataplane.js';

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
  mkdirSync(join(sys, 'module/vfio/parameters'), { recursive: true });
  writeFileSync(join(sys, 'module/vfio/parameters/enable_unsafe_noiommu_mode'), 'N');
  mkdirSync(join(sys, 'kernel/mm/hugepages/hugepages-2048kB'), { recursive: true });
  writeFileSync(join(sys, 'kernel/mm/hugepages/hugepages-2048kB/nr_hugepages'), '0');
  deps = {
    sysRoot: sys,
    fileRoot: join(root, 'files'),
    hugepageMount: join(root, 'hugepages'),
    modprobe: async (m) => void calls.push(`modprobe ${m}`),
    mountHugetlbfs: async (p, kib) => void calls.push(`mount ${p} ${kib}`),
  };
});
after(() => rmSync(root, { recursive: true, force: true }));

test('binds a NIC to vfio-pci in no-IOMMU mode, reserves and mounts hugepages, writes the rendered configs', async () => {
  const res = await prepareDataplane(deps, {
    nics: [{ pciAddress: '0000:00:05.0', driver: 'vfio-pci' }],
    hugepageSizeKib: 2048,
    hugepages: 64,
    files: [{ path: '/etc/edgenfv/vpp/startup.conf', content: 'unix { nodaemon }\n' }],
  });
  assert.deepEqual(res.bound, [{ pciAddress: '0000:00:05.0', driver: 'vfio-pci' }]);
  const sys = deps.sysRoot;
  assert.equal(readFileSync(join(sys, 'module/vfio/parameters/enable_unsafe_noiommu_mode'), 'utf8'), '1');
  assert.equal(readFileSync(join(sys, 'bus/pci/devices/0000:00:05.0/driver_override'), 'utf8'), 'vfio-pci');
  assert.equal(readFileSync(join(sys, 'bus/pci/drivers/virtio-pci/unbind'), 'utf8'), '0000:00:05.0');
  assert.equal(readFileSync(join(sys, 'bus/pci/drivers_probe'), 'utf8'), '0000:00:05.0');
  assert.equal(readFileSync(join(sys, 'bus/pci/devices/0000:00:04.0/driver_override'), 'utf8'), '\n');
  assert.equal(readFileSync(join(sys, 'kernel/mm/hugepages/hugepages-2048kB/nr_hugepages'), 'utf8'), '64');
  assert.equal(res.hugepageMount, deps.hugepageMount);
  assert.equal(readFileSync(join(deps.fileRoot, 'etc/edgenfv/vpp/startup.conf'), 'utf8'), 'unix { nodaemon }\n');
  assert.deepEqual(calls, ['modprobe vfio-pci', `mount ${deps.hugepageMount} 2048`]);
});

test('bad input and unknown devices are refused before anything is written', async () => {
  await assert.rejects(
    prepareDataplane(deps, { nics: [{ pciAddress: '0000:00:09.0', driver: 'uio_pci_generic' }], files: [{ path: '/etc/edgenfv/../shadow', content: 'x' }] }),
    (e: unknown) => e instanceof InvalidArgumentError && e.issues.some((i) => i.field === 'files[0].path'),
  );
  await assert.rejects(prepareDataplane(deps, { nics: [{ pciAddress: '0000:00:09.0', driver: 'uio_pci_generic' }] }), /nics\[0\]\.pciAddress: no PCI device/);
  await assert.rejects(prepareDataplane(deps, { nics: [], hugepages: 8 }), /hugepageSizeKib/);
  assert.ok(!existsSync(join(deps.fileRoot, 'shadow')));
});

test('vfio-pci without the no-IOMMU parameter (the cloud kernel) is refused with a clear reason', async () => {
  const param = join(deps.sysRoot, 'module/vfio/parameters/enable_unsafe_noiommu_mode');
  rmSync(param);
  try {
    await assert.rejects(prepareDataplane(deps, { nics: [{ pciAddress: '0000:00:04.0', driver: 'vfio-pci' }] }), /CONFIG_VFIO_NOIOMMU.*uio_pci_generic/);
    assert.equal(readFileSync(join(deps.sysRoot, 'bus/pci/devices/0000:00:04.0/driver_override'), 'utf8'), '\n');
  } finally {
    writeFileSync(param, '1');
  }
});
