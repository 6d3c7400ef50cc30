/**
 * Placement vocabulary (after Nomad's feasibility/rank iterators and the kube-scheduler framework):
 * yes/no filters apart from 0..100 scorers, every rejection recorded as {filter, reason}.
 */
import type { CpuPolicy, DataplaneKind, NodeHealth, NodeInventory, NumaPolicy, VmOverheadBooking, VnfdDataplane } from '@edgenfv/contracts';

/** One SR-IOV interface of the replica that needs a VF. */
export interface VfDemand {
  interface: string;
  physnet: string;
}

/** What one replica asks of a node, precomputed once per decision (see `buildPlacementRequest`). */
export interface PlacementRequest {
  tenantId: string;
  vnfId: string;
  replica: number;
  vcpus: number;
  memoryMiB: number;
  cpuPolicy: CpuPolicy;
  numa: NumaPolicy;
  hugepages?: { sizeKiB: number; count: number };
  /** The VNFD's guest data plane, passed through to the allocation (the node agent prepares it in the guest). */
  guestDataplane?: VnfdDataplane;
  /** That data plane puts a NIC on vfio-pci in the guest: the tenant's VM needs a virtual IOMMU (vm-iommu filter). */
  guestVfio?: boolean;
  /** In interface order. */
  vfs: readonly VfDemand[];
  /** The same, counted per physnet. */
  vfsByPhysnet: ReadonlyMap<string, number>;
  /** Data plane kinds of vhost-user interfaces that name no network (the VNFD's older `dataplane` form). */
  dataplanes: readonly DataplaneKind[];
  /** Networks of the vhost-user interfaces: each needs the node's DPDK switch on it. */
  switchNetworks: readonly string[];
  nodeSelector: Readonly<Record<string, string>>;
  antiAffinity: 'node' | 'none';
  /** Nodes that already hold another replica of this VNF (anti-affinity). */
  avoidNodeIds: ReadonlySet<string>;
  /** Nodes the operation moves away from (heal: the failed node; drain: the drained one), whatever the policy. */
  excludeNodeIds?: ReadonlySet<string>;
  /** The only node the replica may go to (a tenant VM's replicas migrating as one: the group's destination). */
  onlyNodeId?: string;
  /** What the tenant's quota still allows; a missing key is unlimited; undefined: not checked here. */
  quotaRemaining?: { vcpus?: number; memoryMiB?: number; vfs?: number };
}

/** One VF as the node view tracks it. */
export interface VfSlot {
  physnet: string;
  pfPciAddress: string;
  vfIndex: number;
  vfPciAddress: string;
  /** NUMA node of the PF; -1 when the platform does not say. */
  numaNode: number;
  /** allocId holding it, or undefined when free. */
  holder?: string;
}

export interface HugepageCounter {
  total: number;
  used: number;
}

/** One NUMA node of a node view. id -1 holds only VFs whose PF has no NUMA affinity. */
export interface NumaView {
  id: number;
  /** Logical CPUs that may be pinned (isolated CPUs of this NUMA node, or all its CPUs when none are isolated). */
  pinnable: readonly number[];
  /** Pinned CPU -> allocId. */
  pinned: Map<number, string>;
  hugepages: Map<number, HugepageCounter>; // by sizeKiB
  vfs: Map<string, VfSlot[]>; // by physnet
  freeVfs: Map<string, number>; // by physnet
}

/** What a committed (or locally assumed) reservation holds on a node: one ledger entry. */
export interface Reservation {
  allocId: string;
  tenantId: string;
  vnfId: string;
  replica: number;
  epoch: number;
  vcpus: number;
  memoryMiB: number;
  cpuPolicy: CpuPolicy;
  numaNode?: number;
  cpus?: number[];
  hugepages?: { sizeKiB: number; count: number; numaNode: number };
  /** VF PCI addresses. */
  vfs: string[];
  /** The tenant VM's overhead, booked by the first replica of its tenant on the node. */
  vmOverhead?: VmOverheadBooking;
  /** IPAM lease owners (`<allocId>.<ifName>`) of the allocation: kept while fenced, released with it. */
  ipOwners?: string[];
  /** The allocation was released while its node was lost: resources stay held until the node confirms teardown. */
  fenced?: boolean;
  at: string;
}

