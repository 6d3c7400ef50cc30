/**
 * Node views: a node's inventory with precomputed free counts (CPUs, hugepages, VFs per NUMA node), kept up to
 * date incrementally as reservations are applied and removed, so that filters only compare numbers.
 */
import type { NodeHealth, NodeInventory, NodeReservation } from '@edgenfv/contracts';
import type { VmOverheadBooking } from '@edgenfv/contracts';
import { defaultOverhead, ordinaryMiB } from './overhead.js';
import type { Assignment, NodeView, NumaView, PlacementRequest, Reservation, Verdict, VfSlot } from './types.js';

export interface NodeMeta {
  nodeId: string;
  epoch: number;
  health: NodeHealth;
  cordoned: boolean;
  draining?: boolean;
  inventory: NodeInventory;
}

function numaOf(view: NodeView, id: number): NumaView | undefined {
  for (const n of view.numa) if (n.id === id) return n;
  return undefined;
}

function inc<K>(m: Map<K, number>, k: K, d: number): void {
  const v = (m.get(k) ?? 0) + d;
  if (v === 0) m.delete(k);
  else m.set(k, v);
}

/** Builds a view from a node's inventory and the reservations its ledger holds. */
export function buildNodeView(meta: NodeMeta, reservations: Iterable<Reservation> = []): NodeView {
  const inv = meta.inventory;
  const isolated = new Set(inv.isolatedCpus);
  const numaInfos =
    inv.numaNodes.length > 0
      ? inv.numaNodes
      : [{ id: 0, cpus: Array.from({ length: inv.cpuCount }, (_, i) => i), memoryMiB: inv.memoryMiB, hugepages: [] }];
  const numa: NumaView[] = numaInfos.map((n) => {
    const iso = n.cpus.filter((c) => isolated.has(c));
    return {
      id: n.id,
      pinnable: (isolated.size > 0 ? iso : [...n.cpus]).sort((a, b) => a - b),
      pinned: new Map(),
      hugepages: new Map(n.hugepages.map((h) => [h.sizeKiB, { total: h.total, used: 0 }])),
      vfs: new Map(),
      freeVfs: new Map(),
    };
  });
  let hugepageMiBTotal = 0;
  for (const n of numaInfos) for (const h of n.hugepages) hugepageMiBTotal += (h.sizeKiB * h.total) / 1024;
  const warm = warmPoolHeld(inv);
  const view: NodeView = {
    nodeId: meta.nodeId,
    epoch: meta.epoch,
    health: meta.health,
    cordoned: meta.cordoned,
    draining: meta.draining ?? false,
    labels: inv.labels,
    inventory: inv,
    dataplanes: new Set(inv.dataplanes.map((d) => d.kind)),
    switchNetworks: new Set(inv.dataplanes.filter((d) => d.kind === 'ovs-dpdk' && d.state === 'ready').flatMap((d) => d.networks ?? [])),
    cpuAllocationRatio: cpuAllocationRatio(inv),
    cpuCount: inv.cpuCount,
    pinnedCount: 0,
    sharedVcpusUsed: warm.vcpus,
    memoryMiBCapacity: Math.max(0, inv.memoryMiB - hugepageMiBTotal),
    memoryMiBUsed: warm.memoryMiB,
    numa,
    vfByPci: new Map(),
    freeVfs: new Map(),
    tenants: new Map(),
    tenantVcpus: new Map(),
    tenantOverheads: new Map(),
    vnfs: new Map(),
    reservations: new Map(),
  };
  for (const pf of inv.sriovPfs) {
    if (!pf.physnet) continue; // a PF mapped to no physnet is not schedulable
    const numaId = numaOf(view, pf.numaNode) ? pf.numaNode : -1;
    let nv = numaOf(view, numaId);
    if (!nv) {
      nv = { id: -1, pinnable: [], pinned: new Map(), hugepages: new Map(), vfs: new Map(), freeVfs: new Map() };
      view.numa.push(nv);
    }
    let slots = nv.vfs.get(pf.physnet);
    if (!slots) nv.vfs.set(pf.physnet, (slots = []));
    for (const vf of [...pf.vfs].sort((a, b) => a.index - b.index)) {
      const slot: VfSlot = { physnet: pf.physnet, pfPciAddress: pf.pciAddress, vfIndex: vf.index, vfPciAddress: vf.pciAddress, numaNode: numaId };
      slots.push(slot);
      view.vfByPci.set(vf.pciAddress, slot);
      inc(nv.freeVfs, pf.physnet, 1);
      inc(view.freeVfs, pf.physnet, 1);
    }
  }
  for (const r of reservations) applyReservation(view, r);
  return view;
}

