/**
 * 2 MiB hugepages for the node's DPDK switch. OVS-DPDK refuses DPDK's no-hugepage mode, so the node reserves
 * what the switch's config asks for: it raises the NUMA node's (or the global) `nr_hugepages` until enough pages
 * are free — never lowers it — and mounts hugetlbfs on /dev/hugepages when nothing is mounted there.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { UnavailableError } from '@edgenfv/contracts';

const execFileP = promisify(execFile);

export interface HugepageReservation {
  /** The sysfs folder whose nr_hugepages was read (and raised). */
  pool: string;
  pages: number;
  /** nr_hugepages before and after (equal when enough pages were free). */
  before: number;
  after: number;
  free: number;
  /** Where hugetlbfs is mounted; `mounted` when this call mounted it. */
  mountPoint: string;
  mounted: boolean;
}

function readInt(p: string): number {
  const t = readFileSync(p, 'utf8').trim();
  if (!/^\d+$/.test(t)) throw new UnavailableError(`${p} does not hold a number (${JSON.stringify(t)})`);
  return Number(t);
}

/** The 2 MiB pool of a NUMA node when the kernel has one per node, else the global pool. */
export function hugepagePool(sysfsRoot: string, numaNode: number): string {
  const perNode = join(sysfsRoot, `devices/system/node/node${numaNode}/hugepages/hugepages-2048kB`);
  return existsSync(join(perNode, 'nr_hugepages')) ? perNode : join(sysfsRoot, 'kernel/mm/hugepages/hugepages-2048kB');
}

function hugetlbfsMount(mountsText: string): string | undefined {
  for (const line of mountsText.split('\n')) {
    const [, mnt, type, opts] = line.split(' ');
    if (type === 'hugetlbfs' && mnt && !/pagesize=1G/i.test(opts ?? '')) return mnt;
  }
  return undefined;
}

/** Makes `pages` 2 MiB pages free on `numaNode` (raising nr_hugepages only) and a hugetlbfs mount available. */
export async function reserveHugepages(o: { sysfsRoot: string; numaNode: number; pages: number; mountPoint?: string }): Promise<HugepageReservation> {
  const pool = hugepagePool(o.sysfsRoot, o.numaNode);
  const nrPath = join(pool, 'nr_hugepages');
  const freePath = join(pool, 'free_hugepages');
  if (!existsSync(nrPath)) throw new UnavailableError(`no 2 MiB hugepage pool at ${pool}: the kernel has no hugetlbfs support`);
  const before = readInt(nrPath);
  let free = readInt(freePath);
  let after = before;
  if (free < o.pages) {
    after = before + (o.pages - free);
    writeFileSync(nrPath, `${after}\n`);
    after = readInt(nrPath);
    free = readInt(freePath);
    if (free < o.pages) {
      throw new UnavailableError(
        `the switch needs ${o.pages} free 2 MiB hugepages on NUMA node ${o.numaNode} but the kernel gave only ${free} (nr_hugepages ${before} -> ${after}): memory too fragmented or too small; reserve them at boot (hugepages= on the kernel command line)`,
      );
    }
  }
  const mountPoint = o.mountPoint ?? '/dev/hugepages';
  const existing = hugetlbfsMount(readFileSync('/proc/mounts', 'utf8'));
  if (existing) return { pool, pages: o.pages, before, after, free, mountPoint: existing, mounted: false };
  mkdirSync(mountPoint, { recursive: true });
  try {
    await execFileP('mount', ['-t', 'hugetlbfs', '-o', 'pagesize=2M', 'nodev', mountPoint]);
  } catch (err) {
    throw new UnavailableError(`cannot mount hugetlbfs on ${mountPoint}: ${(err as Error).message}`);
  }
  return { pool, pages: o.pages, before, after, free, mountPoint, mounted: true };
}
