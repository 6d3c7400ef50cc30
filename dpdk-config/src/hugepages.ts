/** The hugepages a plan needs the host (or guest) to reserve, as sysfs files and counts. Pure. */
import type { DataplanePlan } from './plan.js';

export interface HugepageReservation {
  numaNode: number;
  sizeKiB: number;
  count: number;
  /** The per-NUMA-node sysfs file that reserves them. */
  path: string;
}

export function renderHugepages(plan: DataplanePlan): HugepageReservation[] {
  if (plan.memory.kind !== 'hugepages') return [];
  return plan.memory.pages
    .filter((p) => p.count > 0)
    .map((p) => ({
      numaNode: p.numaNode,
      sizeKiB: p.sizeKiB,
      count: p.count,
      path: `/sys/devices/system/node/node${p.numaNode}/hugepages/hugepages-${p.sizeKiB}kB/nr_hugepages`,
    }));
}
