/**
 * The internal protocol between the scheduler (leader) and the node agents (`nfv.v1.internal.>`), after Nomad:
 * the leader writes allocations into KV, node agents converge on them and write what they observe back.
 * See docs/ARCHITECTURE.md "Scheduler <-> node agent". Both sides use these types: keep this file additive.
 */
import type { VmOverheadBooking } from './api.js';
import type { ErrorBody } from './errors.js';
import type { NodeInventory } from './node.js';
import type { DataplaneKind, PartitionPolicy, VnfdDataplane, VnfdRoute } from './vnfd.js';

export const INTERNAL_PREFIX = 'nfv.v1.internal';

/** `nfv.v1.internal.nodes.<n>.logs` request (the scheduler asks the node agent for a replica's container output). */
export interface NodeLogsRequest {
  tenantId: string;
  allocId: string;
  tailLines: number;
}
/** `nfv.v1.internal.nodes.<n>.exec` request: a command in a replica's container, time-limited. */
export interface NodeExecRequest {
  tenantId: string;
  allocId: string;
  command: string[];
  timeoutMs: number;
}

export const internalSubjects = {
  /** request: NodeLogsRequest -> envelope with {lines} */
  logs: (nodeId: string): string => `${INTERNAL_PREFIX}.nodes.${nodeId}.logs`,
  /** request: NodeExecRequest -> envelope with ExecResult */
  exec: (nodeId: string): string => `${INTERNAL_PREFIX}.nodes.${nodeId}.exec`,
  /** request: NodeMigrateRequest -> envelope with NodeMigrateReply (live migration, driven by the scheduler's leader) */
  migrate: (nodeId: string): string => `${INTERNAL_PREFIX}.nodes.${nodeId}.migrate`,
  /** request: RegisterRequest -> envelope with RegisterReply */
  register: (nodeId: string): string => `${INTERNAL_PREFIX}.nodes.${nodeId}.register`,
  /** publish: Heartbeat */
  heartbeat: (nodeId: string): string => `${INTERNAL_PREFIX}.nodes.${nodeId}.heartbeat`,
  /** wildcard the leader subscribes to */
  allHeartbeats: `${INTERNAL_PREFIX}.nodes.*.heartbeat`,
  allRegisters: `${INTERNAL_PREFIX}.nodes.*.register`,
} as const;

export const KV_BUCKETS = {
  tenants: 'edgenfv_tenants',
  vnfs: 'edgenfv_vnfs',
  opoccs: 'edgenfv_opoccs',
  requests: 'edgenfv_requests',
  nodes: 'edgenfv_nodes',
  allocs: 'edgenfv_allocs',
  status: 'edgenfv_status',
  ipam: 'edgenfv_ipam',
  leader: 'edgenfv_leader',
  credentials: 'edgenfv_credentials',
} as const;

/** KV key of an allocation and of its status: `<nodeId>.<allocId>`. */
export function allocKey(nodeId: string, allocId: string): string {
  return `${nodeId}.${allocId}`;
}

/** What every interface of a replica has, whatever its type (the plan fixed MAC and addresses). */
interface AllocInterfaceBase {
  name: string; // ifname inside the VNF
  mac: string; // canonical aa:bb:cc:dd:ee:ff, chosen by the plan
  network?: string;
  /** Addresses in CIDR form (`10.0.0.5/24`), leased by the IPAM. */
  ips?: string[];
  gateway?: string;
  mtuBytes?: number;
}

/** A tap in the sandbox's netns, optionally enslaved to the network's host bridge. */
export interface TapAllocInterface extends AllocInterfaceBase {
  type: 'tap';
  bridge?: string;
}

/** A macvtap on a host parent link (the VNFD's, or the network's). */
export interface MacvtapAllocInterface extends AllocInterfaceBase {
  type: 'macvtap';
  parent?: string;
}

