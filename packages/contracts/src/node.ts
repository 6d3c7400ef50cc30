/**
 * Node inventory: what a node agent reports when it registers (and refreshes with heartbeats).
 * Built by the node agent from systeminformation and sysfs; consumed by the scheduler's placement.
 */
import type { DataplaneKind } from './vnfd.js';

export type HypervisorKind = 'qemu' | 'cloud-hypervisor' | 'firecracker';

export interface HugepagePool {
  sizeKiB: number;
  total: number;
  free: number;
}

export interface NumaNodeInfo {
  id: number;
  cpus: number[]; // logical CPU ids on this NUMA node
  memoryMiB: number;
  hugepages: HugepagePool[];
}

export interface SriovVfInfo {
  index: number; // virtfn<index>
  pciAddress: string;
  driver?: string; // bound driver (igbvf, iavf, vfio-pci, ...)
  iommuGroup?: number;
}

export interface SriovPfInfo {
  pciAddress: string;
  ifName?: string;
  physnet?: string; // from the node's config (physnet mapping), not from the hardware
  numaNode: number; // -1 when the platform does not say
  totalVfs: number;
  numVfs: number;
  vendorId?: string;
  deviceId?: string;
  driver?: string;
  vfs: SriovVfInfo[];
}

export interface DataplaneInfo {
  kind: DataplaneKind;
  socketDir?: string;
  numaNode?: number;
  /** A data plane the node agent runs itself (OVS-DPDK): where it is; absent for one the node only finds. */
  state?: DataplaneState;
  /** Why it is not ready (the switch's own words, e.g. its log's last error): set when state is failed. */
  error?: string;
  /** Networks whose vhost-user ports this switch serves (one bridge each). */
  networks?: string[];
}

/** starting: being (re)started; ready: serving its bridges; failed: will not start (retried with backoff). */
export type DataplaneState = 'starting' | 'ready' | 'failed';

export interface HypervisorInfo {
  kind: HypervisorKind;
  path: string;
  version?: string;
  accel: 'kvm' | 'tcg' | 'none';
}

export interface NodeInventory {
  nodeId: string;
  hostname: string;
  labels: Record<string, string>;
  cpuCount: number;
  isolatedCpus: number[];
  memoryMiB: number;
  numaNodes: NumaNodeInfo[];
  sriovPfs: SriovPfInfo[];
  dataplanes: DataplaneInfo[];
  hypervisors: HypervisorInfo[];
  kvm: boolean;
  agentVersion: string;
  /** Host readiness checks run by the node agent at start (packages/host-check; `edgenfv check` runs the same). */
  checks?: HostCheck[];
  /**
   * What one tenant VM costs this node beyond its replicas' own vCPUs and memory (booked once per tenant sandbox:
   * the first replica of a tenant on the node pays it, later replicas join the same VM). Absent: nothing extra.
   */
  vmOverhead?: VmOverhead;
  /**
   * The most vCPUs one tenant VM may have on this node (node agent `qemu.maxVcpus`). A tenant's replicas on a node
   * share its VM, so their vCPUs count together (vCPU hotplug grows the VM up to this). Absent: no such limit.
   */
  vmMaxVcpus?: number;
  /**
   * Tenants whose VM on this node has no virtual IOMMU and cannot take a vfio-pci data plane in the guest (one is given
   * at boot only; node config guest.viommu `on-demand` without guest.vfioNoIommu). Absent or empty: none.
   */
  noViommuTenants?: string[];
  /**
   * Shared vCPUs per unpinned CPU on this node (node agent `cpuAllocationRatio`, Nova's cpu_allocation_ratio; 1..16,
   * may be fractional): the scheduler books up to (cpuCount - pinned CPUs) x this many shared vCPUs here. Pinned
   * (dedicated) CPUs never overcommit. Absent: 1.
   */
  cpuAllocationRatio?: number;
  /** What keeps tenants' sandboxes apart on this node, and what this host leaves unprotected (docs/security.md). */
  protections?: HostProtection[];
  /**
   * Warm pools: pre-booted idle tenant-less VMs per flavour (docs/node-agent.md "Warm pools"). Every VM booting or
   * ready holds its flavour's vCPUs and memory plus the VM overhead: the scheduler counts them as used.
   */
  warmPool?: WarmPoolInfo[];
}

/** One warm pool of a node: its flavour, how many VMs it keeps, and how many it holds now. */
export interface WarmPoolInfo {
  vcpus: number;
  memoryMiB: number;
  /** The NUMA node the pool's VMs are placed on (cgroup cpuset); absent: any. */
  numaNode?: number;
  /** How many idle VMs the node keeps. */
  count: number;
  /** Idle VMs whose guest agent answers, ready to be claimed. */
  ready: number;
  /** VMs being booted (refill). */
  booting: number;
  /** Sandbox ids of the ready VMs (a claimed VM keeps its id as the tenant's sandbox). */
  readyVms: string[];
}

/** Per-VM overhead a node reports (docs/scheduler.md "What a VM books"). */
export interface VmOverhead {
  /**
   * Guest memory the node agent adds to every VM (kernel, guest agent, page cache), backed like the guest's own
   * memory: hugepages when the VM is hugepage-backed, ordinary memory otherwise.
   */
  guestBaseMiB: number;
  /** The hypervisor process's own memory beyond guest RAM (device models, TCG translation cache, QMP). */
  hypervisorMiB: number;
}

/** One isolation measure of a node: whether this host enforces it, and how (or why not). */
export interface HostProtection {
  name: string;
  enforced: boolean;
  detail: string;
}

/** One host readiness check: what was found and, unless it passed, what to do. */
export interface HostCheck {
  name: string;
  status: 'pass' | 'warn' | 'fail';
  detail: string;
  fix: string;
  /** The node's config promises what this check is about (a failed required check makes the node not ready to run it). */
  required: boolean;
}

export type NodeHealth = 'Ready' | 'NotReady' | 'Unknown';
