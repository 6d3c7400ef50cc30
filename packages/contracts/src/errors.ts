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

/** Any thrown value as an AppError (unknown errors become INTERNAL, keeping the cause). */
export function asAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new InternalError(message, { cause: err });
}
