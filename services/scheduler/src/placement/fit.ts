/** NUMA fit: which NUMA node(s) can give a replica its pinned CPUs, hugepages and VFs, and the concrete choice. */
import { hugepagesNeeded, vmOverheadFor } from './overhead.js';
import type { AssignedVf, Assignment, NodeView, NumaView, PlacementRequest, VfSlot } from './types.js';

export function freeDedicated(nv: NumaView): number {
  return nv.pinnable.length - nv.pinned.size;
}

export function freeHugepages(nv: NumaView, sizeKiB: number): number {
  const h = nv.hugepages.get(sizeKiB);
  return h ? h.total - h.used : 0;
}

/** Does the request bind anything to a NUMA node (pinned CPUs, hugepages or VFs)? */
export function numaConstrained(req: PlacementRequest): boolean {
  return req.cpuPolicy === 'dedicated' || req.hugepages !== undefined || req.vfs.length > 0;
}

/**
 * Can this NUMA node give the request all of its pinned CPUs, hugepages and VFs together? `pages`: the hugepages
 * it needs there (`hugepagesNeeded`: its own and its VM's base memory's).
 */
export function alignedOn(req: PlacementRequest, nv: NumaView, pages = req.hugepages?.count ?? 0): boolean {
  if (nv.id < 0) return false;
  if (req.cpuPolicy === 'dedicated' && freeDedicated(nv) < req.vcpus) return false;
  if (req.hugepages && freeHugepages(nv, req.hugepages.sizeKiB) < pages) return false;
  for (const [physnet, n] of req.vfsByPhysnet) if ((nv.freeVfs.get(physnet) ?? 0) < n) return false;
  return true;
}

export function alignedNuma(req: PlacementRequest, node: NodeView): NumaView | undefined {
  const pages = hugepagesNeeded(req, node);
  for (const nv of node.numa) if (alignedOn(req, nv, pages)) return nv;
  return undefined;
}

function takeVfs(req: PlacementRequest, node: NodeView, preferred: NumaView | undefined): AssignedVf[] | undefined {
  const taken = new Set<VfSlot>();
  const out: AssignedVf[] = [];
  const order = preferred ? [preferred, ...node.numa.filter((n) => n !== preferred)] : node.numa;
  for (const d of req.vfs) {
    let slot: VfSlot | undefined;
    for (const nv of order) {
      slot = nv.vfs.get(d.physnet)?.find((s) => s.holder === undefined && !taken.has(s));
      if (slot) break;
    }
    if (!slot) return undefined;
    taken.add(slot);
    out.push({
      interface: d.interface,
      physnet: d.physnet,
      pfPciAddress: slot.pfPciAddress,
      vfIndex: slot.vfIndex,
      vfPciAddress: slot.vfPciAddress,
      numaNode: slot.numaNode,
    });
  }
  return out;
}

function takeCpus(nv: NumaView, n: number): number[] {
  const out: number[] = [];
  for (const c of nv.pinnable) {
    if (out.length === n) break;
    if (!nv.pinned.has(c)) out.push(c);
  }
  return out;
}

/**
 * Chooses the concrete CPUs, hugepages and VFs on a node that passed the filters: on one NUMA node when
 * possible (always under `strict`), else (preferred/none) pinned CPUs on one NUMA node, hugepages on that node
 * when it has them, VFs nearest first. Deterministic: lowest NUMA id, lowest CPU ids, lowest VF indexes.
 */
export function assign(req: PlacementRequest, node: NodeView): Assignment | undefined {
  const aligned = numaConstrained(req) ? alignedNuma(req, node) : undefined;
  if (aligned) {
    const a: Assignment = { numaNode: aligned.id, vfs: takeVfs(req, node, aligned)!, numaAligned: true };
    if (req.cpuPolicy === 'dedicated') a.cpus = takeCpus(aligned, req.vcpus);
    if (req.hugepages) a.hugepages = { ...req.hugepages, numaNode: aligned.id };
    const vmOverhead = vmOverheadFor(req, node, aligned.id);
    if (vmOverhead) a.vmOverhead = vmOverhead;
    return a;
  }
  if (req.numa === 'strict' && numaConstrained(req)) return undefined;
  let cpuNuma: NumaView | undefined;
  if (req.cpuPolicy === 'dedicated') {
    cpuNuma = node.numa.find((nv) => nv.id >= 0 && freeDedicated(nv) >= req.vcpus);
    if (!cpuNuma) return undefined;
  }
  let hpNuma: NumaView | undefined;
  if (req.hugepages) {
    const hp = req.hugepages;
    const pages = hugepagesNeeded(req, node);
    hpNuma =
      cpuNuma && freeHugepages(cpuNuma, hp.sizeKiB) >= pages
        ? cpuNuma
        : node.numa.find((nv) => nv.id >= 0 && freeHugepages(nv, hp.sizeKiB) >= pages);
    if (!hpNuma) return undefined;
  }
  const home = cpuNuma ?? hpNuma;
  const vfs = takeVfs(req, node, home);
  if (!vfs) return undefined;
  const a: Assignment = { vfs, numaAligned: !numaConstrained(req) };
  if (home) a.numaNode = home.id;
  if (cpuNuma) a.cpus = takeCpus(cpuNuma, req.vcpus);
  if (req.hugepages && hpNuma) a.hugepages = { ...req.hugepages, numaNode: hpNuma.id };
  const vmOverhead = vmOverheadFor(req, node, hpNuma?.id);
  if (vmOverhead) a.vmOverhead = vmOverhead;
  return a;
}
