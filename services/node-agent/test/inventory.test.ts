import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../src/config.js';
import { collectInventory, formatCpuList, parseCpuList } from '../src/inventory.js';
import { makeFakeSysfs } from '../src/testing/fake-sysfs.js';

test('cpulist parse/format round trip', () => {
  const cases: [string, number[]][] = [
    ['', []],
    ['0', [0]],
    ['0-3', [0, 1, 2, 3]],
    ['0-1,4,6-7', [0, 1, 4, 6, 7]],
    ['3,1,2', [1, 2, 3]],
  ];
  for (const [s, ids] of cases) {
    assert.deepEqual(parseCpuList(s), ids, s);
  }
  assert.equal(formatCpuList([0, 1, 2, 3, 8, 10, 11]), '0-3,8,10-11');
  assert.throws(() => parseCpuList('1-x'), /bad cpulist/);
  assert.throws(() => parseCpuList('5-2'), /bad cpulist/);
});

test('inventory from a fake sysfs: 2 NUMA nodes, isolated CPUs, hugepages per node, an SR-IOV PF with VFs and its physnet', async () => {
  const fake = makeFakeSysfs({
    numa: [
      { cpus: '0-3', memKiB: 8 * 1024 * 1024, hugepages: { 2048: { total: 512, free: 500 }, 1048576: { total: 0, free: 0 } } },
      { cpus: '4-7', memKiB: 8 * 1024 * 1024, hugepages: { 2048: { total: 256, free: 256 }, 1048576: { total: 2, free: 1 } } },
    ],
    isolated: '2-3,6-7',
    pfs: [
      {
        pci: '0000:3b:00.0',
        ifName: 'ens1f0',
        numaNode: 1,
        totalVfs: 7,
        driver: 'igb',
        vfs: [
          { pci: '0000:3b:10.0', driver: 'igbvf', iommuGroup: 40 },
          { pci: '0000:3b:10.2', driver: 'vfio-pci', iommuGroup: 41 },
        ],
      },
    ],
  });
  const dev = mkdtempSync(join(tmpdir(), 'na-dev-'));
  const dpDir = mkdtempSync(join(tmpdir(), 'na-vpp-'));
  try {
    writeFileSync(join(dpDir, 'cli.sock'), '');
    const cfg = parseConfig({
      nodeId: 'edge-1',
      labels: { site: 'a' },
      sysfsRoot: fake.root,
      devRoot: dev,
      physnets: { ens1f0: 'physnet1' },
      dataplanes: [
        { kind: 'vpp', socketDir: dpDir, probePath: join(dpDir, 'cli.sock'), numaNode: 1 },
        { kind: 'ovs-dpdk', socketDir: join(dpDir, 'absent') },
      ],
    });
    const inv = await collectInventory(cfg, {
      binaries: { qemu: '/bin/true' },
      system: async () => ({ cpuCount: 8, memoryMiB: 16384, hostname: 'h1' }),
    });
    assert.equal(inv.nodeId, 'edge-1');
    assert.equal(inv.cpuCount, 8);
    assert.deepEqual(inv.isolatedCpus, [2, 3, 6, 7]);
    assert.equal(inv.numaNodes.length, 2);
    assert.deepEqual(inv.numaNodes[1]!.cpus, [4, 5, 6, 7]);
    assert.equal(inv.numaNodes[0]!.memoryMiB, 8192);
    assert.deepEqual(inv.numaNodes[0]!.hugepages, [
      { sizeKiB: 2048, total: 512, free: 500 },
      { sizeKiB: 1048576, total: 0, free: 0 },
    ]);
    assert.deepEqual(inv.numaNodes[1]!.hugepages[1], { sizeKiB: 1048576, total: 2, free: 1 });
    assert.equal(inv.sriovPfs.length, 1);
    const pf = inv.sriovPfs[0]!;
    assert.equal(pf.pciAddress, '0000:3b:00.0');
    assert.equal(pf.ifName, 'ens1f0');
    assert.equal(pf.physnet, 'physnet1');
    assert.equal(pf.numaNode, 1);
    assert.equal(pf.totalVfs, 7);
    assert.equal(pf.numVfs, 2);
    assert.equal(pf.driver, 'igb');
    assert.deepEqual(pf.vfs, [
      { index: 0, pciAddress: '0000:3b:10.0', driver: 'igbvf', iommuGroup: 40 },
      { index: 1, pciAddress: '0000:3b:10.2', driver: 'vfio-pci', iommuGroup: 41 },
    ]);
    assert.deepEqual(inv.dataplanes, [{ kind: 'vpp', socketDir: dpDir, numaNode: 1 }]);
    assert.equal(inv.kvm, false);
    assert.deepEqual(inv.hypervisors.map((h) => [h.kind, h.accel]), [['qemu', 'tcg']]);
    // KVM appears: accel follows.
    writeFileSync(join(dev, 'kvm'), '');
    const inv2 = await collectInventory(cfg, { binaries: { qemu: '/bin/true' }, system: async () => ({ cpuCount: 8, memoryMiB: 1, hostname: 'h' }) });
    assert.equal(inv2.kvm, true);
    assert.deepEqual(inv2.hypervisors.map((h) => [h.kind, h.accel]), [['qemu', 'kvm']]);
  } finally {
    fake.cleanup();
    rmSync(dev, { recursive: true, force: true });
    rmSync(dpDir, { recursive: true, force: true });
  }
});

test('physnet mapping by PCI address; a PF without a mapping has no physnet', async () => {
  const fake = makeFakeSysfs({
    numa: [{ cpus: '0-1', memKiB: 1024 * 1024, hugepages: {} }],
    isolated: '',
    pfs: [
      { pci: '0000:af:00.0', numaNode: 0, totalVfs: 4, vfs: [] },
      { pci: '0000:af:00.1', numaNode: 0, totalVfs: 4, vfs: [] },
    ],
  });
  try {
    const cfg = parseConfig({ nodeId: 'n', sysfsRoot: fake.root, physnets: { '0000:AF:00.0': 'physnet9' } });
    const inv = await collectInventory(cfg, { binaries: { qemu: null }, system: async () => ({ cpuCount: 2, memoryMiB: 1024, hostname: 'h' }) });
    assert.equal(inv.sriovPfs[0]!.physnet, 'physnet9');
    assert.equal(inv.sriovPfs[1]!.physnet, undefined);
    assert.equal(inv.sriovPfs[1]!.numVfs, 0);
    assert.deepEqual(inv.hypervisors, []);
  } finally {
    fake.cleanup();
  }
});

test('inventory of this real host (systeminformation + /sys)', async () => {
  const cfg = parseConfig({ nodeId: 'real' });
  const inv = await collectInventory(cfg);
  assert.ok(inv.cpuCount >= 1);
  assert.ok(inv.memoryMiB > 0);
  assert.ok(inv.numaNodes.length >= 1);
  assert.ok(inv.numaNodes.flatMap((n) => n.cpus).length >= 1);
  const q = inv.hypervisors.find((h) => h.kind === 'qemu');
  assert.ok(q, 'qemu-system-x86_64 must be installed (npm run setup)');
  assert.equal(q.accel, inv.kvm ? 'kvm' : 'tcg');
  assert.match(q.version ?? '', /^\d+\.\d+/);
});
