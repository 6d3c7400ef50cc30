/**
 * The message API v1 server: one subscription per wildcard (queue group `edgenfv-api`, so every scheduler replica
 * serves), request decoding and validation, dispatch, and the reply envelope. Errors are translated to the
 * envelope here and nowhere else. Every request gets exactly one reply; nothing is written before validation.
 */
import type { Msg, NatsConnection, Subscription } from 'nats';
import { Counter, Histogram, type Registry } from 'prom-client';
import {
  asAppError,
  boundedErrorBody,
  InvalidArgumentError,
  isDnsLabel,
  parseApiSubject,
  replyAllowed,
  subjects,
  validateRequest,
  type AdminOp,
  type Envelope,
  type ResultOf,
  type TenantOp,
} from '@edgenfv/contracts';
import type { ApiContext } from './context.js';
import { adminHandlers, MUTATING, tenantHandlers, type AdminHandler, type TenantHandler } from './handlers.js';
import { bodyHash, once, requestKey } from './idempotency.js';

export const API_QUEUE = 'edgenfv-api';
/** The largest request body the API accepts: a VNFD with many interfaces is a few KiB; larger is refused. */
export const MAX_REQUEST_BYTES = 1024 * 1024;
const EVENTS_SUBJECT = /^nfv\.v1\.tenant\.[^.]+\.events\./;

export class ApiServer {
  private subs: Subscription[] = [];
  private inflight = new Set<Promise<void>>();
  private readonly requests: Counter<'op' | 'code'>;
  private readonly duration: Histogram<'op'>;

