/**
 * Records and replies of the message API v1 (shared API.md). The tenant-facing records (tenant, VNF, replica, op
 * occurrence, notification) are JSON Schemas with their types derived from them; requests are in requests.ts.
 */
import type { ErrorBody } from './errors.js';
import { ErrorBodySchema } from './errors-schema.js';
import { Closed, Enum, Type, type Static, type TSchema } from './schema-kit.js';
import { OPERATIONAL_STATES, QuotaSchema, TERMINATE_MODES, type ApiOp } from './requests.js';
import { INTERFACE_TYPES, VnfdSchema } from './vnfd.js';
import type { NodeHealth, NodeInventory } from './node.js';

export type Envelope<T> = { ok: true; result: T } | { ok: false; error: ErrorBody };

export const QUOTA_KEYS = ['vcpus', 'memoryMiB', 'vfs', 'vnfs'] as const;
const Timestamp = Type.String({ description: 'RFC 3339 time' });

export const UsageSchema = Closed({ vcpus: Type.Integer(), memoryMiB: Type.Integer(), vfs: Type.Integer(), vnfs: Type.Integer() });
export type Usage = Static<typeof UsageSchema>;

export const TenantSchema = Closed({
  id: Type.String(),
  displayName: Type.Optional(Type.String()),
  /** A missing key means unlimited. */
  quota: QuotaSchema,
  usage: UsageSchema,
  createdAt: Timestamp,
  updatedAt: Timestamp,
  /** When `tenants.credentials {rotate: true}` last revoked the tenant's credentials (its dashboard token with them). */
  credentialsRotatedAt: Type.Optional(Timestamp),
});
export type Tenant = Static<typeof TenantSchema>;

export const INSTANTIATION_STATES = ['NOT_INSTANTIATED', 'INSTANTIATED'] as const;
export const REPLICA_STATES = ['PENDING', 'SCHEDULED', 'STARTING', 'RUNNING', 'FAILED', 'STOPPING', 'STOPPED'] as const;
export type ReplicaState = (typeof REPLICA_STATES)[number];
export const OPERATIONS = ['INSTANTIATE', 'SCALE', 'HEAL', 'TERMINATE', 'OPERATE'] as const;
export type Operation = (typeof OPERATIONS)[number];
export const OPERATION_STATES = ['STARTING', 'PROCESSING', 'COMPLETED', 'FAILED_TEMP', 'ROLLING_BACK', 'ROLLED_BACK', 'FAILED'] as const;
export type OperationState = (typeof OPERATION_STATES)[number];
export const TERMINAL_OP_STATES: readonly OperationState[] = ['COMPLETED', 'FAILED', 'ROLLED_BACK'];

export const ReplicaInterfaceSchema = Closed({
  name: Type.String(),
  type: Enum(INTERFACE_TYPES),
  network: Type.Optional(Type.String()),
  mac: Type.Optional(Type.String()),
  ips: Type.Array(Type.String()),
  /** SR-IOV: the VF on the node. */
  pciAddress: Type.Optional(Type.String()),
  /** SR-IOV: the VF's PCI address inside the tenant VM, as the guest agent found it. */
  guestPciAddress: Type.Optional(Type.String()),
  /** vhost-user: absolute, decided by the node. */
  socketPath: Type.Optional(Type.String()),
  /** vhost-user: the port's name on the node's DPDK switch. */
  portName: Type.Optional(Type.String()),
});

export const ReplicaSchema = Closed({
  index: Type.Integer({ minimum: 0 }),
  state: Enum(REPLICA_STATES),
  nodeId: Type.Optional(Type.String()),
  sandboxId: Type.Optional(Type.String()),
  allocId: Type.Optional(Type.String()),
  /** Bumped each time the replica gets a new allocation (heal, drain): allocation ids are `<vnfId>-<index>-<generation>`. */
  generation: Type.Optional(Type.Integer({ minimum: 0 })),
  interfaces: Type.Array(ReplicaInterfaceSchema),
  /** The image the replica runs: the manifest digest (`sha256:...`) of a registry or OCI layout image. */
  imageDigest: Type.Optional(Type.String()),
  /** Why the replica is where it is (placement explanation, failure reason). */
  message: Type.Optional(Type.String()),
  error: Type.Optional(ErrorBodySchema),
  updatedAt: Timestamp,
});
export type Replica = Static<typeof ReplicaSchema>;

