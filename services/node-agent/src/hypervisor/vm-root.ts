/**
 * The VMM's root: QEMU starts as root, opens what its command line names, then `-run-with chroot=<root>` (and
 * `user=`) leaves it in a folder of its own where the host's / is out of reach. What it opens later (hotplug) must
 * be inside that folder, named by its path there:
 *   <root>/dev/net/tun   the tun device (root:gid 0660): a hotplugged tap is attached through it;
 *   <root>/disks/        image disks staged for the sandbox (images/delivery.ts);
 *   <root>/v/<tenant>/   vhost-user sockets (netplugins makes the tenant folder the VM uid's own, 0700).
 * The root itself is root's, the VM's group may enter (0750): the uid can write nothing there but its socket folder.
 * Short on purpose (`<stateDir>/vm/<10 hex>`): vhost-user socket paths must fit in sun_path (108 bytes).
 */
import { execFile } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync } from 'node:fs';
import { isAbsolute, join, relative, sep } from 'node:path';
import { promisify } from 'node:util';
import { UnavailableError } from '@edgenfv/contracts';

const run = promisify(execFile);

export const VM_ROOT_DISKS = 'disks';
export const VM_ROOT_SOCKETS = 'v';

/** Makes the VM root of a sandbox (idempotent): the folder, its tun device, owned as described above. */
export async function prepareVmRoot(root: string, gid: number): Promise<void> {
  const parent = join(root, '..');
  mkdirSync(parent, { recursive: true, mode: 0o700 });
  mkdirSync(join(root, 'dev', 'net'), { recursive: true, mode: 0o755 });
  const tun = join(root, 'dev', 'net', 'tun');
  if (!existsSync(tun)) {
    try {
      await run('mknod', ['-m', '0660', tun, 'c', '10', '200']);
    } catch (err) {
      throw new UnavailableError(`cannot make ${tun} (is ${root}'s file system mounted nodev?): ${(err as Error).message}`, { cause: err });
    }
  }
  chownSync(tun, 0, gid);
  chmodSync(tun, 0o660);
  chownSync(root, 0, gid);
  chmodSync(root, 0o750);
}

/**
 * The path QEMU sees for `hostPath` once it is in `root` (hotplug after the chroot); `hostPath` itself when QEMU
 * has no root of its own. A path outside the root cannot be reached from inside: that is refused, naming `what`.
 */
export function pathInVmRoot(root: string | undefined, hostPath: string, what: string): string {
  if (!root) return hostPath;
  const rel = relative(root, hostPath);
  if (!rel || rel.startsWith('..') || isAbsolute(rel)) {
    throw new UnavailableError(`${what} ${hostPath} is outside the VM's root ${root}: the chrooted QEMU cannot open it`);
  }
  return `/${rel.split(sep).join('/')}`;
}
