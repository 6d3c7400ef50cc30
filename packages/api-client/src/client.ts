/**
 * A typed client of the message API v1 (shared API.md) over NATS request/reply: one method per operation,
 * the reply envelope decoded in one place, failures thrown as `ApiError` (an AppError carrying the server's code).
 */
import { JSONCodec, consumerOpts, type NatsConnection, type NatsError } from 'nats';
import {
  AppError,
  ERROR_CODES,
  EVENTS_STREAM,
  subjects,
  UnavailableError,
  InternalError,
  type AdminOp,
  type ErrorBody,
  type ErrorCode,
  type EventPayload,
  type NodeRecord,
  type OpOcc,
  type OperateRequest,
  type LogsRequest,
  type ExecRequest,
  type ExecResult,
  type HealRequest,
  type OpAccepted,
  type RequestOf,
  type ResultOf,
  type ScaleRequest,
  type TenantCreateRequest,
  type TerminateRequest,
  type Tenant,
  type TenantOp,
  type Vnf,
  type TenantCredentials,
  type NotificationsList,
  type NotificationsListRequest,
  type Vnfd,
} from '@edgenfv/contracts';

/** An error reply of the API: the server's code, message and details, and the subject it came from. */
export class ApiError extends AppError {
  readonly subject: string;
  constructor(subject: string, body: ErrorBody) {
    const code: ErrorCode = (ERROR_CODES as readonly string[]).includes(body.code) ? body.code : 'INTERNAL';
    super(code, body.message, {
      details: body.details,
      retryable: code === 'UNAVAILABLE' || code === 'CONFLICT',
    });
    this.subject = subject;
  }
}

export interface ApiClientOptions {
  /** Per request; default 5000 ms. */
  timeoutMs?: number;
  /** Called after every request with the operation, the outcome (`ok` or an error code) and the seconds it took. */
  observe?: (op: AdminOp | TenantOp, result: 'ok' | ErrorCode, seconds: number) => void;
}

/** One event as kept in the EDGENFV_EVENTS stream: the payload plus where it came from. */
export interface StoredEvent {
  seq: number;
  subject: string;
  tenantId: string;
  event: EventPayload;
}

export interface EventsOptions {
  /** Keep waiting for new events after the replay (until `signal` aborts). */
  follow?: boolean;
  signal?: AbortSignal;
  /** Only this VNF's events. */
  vnfId?: string;
  /** Start after this stream sequence (resume), instead of the first event kept. */
  afterSeq?: number;
}

const jc = JSONCodec<unknown>();

export class ApiClient {
  readonly #nc: NatsConnection;
  readonly #timeoutMs: number;
  readonly #observe: ApiClientOptions['observe'];

  constructor(nc: NatsConnection, opts: ApiClientOptions = {}) {
    this.#nc = nc;
    this.#timeoutMs = opts.timeoutMs ?? 5000;
    this.#observe = opts.observe;
  }