/**
 * Shared vCPUs per unpinned CPU: what the node's operator set (node agent `cpuAllocationRatio`, reported in the
 * inventory), 1 when the node reports none. A value no node agent sends (not a finite number >= 1: a broken or
 * foreign agent) counts as 1 rather than as unbounded or no shared capacity.
 */
function cpuAllocationRatio(inv: NodeInventory): number {
  const r = inv.cpuAllocationRatio ?? 1;
  return typeof r === 'number' && Number.isFinite(r) && r >= 1 ? r : 1;
}

/**
 * What the node's warm pools hold (docs/scheduler.md "Warm pools"): every pool VM booting or ready takes its
 * flavour's vCPUs (shared) and memory plus the VM overhead, like a tenant VM; placement sees it as used. A replica
 * that claims a pool VM books its own demand as usual, and the node refills the pool only where the room is left.
 */
export function warmPoolHeld(inv: NodeInventory): { vcpus: number; memoryMiB: number } {
  const oh = inv.vmOverhead ? inv.vmOverhead.guestBaseMiB + inv.vmOverhead.hypervisorMiB : 0;
  let vcpus = 0;
  let memoryMiB = 0;
  for (const p of inv.warmPool ?? []) {
    const n = Math.max(0, (p.ready ?? 0) + (p.booting ?? 0));
    vcpus += n * p.vcpus;
    memoryMiB += n * (p.memoryMiB + oh);
  }
  return { vcpus, memoryMiB };
}

function findVf(view: NodeView, pci: string): VfSlot | undefined {
  return view.vfByPci.get(pci);
}

/**
 * Checks that a reservation's concrete resources are all free on the view (the commit-time re-check):
 * pinned CPUs pinnable and unpinned, hugepages free on its NUMA node, VFs known and free, capacity left.
 */
export function checkReservation(view: NodeView, r: Reservation): Verdict {
  if (view.reservations.has(r.allocId)) return { ok: false, reason: `allocation ${r.allocId} already reserved` };
  const pinnedAfter = view.pinnedCount + (r.cpus?.length ?? 0);
  const shared = r.cpuPolicy === 'dedicated' ? 0 : r.vcpus;
  if ((view.cpuCount - pinnedAfter) * view.cpuAllocationRatio < view.sharedVcpusUsed + shared)
    return { ok: false, reason: 'not enough vCPUs' };
  const vmMax = view.inventory.vmMaxVcpus;
  if (vmMax !== undefined && (view.tenantVcpus.get(r.tenantId) ?? 0) + r.vcpus > vmMax) return { ok: false, reason: `the tenant's VM would exceed the node's ${vmMax} vCPUs per VM` };
  // A replica that boots its tenant's VM on the node also needs the VM's overhead.
  const oh = view.tenants.has(r.tenantId) ? undefined : (r.vmOverhead ?? defaultOverhead(view.inventory));
  const mem = ordinaryMiB(r) + (oh?.memoryMiB ?? 0);
  if (view.memoryMiBUsed + mem > view.memoryMiBCapacity) return { ok: false, reason: 'not enough memory' };
  if (r.cpus) {
    const nv = r.numaNode === undefined ? undefined : numaOf(view, r.numaNode);
    for (const c of r.cpus) {
      if (!nv || !nv.pinnable.includes(c)) return { ok: false, reason: `CPU ${c} is not pinnable on NUMA node ${r.numaNode}` };
      if (nv.pinned.has(c)) return { ok: false, reason: `CPU ${c} already pinned by ${nv.pinned.get(c)}` };
    }
  }
  const pages = new Map<string, { numaNode: number; sizeKiB: number; count: number }>();
  for (const hp of [r.hugepages, oh?.hugepages]) {
    if (!hp) continue;
    const k = `${hp.numaNode}/${hp.sizeKiB}`;
    pages.set(k, { numaNode: hp.numaNode, sizeKiB: hp.sizeKiB, count: (pages.get(k)?.count ?? 0) + hp.count });
  }
  for (const hp of pages.values()) {
    const h = numaOf(view, hp.numaNode)?.hugepages.get(hp.sizeKiB);
    if (!h || h.total - h.used < hp.count) return { ok: false, reason: `not enough ${hp.sizeKiB} KiB hugepages on NUMA node ${hp.numaNode}` };
  }
  const seen = new Set<string>();
  for (const pci of r.vfs) {
    const s = findVf(view, pci);
    if (!s) return { ok: false, reason: `VF ${pci} unknown on node ${view.nodeId}` };
    if (s.holder !== undefined || seen.has(pci)) return { ok: false, reason: `VF ${pci} already held by ${s.holder ?? r.allocId}` };
    seen.add(pci);
  }
  return { ok: true };
}

