/**
 * Placement filters: yes/no, cheap ones first; a rejection's reason depends only on the request (not on the node),
 * so that reasons aggregate into "N nodes: <reason>".
 */
import { alignedNuma, freeDedicated, freeHugepages, numaConstrained } from './fit.js';
import { hugepagesNeeded, memoryNeeded, vmOverheadFor } from './overhead.js';
import type { Filter, NodeView, PlacementRequest, Verdict } from './types.js';

const OK: Verdict = { ok: true };
const no = (reason: string): Verdict => ({ ok: false, reason });

export const excludeFilter: Filter = {
  name: 'exclude',
  filter: (req, node) =>
    req.excludeNodeIds?.has(node.nodeId)
      ? no('the operation moves replicas away from this node')
      : req.onlyNodeId !== undefined && node.nodeId !== req.onlyNodeId
        ? no(`the tenant VM's other replicas move to node ${req.onlyNodeId}`)
        : OK,
};

export const healthFilter: Filter = {
  name: 'health',
  filter: (_req, node) => (node.health === 'Ready' ? OK : no(`node is ${node.health}`)),
};

export const cordonFilter: Filter = {
  name: 'cordon',
  filter: (_req, node) => (node.cordoned ? no('node is cordoned') : node.draining ? no('node is draining') : OK),
};

export const tenantQuotaFilter: Filter = {
  name: 'tenant-quota',
  nodeIndependent: true,
  filter: (req) => {
    const q = req.quotaRemaining;
    if (!q) return OK;
    if (q.vcpus !== undefined && req.vcpus > q.vcpus) return no(`tenant quota: needs ${req.vcpus} vCPUs, ${q.vcpus} left`);
    if (q.memoryMiB !== undefined && req.memoryMiB > q.memoryMiB)
      return no(`tenant quota: needs ${req.memoryMiB} MiB, ${q.memoryMiB} MiB left`);
    if (q.vfs !== undefined && req.vfs.length > q.vfs) return no(`tenant quota: needs ${req.vfs.length} VFs, ${q.vfs} left`);
    return OK;
  },
};

const selectors = new WeakMap<PlacementRequest, { entries: [string, string][]; rejection: Verdict }>();
function selectorOf(req: PlacementRequest): { entries: [string, string][]; rejection: Verdict } {
  let s = selectors.get(req);
  if (!s) {
    const entries = Object.entries(req.nodeSelector);
    s = { entries, rejection: no(`labels do not match nodeSelector {${entries.map(([a, b]) => `${a}=${b}`).join(',')}}`) };
    selectors.set(req, s);
  }
  return s;
}

export const nodeSelectorFilter: Filter = {
  name: 'node-selector',
  filter: (req, node) => {
    const sel = selectorOf(req);
    if (sel.entries.length === 0) return OK;
    for (const [k, v] of sel.entries) if (node.labels[k] !== v) return sel.rejection;
    return OK;
  },
};

export const antiAffinityFilter: Filter = {
  name: 'anti-affinity',
  filter: (req, node) =>
    req.antiAffinity === 'node' && (req.avoidNodeIds.has(node.nodeId) || node.vnfs.has(req.vnfId))
      ? no('already runs a replica of this VNF (antiAffinity: node)')
      : OK,
};

/**
 * The tenant's VM on the node stays within the node's vCPUs per VM (inventory `vmMaxVcpus`, the node agent's
 * `qemu.maxVcpus`): a tenant's replicas on a node share one VM, so their vCPUs count together.
 */
export const vmSizeFilter: Filter = {
  name: 'vm-size',
  filter: (req, node) => {
    const max = node.inventory.vmMaxVcpus;
    if (max === undefined) return OK;
    const has = node.tenantVcpus.get(req.tenantId) ?? 0;
    if (has + req.vcpus <= max) return OK;
    return no(has > 0 ? `the tenant's VM here has ${has} vCPUs; ${req.vcpus} more exceed the node's ${max} per VM` : `${req.vcpus} vCPUs exceed the node's ${max} per VM`);
  },
};

/**
 * A data plane that puts a NIC on vfio-pci in the guest needs a virtual IOMMU in the tenant's VM, which is given at
 * boot only: a node whose VM of this tenant was booted without one (inventory `noViommuTenants`) cannot take it.
 */
export const vmIommuFilter: Filter = {
  name: 'vm-iommu',
  filter: (req, node) =>
    req.guestVfio && node.inventory.noViommuTenants?.includes(req.tenantId)
      ? no("the tenant's VM here was booted without a virtual IOMMU, which a vfio-pci data plane in the guest needs (it cannot be added to a running VM)")
      : OK,
};

