/**
 * What a tenant VM costs a node beyond its replicas' own demand (docs/scheduler.md "What a VM books"): the node
 * reports it (`NodeInventory.vmOverhead`), and the first replica of a tenant on a node books it (later replicas
 * join the same VM). A hugepage-backed VM holds its guest base memory in hugepages of the replica's size too.
 */
import type { NodeInventory, VmOverheadBooking } from '@edgenfv/contracts';
import { hugepagesMiB } from './request.js';
import type { NodeView, PlacementRequest } from './types.js';

/** Pages of `sizeKiB` that hold `mib` MiB. */
export function pagesFor(mib: number, sizeKiB: number): number {
  return Math.ceil((mib * 1024) / sizeKiB);
}

/** Ordinary memory (outside the hugepage pools) a replica's own demand holds. */
export function ordinaryMiB(r: { memoryMiB: number; hugepages?: { sizeKiB: number; count: number } | undefined }): number {
  return Math.max(0, r.memoryMiB - hugepagesMiB(r.hugepages));
}

/**
 * The overhead the request books on this node: undefined when its tenant's VM is there already or the node
 * reports none. `hugepagesNuma`: where the base memory's pages come from (the replica's hugepages' NUMA node).
 */
export function vmOverheadFor(req: PlacementRequest, node: NodeView, hugepagesNuma = -1): VmOverheadBooking | undefined {
  const o = node.inventory.vmOverhead;
  if (!o || node.tenants.has(req.tenantId)) return undefined;
  if (req.hugepages) {
    const { sizeKiB } = req.hugepages;
    return { memoryMiB: o.hypervisorMiB, hugepages: { sizeKiB, count: pagesFor(o.guestBaseMiB, sizeKiB), numaNode: hugepagesNuma } };
  }
  return { memoryMiB: o.guestBaseMiB + o.hypervisorMiB };
}

/** Hugepages the request needs from one NUMA node: its own and, when it boots its tenant's VM, the VM's base memory's. */
export function hugepagesNeeded(req: PlacementRequest, node: NodeView): number {
  if (!req.hugepages) return 0;
  return req.hugepages.count + (vmOverheadFor(req, node)?.hugepages?.count ?? 0);
}

/** Ordinary memory the request needs on this node: its own and, when it boots its tenant's VM, the VM's overhead. */
export function memoryNeeded(req: PlacementRequest, node: NodeView): number {
  return ordinaryMiB(req) + (vmOverheadFor(req, node)?.memoryMiB ?? 0);
}

/** What a tenant VM on the node holds when no reservation of it says (its first replica is gone): memory only. */
export function defaultOverhead(inv: NodeInventory): VmOverheadBooking | undefined {
  const o = inv.vmOverhead;
  return o ? { memoryMiB: o.guestBaseMiB + o.hypervisorMiB } : undefined;
}