/** The VF reserved for an SR-IOV interface; VLAN and port security from the operator's network config. */
export interface SriovReservation {
  pfPciAddress: string;
  vfPciAddress: string;
  vfIndex: number;
  physnet: string;
  vlan?: number;
  vlanQos?: number;
  spoofchk?: boolean;
  trust?: boolean;
}

export interface SriovAllocInterface extends AllocInterfaceBase {
  type: 'sriov';
  sriov: SriovReservation;
}

/**
 * A port on the node's DPDK switch for `network` (OVS-DPDK). The node decides the socket (absolute, under a
 * per-tenant folder) and the switch's bridge and VLAN (from its config): nothing of it comes from the scheduler.
 */
export interface VhostUserAllocInterface extends AllocInterfaceBase {
  type: 'vhostuser';
  queues: number;
  /** The VNFD's old `dataplane` field, kept when given (an interface without a network needs a node with that kind). */
  dataplane?: DataplaneKind;
}

/** One interface of a replica as the plan fixed it, discriminated on `type`. */
export type AllocInterface = TapAllocInterface | MacvtapAllocInterface | SriovAllocInterface | VhostUserAllocInterface;

/** A replica's committed reservation on one node, written by the leader (CAS create) into `edgenfv_allocs`. */
export interface Allocation {
  allocId: string;
  nodeId: string;
  /** The node's epoch the allocation was made under (fencing). */
  epoch: number;
  tenantId: string;
  vnfId: string;
  vnfName?: string;
  replica: number;
  /** What the replica reserves on the node. */
  resources: {
    vcpus: number;
    memoryMiB: number;
    cpuPolicy?: 'dedicated' | 'shared';
    /** Pinned logical CPUs (dedicated policy). */
    cpus?: number[];
    numaNode?: number;
    /** numaNode: where the pages come from when it differs from `numaNode` (numa: preferred/none fallback). */
    hugepages?: { sizeKiB: number; count: number; numaNode?: number };
    /** The VNFD's guest data plane, as it asked (the node agent prepares it in the guest). */
    dataplane?: VnfdDataplane;
    /** The tenant VM's overhead, booked by this replica (the first of its tenant on the node). */
    vmOverhead?: VmOverheadBooking;
  };
  image: { ref: string };
  command?: string[];
  args?: string[];
  env?: Record<string, string>;
  interfaces: AllocInterface[];
  routes?: VnfdRoute[];
  /** `running` (default) or `stopped`: the leader flips it to stop a replica before deleting the allocation. */
  desired?: 'running' | 'stopped';
  /** OPERATE: STOPPED stops the replica's container and keeps everything else (VM, NICs, addresses); default STARTED. */
  operationalState?: 'STARTED' | 'STOPPED';
  /** The VNFD's `onPartition` (absent: `stop`): what the node does with the replica while it is fenced off NATS. */
  onPartition?: PartitionPolicy;
  /**
   * Live migration: this allocation is the destination of the replica running as `fromAllocId` on `fromNodeId`.
   * The node starts the tenant VM from the same spec waiting for the incoming state (QEMU `-incoming`) instead of
   * booting it, and reports `migration.state: incoming` with the URI the source is to send to.
   * `group`: the source VM holds several replicas (one per VNF of the tenant) that move as one: it lists EVERY member
   * (this allocation included) as source allocation -> destination allocation; the leader writes all the group's
   * destination allocations (same node, same tenant) with the same `group`, and the destination starts one VM for
   * them once all are in its watch. Absent: a VM holding this one replica.
   */
  migration?: {
    fromNodeId: string;
    fromAllocId: string;
    group?: MigrationGroupMember[];
    /**
     * The source VM as its node agent reported it at `check` (`NodeMigrateReply.vm`, copied verbatim into every
     * destination allocation of the move): what the destination must start for the state to load.
     */
    vm?: MigrationVmLayout;
  };
  /** IP lease owners the replica's addresses are held under when not `<allocId>.<ifName>` (a migrated replica keeps its source's). */
  leaseOwners?: string[];
  createdAt: string;
}

