/**
 * Every message API v1 request (shared API.md): its JSON Schema, and its TypeScript type derived from that schema.
 * `requestSchemas` has one entry per subject (the compiler checks that none is missing); `RequestOf<S>` is what
 * the API server's handler for subject S receives after validation (schemas.ts `validateRequest`).
 */
import { Closed, Count, DnsLabel, Enum, Id, RequestId, ShortText, Type, type Static } from './schema-kit.js';
import { VnfdSchema } from './vnfd.js';
import type { AdminOp, TenantOp } from './subjects.js';

/** Caps of vnfs.exec and vnfs.logs (a reply fits in a NATS message). */
export const EXEC_OUTPUT_CAP_BYTES = 64 * 1024;
export const EXEC_DEFAULT_TIMEOUT_MS = 10_000;
export const EXEC_MAX_TIMEOUT_MS = 120_000;
export const LOGS_DEFAULT_LINES = 100;
export const LOGS_MAX_LINES = 5000;
export const LOGS_MAX_BYTES = 256 * 1024;

export const QuotaSchema = Closed({
  vcpus: Type.Optional(Count),
  memoryMiB: Type.Optional(Count),
  vfs: Type.Optional(Count),
  vnfs: Type.Optional(Count),
});
/** A tenant's quota; a missing key means unlimited. */
export type Quota = Static<typeof QuotaSchema>;

const replicaIndex = Type.Integer({ minimum: 0, maximum: 999 });
const ById = Closed({ id: Id });
const ByNodeId = Closed({ id: DnsLabel });
const ByTenantId = Closed({ id: DnsLabel });
const Empty = Closed({});

export const OPERATIONAL_STATES = ['STARTED', 'STOPPED'] as const;
export const TERMINATE_MODES = ['GRACEFUL', 'FORCEFUL'] as const;

export const TenantCreateRequestSchema = Closed({ id: DnsLabel, displayName: Type.Optional(ShortText), quota: Type.Optional(QuotaSchema) });
/** `nfv.v1.admin.tenants.credentials`: a tenant's NATS credentials; `rotate` revokes the earlier ones. */
export const CredentialsRequestSchema = Closed({ id: DnsLabel, rotate: Type.Optional(Type.Boolean()) });
/** `nfv.v1.tenant.<t>.notifications.list`: the tenant's kept notifications, oldest first, after `afterSeq`. */
export const NotificationsListRequestSchema = Closed({
  vnfId: Type.Optional(Id),
  afterSeq: Type.Optional(Type.Integer({ minimum: 0 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
});
export const InstantiateRequestSchema = Closed({ descriptor: VnfdSchema, requestId: Type.Optional(RequestId) });
export const ScaleRequestSchema = Closed({ id: Id, replicas: Type.Integer({ minimum: 0, maximum: 1000 }), requestId: Type.Optional(RequestId) });
export const HealRequestSchema = Closed({
  id: Id,
  replica: Type.Optional(replicaIndex),
  /** Live-migrate the replica's VM to another node instead of restarting it (docs/migration.md); needs `replica`. */
  migrate: Type.Optional(Type.Boolean()),
  requestId: Type.Optional(RequestId),
});
/** `nodes.drain` with a budget (the extension in docs/api.md): VNFs moved at once, and a deadline for migrations. */
export const DrainRequestSchema = Closed({
  id: DnsLabel,
  maxParallel: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
  deadlineS: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400 })),
});
export const TerminateRequestSchema = Closed({ id: Id, mode: Type.Optional(Enum(TERMINATE_MODES)), requestId: Type.Optional(RequestId) });
export const OperateRequestSchema = Closed({ id: Id, changeStateTo: Enum(OPERATIONAL_STATES), requestId: Type.Optional(RequestId) });
export const LogsRequestSchema = Closed({ id: Id, replica: Type.Optional(replicaIndex), tailLines: Type.Optional(Type.Integer({ minimum: 1, maximum: LOGS_MAX_LINES })) });
export const ExecRequestSchema = Closed({
  id: Id,
  replica: Type.Optional(replicaIndex),
  command: Type.Array(Type.String({ minLength: 1, maxLength: 4096 }), { minItems: 1, maxItems: 64 }),
  timeoutMs: Type.Optional(Type.Integer({ minimum: 1, maximum: EXEC_MAX_TIMEOUT_MS })),
});
export const OpOccListRequestSchema = Closed({ vnfId: Type.Optional(Id) });

export type TenantCreateRequest = Static<typeof TenantCreateRequestSchema>;
export type CredentialsRequest = Static<typeof CredentialsRequestSchema>;
export type NotificationsListRequest = Static<typeof NotificationsListRequestSchema>;
export type IdRequest = Static<typeof ById>;
export type InstantiateRequest = Static<typeof InstantiateRequestSchema>;
export type ScaleRequest = Static<typeof ScaleRequestSchema>;
export type HealRequest = Static<typeof HealRequestSchema>;
export type TerminateRequest = Static<typeof TerminateRequestSchema>;
export type OperateRequest = Static<typeof OperateRequestSchema>;
export type LogsRequest = Static<typeof LogsRequestSchema>;
export type ExecRequest = Static<typeof ExecRequestSchema>;
export type OpOccListRequest = Static<typeof OpOccListRequestSchema>;

/** The schema of every subject's request. A subject added to ADMIN_OPS / TENANT_OPS without one does not compile. */
export const requestSchemas = {
  'tenants.create': TenantCreateRequestSchema,
  'tenants.get': ByTenantId,
  'tenants.list': Empty,
  'tenants.delete': ByTenantId,
  'nodes.list': Empty,
  'nodes.get': ByNodeId,
  'nodes.cordon': ByNodeId,
  'nodes.uncordon': ByNodeId,
  'nodes.drain': DrainRequestSchema,
  'tenants.credentials': CredentialsRequestSchema,
  'vnfs.instantiate': InstantiateRequestSchema,
  'vnfs.get': ById,
  'vnfs.list': Empty,
  'vnfs.scale': ScaleRequestSchema,
  'vnfs.heal': HealRequestSchema,
  'vnfs.terminate': TerminateRequestSchema,
  'opoccs.get': ById,
  'notifications.list': NotificationsListRequestSchema,
  'vnfs.operate': OperateRequestSchema,
  'vnfs.logs': LogsRequestSchema,
  'vnfs.exec': ExecRequestSchema,
  'opoccs.list': OpOccListRequestSchema,
  'opoccs.retry': ById,
  'opoccs.rollback': ById,
  'opoccs.fail': ById,
} as const satisfies Record<AdminOp | TenantOp, unknown>;

/** Every API subject's operation (`tenants.create`, `vnfs.scale`, ...). */
export type ApiOp = AdminOp | TenantOp;
/** The validated request of operation S. */
export type RequestOf<S extends ApiOp> = Static<(typeof requestSchemas)[S]>;