export const VnfSchema = Closed({
  id: Type.String(),
  tenantId: Type.String(),
  name: Type.String(),
  descriptor: VnfdSchema,
  instantiationState: Enum(INSTANTIATION_STATES),
  /** Replicas asked for (scale changes it). */
  desiredReplicas: Type.Integer({ minimum: 0 }),
  /** SOL003 vnfState, changed by OPERATE; absent means STARTED. */
  operationalState: Type.Optional(Enum(OPERATIONAL_STATES)),
  replicas: Type.Array(ReplicaSchema),
  lastOpOccId: Type.Optional(Type.String()),
  /** The operation occurrence in progress on this VNF (one at a time); absent when none. */
  activeOpOccId: Type.Optional(Type.String()),
  /**
   * How the last operation ended, written with the VNF's changes in the same CAS, so that a leader that takes
   * over between that write and the op occurrence's own update finishes the op occurrence the same way.
   */
  lastOpOutcome: Type.Optional(
    Closed({ opOccId: Type.String(), state: Enum(['COMPLETED', 'FAILED', 'ROLLED_BACK'] as const), error: Type.Optional(ErrorBodySchema) }),
  ),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type Vnf = Static<typeof VnfSchema>;

export const OpOccStepSchema = Closed({ at: Timestamp, message: Type.String() });

// ---- op occurrence parameters, one shape per operation
/** What the leader notes in any operation's params while it drives it. */
const engineParams = {
  /** How many `opoccs.retry` the leader has carried out (the op occurrence's `retries` counts the asked ones). */
  retriesHandled: Type.Optional(Type.Integer({ minimum: 0 })),
};
export const InstantiateParamsSchema = Closed({ ...engineParams });
export const ScaleParamsSchema = Closed({ ...engineParams, replicas: Type.Integer({ minimum: 0 }) });
/** One member of a tenant VM moving as one (several replicas in one VM), as its driving HEAL records it. */
export const MigrationGroupEntrySchema = Closed({
  vnfId: Type.String(),
  replica: Type.Integer({ minimum: 0 }),
  /** The HEAL op occurrence covering this member (the driver's own for its replicas). */
  opOccId: Type.String(),
  source: Type.String(),
  allocId: Type.String(),
  gen: Type.Integer({ minimum: 0 }),
});
export type MigrationGroupEntry = Static<typeof MigrationGroupEntrySchema>;
/** One replica's live migration, as the leader records it in the HEAL's params (ops/migrate.ts). */
export const MigrationRecordSchema = Closed({
  gen: Type.Integer({ minimum: 0 }),
  phase: Enum(['place', 'incoming', 'switched', 'stopping', 'done'] as const),
  from: Type.Optional(Type.String()),
  to: Type.Optional(Type.String()),
  allocId: Type.Optional(Type.String()),
  /** The allocation the replica ran as on the source. */
  source: Type.Optional(Type.String()),
  downtimeMs: Type.Optional(Type.Number({ minimum: 0 })),
  totalMs: Type.Optional(Type.Number({ minimum: 0 })),
  /**
   * The replica's tenant VM holds other replicas (other VNFs' or this one's): they move as one, and this HEAL drives
   * them all. Every member (this replica first): its VNF, replica, the HEAL covering it, its source allocation, its
   * destination allocation and generation.
   */
  group: Type.Optional(Type.Array(MigrationGroupEntrySchema)),
  /** The replica moves with its tenant VM as a member of a group another HEAL (this op occurrence id) drives. */
  drivenBy: Type.Optional(Type.String()),
});
export type MigrationRecord = Static<typeof MigrationRecordSchema>;
export const HealParamsSchema = Closed({
  ...engineParams,
  /** The replica a tenant's HEAL names (absent: every replica not RUNNING). */
  replica: Type.Optional(Type.Integer({ minimum: 0 })),
  /** The replicas a drain or a node loss moves. */
  replicas: Type.Optional(Type.Array(Type.Integer({ minimum: 0 }))),
  /** The node they leave (the new placement avoids it). */
  fromNode: Type.Optional(Type.String()),
  reason: Type.Optional(Type.String()),
  /** A drain's previous HEAL: this one waits for it to end. */
  after: Type.Optional(Closed({ tenantId: Type.String(), id: Type.String() })),
  /** Fixed by the leader at its first drive: replica index -> the generation it gets. */
  targets: Type.Optional(Type.Record(Type.String(), Type.Integer({ minimum: 0 }))),
  /** Live migration (docs/migration.md): asked by `vnfs.heal {migrate}` and `nodes.drain`. */
  migrate: Type.Optional(Type.Boolean()),
  /** The leader's choice at its first drive: migrate, or restart (and why: VFIO NICs, a shared tenant VM, ...). */
  mode: Type.Optional(Enum(['migrate', 'restart'] as const)),
  restartReason: Type.Optional(Type.String()),
  /** Per replica: the migration's phase and what it recorded (ops/migrate.ts). */
  migrations: Type.Optional(Type.Record(Type.String(), MigrationRecordSchema)),
  /** QEMU's reported downtime (the largest of the replicas'), ms. */
  qemuDowntimeMs: Type.Optional(Type.Number({ minimum: 0 })),
  /** A drain's deadline: a migration not switched over by then is cancelled and the replica restarted. */
  deadlineAt: Type.Optional(Timestamp),
});
export const TerminateParamsSchema = Closed({
  ...engineParams,
  mode: Enum(TERMINATE_MODES),
  /** FORCEFUL: the operation in progress it took the VNF over from. */
  supersedes: Type.Optional(Type.String()),
});
export const OperateParamsSchema = Closed({ ...engineParams, changeStateTo: Enum(OPERATIONAL_STATES) });
export type HealParams = Static<typeof HealParamsSchema>;

const opOccBase = {
  id: Type.String(),
  tenantId: Type.String(),
  vnfId: Type.String(),
  operationState: Enum(OPERATION_STATES),
  startTime: Timestamp,
  stateEnteredTime: Timestamp,
  requestId: Type.Optional(Type.String()),
  /** How many times `opoccs.retry` sent it back to PROCESSING from FAILED_TEMP. */
  retries: Type.Optional(Type.Integer({ minimum: 0 })),
  /** When the last retry began (the start timeout counts from here). */
  retriedAt: Type.Optional(Timestamp),
  /** Asked for while FAILED_TEMP and not yet carried out by the leader: `fail` (FAILED, releases what it held). */
  pendingAction: Type.Optional(Enum(['fail'] as const)),
  error: Type.Optional(ErrorBodySchema),
  /** A truthful log of what the operation did, in order. */
  steps: Type.Array(OpOccStepSchema),
};
function opOccOf<O extends Operation, P extends TSchema>(operation: O, params: P) {
  return Closed({ ...opOccBase, operation: Type.Literal(operation), params });
}
/** An operation occurrence: its `params` are the operation's own (narrow on `operation` to read them). */
export const OpOccSchema = Type.Union([
  opOccOf('INSTANTIATE', Type.Optional(InstantiateParamsSchema)),
  opOccOf('SCALE', ScaleParamsSchema),
  opOccOf('HEAL', HealParamsSchema),
  opOccOf('TERMINATE', TerminateParamsSchema),
  opOccOf('OPERATE', OperateParamsSchema),
]);
export type OpOcc = Static<typeof OpOccSchema>;
/** The op occurrence of one operation. */
export type OpOccOf<O extends Operation> = Extract<OpOcc, { operation: O }>;
/** The params of one operation. */
export type OpParamsOf<O extends Operation> = OpOccOf<O>['params'];

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

export const EventPayloadSchema = Type.Union([
  Closed({
    type: Type.Literal('OpOcc'),
    opOccId: Type.String(),
    vnfId: Type.String(),
    operation: Enum(OPERATIONS),
    operationState: Enum(OPERATION_STATES),
    at: Timestamp,
    error: Type.Optional(ErrorBodySchema),
  }),
  Closed({
    type: Type.Literal('Replica'),
    vnfId: Type.String(),
    replica: Type.Integer({ minimum: 0 }),
    state: Enum(REPLICA_STATES),
    nodeId: Type.Optional(Type.String()),
    at: Timestamp,
  }),
]);
export type EventPayload = Static<typeof EventPayloadSchema>;

/** A connect file (the CLI's connect.json format): servers, a creds file's text, the inbox prefix to use. */
export interface TenantCredentials {
  servers: string[];
  creds: string;
  inboxPrefix: string;
  tenantId: string;
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
export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** Output beyond the cap was cut (stdout and stderr are each at most EXEC_OUTPUT_CAP_BYTES). */
  truncated?: boolean;
}

/** The reply of one `opOccId`-returning request (scale, heal, terminate, operate). */
export interface OpAccepted {
  opOccId: string;
}

/**
 * What each operation answers (the `result` of its envelope). `ResultOf<S>` does not compile for an operation
 * missing here, so a new subject needs its result named.
 */
export interface ApiResults {
  'tenants.create': Tenant;
  'tenants.get': Tenant;
  'tenants.list': { items: Tenant[] };
  'tenants.delete': Record<string, never>;
  'nodes.list': { items: NodeRecord[] };
  'nodes.get': NodeRecord;
  'nodes.cordon': NodeRecord;
  'nodes.uncordon': NodeRecord;
  /** VNFs with an operation in progress are skipped (drain again later). */
  'nodes.drain': { opOccIds: string[]; skipped?: { vnfId: string; reason: string }[]; vnfs?: DrainVnfReport[] };
  'tenants.credentials': TenantCredentials;
  'vnfs.instantiate': { vnfId: string; opOccId: string };
  'vnfs.get': Vnf;
  'vnfs.list': { items: Vnf[] };
  'vnfs.scale': OpAccepted;
  'vnfs.heal': OpAccepted;
  'vnfs.terminate': OpAccepted;
  'opoccs.get': OpOcc;
  'notifications.list': NotificationsList;
  'vnfs.operate': OpAccepted;
  'vnfs.logs': { lines: string[]; truncated?: boolean };
  'vnfs.exec': ExecResult;
  'opoccs.list': { items: OpOcc[] };
  'opoccs.retry': OpOcc;
  'opoccs.rollback': OpOcc;
  'opoccs.fail': OpOcc;
}
export type ResultOf<S extends ApiOp> = ApiResults[S];

/** What `nodes.drain` does with each VNF on the node (its op occurrence says how it ended). */
export interface DrainVnfReport {
  vnfId: string;
  tenantId: string;
  replicas: number[];
  opOccId?: string;
  /** migrate: live migration; restart: a cold restart elsewhere (VFIO NICs, a tenant VM shared with other replicas). */
  mode?: 'migrate' | 'restart';
  reason?: string;
  skipped?: string;
}
