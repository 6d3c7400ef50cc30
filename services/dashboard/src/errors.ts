/** The dashboard's one translation of errors to HTTP: AppError codes to statuses, a JSON body `{error}`. */
import type { FastifyError, FastifyInstance } from 'fastify';
import { AppError, InternalError, type ErrorBody, type ErrorCode } from '@edgenfv/contracts';

export const HTTP_STATUS: Readonly<Record<ErrorCode, number>> = Object.freeze({
  INVALID_ARGUMENT: 400,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  CONFLICT: 409,
  QUOTA_EXCEEDED: 422,
  UNSCHEDULABLE: 422,
  PERMISSION_DENIED: 403,
  UNAVAILABLE: 503,
  INTERNAL: 500,
});

/** An error with its own HTTP status (the request guards: Host header, rate limit). */
export class HttpStatusError extends AppError {
  readonly statusCode: number;
  constructor(statusCode: number, code: ErrorCode, message: string, readonly headers: Record<string, string> = {}) {
    super(code, message);
    this.statusCode = statusCode;
  }
}

/** Thrown by the token guard: 401 (no token) or 403 (wrong token, or another tenant's) with code PERMISSION_DENIED. */
export class HttpAuthError extends HttpStatusError {
  constructor(statusCode: 401 | 403, message: string) {
    super(statusCode, 'PERMISSION_DENIED', message, statusCode === 401 ? { 'www-authenticate': 'Bearer realm="edgenfv"' } : {});
  }
}

export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | AppError | Error, request, reply) => {
    let status: number;
    let body: ErrorBody;
    const fe = err as FastifyError;
    if (fe.validation) {
      status = 400;
      body = {
        code: 'INVALID_ARGUMENT',
        message: fe.message,
        details: {
          issues: fe.validation.map((v) => ({
            field: `${fe.validationContext ?? 'request'}${v.instancePath ? v.instancePath.replace(/\//g, '.') : ''}`,
            message: v.message ?? 'invalid',
          })),
        },
      };
    } else if (err instanceof HttpStatusError) {
      status = err.statusCode;
      body = err.toBody();
      for (const [k, v] of Object.entries(err.headers)) void reply.header(k, v);
    } else if (err instanceof AppError) {
      status = HTTP_STATUS[err.code] ?? 500;
      body = err.toBody();
    } else if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
      status = fe.statusCode; // fastify's own client errors: bad JSON, unsupported media type, body too large
      body = { code: 'INVALID_ARGUMENT', message: fe.message };
    } else {
      status = 500;
      body = new InternalError('internal error').toBody();
    }
    if (status >= 500 && status !== 503) request.log.error({ err }, 'request failed');
    else request.log.info({ code: body.code, status }, 'request refused');
    void reply.status(status).send({ error: body });
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send({ error: { code: 'NOT_FOUND', message: `no route ${request.method} ${request.url}` } });
  });
}
