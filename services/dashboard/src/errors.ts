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

/** Thrown by the operator-action guard: 401 (no token) or 403 (wrong token) with code PERMISSION_DENIED. */
export class HttpAuthError extends AppError {
  readonly statusCode: 401 | 403;
  constructor(statusCode: 401 | 403, message: string) {
    super('PERMISSION_DENIED', message);
    this.statusCode = statusCode;
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
    } else if (err instanceof HttpAuthError) {
      status = err.statusCode;
      body = err.toBody();
      if (status === 401) void reply.header('www-authenticate', 'Bearer realm="edgenfv"');
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