  /** Sends one request and returns the envelope's result, or throws ApiError / UnavailableError / InternalError. */
  async request<T>(subject: string, op: AdminOp | TenantOp, body: unknown): Promise<T> {
    const started = process.hrtime.bigint();
    let outcome: 'ok' | ErrorCode = 'INTERNAL';
    try {
      const result = await this.#request<T>(subject, body);
      outcome = 'ok';
      return result;
    } catch (err) {
      if (err instanceof AppError) outcome = err.code;
      throw err;
    } finally {
      this.#observe?.(op, outcome, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  async #request<T>(subject: string, body: unknown): Promise<T> {
    let reply;
    try {
      reply = await this.#nc.request(subject, jc.encode(body), { timeout: this.#timeoutMs });
    } catch (err) {
      const code = (err as NatsError).code;
      if (code === '503') throw new UnavailableError(`no API server answers on ${subject} (is the scheduler running?)`, { cause: err });
      if (code === 'TIMEOUT') throw new UnavailableError(`no reply on ${subject} within ${this.#timeoutMs} ms`, { cause: err });
      throw new UnavailableError(`request on ${subject} failed: ${(err as Error).message}`, { cause: err });
    }
    let env: unknown;
    try {
      env = jc.decode(reply.data);
    } catch (err) {
      throw new InternalError(`reply on ${subject} is not JSON`, { cause: err });
    }
    if (env === null || typeof env !== 'object' || typeof (env as { ok?: unknown }).ok !== 'boolean') {
      throw new InternalError(`reply on ${subject} is not an API envelope`, { details: { reply: env } });
    }
    const e = env as { ok: boolean; result?: unknown; error?: Partial<ErrorBody> };
    if (e.ok) return e.result as T;
    const error = e.error ?? {};
    throw new ApiError(subject, {
      code: (error.code ?? 'INTERNAL'),
      message: typeof error.message === 'string' ? error.message : 'the server gave no message',
      ...(error.details !== undefined ? { details: error.details } : {}),
    });
  }

  // typed by the contract: each operation's request and result (packages/contracts RequestOf / ResultOf)
  #admin<S extends AdminOp>(op: S, body: RequestOf<S>): Promise<ResultOf<S>> {
    return this.request<ResultOf<S>>(subjects.admin(op), op, body);
  }
  #tenant<S extends TenantOp>(tenantId: string, op: S, body: RequestOf<S>): Promise<ResultOf<S>> {
    return this.request<ResultOf<S>>(subjects.tenant(tenantId, op), op, body);
  }

  // ---- operator API ----
  createTenant(req: TenantCreateRequest): Promise<Tenant> {
    return this.#admin('tenants.create', req);
  }
  getTenant(id: string): Promise<Tenant> {
    return this.#admin('tenants.get', { id });
  }
  async listTenants(): Promise<Tenant[]> {
    return (await this.#admin('tenants.list', {})).items;
  }
  async deleteTenant(id: string): Promise<void> {
    await this.#admin('tenants.delete', { id });
  }
  async listNodes(): Promise<NodeRecord[]> {
    return (await this.#admin('nodes.list', {})).items;
  }
  getNode(id: string): Promise<NodeRecord> {
    return this.#admin('nodes.get', { id });
  }
  cordonNode(id: string): Promise<NodeRecord> {
    return this.#admin('nodes.cordon', { id });
  }
  uncordonNode(id: string): Promise<NodeRecord> {
    return this.#admin('nodes.uncordon', { id });
  }
  drainNode(id: string): Promise<ResultOf<'nodes.drain'>> {
    return this.#admin('nodes.drain', { id });
  }
  /** New NATS credentials for a tenant (a connect file); `rotate` revokes the earlier ones. */
  tenantCredentials(id: string, rotate = false): Promise<TenantCredentials> {
    return this.#admin('tenants.credentials', rotate ? { id, rotate } : { id });
  }

  // ---- tenant API ----
  instantiate(tenantId: string, descriptor: Vnfd, requestId?: string): Promise<{ vnfId: string; opOccId: string }> {
    return this.#tenant(tenantId, 'vnfs.instantiate', requestId === undefined ? { descriptor } : { descriptor, requestId });
  }
  getVnf(tenantId: string, id: string): Promise<Vnf> {
    return this.#tenant(tenantId, 'vnfs.get', { id });
  }
  async listVnfs(tenantId: string): Promise<Vnf[]> {
    return (await this.#tenant(tenantId, 'vnfs.list', {})).items;
  }
  scale(tenantId: string, req: ScaleRequest): Promise<OpAccepted> {
    return this.#tenant(tenantId, 'vnfs.scale', req);
  }
  heal(tenantId: string, req: HealRequest): Promise<OpAccepted> {
    return this.#tenant(tenantId, 'vnfs.heal', req);
  }
  terminate(tenantId: string, req: TerminateRequest): Promise<OpAccepted> {
    return this.#tenant(tenantId, 'vnfs.terminate', req);
  }
  getOpOcc(tenantId: string, id: string): Promise<OpOcc> {
    return this.#tenant(tenantId, 'opoccs.get', { id });
  }
  /** The tenant's kept notifications after `afterSeq`, read by the scheduler (needs no JetStream permission). */
  listNotifications(tenantId: string, req: NotificationsListRequest = {}): Promise<NotificationsList> {
    return this.#tenant(tenantId, 'notifications.list', req);
  }
  // ---- day-2 ----
  operate(tenantId: string, req: OperateRequest): Promise<OpAccepted> {
    return this.#tenant(tenantId, 'vnfs.operate', req);
  }
  logs(tenantId: string, req: LogsRequest): Promise<{ lines: string[]; truncated?: boolean }> {
    return this.#tenant(tenantId, 'vnfs.logs', req);
  }
  exec(tenantId: string, req: ExecRequest): Promise<ExecResult> {
    return this.#tenant(tenantId, 'vnfs.exec', req);
  }
  async listOpOccs(tenantId: string, vnfId?: string): Promise<OpOcc[]> {
    return (await this.#tenant(tenantId, 'opoccs.list', vnfId ? { vnfId } : {})).items;
  }
  /** SOL003 retry / rollback / fail of a FAILED_TEMP operation occurrence. */
  resolveOpOcc(tenantId: string, id: string, action: 'retry' | 'rollback' | 'fail'): Promise<OpOcc> {
    return this.#tenant(tenantId, `opoccs.${action}`, { id });
  }

  /**
   * The last `limit` events of every tenant, oldest first. The stream keeps only `nfv.v1.tenant.*.events.>`, so
   * starting at `last_seq - limit + 1` gives exactly the newest ones without reading the whole stream.
   */
  async recentEvents(limit: number): Promise<StoredEvent[]> {
    const jsm = await this.#nc.jetstreamManager();
    let state;
    try {
      state = (await jsm.streams.info(EVENTS_STREAM)).state;
    } catch (err) {
      throw new UnavailableError(`cannot read the events stream ${EVENTS_STREAM}: ${(err as Error).message}`, { cause: err });
    }
    if (state.messages === 0 || limit <= 0) return [];
    // Read the last `limit` sequences directly (no consumer: nothing to stall, nothing left behind); sequences
    // removed by the stream's limits are skipped.
    const first = Math.max(state.first_seq, state.last_seq - limit + 1);
    const seqs = Array.from({ length: state.last_seq - first + 1 }, (_, i) => first + i);
    const out: StoredEvent[] = [];
    for (let i = 0; i < seqs.length; i += 64) {
      const batch = await Promise.all(
        seqs.slice(i, i + 64).map((seq) =>
          jsm.streams.getMessage(EVENTS_STREAM, { seq }).catch((err: unknown) => {
            if (/no message found|not found/i.test(String((err as Error).message))) return null;
            throw new UnavailableError(`cannot read ${EVENTS_STREAM} seq ${seq}: ${(err as Error).message}`, { cause: err });
          }),
        ),
      );
      for (const m of batch) {
        if (!m) continue;
        try {
          out.push({ seq: m.seq, subject: m.subject, tenantId: m.subject.split('.')[3] ?? '', event: m.json<EventPayload>() });
        } catch {
          /* not JSON: skip */
        }
      }
    }
    return out;
  }

  /**
   * Replays the notifications kept in the JetStream stream EDGENFV_EVENTS (all tenants when `tenantId` is
   * undefined), oldest first; with `follow` keeps yielding new ones until `signal` aborts.
   */
  /**
   * The tenant's notifications through `notifications.list` (no JetStream rights needed): pages of 1000 after
   * `afterSeq`; with `follow`, a live subscription on the tenant's events wakes the next page (2 s at the latest).
   */
  async *#eventsFromScheduler(tenantId: string, opts: EventsOptions): AsyncGenerator<StoredEvent> {
    const live = `nfv.v1.tenant.${tenantId}.events.${opts.vnfId ?? '>'}`;
    let wake: (() => void) | undefined;
    const sub = opts.follow ? this.#nc.subscribe(live, { callback: () => wake?.() }) : undefined;
    let after = opts.afterSeq ?? 0;
    try {
      for (;;) {
        const page = await this.listNotifications(tenantId, { afterSeq: after, limit: 1000, ...(opts.vnfId ? { vnfId: opts.vnfId } : {}) });
        for (const i of page.items) {
          yield { seq: i.seq, subject: i.subject, tenantId, event: i.event as EventPayload };
          after = i.seq;
        }
        if (page.items.length === 1000) continue;
        after = Math.max(after, page.lastSeq); // nothing of the tenant's up to the stream's last sequence is left
        if (!opts.follow || opts.signal?.aborted) return;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 2000);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
          opts.signal?.addEventListener('abort', () => wake?.(), { once: true });
        });
        if (opts.signal?.aborted) return;
      }
    } finally {
      sub?.unsubscribe();
    }
  }

  async *events(tenantId: string | undefined, opts: EventsOptions = {}): AsyncGenerator<StoredEvent> {
    const filter = `nfv.v1.tenant.${tenantId ?? '*'}.events.${opts.vnfId ?? '>'}`;
    let matching: number;
    try {
      const jsm = await this.#nc.jetstreamManager();
      const info = await jsm.streams.info(EVENTS_STREAM, { subjects_filter: filter });
      matching = Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
    } catch (err) {
      if ((err as NatsError).api_error?.err_code === 10059 || /stream not found/i.test((err as Error).message)) {
        throw new UnavailableError(`the events stream ${EVENTS_STREAM} does not exist (is the scheduler running?)`, { cause: err });
      }
      // a tenant's credentials have no JetStream rights: the scheduler replays its notifications (docs/security.md)
      if (tenantId !== undefined && /Permissions Violation/i.test((err as Error).message)) {
        yield* this.#eventsFromScheduler(tenantId, opts);
        return;
      }
      throw new UnavailableError(`cannot read the events stream ${EVENTS_STREAM}: ${(err as Error).message}`, { cause: err });
    }
    if (matching === 0 && !opts.follow) return;
    if (opts.signal?.aborted) return;
    // A push ordered consumer: works with nats-server 2.9 (the pull `consumers.get` API needs 2.10).
    const co = consumerOpts();
    co.orderedConsumer();
    co.bindStream(EVENTS_STREAM); // named, not looked up by subject (a least-privilege principal may not list streams)
    co.filterSubject(filter);
    if (opts.afterSeq !== undefined && opts.afterSeq > 0) co.startSequence(opts.afterSeq + 1);
    else co.deliverAll();
    const sub = await this.#nc.jetstream().subscribe(filter, co);
    const onAbort = (): void => {
      sub.unsubscribe();
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    // a replay (not follow) that stops receiving before its last message fails instead of waiting forever
    const watchdog = new ReplayWatchdog(this.#timeoutMs, () => sub.unsubscribe());
    try {
      if (!opts.follow) watchdog.arm();
      for await (const m of sub) {
        watchdog.disarm();
        let event: EventPayload | undefined;
        try {
          event = m.json<EventPayload>();
        } catch {
          event = undefined; // not JSON: not an event of ours
        }
        if (event !== undefined) yield { seq: m.seq, subject: m.subject, tenantId: m.subject.split('.')[3] ?? '', event };
        if (!opts.follow && m.info.pending === 0) break;
        if (!opts.follow) watchdog.arm();
      }
    } finally {
      watchdog.disarm();
      opts.signal?.removeEventListener('abort', onAbort);
      sub.unsubscribe();
    }
    if (watchdog.fired) throw new UnavailableError(`replaying ${EVENTS_STREAM} stalled: no message for ${this.#timeoutMs} ms`);
  }
}

/** Fires `onFire` when armed and not re-armed or disarmed within `ms`. */
class ReplayWatchdog {
  #timer: NodeJS.Timeout | undefined;
  fired = false;
  constructor(
    private readonly ms: number,
    private readonly onFire: () => void,
  ) {}
  arm(): void {
    this.disarm();
    this.#timer = setTimeout(() => {
      this.fired = true;
      this.onFire();
    }, this.ms);
  }
  disarm(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