/** A node as placement sees it: inventory plus precomputed free counts, kept up to date incrementally. */
export interface NodeView {
  nodeId: string;
  epoch: number;
  health: NodeHealth;
  cordoned: boolean;
  draining: boolean;
  labels: Readonly<Record<string, string>>;
  inventory: NodeInventory;
  dataplanes: ReadonlySet<DataplaneKind>;
  /** Networks the node's OVS-DPDK switch serves while it is ready (inventory `dataplanes[].networks`, `state`). */
  switchNetworks: ReadonlySet<string>;
  /** Shared vCPUs per unpinned CPU (inventory `cpuAllocationRatio`, default 1): capacity is (cpuCount - pinned) * ratio. */
  cpuAllocationRatio: number;
  cpuCount: number;
  pinnedCount: number;
  sharedVcpusUsed: number;
  /** Memory outside the hugepage pools. */
  memoryMiBCapacity: number;
  memoryMiBUsed: number;
  numa: NumaView[];
  /** Every VF by its PCI address. */
  vfByPci: Map<string, VfSlot>;
  /** Free VFs per physnet, all NUMA nodes together (incl. -1). */
  freeVfs: Map<string, number>;
  /** tenantId -> replicas on this node (one VM per tenant per node). */
  tenants: Map<string, number>;
  /** tenantId -> the vCPUs of its replicas on this node (its VM's vCPUs; inventory `vmMaxVcpus` bounds them). */
  tenantVcpus: Map<string, number>;
  /** tenantId -> the overhead its VM holds on this node (charged once per tenant; see `vmOverheadFor`). */
  tenantOverheads: Map<string, { booking: VmOverheadBooking; allocId?: string }>;
  /** vnfId -> replicas on this node. */
  vnfs: Map<string, number>;
  reservations: Map<string, Reservation>;
}

export type Verdict = { ok: true } | { ok: false; reason: string };

export interface Filter {
  readonly name: string;
  /** True when the verdict does not depend on the node (tenant quota): evaluated once per decision. */
  readonly nodeIndependent?: boolean;
  filter(req: PlacementRequest, node: NodeView): Verdict;
}

export interface Scorer {
  readonly name: string;
  readonly weight: number;
  /** 0..100 */
  score(req: PlacementRequest, node: NodeView): number;
}

export interface AssignedVf {
  interface: string;
  physnet: string;
  pfPciAddress: string;
  vfIndex: number;
  vfPciAddress: string;
  numaNode: number;
}

/** The concrete resources chosen on the node. */
export interface Assignment {
  /** NUMA node of the pinned CPUs (dedicated), or of the VFs/hugepages when aligned. */
  numaNode?: number;
  cpus?: number[];
  hugepages?: { sizeKiB: number; count: number; numaNode: number };
  /** The tenant VM's overhead, when this replica is the first of its tenant on the node. */
  vmOverhead?: VmOverheadBooking;
  vfs: AssignedVf[];
  /** True when CPUs, hugepages and VFs all sit on one NUMA node. */
  numaAligned: boolean;
}

export interface Rejection {
  filter: string;
  reason: string;
  nodes: number;
}

/** Why nothing fit: per filter and reason, how many nodes it rejected. */
export interface Explanation {
  nodes: number;
  rejected: Rejection[];
  message: string;
}

export type PlaceResult =
  | {
      ok: true;
      nodeId: string;
      node: NodeView;
      assignment: Assignment;
      score: number;
      /** Nodes evaluated by the filters, and how many of them were feasible. */
      evaluated: number;
      feasible: number;
    }
  | { ok: false; explanation: Explanation };
