/**
 * What the guest image carries for `builtin:testpmd`: the host's dpdk-testpmd (Debian dpdk-dev, DPDK 22.11) with its
 * shared libraries, and only the PMDs it needs in the guest's EAL plugin folder: net_virtio (the VNF's virtio-net
 * NICs), mempool_ring (the default mempool), net_null (a port that needs no device, for checks), the VF PMDs testpmd
 * does not link already — net_e1000 (igbvf: 82576/I350 VFs) and net_iavf (the VFs of i40e and ice PFs); testpmd links
 * net_ixgbe (ixgbevf), net_i40e, net_ice and net_mlx5 itself — and their libraries.
 * The guest agent builds the builtin image's rootfs from the manifest (`/etc/edgenfv/dpdk.files`, one absolute path
 * a line; `L <path> <target>` for symlinks) by hard links, so the files are in guest RAM once.
 */
import { execFile } from 'node:child_process';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { InternalError } from '@edgenfv/contracts';

const pexec = promisify(execFile);

export const TESTPMD_BINARY = '/usr/bin/dpdk-testpmd';
/** The folder EAL loads PMDs from (Debian's RTE_EAL_PMD_PATH for DPDK 22.11). */
export const DPDK_PMD_DIR = '/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0';
export const GUEST_PMDS = ['net_virtio', 'mempool_ring', 'net_null', 'net_e1000', 'net_iavf'] as const;
export const DPDK_MANIFEST = '/etc/edgenfv/dpdk.files';

export interface DpdkFileSet {
  /** Regular files to copy, absolute host paths = guest paths, sorted. */
  files: string[];
  /** Symlinks [path, target] to recreate (the PMD folder's `.so` / `.so.23` names), sorted. */
  links: Array<[string, string]>;
}

async function ldd(path: string): Promise<string[]> {
  const { stdout } = await pexec('ldd', [path]).catch((err) => {
    throw new InternalError(`ldd ${path}: ${(err as Error).message}`, { cause: err });
  });
  const out: string[] = [];
  for (const line of stdout.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) out.push(m[1]!);
  }
  return out;
}

/** dpdk-testpmd, its libraries and the guest PMDs with theirs; fails loudly when DPDK is not installed. */
export async function dpdkFileSet(binary = TESTPMD_BINARY, pmdDir = DPDK_PMD_DIR): Promise<DpdkFileSet> {
  if (!existsSync(binary)) throw new InternalError(`${binary} not found: apt-get install dpdk-dev librte-net-virtio23 librte-mempool-ring23 (scripts/setup.sh)`);
  const files = new Set<string>([binary]);
  const links = new Map<string, string>();
  /**
   * Paths as ldd names them are copied (following links, as the image builder does for every library); in the PMD
   * folder the `.so` -> `.so.23` -> `.so.23.0` links are kept, so EAL's scan of the folder and the binary's
   * DT_NEEDED reach one file (one inode: glibc loads it once).
   */
  const addPath = async (p: string): Promise<string> => {
    let cur = p;
    if (dirname(cur) === pmdDir) {
      for (let i = 0; i < 8; i++) {
        const st = await lstat(cur);
        if (!st.isSymbolicLink()) break;
        const target = await readlink(cur);
        if (target.includes('/')) break; // only same-folder links are kept
        links.set(cur, target);
        cur = join(pmdDir, target);
      }
    }
    files.add(cur);
    return cur;
  };
  const binLibs = await ldd(binary);
  for (const l of binLibs) await addPath(l);
  // glibc dlopens libgcc_s for pthread_cancel, which testpmd's teardown calls ("libgcc_s.so.1 must be installed")
  const libc = binLibs.find((l) => basename(l) === 'libc.so.6');
  if (libc && existsSync(join(dirname(libc), 'libgcc_s.so.1'))) await addPath(join(dirname(libc), 'libgcc_s.so.1'));
  const entries = await readdir(pmdDir).catch(() => [] as string[]);
  for (const pmd of GUEST_PMDS) {
    const names = entries.filter((e) => e === `librte_${pmd}.so` || e.startsWith(`librte_${pmd}.so.`));
    if (names.length === 0) throw new InternalError(`PMD ${pmd} not in ${pmdDir}: apt-get install librte-${pmd.replace(/_/g, '-')}23`);
    for (const n of names) {
      const real = await addPath(join(pmdDir, n));
      for (const l of await ldd(real)) await addPath(l);
    }
  }
  return { files: [...files].sort(), links: [...links.entries()].sort(([a], [b]) => a.localeCompare(b)) };
}

/** The manifest the guest agent reads. */
export function dpdkManifest(set: DpdkFileSet): string {
  return [...set.files, ...set.links.map(([p, t]) => `L ${p} ${t}`)].join('\n') + '\n';
}