/** Applies a reservation to the view's counters (no checks: the caller checked, or the ledger says so). */
export function applyReservation(view: NodeView, r: Reservation): void {
  if (view.reservations.has(r.allocId)) return;
  view.reservations.set(r.allocId, r);
  if (r.cpuPolicy !== 'dedicated') view.sharedVcpusUsed += r.vcpus;
  view.memoryMiBUsed += ordinaryMiB(r);
  chargeOverhead(view, r);
  if (r.cpus && r.numaNode !== undefined) {
    const nv = numaOf(view, r.numaNode);
    for (const c of r.cpus) {
      nv?.pinned.set(c, r.allocId);
      view.pinnedCount++;
    }
  }
  if (r.hugepages) {
    const h = numaOf(view, r.hugepages.numaNode)?.hugepages.get(r.hugepages.sizeKiB);
    if (h) h.used += r.hugepages.count;
  }
  for (const pci of r.vfs) {
    const s = findVf(view, pci);
    if (!s || s.holder !== undefined) continue;
    s.holder = r.allocId;
    inc(numaOf(view, s.numaNode)!.freeVfs, s.physnet, -1);
    inc(view.freeVfs, s.physnet, -1);
  }
  inc(view.tenants, r.tenantId, 1);
  inc(view.tenantVcpus, r.tenantId, r.vcpus);
  inc(view.vnfs, r.vnfId, 1);
}

/** Removes a reservation from the view's counters; a no-op when absent. */
export function removeReservation(view: NodeView, allocId: string): Reservation | undefined {
  const r = view.reservations.get(allocId);
  if (!r) return undefined;
  view.reservations.delete(allocId);
  if (r.cpuPolicy !== 'dedicated') view.sharedVcpusUsed -= r.vcpus;
  view.memoryMiBUsed -= ordinaryMiB(r);
  if (r.cpus && r.numaNode !== undefined) {
    const nv = numaOf(view, r.numaNode);
    for (const c of r.cpus) {
      if (nv?.pinned.get(c) === allocId) {
        nv.pinned.delete(c);
        view.pinnedCount--;
      }
    }
  }
  if (r.hugepages) {
    const h = numaOf(view, r.hugepages.numaNode)?.hugepages.get(r.hugepages.sizeKiB);
    if (h) h.used -= r.hugepages.count;
  }
  for (const pci of r.vfs) {
    const s = findVf(view, pci);
    if (!s || s.holder !== allocId) continue;
    s.holder = undefined;
    inc(numaOf(view, s.numaNode)!.freeVfs, s.physnet, 1);
    inc(view.freeVfs, s.physnet, 1);
  }
  inc(view.tenants, r.tenantId, -1);
  inc(view.tenantVcpus, r.tenantId, -r.vcpus);
  inc(view.vnfs, r.vnfId, -1);
  const charged = view.tenantOverheads.get(r.tenantId);
  if (charged && !view.tenants.has(r.tenantId)) {
    // the tenant's last replica here: its VM goes, and its overhead with it
    chargeBooking(view, charged.booking, -1);
    view.tenantOverheads.delete(r.tenantId);
  } else if (charged?.allocId === allocId) {
    // the replica that booked the VM goes, the VM stays for the others: the overhead stays charged to the tenant
    view.tenantOverheads.set(r.tenantId, { booking: charged.booking });
  }
  return r;
}