  constructor(
    private readonly nc: NatsConnection,
    private readonly ctx: ApiContext,
    registry: Registry,
  ) {
    this.requests = new Counter({
      name: 'edgenfv_api_requests_total',
      help: 'Message API requests by operation and result code (OK for success).',
      labelNames: ['op', 'code'],
      registers: [registry],
    });
    this.duration = new Histogram({
      name: 'edgenfv_api_request_duration_seconds',
      help: 'Time to answer a message API request.',
      labelNames: ['op'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    });
  }

  start(): void {
    for (const subject of [subjects.adminWildcard, subjects.tenantWildcard]) {
      const sub = this.nc.subscribe(subject, {
        queue: API_QUEUE,
        callback: (err, msg) => {
          if (err) {
            this.ctx.logger.error({ err }, 'API subscription error');
            return;
          }
          const p = this.handle(msg).finally(() => this.inflight.delete(p));
          this.inflight.add(p);
        },
      });
      this.subs.push(sub);
    }
  }

  /** Stops taking requests and waits for the ones in flight to be answered. */
  async stop(): Promise<void> {
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
    await Promise.allSettled([...this.inflight]);
  }

  private async handle(msg: Msg): Promise<void> {
    // Notifications (nfv.v1.tenant.<t>.events.>) and other plain publishes carry no reply subject: not requests.
    if (!msg.reply) return;
    // Notifications are published with JetStream (a request whose answer is the stream's ack): not API requests.
    if (EVENTS_SUBJECT.test(msg.subject)) return;
    // Replies go only into inboxes, a tenant's inbox space only for its own requests: a reply subject naming a KV
    // key, a stream or another tenant's subjects gets nothing (docs/security.md).
    if (!replyAllowed(msg.subject, msg.reply)) {
      this.requests.inc({ op: 'unknown', code: 'PERMISSION_DENIED' });
      this.ctx.logger.warn({ subject: msg.subject, reply: msg.reply }, 'request refused: its reply subject is not an inbox of the requester');
      return;
    }
    const parsed = parseApiSubject(msg.subject);
    const op = parsed.kind === 'unknown' ? 'unknown' : parsed.op;
    const endTimer = this.duration.startTimer({ op });
    let reply: Envelope<unknown>;
    try {
      reply = await this.dispatch(msg, parsed);
    } catch (err) {
      const e = asAppError(err);
      if (e.code === 'INTERNAL') this.ctx.logger.error({ err, subject: msg.subject }, 'request failed');
      reply = { ok: false, error: e.toBody() };
    }
    endTimer();
    if (!reply.ok) reply = { ok: false, error: boundedErrorBody(reply.error) };
    this.requests.inc({ op, code: reply.ok ? 'OK' : reply.error.code });
    let text = JSON.stringify(reply);
    // Every reply fits the server's max payload: a result too large for it is said, not dropped.
    const limit = this.nc.info?.max_payload ?? MAX_REQUEST_BYTES;
    if (Buffer.byteLength(text) > limit) {
      this.ctx.logger.error({ subject: msg.subject, bytes: Buffer.byteLength(text), limit }, 'reply over the max payload');
      text = JSON.stringify({ ok: false, error: { code: 'INTERNAL', message: `the reply (${Buffer.byteLength(text)} bytes) is over the server's max payload (${limit} bytes)` } });
    }
    try {
      msg.respond(text);
    } catch (err) {
      this.ctx.logger.warn({ err, subject: msg.subject }, 'could not send reply');
    }
  }

  private async dispatch(msg: Msg, parsed: ReturnType<typeof parseApiSubject>): Promise<Envelope<unknown>> {
    if (parsed.kind === 'unknown') {
      throw new InvalidArgumentError([{ field: '(subject)', message: `${parsed.reason}: ${msg.subject}` }]);
    }
    if (msg.data.length > MAX_REQUEST_BYTES) {
      throw new InvalidArgumentError([{ field: '(request)', message: `is ${msg.data.length} bytes; at most ${MAX_REQUEST_BYTES} bytes are accepted` }]);
    }
    const body = decode(msg.data);
    if (parsed.kind === 'admin') return { ok: true, result: await runAdmin(this.ctx, parsed.op, body) };
    const tenantId = parsed.tenantId;
    if (!isDnsLabel(tenantId)) {
      throw new InvalidArgumentError([{ field: '(subject).tenant', message: 'must be a DNS label' }]);
    }
    return runTenant(this.ctx, parsed.op, tenantId, body);
  }
}

/** Validates the request of admin operation S and answers it with S's handler. */
async function runAdmin<S extends AdminOp>(ctx: ApiContext, op: S, body: unknown): Promise<ResultOf<S>> {
  const req = validateRequest(op, body);
  const handler: AdminHandler<S> = adminHandlers[op];
  return handler(ctx, req);
}

/**
 * Validates the request of tenant operation S and answers it with S's handler; a mutating request with a
 * `requestId` is answered once (the same requestId with another body is CONFLICT).
 */
async function runTenant<S extends TenantOp>(ctx: ApiContext, op: S, tenantId: string, body: unknown): Promise<Envelope<unknown>> {
  const req = validateRequest(op, body);
  const handler: TenantHandler<S> = tenantHandlers[op];
  const run = async (): Promise<Envelope<unknown>> => {
    try {
      return { ok: true, result: await handler(ctx, tenantId, req) };
    } catch (err) {
      return { ok: false, error: asAppError(err).toBody() };
    }
  };
  const requestId = (req as { requestId?: unknown }).requestId;
  if (MUTATING.has(op) && typeof requestId === 'string') {
    return once(ctx.store.requests, requestKey(tenantId, requestId), op, run, bodyHash(req));
  }
  return run();
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The request body: empty means `{}`; anything else must be UTF-8 JSON. */
export function decode(data: Uint8Array): unknown {
  if (data.length === 0) return {};
  let text: string;
  try {
    text = utf8.decode(data);
  } catch {
    throw new InvalidArgumentError([{ field: '(request)', message: 'is not valid UTF-8' }]);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError([
      { field: '(request)', message: `is not valid JSON (${err instanceof Error ? err.message : String(err)})` },
    ]);
  }
}