/** One replica of a tenant VM that migrates as a group: its allocation on the source and on the destination. */
export interface MigrationGroupMember {
  fromAllocId: string;
  allocId: string;
}

/** `nfv.v1.internal.nodes.<n>.migrate` request (scheduler -> node agent). */
export interface NodeMigrateRequest {
  tenantId: string;
  allocId: string;
  /**
   * Source node: `start` (send the VM's state to `uri`, stop before the switchover), `continue` (switch over: the
   * destination runs, this VM stays paused until its allocation is released), `cancel` (the VM runs on here, unless
   * it switched over already: `completed`), `resume` (after a switchover whose destination failed and is gone: the
   * paused VM runs on here). Destination node: `check` (the incoming VM is alive and waiting). Every action acts on
   * the VM `allocId` is in (a group's members share one VM: any member's allocId names it).
   */
  action: 'start' | 'continue' | 'cancel' | 'check' | 'resume';
  uri?: string;
  /** The destination's one-time token for a `tcp:` URI (its agent relays only the connection that presents it). */
  token?: string;
}
export interface NodeMigrateReply {
  /** QEMU's migration status (`pre-switchover`, `completed`, `cancelled`, `failed`, ...), or `inmigrate` for check. */
  state: string;
  /** QEMU's reported downtime of a completed migration (ms). */
  downtimeMs?: number;
  totalMs?: number;
  /** Bytes of RAM sent. */
  transferredBytes?: number;
  /**
   * The source's answer to `check`: the allocIds of every replica in the VM the asked allocation is in (itself
   * included, in the order they joined it); the leader migrates them as one group. Absent: an agent that does
   * not report it (one replica).
   */
  members?: string[];
  /** `check` on the source: what a destination must start for the VM's state to load (`Allocation.migration.vm`). */
  vm?: MigrationVmLayout;
}

/**
 * A running tenant VM as QEMU holds it, reported by the source node agent for a live migration: QEMU loads the
 * state only into a VM started with the same devices at the same places, and a replica that joined the VM got its
 * NICs, disk, vCPUs and memory hot-plugged wherever they fitted then. The scheduler copies it unread.
 */
export interface MigrationVmLayout {
  /** The VM's boot spec (sizes before any hotplug, and the maxima; `viommu`: it has the virtual IOMMU). */
  boot: { vcpus: number; maxVcpus: number; memoryMiB: number; maxMemoryMiB: number; viommu?: boolean };
  /** Its size now (hotplug included). */
  vcpus: number;
  memoryMiB: number;
  /** PCIe root ports (q35) it was started with. */
  rootPorts: number;
  /** Where QEMU placed each PCI device (`query-pci`), by its QEMU id: the bus (`pcie.0` or a root port's id) and slot. */
  pci: Record<string, { bus: string; addr: number }>;
  /** Hot-plugged vCPUs (`query-hotpluggable-cpus`): QEMU id, type and topology. */
  cpus: Array<{ id: string; type: string; props: Record<string, number> }>;
  /** Hot-plugged DIMMs (`query-memory-devices`): QEMU id, size, guest-physical address and slot. */
  dimms: Array<{ id: string; sizeMiB: number; addr: number; slot: number }>;
  /** The ids the source recorded as hot-plugged (vCPUs, `nic:<id>`, `disk:<id>`): the destination can unplug them. */
  hotplugged: string[];
  /**
   * Every replica in the VM, in the order they joined: its allocId, its interfaces' names inside the guest, and (a VM
   * that moved before names its devices and container after the allocation it first ran as) its interfaces' device
   * ids and its container id.
   */
  members: Array<{ allocId: string; guestIfNames: Record<string, string>; hostIfNames?: Record<string, string>; containerId?: string }>;
}

export type ReplicaRunState = 'STARTING' | 'RUNNING' | 'FAILED' | 'STOPPING' | 'STOPPED';

