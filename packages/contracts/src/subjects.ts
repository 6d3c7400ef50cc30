/** NATS subjects of the message API v1 (shared API.md, "Subjects"). The prefix `nfv.v1` is fixed. */
export const API_PREFIX = 'nfv.v1';

export const ADMIN_OPS = [
  'tenants.create',
  'tenants.get',
  'tenants.list',
  'tenants.delete',
  'nodes.list',
  'nodes.get',
  'nodes.cordon',
  'nodes.uncordon',
  'nodes.drain',
  'tenants.credentials',
] as const;
export type AdminOp = (typeof ADMIN_OPS)[number];

export const TENANT_OPS = [
  'vnfs.instantiate',
  'vnfs.get',
  'vnfs.list',
  'vnfs.scale',
  'vnfs.heal',
  'vnfs.terminate',
  'opoccs.get',
  'notifications.list',
  // day-2 (API.md "Additions to v1", "Day-2 operations")
  'vnfs.operate',
  'vnfs.logs',
  'vnfs.exec',
  'opoccs.list',
  'opoccs.retry',
  'opoccs.rollback',
  'opoccs.fail',
] as const;
export type TenantOp = (typeof TENANT_OPS)[number];

export const subjects = {
  admin: (op: AdminOp): string => `${API_PREFIX}.admin.${op}`,
  tenant: (tenantId: string, op: TenantOp): string => `${API_PREFIX}.tenant.${tenantId}.${op}`,
  events: (tenantId: string, vnfId: string): string => `${API_PREFIX}.tenant.${tenantId}.events.${vnfId}`,
  /** Wildcards the API server subscribes to. */
  adminWildcard: `${API_PREFIX}.admin.>`,
  tenantWildcard: `${API_PREFIX}.tenant.*.>`,
  eventsWildcard: `${API_PREFIX}.tenant.*.events.>`,
  internal: `${API_PREFIX}.internal`,
} as const;

/** Name of the JetStream stream that keeps every notification (replayable by clients). */
export const EVENTS_STREAM = 'EDGENFV_EVENTS';

export type ParsedSubject =
  | { kind: 'admin'; op: AdminOp }
  | { kind: 'tenant'; tenantId: string; op: TenantOp }
  | { kind: 'unknown'; reason: string };

/** Parses an API subject; never throws. */
export function parseApiSubject(subject: string): ParsedSubject {
  const parts = subject.split('.');
  if (parts[0] !== 'nfv' || parts[1] !== 'v1') return { kind: 'unknown', reason: 'not an nfv.v1 subject' };
  if (parts[2] === 'admin') {
    const op = parts.slice(3).join('.');
    return (ADMIN_OPS as readonly string[]).includes(op)
      ? { kind: 'admin', op: op as AdminOp }
      : { kind: 'unknown', reason: `unknown admin operation "${op}"` };
  }
  if (parts[2] === 'tenant' && parts.length >= 5) {
    const tenantId = parts[3]!;
    const op = parts.slice(4).join('.');
    return (TENANT_OPS as readonly string[]).includes(op)
      ? { kind: 'tenant', tenantId, op: op as TenantOp }
      : { kind: 'unknown', reason: `unknown tenant operation "${op}"` };
  }
  return { kind: 'unknown', reason: 'unknown subject' };
}

/**
 * Where the API server may send a reply (docs/security.md): only into an inbox (`_INBOX.` or `_INBOX_<who>.`), never
 * a KV, stream or API subject; a tenant's inbox space (`_INBOX_t_<t>.`) only for that tenant's own requests. A
 * request whose reply subject breaks this gets no reply at all.
 */
export function replyAllowed(requestSubject: string, reply: string): boolean {
  if (!/^_INBOX(\.|_[A-Za-z0-9_-]+\.)[^\s]+$/.test(reply)) return false;
  const m = /^_INBOX_t_([^.]+)\./.exec(reply);
  if (!m) return true;
  const parsed = parseApiSubject(requestSubject);
  return parsed.kind === 'tenant' && parsed.tenantId === m[1];
}

/**
 * Whether a message on a service's subject may be taken for a client's request or report: it carries no reply, or
 * a reply into an inbox (replyAllowed), and it is no status message. A JetStream push consumer's deliveries fail
 * this (their reply is `$JS.ACK.…` / `$JS.FC.…`; idle heartbeats carry status 100): a principal that may create a
 * consumer names its delivery subject in the request body, where subject permissions cannot look, and could
 * otherwise make the server publish onto another node's subjects for it (docs/security.md).
 */
export function fromClient(subject: string, reply: string | undefined, statusCode = 0): boolean {
  return statusCode === 0 && (!reply || replyAllowed(subject, reply));
}
