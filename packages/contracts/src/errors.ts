/**
 * Error vocabulary shared by every service. One AppError base, one subclass per failure kind;
 * each transport (NATS envelope, gRPC status, fastify handler) translates in one place.
 */
export const ERROR_CODES = [
  'INVALID_ARGUMENT',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'CONFLICT',
  'QUOTA_EXCEEDED',
  'UNSCHEDULABLE',
  'UNAVAILABLE',
  'PERMISSION_DENIED',
  'INTERNAL',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: unknown;
}

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly details?: unknown;
  constructor(code: ErrorCode, message: string, opts: { details?: unknown; retryable?: boolean; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.retryable = opts.retryable ?? false;
    if (opts.details !== undefined) this.details = opts.details;
  }
  toBody(): ErrorBody {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

/** One issue with an input: `field` is a JSON-pointer-like path such as `descriptor.resources.vcpus`. */
export interface FieldIssue {
  field: string;
  message: string;
}

export class InvalidArgumentError extends AppError {
  readonly issues: readonly FieldIssue[];
  constructor(issues: readonly FieldIssue[] | string, opts: { cause?: unknown } = {}) {
    const list = typeof issues === 'string' ? [{ field: '', message: issues }] : issues;
    const message = list.map((i) => (i.field ? `${i.field}: ${i.message}` : i.message)).join('; ');
    super('INVALID_ARGUMENT', message || 'invalid argument', { details: { issues: list }, cause: opts.cause });
    this.issues = list;
  }
}
export class NotFoundError extends AppError {
  constructor(message: string, details?: unknown) {
    super('NOT_FOUND', message, { details });
  }
}
export class AlreadyExistsError extends AppError {
  constructor(message: string, details?: unknown) {
    super('ALREADY_EXISTS', message, { details });
  }
}
export class ConflictError extends AppError {
  constructor(message: string, details?: unknown) {
    super('CONFLICT', message, { details, retryable: true });
  }
}
export class QuotaExceededError extends AppError {
  constructor(message: string, details?: unknown) {
    super('QUOTA_EXCEEDED', message, { details });
  }
}
export class UnschedulableError extends AppError {
  constructor(message: string, details?: unknown) {
    super('UNSCHEDULABLE', message, { details });
  }
}
export class UnavailableError extends AppError {
  constructor(message: string, opts: { details?: unknown; cause?: unknown } = {}) {
    super('UNAVAILABLE', message, { ...opts, retryable: true });
  }
}
export class PermissionDeniedError extends AppError {
  constructor(message: string, details?: unknown) {
    super('PERMISSION_DENIED', message, { details });
  }
}
export class InternalError extends AppError {
  constructor(message: string, opts: { details?: unknown; cause?: unknown } = {}) {
    super('INTERNAL', message, opts);
  }
}

/** nats.js error codes of a server or route that is gone for now (timeout, no responders, connection down). */
const TRANSIENT_NATS_CODES = new Set(['TIMEOUT', '503', 'CONNECTION_CLOSED', 'CONNECTION_DRAINING', 'CONNECTION_REFUSED', 'CONNECTION_TIMEOUT', 'DISCONNECT', '408', 'REQUEST_ERROR']);
/** JetStream API answers of a cluster that is electing or short of peers for now. */
const TRANSIENT_NATS_TEXT = /timeout|no responders|connection closed|temporarily unavailable|cluster not ready|no suitable peers|insufficient resources|jetstream not (enabled|available)|stream leader|not current|leadership/i;

/** A NATS failure that a retry a little later may not have: the server, its route or its stream leader is away. */
export function isTransientNatsError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && TRANSIENT_NATS_CODES.has(code)) return true;
  const name = (err as { name?: unknown }).name;
  const message = (err as { message?: unknown }).message;
  return name === 'NatsError' && typeof message === 'string' && TRANSIENT_NATS_TEXT.test(message);
}

/**
 * Any thrown value as an AppError: transient NATS failures become UNAVAILABLE (retryable: an operation waits and
 * tries again instead of failing for good), other unknown errors INTERNAL, keeping the cause.
 */
export function asAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (isTransientNatsError(err)) return new UnavailableError(`NATS unavailable: ${message}`, { cause: err });
  return new InternalError(message, { cause: err });
}

/** What a reply may echo of one string the client sent (field names, values): longer ones are cut. */
export const ECHO_MAX_CHARS = 256;
/** At most this many field issues go back in one INVALID_ARGUMENT reply (the count of the rest is said). */
export const ECHO_MAX_ISSUES = 20;
/** Any error body is cut to this many bytes of JSON before it is sent. */
export const ERROR_BODY_MAX_BYTES = 16 * 1024;

export function clip(s: string, max = ECHO_MAX_CHARS): string {
  return s.length <= max ? s : `${s.slice(0, max)}… (${s.length - max} more characters)`;
}

/**
 * An error body bounded in size, whatever the client sent: messages and issue fields cut to ECHO_MAX_CHARS, at most
 * ECHO_MAX_ISSUES issues, and details dropped if the whole is still over ERROR_BODY_MAX_BYTES.
 */
export function boundedErrorBody(body: ErrorBody): ErrorBody {
  const out: ErrorBody = { code: body.code, message: clip(body.message, 4 * ECHO_MAX_CHARS) };
  let details = body.details;
  const issues = (details as { issues?: unknown } | undefined)?.issues;
  if (Array.isArray(issues)) {
    const kept = issues.slice(0, ECHO_MAX_ISSUES).map((i: FieldIssue) => ({ field: clip(String(i?.field ?? '')), message: clip(String(i?.message ?? '')) }));
    details = { ...(details as object), issues: kept, ...(issues.length > kept.length ? { moreIssues: issues.length - kept.length } : {}) };
    if (issues.length > kept.length || body.message.length > out.message.length) {
      out.message = clip(kept.map((i) => (i.field ? `${i.field}: ${i.message}` : i.message)).join('; '), 4 * ECHO_MAX_CHARS);
    }
  }
  if (details !== undefined) {
    const size = JSON.stringify(details)?.length ?? 0;
    out.details = size + out.message.length <= ERROR_BODY_MAX_BYTES ? details : { truncated: true };
  }
  return out;
}