export const dataplaneFilter: Filter = {
  name: 'dataplane',
  filter: (req, node) => {
    for (const n of req.switchNetworks) if (!node.switchNetworks.has(n)) return no(`no healthy OVS-DPDK switch on network ${n}`);
    for (const d of req.dataplanes) if (!node.dataplanes.has(d)) return no(`no ${d} data plane for vhost-user`);
    return OK;
  },
};

/** vCPUs (shared pool, and what pinning leaves of it) and memory outside the hugepage pools. */
export const resourcesFilter: Filter = {
  name: 'resources',
  filter: (req, node) => {
    const dedicated = req.cpuPolicy === 'dedicated';
    const pinnedAfter = node.pinnedCount + (dedicated ? req.vcpus : 0);
    const sharedAfter = node.sharedVcpusUsed + (dedicated ? 0 : req.vcpus);
    if (pinnedAfter > node.cpuCount || (node.cpuCount - pinnedAfter) * node.cpuAllocationRatio < sharedAfter)
      return no(`fewer than ${req.vcpus} free vCPUs`);
    const mem = memoryNeeded(req, node);
    if (node.memoryMiBUsed + mem > node.memoryMiBCapacity) {
      const oh = vmOverheadFor(req, node);
      return no(`less than ${mem} MiB of free memory${oh && oh.memoryMiB > 0 ? ` (incl. ${oh.memoryMiB} MiB of VM overhead)` : ''}`);
    }
    return OK;
  },
};

export const sriovVfsFilter: Filter = {
  name: 'sriov-vfs',
  filter: (req, node) => {
    for (const [physnet, n] of req.vfsByPhysnet)
      if ((node.freeVfs.get(physnet) ?? 0) < n) return no(`fewer than ${n} free VFs on ${physnet}`);
    return OK;
  },
};

export const dedicatedCpusFilter: Filter = {
  name: 'dedicated-cpus',
  filter: (req, node) => {
    if (req.cpuPolicy !== 'dedicated') return OK;
    for (const nv of node.numa) if (nv.id >= 0 && freeDedicated(nv) >= req.vcpus) return OK;
    return no(`no NUMA node with ${req.vcpus} free dedicated CPUs`);
  },
};

export const hugepagesFilter: Filter = {
  name: 'hugepages',
  filter: (req, node) => {
    const hp = req.hugepages;
    if (!hp) return OK;
    const pages = hugepagesNeeded(req, node);
    for (const nv of node.numa) if (nv.id >= 0 && freeHugepages(nv, hp.sizeKiB) >= pages) return OK;
    return no(`no NUMA node with ${pages} free ${hp.sizeKiB} KiB hugepages${pages > hp.count ? ` (incl. ${pages - hp.count} for the VM's base memory)` : ''}`);
  },
};

/** What the request needs on one NUMA node, in words. */
export function describeNumaDemand(req: PlacementRequest): string {
  const parts: string[] = [];
  if (req.cpuPolicy === 'dedicated') parts.push(`${req.vcpus} free dedicated CPUs`);
  if (req.hugepages) parts.push(`${req.hugepages.count} free ${req.hugepages.sizeKiB} KiB hugepages`);
  for (const [physnet, n] of req.vfsByPhysnet) parts.push(`${n} free VF${n === 1 ? '' : 's'} on ${physnet}`);
  return parts.length <= 1 ? parts.join('') : `${parts.slice(0, -1).join(', ')} and ${parts[parts.length - 1]}`;
}

/** numa: strict (Nova's `required`): pinned CPUs, hugepages and VFs all on one NUMA node. preferred/none pass. */
export const numaFilter: Filter = {
  name: 'numa',
  filter: (req, node) => {
    if (req.numa !== 'strict' || !numaConstrained(req)) return OK;
    return alignedNuma(req, node) ? OK : no(`no NUMA node with ${describeNumaDemand(req)} together (numa: strict)`);
  },
};

/** The default pipeline, cheap filters first. */
export const DEFAULT_FILTERS: readonly Filter[] = [
  tenantQuotaFilter,
  excludeFilter,
  healthFilter,
  cordonFilter,
  nodeSelectorFilter,
  antiAffinityFilter,
  dataplaneFilter,
  vmIommuFilter,
  resourcesFilter,
  vmSizeFilter,
  sriovVfsFilter,
  dedicatedCpusFilter,
  hugepagesFilter,
  numaFilter,
];

export function runFilters(filters: readonly Filter[], req: PlacementRequest, node: NodeView): { filter: string; reason: string } | undefined {
  for (const f of filters) {
    const v = f.filter(req, node);
    if (!v.ok) return { filter: f.name, reason: v.reason };
  }
  return undefined;
}
