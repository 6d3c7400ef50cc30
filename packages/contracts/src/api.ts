/** Records and payloads of the message API v1 (shared API.md). Requests are validated by `schemas.ts`. */
import type { ErrorBody } from './errors.js';
import type { InterfaceType, Vnfd } from './vnfd.js';
import type { NodeHealth, NodeInventory } from './node.js';

export type Envelope<T> = { ok: true; result: T } | { ok: false; error: ErrorBody };

export interface Quota {
  vcpus?: number;
  memoryMiB?: number;
  vfs?: number;
  vnfs?: number;
}
export interface Usage {
  vcpus: number;
  memoryMiB: number;
  vfs: number;
  vnfs: number;
}
export const QUOTA_KEYS = ['vcpus', 'memoryMiB', 'vfs', 'vnfs'] as const;

export interface Tenant {
  id: string;
  displayName?: string;
  quota: Quota; // a missing key means unlimited
  usage: Usage;
  createdAt: string;
  updatedAt: string;
}

export type InstantiationState = 'NOT_INSTANTIATED' | 'INSTANTIATED';
export type ReplicaState = 'PENDING' | 'SCHEDULED' | 'STARTING' | 'RUNNING' | 'FAILED' | 'STOPPING' | 'STOPPED';
export type Operation = 'INSTANTIATE' | 'SCALE' | 'HEAL' | 'TERMINATE' | 'OPERATE';
/** SOL003 OPERATE: whether the VNF's containers run (the VM, MACs and addresses are kept either way). */
export type OperationalState = 'STARTED' | 'STOPPED';
export type OperationState = 'STARTING' | 'PROCESSING' | 'COMPLETED' | 'FAILED_TEMP' | 'ROLLING_BACK' | 'ROLLED_BACK' | 'FAILED';
export const TERMINAL_OP_STATES: readonly OperationState[] = ['COMPLETED', 'FAILED', 'ROLLED_BACK'];

export interface ReplicaInterface {
  name: string;
  type: InterfaceType;
  network?: string;
  mac?: string;
  ips: string[];
  pciAddress?: string; // SR-IOV: the VF on the node
  guestPciAddress?: string; // SR-IOV: the VF's PCI address inside the tenant VM, as the guest agent found it
  socketPath?: string; // vhost-user: absolute, decided by the node
  portName?: string; // vhost-user: the port's name on the node's DPDK switch
}

export interface Replica {
  index: number;
  state: ReplicaState;
  nodeId?: string;
  sandboxId?: string;
  allocId?: string;
  /** Bumped each time the replica gets a new allocation (heal, drain): allocation ids are `<vnfId>-<index>-<generation>`. */
  generation?: number;
  interfaces: ReplicaInterface[];
  /** The image the replica runs: the manifest digest (`sha256:...`) of a registry or OCI layout image. */
  imageDigest?: string;
  /** Why the replica is where it is (placement explanation, failure reason). */
  message?: string;
  error?: ErrorBody;
  updatedAt: string;
}

export interface Vnf {
  id: string;
  tenantId: string;
  name: string;
  descriptor: Vnfd;
  instantiationState: InstantiationState;
  /** Replicas asked for (scale changes it). */
  desiredReplicas: number;
  /** SOL003 vnfState, changed by OPERATE; absent means STARTED. */
  operationalState?: OperationalState;
  replicas: Replica[];
  lastOpOccId?: string;
  /** The operation occurrence in progress on this VNF (one at a time); absent when none. */
  activeOpOccId?: string;
  /**
   * How the last operation ended, written with the VNF's changes in the same CAS, so that a leader that takes
   * over between that write and the op occurrence's own update finishes the op occurrence the same way.
   */
  lastOpOutcome?: { opOccId: string; state: 'COMPLETED' | 'FAILED' | 'ROLLED_BACK'; error?: ErrorBody };
  createdAt: string;
  updatedAt: string;
}

export interface OpOccStep {
  at: string;
  message: string;
}

export interface OpOcc {
  id: string;
  tenantId: string;
  vnfId: string;
  operation: Operation;
  operationState: OperationState;
  startTime: string;
  stateEnteredTime: string;
  requestId?: string;
  /** Operation parameters (replicas for SCALE, replica for HEAL, mode for TERMINATE, changeStateTo for OPERATE). */
  params?: Record<string, unknown>;
  /** How many times `opoccs.retry` sent it back to PROCESSING from FAILED_TEMP. */
  retries?: number;
  /** When the last retry began (the start timeout counts from here). */
  retriedAt?: string;
  /** Asked for while FAILED_TEMP and not yet carried out by the leader: `fail` (FAILED, releases what it held). */
  pendingAction?: 'fail';
  error?: ErrorBody;
  /** A truthful log of what the operation did, in order. */
  steps: OpOccStep[];
}

