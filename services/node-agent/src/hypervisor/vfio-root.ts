/**
 * A VF hot-plugged into a chrooted QEMU (`-run-with chroot=<root>,user=`): QEMU opens its vfio files only after
 * the chroot, as the VM's uid, so the agent (root) puts exactly those files into the VM root before `device_add`.
 * What QEMU 10's vfio-pci opens for `host=<pci>` with the legacy (type1) container, read in hw/vfio (pci.c realize,
 * helpers/device.c, container.c):
 *   stat(/sys/bus/pci/devices/<pci>)                 the sysfsdev that `host=` names ("no such host device" if absent)
 *   realpath(<sysfsdev>/subsystem)                   only to tell an mdev apart: absent means a plain PCI device
 *   readlink(<sysfsdev>/iommu_group)                 its basename is the group number
 *   open(/dev/vfio/<group>)                          the group; VFIO_GROUP_GET_DEVICE_FD(<pci>) gives the device
 *   open(/dev/vfio/vfio)                             only when no container of the VM takes the group
 * Everything else (config space, BARs, interrupts, DMA maps) goes through those fds. So the VM root gets:
 *   dev/vfio/vfio                 the host's container node (same device numbers), root:<gid> 0660
 *   dev/vfio/<group>              the VF's group node (same device numbers), <uid>:<gid> 0600: that group only
 *   sys/bus/pci/devices/<pci>/    an empty folder with one link, iommu_group -> /sys/kernel/iommu_groups/<group>
 * No bind mount (the VM root is removed with rm -r when the VM stops: a mount there would be walked into) and no
 * real sysfs file: the uid sees nothing of the host's sysfs. Unplugging the VF removes its group node (unless
 * another staged VF shares the group) and its stand-in folder.
 */
import { execFile } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readlinkSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { UnavailableError, type PciAddress } from '@edgenfv/contracts';

const run = promisify(execFile);

/** Where the host's sysfs and /dev are (a test points them at a fake tree). */
export interface VfioHostPaths {
  sysRoot: string;
  devRoot: string;
}

const HOST: VfioHostPaths = { sysRoot: '/sys', devRoot: '/dev' };

/** The VF's IOMMU group number from the host's sysfs. */
export function iommuGroupOf(pci: PciAddress | string, host: VfioHostPaths = HOST): number {
  const link = join(host.sysRoot, 'bus', 'pci', 'devices', String(pci), 'iommu_group');
  let target: string;
  try {
    target = readlinkSync(link);
  } catch (err) {
    throw new UnavailableError(`VF ${pci} has no IOMMU group (${link}): is the IOMMU on (intel_iommu=on) and the VF present?`, { cause: err });
  }
  const group = Number(basename(target));
  if (!Number.isInteger(group) || group < 0) throw new UnavailableError(`VF ${pci}: cannot read the IOMMU group number from ${link} -> ${target}`);
  return group;
}

/** Linux's dev_t split (new_encode_dev) of a stat's rdev. */
function majorMinor(rdev: number): [number, number] {
  return [(rdev >> 8) & 0xfff, (rdev & 0xff) | ((rdev >> 12) & 0xfff00)];
}

/** A character node at `path` with the same device numbers as `hostNode`, owned and moded as asked (idempotent). */
async function copyCharNode(hostNode: string, path: string, uid: number, gid: number, mode: number, what: string): Promise<void> {
  let st;
  try {
    st = statSync(hostNode);
  } catch (err) {
    throw new UnavailableError(`${what}: ${hostNode} does not exist`, { cause: err });
  }
  if (!st.isCharacterDevice()) throw new UnavailableError(`${what}: ${hostNode} is not a character device`);
  const existing = existsSync(path) ? lstatSync(path) : undefined;
  if (existing && !(existing.isCharacterDevice() && existing.rdev === st.rdev)) rmSync(path, { force: true });
  if (!existing || !(existing.isCharacterDevice() && existing.rdev === st.rdev)) {
    const [major, minor] = majorMinor(st.rdev);
    try {
      await run('mknod', ['-m', mode.toString(8), path, 'c', String(major), String(minor)]);
    } catch (err) {
      throw new UnavailableError(`cannot make ${path} (is the VM root's file system mounted nodev?): ${(err as Error).message}`, { cause: err });
    }
  }
  chownSync(path, uid, gid);
  chmodSync(path, mode);
}

function standInDir(root: string, pci: string): string {
  return join(root, 'sys', 'bus', 'pci', 'devices', pci);
}

/**
 * Makes what a chrooted QEMU opens to hot-plug VF `pci` (see the file's comment) in `root`, the group node owned
 * by `owner` (the VM's uid:gid). Returns the group. The VF must already be on vfio-pci (its /dev/vfio/<group>
 * exists): otherwise nothing is made and the error says so.
 */
export async function stageVfioInVmRoot(root: string, pci: PciAddress | string, owner: { uid: number; gid: number }, host: VfioHostPaths = HOST): Promise<number> {
  const group = iommuGroupOf(pci, host);
  const hostGroup = join(host.devRoot, 'vfio', String(group));
  if (!existsSync(hostGroup)) throw new UnavailableError(`VF ${pci} is not bound to vfio-pci: ${hostGroup} does not exist`);
  const vfioDir = join(root, 'dev', 'vfio');
  const dir = standInDir(root, String(pci));
  try {
    mkdirSync(vfioDir, { recursive: true, mode: 0o755 });
    await copyCharNode(join(host.devRoot, 'vfio', 'vfio'), join(vfioDir, 'vfio'), 0, owner.gid, 0o660, 'the vfio container');
    await copyCharNode(hostGroup, join(vfioDir, String(group)), owner.uid, owner.gid, 0o600, `VF ${pci}'s IOMMU group`);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    rmSync(join(dir, 'iommu_group'), { force: true });
    symlinkSync(`/sys/kernel/iommu_groups/${group}`, join(dir, 'iommu_group'));
  } catch (err) {
    unstageVfioInVmRoot(root, pci, group, []);
    throw err;
  }
  return group;
}

/**
 * Removes VF `pci`'s stand-in and its group node from `root` (safe to repeat); the group node stays while
 * `groupsInUse` (the groups of the VM's other staged VFs) names it.
 */
export function unstageVfioInVmRoot(root: string, pci: PciAddress | string, group: number, groupsInUse: readonly number[]): void {
  rmSync(standInDir(root, String(pci)), { recursive: true, force: true });
  if (!groupsInUse.includes(group)) rmSync(join(root, 'dev', 'vfio', String(group)), { force: true });
}
