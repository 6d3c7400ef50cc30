/**
 * The node's own re-check of an allocation before acting on it (the leader's reservation is a claim the node
 * verifies): pinned CPUs exist and are not held by another replica, the NUMA node exists, the VFs exist and are
 * free, hugepages of that size are there. Pure: inventory + what is held in, verdict out.
 */
import type { Allocation, NodeInventory } from '@edgenfv/contracts';

export type Verdict = { ok: true } | { ok: false; reason: string };

export function recheck(alloc: Allocation, inv: NodeInventory, held: readonly Allocation[]): Verdict {
  const others = held.filter((h) => h.allocId !== alloc.allocId);
  const r = alloc.resources;
  if (r.numaNode !== undefined && !inv.numaNodes.some((n) => n.id === r.numaNode)) {
    return { ok: false, reason: `NUMA node ${r.numaNode} does not exist on ${inv.nodeId}` };
  }
  if (r.cpus?.length) {
    const all = new Set(inv.numaNodes.flatMap((n) => n.cpus));
    const missing = r.cpus.filter((c) => !all.has(c));
    if (missing.length) return { ok: false, reason: `CPUs ${missing.join(',')} do not exist` };
    const taken = new Set(others.flatMap((o) => o.resources.cpus ?? []));
    const busy = r.cpus.filter((c) => taken.has(c));
    if (busy.length) return { ok: false, reason: `CPUs ${busy.join(',')} are pinned by another replica` };
    if (r.numaNode !== undefined) {
      const local = new Set(inv.numaNodes.find((n) => n.id === r.numaNode)!.cpus);
      const remote = r.cpus.filter((c) => !local.has(c));
      if (remote.length) return { ok: false, reason: `CPUs ${remote.join(',')} are not on NUMA node ${r.numaNode}` };
    }
  }
  const vfs = alloc.interfaces.flatMap((i) => (i.type === 'sriov' ? [i.sriov.vfPciAddress] : []));
  if (vfs.length) {
    const known = new Set(inv.sriovPfs.flatMap((p) => p.vfs.map((v) => v.pciAddress)));
    const missing = vfs.filter((v) => !known.has(v));
    if (missing.length) return { ok: false, reason: `VFs ${missing.join(',')} do not exist on this node` };
    const taken = new Set(others.flatMap((o) => o.interfaces.flatMap((i) => (i.type === 'sriov' ? [i.sriov.vfPciAddress] : []))));
    const busy = vfs.filter((v) => taken.has(v));
    if (busy.length) return { ok: false, reason: `VFs ${busy.join(',')} are held by another replica` };
  }
  const hp = r.hugepages;
  if (hp && hp.count > 0) {
    const node = hp.numaNode ?? r.numaNode;
    const pools = inv.numaNodes.filter((n) => node === undefined || n.id === node).flatMap((n) => n.hugepages.filter((p) => p.sizeKiB === hp.sizeKiB));
    const total = pools.reduce((s, p) => s + p.total, 0);
    // the pages the replicas hold, and those of their VMs' base memory (booked by each tenant's first replica)
    const pagesOf = (a: Allocation): number => {
      const h = a.resources.hugepages;
      const base = a.resources.vmOverhead?.hugepages;
      const mine = h?.sizeKiB === hp.sizeKiB && (node === undefined || (h.numaNode ?? a.resources.numaNode) === node) ? h.count : 0;
      return mine + (base?.sizeKiB === hp.sizeKiB && (node === undefined || base.numaNode === node) ? base.count : 0);
    };
    const used = others.reduce((s, o) => s + pagesOf(o), 0);
    const asked = pagesOf(alloc);
    if (total - used < asked) {
      return { ok: false, reason: `${asked} hugepages of ${hp.sizeKiB} KiB asked, ${Math.max(0, total - used)} free${node !== undefined ? ` on NUMA node ${node}` : ''}` };
    }
  }
  // one VM per tenant: each tenant's VM costs the node's per-VM overhead once
  const o = inv.vmOverhead;
  const vms = new Set([...others.map((h) => h.tenantId), alloc.tenantId]).size;
  const overhead = o ? vms * (o.guestBaseMiB + o.hypervisorMiB) : 0;
  const memory = others.reduce((s, h) => s + h.resources.memoryMiB, 0) + r.memoryMiB + overhead;
  if (memory > inv.memoryMiB) {
    return { ok: false, reason: `memory: ${memory} MiB asked in total${overhead ? ` (incl. ${overhead} MiB for ${vms} VMs' overhead)` : ''}, the node has ${inv.memoryMiB} MiB` };
  }
  return { ok: true };
}