export interface ReplicaInterfaceStatus {
  name: string;
  mac: string;
  ips: string[];
  pciAddress?: string; // SR-IOV: the VF's host PCI address
  guestPciAddress?: string; // SR-IOV: where the guest agent found the VF (reported by the guest, not guessed)
  socketPath?: string; // vhost-user: absolute, decided by the node
  portName?: string; // vhost-user: the port's name on the node's switch
}

/**
 * The error of a replica that ran and was lost on its node while the node lives (its guest agent restarted and its
 * container with it): reported FAILED with this by the node agent, healed by the scheduler like a lost node's
 * replicas (`details.replicaLost` names the node; the new placement may use it again).
 */
export function replicaLostError(nodeId: string, message: string): ErrorBody {
  return { code: 'UNAVAILABLE', message, details: { replicaLost: nodeId } };
}

/** The node a replica's error says it was lost with (`nodeLost`: the node itself; `replicaLost`: only the replica). */
export function lostOn(error: ErrorBody | undefined): { nodeId: string; nodeLost: boolean } | undefined {
  const d = error?.details as { nodeLost?: unknown; replicaLost?: unknown } | undefined;
  if (typeof d?.nodeLost === 'string') return { nodeId: d.nodeLost, nodeLost: true };
  if (typeof d?.replicaLost === 'string') return { nodeId: d.replicaLost, nodeLost: false };
  return undefined;
}

/** What a node agent observes of one allocation, written into `edgenfv_status` `<nodeId>.<allocId>`. */
export interface ReplicaStatus {
  allocId: string;
  nodeId: string;
  epoch: number;
  tenantId: string;
  vnfId: string;
  replica: number;
  state: ReplicaRunState;
  sandboxId?: string;
  interfaces: ReplicaInterfaceStatus[];
  error?: ErrorBody;
  /** STOPPED by OPERATE (containers stopped, VM and NICs kept): not a stopped allocation the leader may release. */
  containersStopped?: boolean;
  /** The manifest digest of the image the replica runs (registry and OCI layout images). */
  imageDigest?: string;
  /** What the node is doing for the replica while STARTING (image pull progress), for the op occurrence's steps. */
  progress?: string;
  /** Milliseconds from the allocation seen to the replica running (when RUNNING). */
  startMs?: number;
  /**
   * A migration destination: `incoming` (QEMU waits for the state at `uri`), then RUNNING with `completed` once the
   * VM has switched over to it (a RUNNING destination without it booted a fresh copy).
   */
  migration?: { state: 'incoming' | 'completed'; uri: string; token?: string };
  updatedAt: string;
}

/** `nfv.v1.internal.nodes.<n>.register` request. */
export interface RegisterRequest {
  nodeId: string;
  inventory: NodeInventory;
  /** Allocation ids the node agent currently runs (after a restart: what it re-adopted). */
  running: string[];
  startedAt: string;
}
/** Reply (inside the usual `{ok, result}` envelope). */
export interface RegisterReply {
  epoch: number;
  heartbeatIntervalMs?: number;
  /** The scheduler's heartbeat grace: a node that cannot reach NATS for longer fences itself (it is declared lost). */
  graceMs?: number;
}

/** `nfv.v1.internal.nodes.<n>.heartbeat` publish. */
export interface Heartbeat {
  nodeId: string;
  epoch: number;
  at: string;
  sandboxes: number;
  replicas: number;
  /** Included when the inventory changed since the last register/heartbeat. */
  inventory?: NodeInventory;
  /**
   * Allocation ids the node still has sandboxes for. When present, the scheduler frees the fenced reservations
   * (replicas healed away while the node was lost) that are no longer in it; when absent, it frees them all at
   * the first heartbeat after a register (the agent tears stale sandboxes down before heartbeating).
   */
  running?: string[];
}

/** Optional reply to a heartbeat sent as a request (inside the `{ok, result}` envelope). */
export interface HeartbeatReply {
  epoch: number;
  /** The node is unknown, lost or behind the current epoch: register again (and tear down stale sandboxes). */
  reregister: boolean;
}
