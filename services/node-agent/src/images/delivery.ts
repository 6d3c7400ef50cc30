/**
 * Delivering a resolved image into a tenant VM: the packed disk is copied into the sandbox's disk folder
 * (`<runDir>.disks`, beside the run folder, which stays root's), readable by the hypervisor's unprivileged group and
 * writable by nobody but root (a hotplugged disk is opened after QEMU dropped its privileges; the shared cache stays
 * unreadable to every tenant's QEMU), and attached read-only with the disk's serial, by which the guest agent finds
 * it. One disk per image per VM: replicas of the same image share it.
 */
import { chown, copyFile, chmod, mkdir, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { UnavailableError } from '@edgenfv/contracts';
import type { DiskDevice } from '../hypervisor/types.js';
import type { ResolvedImage } from './store.js';

/** What a replica record keeps of its image. */
export interface ReplicaImage {
  guestRef: string;
  digest?: string;
  /** Serial of the VM disk the image is on. */
  serial?: string;
}

export function replicaImage(r: ResolvedImage): ReplicaImage {
  return { guestRef: r.guestRef, ...(r.digest ? { digest: r.digest } : {}), ...(r.disk ? { serial: r.disk.serial } : {}) };
}

/**
 * The VM device for the image's disk, staged in `runDir` for `owner`; null when the image needs no disk.
 * `hotplug`: the running VM opens it (not QEMU as root at boot), so the folders above must let its uid through.
 * `dir`: the folder to stage in instead of `<runDir>.disks` (the disks folder in a chrooted QEMU's root, which
 * QEMU's uid reaches from its own /, so no folder on the host's path needs to let it through).
 */
export async function stageImageDisk(r: ResolvedImage, runDir: string, owner: { uid: number; gid: number }, opts: { hotplug: boolean; dir?: string }): Promise<DiskDevice | null> {
  if (!r.disk) return null;
  const dir = opts.dir ?? imageDiskDir(runDir);
  const path = join(dir, `${r.disk.serial}.img`);
  if (opts.hotplug && !opts.dir) await traversable(dirname(runDir));
  // root's, the VM's group may enter and read (0750 / 0440): QEMU's uid reads its images and can change none of them
  await mkdir(dir, { recursive: true, mode: 0o750 });
  await chown(dir, 0, owner.gid);
  await chmod(dir, 0o750);
  if (!existsSync(path)) {
    await copyFile(r.disk.path, path);
    await chown(path, 0, owner.gid);
    await chmod(path, 0o440);
  }
  return { kind: 'disk', id: `img-${r.disk.serial}`, path, serial: r.disk.serial };
}

/** The folder a sandbox's image disks are staged in: beside its run folder, removed with it. */
export function imageDiskDir(runDir: string): string {
  return `${runDir}.disks`;
}

/**
 * A disk hotplugged into a running VM is opened by QEMU after it dropped its privileges: the folders above the
 * sandbox's own (0700, its uid) must let it through. The agent's tenant folders become 0711 (no listing); any
 * other folder on the way that does not is named.
 */
async function traversable(tenantDir: string): Promise<void> {
  // the agent's own folders (<stateDir>/tenants/<tenant>, made 0700): through, without listing
  for (const d of [tenantDir, dirname(tenantDir), dirname(dirname(tenantDir))]) {
    const st = await stat(d);
    if ((st.mode & 0o777) === 0o700 && st.uid === process.getuid?.()) await chmod(d, 0o711);
  }
  for (let d = tenantDir; ; d = dirname(d)) {
    const st = await stat(d);
    if ((st.mode & 0o001) === 0) {
      throw new UnavailableError(`${d} (mode ${(st.mode & 0o777).toString(8)}) does not let the VMs' unprivileged uids through: image disks cannot be opened; make it o+x`);
    }
    if (d === dirname(d)) return;
  }
}