export interface NodeRecord {
  id: string;
  inventory: NodeInventory;
  health: NodeHealth;
  cordoned: boolean;
  epoch: number;
  lastHeartbeatAt?: string;
  registeredAt: string;
  /** Filled in by the API from allocations. */
  allocated?: { vcpus: number; memoryMiB: number; vfs: number; replicas: number };
  sandboxes?: { tenantId: string; replicas: number }[];
  /** Filled in by the API: each replica's reservation on the node (pinned CPUs, hugepages, VFs), for pictures. */
  reservations?: NodeReservation[];
}

/** One replica's hold on a node, as `nodes.get` shows it. */
export interface NodeReservation {
  tenantId: string;
  vnfId: string;
  replica: number;
  vcpus: number;
  memoryMiB: number;
  cpuPolicy: 'dedicated' | 'shared';
  numaNode?: number;
  cpus?: number[];
  hugepages?: { sizeKiB: number; count: number; numaNode: number };
  /** VF PCI addresses. */
  vfs: string[];
  /** The tenant VM's overhead this replica booked (the first replica of its tenant on the node). */
  vmOverhead?: VmOverheadBooking;
}

/** What a tenant VM's overhead holds on a node: ordinary memory, and the guest base memory's hugepages when hugepage-backed. */
export interface VmOverheadBooking {
  memoryMiB: number;
  hugepages?: { sizeKiB: number; count: number; numaNode: number };
}

export type EventPayload =
  | {
      type: 'OpOcc';
      opOccId: string;
      vnfId: string;
      operation: Operation;
      operationState: OperationState;
      at: string;
      error?: ErrorBody;
    }
  | { type: 'Replica'; vnfId: string; replica: number; state: ReplicaState; nodeId?: string; at: string };

// ---- requests (shapes enforced by schemas.ts) ----
export interface TenantCreateRequest {
  id: string;
  displayName?: string;
  quota?: Quota;
}
export interface IdRequest {
  id: string;
}
/** `nfv.v1.admin.tenants.credentials`: a tenant's NATS credentials; `rotate` revokes the earlier ones. */
export interface CredentialsRequest {
  id: string;
  rotate?: boolean;
}
/** A connect file (the CLI's connect.json format): servers, a creds file's text, the inbox prefix to use. */
export interface TenantCredentials {
  servers: string[];
  creds: string;
  inboxPrefix: string;
  tenantId: string;
}
/** `nfv.v1.tenant.<t>.notifications.list`: the tenant's kept notifications, oldest first, after `afterSeq`. */
export interface NotificationsListRequest {
  vnfId?: string;
  afterSeq?: number;
  limit?: number;
}
export interface StoredNotification {
  seq: number;
  subject: string;
  event: unknown;
}
export interface NotificationsList {
  items: StoredNotification[];
  /** The stream's last sequence when read: pass it as afterSeq to continue. */
  lastSeq: number;
}
export type EmptyRequest = Record<string, never>;
export interface InstantiateRequest {
  descriptor: Vnfd;
  requestId?: string;
}
export interface ScaleRequest {
  id: string;
  replicas: number;
  requestId?: string;
}
export interface HealRequest {
  id: string;
  replica?: number;
  requestId?: string;
}
export interface OperateRequest {
  id: string;
  changeStateTo: OperationalState;
  requestId?: string;
}
export interface LogsRequest {
  id: string;
  replica?: number;
  tailLines?: number;
}
export interface ExecRequest {
  id: string;
  replica?: number;
  command: string[];
  timeoutMs?: number;
}
export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** Output beyond the cap was cut (stdout and stderr are each at most EXEC_OUTPUT_CAP_BYTES). */
  truncated?: boolean;
}
export interface OpOccListRequest {
  vnfId?: string;
}
/** Caps of vnfs.exec and vnfs.logs (a reply fits in a NATS message). */
export const EXEC_OUTPUT_CAP_BYTES = 64 * 1024;
export const EXEC_DEFAULT_TIMEOUT_MS = 10_000;
export const EXEC_MAX_TIMEOUT_MS = 120_000;
export const LOGS_DEFAULT_LINES = 100;
export const LOGS_MAX_LINES = 5000;
export const LOGS_MAX_BYTES = 256 * 1024;

export interface TerminateRequest {
  id: string;
  mode?: 'GRACEFUL' | 'FORCEFUL';
  requestId?: string;
}