function chargeBooking(view: NodeView, b: VmOverheadBooking, sign: 1 | -1): void {
  view.memoryMiBUsed += sign * b.memoryMiB;
  if (b.hugepages) {
    const h = numaOf(view, b.hugepages.numaNode)?.hugepages.get(b.hugepages.sizeKiB);
    if (h) h.used += sign * b.hugepages.count;
  }
}

/**
 * Charges a tenant's VM overhead once per node: the reservation that booked it (`vmOverhead`), or, when none of
 * the tenant's reservations did (the booking replica is gone, or older ledgers), the node's memory-only default.
 */
function chargeOverhead(view: NodeView, r: Reservation): void {
  const cur = view.tenantOverheads.get(r.tenantId);
  if (cur && (cur.allocId !== undefined || !r.vmOverhead)) return;
  const booking = r.vmOverhead ?? defaultOverhead(view.inventory);
  if (!booking) return;
  if (cur) chargeBooking(view, cur.booking, -1);
  chargeBooking(view, booking, 1);
  view.tenantOverheads.set(r.tenantId, r.vmOverhead ? { booking, allocId: r.allocId } : { booking });
}

/** The reservation a placement decision makes. */
export function reservationFor(req: PlacementRequest, allocId: string, epoch: number, a: Assignment, at = new Date().toISOString()): Reservation {
  const r: Reservation = {
    allocId,
    tenantId: req.tenantId,
    vnfId: req.vnfId,
    replica: req.replica,
    epoch,
    vcpus: req.vcpus,
    memoryMiB: req.memoryMiB,
    cpuPolicy: req.cpuPolicy,
    vfs: a.vfs.map((v) => v.vfPciAddress),
    at,
  };
  if (a.numaNode !== undefined) r.numaNode = a.numaNode;
  if (a.cpus) r.cpus = a.cpus;
  if (a.hugepages) r.hugepages = a.hugepages;
  if (a.vmOverhead) r.vmOverhead = a.vmOverhead;
  return r;
}

/** What the API shows of a node's use (`NodeRecord.allocated` and `.sandboxes`), from its view. */
export function summarizeView(view: NodeView): {
  allocated: { vcpus: number; memoryMiB: number; vfs: number; replicas: number };
  sandboxes: { tenantId: string; replicas: number }[];
  free: { sharedVcpus: number; memoryMiB: number; vfs: Record<string, number>; dedicatedCpus: Record<string, number> };
  reservations: NodeReservation[];
} {
  let vcpus = 0;
  let memoryMiB = 0;
  let vfs = 0;
  for (const r of view.reservations.values()) {
    vcpus += r.vcpus;
    memoryMiB += r.memoryMiB;
    vfs += r.vfs.length;
  }
  const dedicatedCpus: Record<string, number> = {};
  for (const nv of view.numa) if (nv.id >= 0) dedicatedCpus[String(nv.id)] = nv.pinnable.length - nv.pinned.size;
  return {
    allocated: { vcpus, memoryMiB, vfs, replicas: view.reservations.size },
    sandboxes: [...view.tenants].map(([tenantId, replicas]) => ({ tenantId, replicas })).sort((a, b) => a.tenantId.localeCompare(b.tenantId)),
    free: {
      sharedVcpus: (view.cpuCount - view.pinnedCount) * view.cpuAllocationRatio - view.sharedVcpusUsed,
      memoryMiB: view.memoryMiBCapacity - view.memoryMiBUsed,
      vfs: Object.fromEntries(view.freeVfs),
      dedicatedCpus,
    },
    reservations: [...view.reservations.values()]
      .map((r) => ({
        tenantId: r.tenantId,
        vnfId: r.vnfId,
        replica: r.replica,
        vcpus: r.vcpus,
        memoryMiB: r.memoryMiB,
        cpuPolicy: r.cpuPolicy,
        ...(r.numaNode !== undefined ? { numaNode: r.numaNode } : {}),
        ...(r.cpus ? { cpus: [...r.cpus] } : {}),
        ...(r.hugepages ? { hugepages: { ...r.hugepages } } : {}),
        vfs: [...r.vfs],
        ...(r.vmOverhead ? { vmOverhead: structuredClone(r.vmOverhead) } : {}),
      }))
      .sort((a, b) => a.tenantId.localeCompare(b.tenantId) || a.vnfId.localeCompare(b.vnfId) || a.replica - b.replica),
  };
}
