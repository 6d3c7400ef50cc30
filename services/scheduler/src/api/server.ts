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
  type TenantOp,
} from '@edgenfv/contracts';
import type { ApiContext } from './context.js';
import * as tenants from './tenants.js';
import * as vnfs from './vnfs.js';
import * as nodes from './nodes.js';
import { listNotifications } from './notifications.js';
import * as day2 from './day2.js';
import { bodyHash, once, requestKey } from './idempotency.js';

export const API_QUEUE = 'edgenfv-api';
/** The largest request body the API accepts: a VNFD with many interfaces is a few KiB; larger is refused. */
export const MAX_REQUEST_BYTES = 1024 * 1024;
const EVENTS_SUBJECT = /^nfv\.v1\.tenant\.[^.]+\.events\./;

/** Admin operations the API server delegates to other parts (the node registry, the operations engine). */
export interface AdminDelegates {
  drain(nodeId: string): Promise<{ opOccIds: string[] }>;
}

const MUTATING = new Set<string>(['vnfs.instantiate', 'vnfs.scale', 'vnfs.heal', 'vnfs.terminate', 'vnfs.operate']);

export class ApiServer {
  private subs: Subscription[] = [];
  private inflight = new Set<Promise<void>>();
  private readonly requests: Counter<'op' | 'code'>;
  private readonly duration: Histogram<'op'>;

  constructor(
    private readonly nc: NatsConnection,
    private readonly ctx: ApiContext,
    private readonly delegates: AdminDelegates,
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
    if (parsed.kind === 'admin') {
      const req = validateRequest<Record<string, unknown>>(parsed.op, body);
      return { ok: true, result: await this.admin(parsed.op, req) };
    }
    const tenantId = parsed.tenantId;
    if (!isDnsLabel(tenantId)) {
      throw new InvalidArgumentError([{ field: '(subject).tenant', message: 'must be a DNS label' }]);
    }
    const req = validateRequest<Record<string, unknown>>(parsed.op, body);
    const run = async (): Promise<Envelope<unknown>> => {
      try {
        return { ok: true, result: await this.tenant(parsed.op, tenantId, req) };
      } catch (err) {
        return { ok: false, error: asAppError(err).toBody() };
      }
    };
    const requestId = req.requestId;
    if (MUTATING.has(parsed.op) && typeof requestId === 'string') {
      return once(this.ctx.store.requests, requestKey(tenantId, requestId), parsed.op, run, bodyHash(req));
    }
    return run();
  }

  private async admin(op: AdminOp, req: Record<string, unknown>): Promise<unknown> {
    const ctx = this.ctx;
    switch (op) {
      case 'tenants.create':
        return tenants.createTenant(ctx, req as never);
      case 'tenants.get':
        return tenants.getTenant(ctx, req.id as string);
      case 'tenants.list':
        return tenants.listTenants(ctx);
      case 'tenants.delete':
        return tenants.deleteTenant(ctx, req as never);
      case 'nodes.list':
        return nodes.listNodes(ctx);
      case 'nodes.get':
        return nodes.getNode(ctx, req.id as string);
      case 'nodes.cordon':
        return nodes.setCordon(ctx, req.id as string, true);
      case 'nodes.uncordon':
        return nodes.setCordon(ctx, req.id as string, false);
      case 'nodes.drain':
        return this.delegates.drain(req.id as string);
      case 'tenants.credentials':
        return tenants.tenantCredentials(ctx, req as never);
    }
  }

  private async tenant(op: TenantOp, tenantId: string, req: Record<string, unknown>): Promise<unknown> {
    const ctx = this.ctx;
    switch (op) {
      case 'vnfs.instantiate':
        return vnfs.instantiate(ctx, tenantId, req as never);
      case 'vnfs.get':
        return vnfs.getVnf(ctx, tenantId, req as never);
      case 'vnfs.list':
        await tenants.getTenant(ctx, tenantId);
        return vnfs.listVnfs(ctx, tenantId);
      case 'vnfs.scale':
        return vnfs.scale(ctx, tenantId, req as never);
      case 'vnfs.heal':
        return vnfs.heal(ctx, tenantId, req as never);
      case 'vnfs.terminate':
        return vnfs.terminate(ctx, tenantId, req as never);
      case 'opoccs.get':
        return vnfs.getOpOcc(ctx, tenantId, req as never);
      case 'notifications.list':
        await tenants.getTenant(ctx, tenantId);
        return listNotifications(ctx, tenantId, req as never);
      case 'vnfs.operate':
        return day2.operate(ctx, tenantId, req as never);
      case 'vnfs.logs':
        return day2.logs(ctx, tenantId, req as never);
      case 'vnfs.exec':
        return day2.exec(ctx, tenantId, req as never);
      case 'opoccs.list':
        return day2.listOpOccs(ctx, tenantId, req as never);
      case 'opoccs.retry':
        return day2.resolveFailedTemp(ctx, tenantId, req as never, 'retry');
      case 'opoccs.rollback':
        return day2.resolveFailedTemp(ctx, tenantId, req as never, 'rollback');
      case 'opoccs.fail':
        return day2.resolveFailedTemp(ctx, tenantId, req as never, 'fail');
    }
  }
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
