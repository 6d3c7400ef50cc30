/**
 * What the agent puts into a chrooted QEMU's root before a VF is hot-plugged (vfio-root.ts), on a fake host tree:
 * a sysfs with the VFs' `iommu_group` links as the kernel makes them, and a /dev/vfio with character nodes (made
 * with mknod: only their device numbers matter, nothing opens them). The real hot-plug runs in the emulated edge
 * node (docs/sriov.md): this host has no IOMMU.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { iommuGroupOf, stageVfioInVmRoot, unstageVfioInVmRoot } from '../../src/hypervisor/vfio-root.js';

const VF_A = '0000:01:10.0';
const VF_B = '0000:01:10.2';
const VF_UNBOUND = '0000:01:10.4';
const VF_NO_IOMMU = '0000:01:10.6';

function fakeHost(t: { after: (fn: () => void) => void }): { host: { sysRoot: string; devRoot: string }; root: string } {
  const dir = mkdtempSync(join(tmpdir(), 'na-vfioroot-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const sysRoot = join(dir, 'sys');
  const devRoot = join(dir, 'dev');
  const devices = join(sysRoot, 'bus', 'pci', 'devices');
  mkdirSync(devices, { recursive: true });
  mkdirSync(join(devRoot, 'vfio'), { recursive: true });
  for (const [pci, group] of [[VF_A, 7], [VF_B, 8], [VF_UNBOUND, 9], [VF_NO_IOMMU, -1]] as const) {
    mkdirSync(join(devices, pci));
    // the kernel's link: ../../../kernel/iommu_groups/<n> relative to /sys/devices/pci0000:00/...
    if (group >= 0) symlinkSync(`../../../../kernel/iommu_groups/${group}`, join(devices, pci, 'iommu_group'));
  }
  execFileSync('mknod', ['-m', '0666', join(devRoot, 'vfio', 'vfio'), 'c', '10', '196']);
  // dynamic majors as the vfio group class gets them; minors above 255 take the high dev_t bits
  execFileSync('mknod', ['-m', '0600', join(devRoot, 'vfio', '7'), 'c', '241', '7']);
  execFileSync('mknod', ['-m', '0600', join(devRoot, 'vfio', '8'), 'c', '241', '300']);
  const root = join(dir, 'vmroot');
  mkdirSync(root);
  return { host: { sysRoot, devRoot }, root };
}

test('a VF is staged in the VM root as QEMU opens it: group node with the host numbers owned by the VM uid, the container node, the iommu_group link', async (t) => {
  const { host, root } = fakeHost(t);
  const owner = { uid: 12345, gid: 23456 };
  assert.equal(await stageVfioInVmRoot(root, VF_A, owner, host), 7);
  assert.equal(await stageVfioInVmRoot(root, VF_B, owner, host), 8);
  for (const [name, uid, mode] of [['7', owner.uid, 0o600], ['8', owner.uid, 0o600], ['vfio', 0, 0o660]] as const) {
    const got = lstatSync(join(root, 'dev', 'vfio', name));
    assert.ok(got.isCharacterDevice(), `${name} is a character node`);
    assert.equal(got.rdev, statSync(join(host.devRoot, 'vfio', name)).rdev, `${name} has the host's device numbers`);
    assert.equal(got.uid, uid, `${name} owner`);
    assert.equal(got.gid, owner.gid, `${name} group`);
    assert.equal(got.mode & 0o777, mode, `${name} mode`);
  }
  // what QEMU does with host=<pci>: readlink <sysfsdev>/iommu_group, basename = group
  for (const [pci, group] of [[VF_A, '7'], [VF_B, '8']]) {
    const dir = join(root, 'sys', 'bus', 'pci', 'devices', pci!);
    assert.equal(basename(readlinkSync(join(dir, 'iommu_group'))), group);
    assert.deepEqual(readdirSync(dir), ['iommu_group'], 'nothing of the host sysfs is copied');
  }
  // only the staged VFs' groups are reachable
  assert.deepEqual(readdirSync(join(root, 'dev', 'vfio')).sort(), ['7', '8', 'vfio']);
  // staging again is harmless (a retried hot-plug)
  assert.equal(await stageVfioInVmRoot(root, VF_A, owner, host), 7);

  // unplug: A's stand-in and group node go, B's stay; the container node stays for B
  unstageVfioInVmRoot(root, VF_A, 7, [8]);
  assert.ok(!existsSync(join(root, 'sys', 'bus', 'pci', 'devices', VF_A)));
  assert.ok(!existsSync(join(root, 'dev', 'vfio', '7')));
  assert.ok(existsSync(join(root, 'dev', 'vfio', '8')));
  unstageVfioInVmRoot(root, VF_B, 8, []);
  unstageVfioInVmRoot(root, VF_B, 8, []); // repeatable
  assert.deepEqual(readdirSync(join(root, 'dev', 'vfio')), ['vfio']);
  assert.deepEqual(readdirSync(join(root, 'sys', 'bus', 'pci', 'devices')), []);
});

test('a group shared by two staged VFs keeps its node until the last one is unplugged', async (t) => {
  const { host, root } = fakeHost(t);
  rmSync(join(host.sysRoot, 'bus', 'pci', 'devices', VF_B, 'iommu_group'));
  symlinkSync('../../../../kernel/iommu_groups/7', join(host.sysRoot, 'bus', 'pci', 'devices', VF_B, 'iommu_group'));
  await stageVfioInVmRoot(root, VF_A, { uid: 1, gid: 1 }, host);
  await stageVfioInVmRoot(root, VF_B, { uid: 1, gid: 1 }, host);
  unstageVfioInVmRoot(root, VF_A, 7, [7]);
  assert.ok(existsSync(join(root, 'dev', 'vfio', '7')), 'B still uses group 7');
  unstageVfioInVmRoot(root, VF_B, 7, []);
  assert.ok(!existsSync(join(root, 'dev', 'vfio', '7')));
});

test('a VF not on vfio-pci, or without an IOMMU group, is refused with the reason and nothing is staged', async (t) => {
  const { host, root } = fakeHost(t);
  await assert.rejects(stageVfioInVmRoot(root, VF_UNBOUND, { uid: 1, gid: 1 }, host), (err: Error) => {
    assert.match(err.message, /VF 0000:01:10\.4 is not bound to vfio-pci: .*\/dev\/vfio\/9 does not exist/);
    return true;
  });
  await assert.rejects(stageVfioInVmRoot(root, VF_NO_IOMMU, { uid: 1, gid: 1 }, host), /VF 0000:01:10\.6 has no IOMMU group/);
  assert.deepEqual(readdirSync(root), [], 'nothing made in the VM root');
  assert.throws(() => iommuGroupOf('0000:09:00.0', host), /has no IOMMU group/);
  // the host's container node missing (vfio not loaded): the half-made stand-in is removed again
  rmSync(join(host.devRoot, 'vfio', 'vfio'));
  await assert.rejects(stageVfioInVmRoot(root, VF_A, { uid: 1, gid: 1 }, host), /the vfio container: .* does not exist/);
  assert.ok(!existsSync(join(root, 'dev', 'vfio', '7')));
  assert.ok(!existsSync(join(root, 'sys', 'bus', 'pci', 'devices', VF_A)));
});
