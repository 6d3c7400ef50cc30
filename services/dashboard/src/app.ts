/**
 * The dashboard: JSON routes backed by the message API over NATS, live updates as server-sent events, actions
 * (cordon/uncordon/drain a node; terminate/heal/scale/operate a VNF), a static page, /metrics and /healthz.
 * Every `/api/*` request needs a bearer token (auth.ts): the operator's sees everything, a tenant's its own tenant.
 * Everything comes in through `deps`.
 */
import { readFileSync } from 'node:fs';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import type { NatsConnection } from 'nats';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { DNS_LABEL_RE, EVENTS_STREAM, NotFoundError, type ErrorBody, type NodeRecord, type OpOcc, type Tenant, type Vnf } from '@edgenfv/contracts';
import { ApiClient, ApiError } from '@edgenfv/api-client';
import { hostAllowed, RateLimiter, requireOperatorRole, requireTenant, TokenAuthority, type Principal } from './auth.js';
import { HttpStatusError, installErrorHandlers } from './errors.js';
import { readHistograms } from './histograms.js';
import { followEvents, NodeFeed, sseWriter, streamBounds } from './live.js';
import { createMetrics } from './metrics.js';

export interface DashboardDeps {
  nc: NatsConnection;
  logger: Logger;
  registry: Registry;
  /** The operator's dashboard token (its own secret); also the key tenant tokens are derived with. Without one every /api request is refused. */
  operatorToken?: string;
  apiTimeoutMs?: number;
  /** Host names (or host:port) besides loopback the dashboard may be reached by (DNS rebinding guard). */
  allowedHosts?: readonly string[];
  /** Requests per second per client address on /api (default 20, burst 3x). */
  rateLimitPerSec?: number;
  /** The services' /metrics, read for the boot and placement histograms. */
  metricsUrls?: readonly string[];
  /** Push a node's record at most this often on heartbeats (default 2000 ms). */
  nodeRefreshMs?: number;
  /** Folder of index.html, app.js, app.css; default the package's `public/`. */
  publicDir?: URL;
}

/** A VNF as the page shows it: with its tenant, its last operation, and why it is not placed when it is not. */
export interface VnfView extends Vnf {
  lastOpOcc?: OpOcc;
  unschedulable?: { message: string; reasons: string[] };
}

export interface Overview {
  /** Who the token belongs to. */
  principal: Principal;
  /** The events stream's last sequence before this snapshot was read: open the live stream with it as Last-Event-ID. */
  eventsSeq: number;
  nodes: NodeRecord[];
  tenants: Tenant[];
  vnfs: VnfView[];
  /** Parts that could not be read (one tenant's VNFs...): the rest is still shown. */
  errors: Array<{ what: string; error: ErrorBody }>;
}

const STATIC: Record<string, string> = {
  '/': 'index.html',
  '/app.js': 'app.js',
  '/draw.js': 'draw.js',
  '/app.css': 'app.css',
};
const CONTENT_TYPE: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
};

/** UNSCHEDULABLE details as sentences: `node-a: [cordon] node is cordoned`, or whatever shape the server sends. */
/** A value from an error's details as text: strings as they are, anything else as JSON (never `[object Object]`). */
const text = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v));

export function explainUnschedulable(error: ErrorBody): { message: string; reasons: string[] } {
  const reasons: string[] = [];
  const d = error.details;
  if (d && typeof d === 'object') {
    const list = (d as { reasons?: unknown }).reasons;
    const rejected = (d as { rejected?: unknown }).rejected;
    if (Array.isArray(rejected)) {
      // the scheduler's Explanation: {nodes, rejected: [{filter, reason, nodes}], message}
      for (const r of rejected) {
        if (!r || typeof r !== 'object') continue;
        const o = r as Record<string, unknown>;
        const n = typeof o.nodes === 'number' ? ` (${o.nodes} node${o.nodes === 1 ? '' : 's'})` : '';
        reasons.push(`${o.filter !== undefined ? `[${text(o.filter)}] ` : ''}${text(o.reason ?? o)}${n}`);
      }
    } else if (Array.isArray(list)) {
      for (const r of list) {
        if (typeof r === 'string') reasons.push(r);
        else if (r && typeof r === 'object') {
          const o = r as Record<string, unknown>;
          const who = o.node ?? o.nodeClass ?? o.nodeId;
          reasons.push(`${who !== undefined ? `${text(who)}: ` : ''}${o.filter !== undefined ? `[${text(o.filter)}] ` : ''}${text(o.reason ?? o)}`);
        }
      }
    } else if (!Array.isArray(d)) {
      for (const [k, v] of Object.entries(d as Record<string, unknown>)) reasons.push(`${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`);
    }
  }
  return { message: error.message, reasons };
}


declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

export async function buildApp(deps: DashboardDeps): Promise<FastifyInstance> {
  const metrics = createMetrics(deps.registry);
  const api = new ApiClient(deps.nc, {
    timeoutMs: deps.apiTimeoutMs ?? 5000,
    observe: (op, result, seconds) => {
      metrics.apiRequests.inc({ op, result });
      metrics.apiDuration.observe({ op }, seconds);
    },
  });
  const publicDir = deps.publicDir ?? new URL('../../public/', import.meta.url);
  const files = new Map<string, { body: Buffer; type: string }>();
  for (const [route, name] of Object.entries(STATIC)) {
    files.set(route, { body: readFileSync(new URL(name, publicDir)), type: CONTENT_TYPE[name.split('.').pop()!] });
  }
  const tokens = new TokenAuthority(deps.operatorToken, async (id) => {
    try {
      return await api.getTenant(id);
    } catch (err) {
      if (err instanceof ApiError && err.code === 'NOT_FOUND') return null;
      throw err;
    }
  });
  const allowedHosts = new Set((deps.allowedHosts ?? []).map((h) => h.toLowerCase()));
  const rate = deps.rateLimitPerSec ?? 20;
  const limiter = new RateLimiter(rate, rate * 3);
  const nodeFeed = new NodeFeed(deps.nc, api, deps.logger, deps.nodeRefreshMs ?? 2_000);

  const app: FastifyInstance = Fastify({
    // pino's Logger is a FastifyBaseLogger; the cast only widens its generic type
    loggerInstance: deps.logger.child({ component: 'dashboard' }) as FastifyBaseLogger,
    disableRequestLogging: true,
  });
  installErrorHandlers(app);
  // live streams never end on their own: end them before the server waits for its connections
  const streams = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const close of [...streams]) close();
    nodeFeed.close();
  });

  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.httpRequests.inc({ method: request.method, route, status_code: String(reply.statusCode) });
    metrics.httpDuration.observe({ method: request.method, route }, reply.elapsedTime / 1000);
  });

  // Guards, in order: Host header (not for /metrics and /healthz, which Prometheus and probes reach by any
  // address), then for /api: rate limit per client address, then the token.
  app.addHook('onRequest', async (request) => {
    const path = request.url.split('?')[0];
    if (path === '/metrics' || path === '/healthz') return;
    if (!hostAllowed(request.headers.host, allowedHosts)) {
      throw new HttpStatusError(421, 'PERMISSION_DENIED', `Host "${request.headers.host ?? ''}" is not one this dashboard serves (set EDGENFV_DASHBOARD_ALLOWED_HOSTS)`);
    }
    if (!path.startsWith('/api/')) return;
    const wait = limiter.take(request.ip);
    if (wait > 0) {
      metrics.rateLimited.inc();
      throw new HttpStatusError(429, 'UNAVAILABLE', `too many requests from ${request.ip}: at most ${rate}/s`, { 'retry-after': String(wait) });
    }
    request.principal = await tokens.authenticate(request.headers.authorization);
  });
  const who = (req: FastifyRequest): Principal => req.principal!;
  const operatorOnly = async (req: FastifyRequest): Promise<void> => requireOperatorRole(who(req), 'this');
  const sameTenant = async (req: FastifyRequest): Promise<void> => requireTenant(who(req), (req.params as { tenant: string }).tenant);

  const tenantParam = { type: 'string', pattern: DNS_LABEL_RE.source } as const;
  const idParam = { type: 'string', minLength: 1, maxLength: 253, pattern: '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' } as const;
  const tenantSchema = { params: { type: 'object', properties: { tenant: tenantParam }, required: ['tenant'] } };
  const tenantIdSchema = { params: { type: 'object', properties: { tenant: tenantParam, id: idParam }, required: ['tenant', 'id'] } };
  const nodeSchema = { params: { type: 'object', properties: { id: idParam }, required: ['id'] } };

  // ---- static page, health, metrics ----
  for (const route of files.keys()) {
    app.get(route, async (_req, reply) => {
      const f = files.get(route)!;
      return reply
        .type(f.type)
        .header('cache-control', 'no-cache')
        .header('x-content-type-options', 'nosniff')
        .header('x-frame-options', 'DENY')
        .header('content-security-policy', "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
        .send(f.body);
    });
  }
  app.get('/favicon.ico', async (_req, reply) => reply.status(204).send());
  app.get('/healthz', async (_req, reply) => {
    const closed = deps.nc.isClosed();
    return reply.status(closed ? 503 : 200).send({ status: closed ? 'unavailable' : 'ok', nats: closed ? 'closed' : 'connected' });
  });
  app.get('/metrics', async (_req, reply) => {
    return reply.type(deps.registry.contentType).send(await deps.registry.metrics());
  });

  // ---- reads ----
  const vnfView = async (v: Vnf, errors: Overview['errors']): Promise<VnfView> => {
    if (!v.lastOpOccId) return v;
    try {
      const lastOpOcc = await api.getOpOcc(v.tenantId, v.lastOpOccId);
      const view: VnfView = { ...v, lastOpOcc };
      if (lastOpOcc.error?.code === 'UNSCHEDULABLE') view.unschedulable = explainUnschedulable(lastOpOcc.error);
      return view;
    } catch (err) {
      errors.push({ what: `operation ${v.lastOpOccId} of ${v.tenantId}/${v.id}`, error: toBody(err) });
      return v;
    }
  };
  app.get('/api/overview', async (req): Promise<Overview> => {
    const p = who(req);
    const errors: Overview['errors'] = [];
    // the stream position first: whatever happens after it reaches the client over the live stream
    const eventsSeq = await streamBounds(deps.nc).then(
      (b) => b.last,
      () => 0,
    );
    const [nodes, tenants] = p.role === 'operator' ? await Promise.all([api.listNodes(), api.listTenants()]) : [[], [await api.getTenant(p.tenantId)]];
    const perTenant = await Promise.all(
      tenants.map(async (t) => {
        try {
          return await api.listVnfs(t.id);
        } catch (err) {
          errors.push({ what: `vnfs of tenant ${t.id}`, error: toBody(err) });
          return [];
        }
      }),
    );
    const vnfs = await Promise.all(perTenant.flat().map((v) => vnfView(v, errors)));
    return { principal: p, eventsSeq, nodes, tenants, vnfs, errors };
  });
  app.get('/api/whoami', async (req) => who(req));
  app.get('/api/tenants', async (req) => {
    const p = who(req);
    return { items: p.role === 'operator' ? await api.listTenants() : [await api.getTenant(p.tenantId)] };
  });
  app.get<{ Params: { tenant: string } }>('/api/tenants/:tenant', { schema: tenantSchema, preHandler: sameTenant }, async (req) => api.getTenant(req.params.tenant));
  app.get<{ Params: { tenant: string } }>('/api/tenants/:tenant/token', { schema: tenantSchema, preHandler: operatorOnly }, async (req) => {
    const token = await tokens.tenantToken(req.params.tenant);
    if (!token) throw new NotFoundError(`tenant "${req.params.tenant}" not found`, { field: 'tenant' });
    req.log.info({ tenantId: req.params.tenant, action: 'tenant-token' }, 'operator action');
    return { tenantId: req.params.tenant, token };
  });
  app.get('/api/nodes', { preHandler: operatorOnly }, async () => ({ items: await api.listNodes() }));
  app.get<{ Params: { id: string } }>('/api/nodes/:id', { schema: nodeSchema, preHandler: operatorOnly }, async (req) => api.getNode(req.params.id));
  app.get<{ Params: { tenant: string } }>('/api/tenants/:tenant/vnfs', { schema: tenantSchema, preHandler: sameTenant }, async (req) => ({
    items: await api.listVnfs(req.params.tenant),
  }));
  app.get<{ Params: { tenant: string; id: string } }>('/api/tenants/:tenant/vnfs/:id', { schema: tenantIdSchema, preHandler: sameTenant }, async (req) => {
    const errors: Overview['errors'] = [];
    return vnfView(await api.getVnf(req.params.tenant, req.params.id), errors);
  });
  app.get<{ Params: { tenant: string; id: string } }>('/api/tenants/:tenant/opoccs/:id', { schema: tenantIdSchema, preHandler: sameTenant }, async (req) =>
    api.getOpOcc(req.params.tenant, req.params.id),
  );
  app.get('/api/histograms', { preHandler: operatorOnly }, async () => readHistograms(deps.metricsUrls ?? []));
  app.get<{ Querystring: { limit: number; tenant?: string } }>(
    '/api/events',
    {
      schema: {
        querystring: {
          type: 'object',
          properties: { limit: { type: 'integer', minimum: 1, maximum: 1000, default: 50 }, tenant: tenantParam },
          additionalProperties: false,
        },
      },
    },
    async (req) => {
      const p = who(req);
      const tenant = p.role === 'tenant' ? p.tenantId : req.query.tenant;
      if (p.role === 'tenant' && req.query.tenant && req.query.tenant !== p.tenantId) requireTenant(p, req.query.tenant);
      // the newest `limit` events of all tenants, then the tenant's among them (newest first for the page)
      const events = await api.recentEvents(req.query.limit);
      const items = tenant ? events.filter((e) => e.tenantId === tenant) : events;
      return { items: items.reverse() };
    },
  );

  // ---- live: server-sent events ----
  app.get<{ Querystring: { lastEventId?: string } }>(
    '/api/events/stream',
    { schema: { querystring: { type: 'object', properties: { lastEventId: { type: 'string', pattern: '^[0-9]{1,15}$' } }, additionalProperties: false } } },
    async (req, reply) => {
      const p = who(req);
      const header = req.headers['last-event-id'];
      const rawLast = (typeof header === 'string' && header.trim() !== '' ? header.trim() : undefined) ?? req.query.lastEventId;
      if (rawLast !== undefined && !/^[0-9]{1,15}$/.test(rawLast)) {
        throw new HttpStatusError(400, 'INVALID_ARGUMENT', 'Last-Event-ID must be an events stream sequence number');
      }
      let bounds: { first: number; last: number };
      try {
        bounds = await streamBounds(deps.nc);
      } catch (err) {
        throw new HttpStatusError(503, 'UNAVAILABLE', `cannot read the events stream ${EVENTS_STREAM}: ${(err as Error).message}`);
      }
      const filter = `nfv.v1.tenant.${p.role === 'tenant' ? p.tenantId : '*'}.events.>`;
      reply.hijack();
      const out = sseWriter(reply.raw);
      const client = { principal: p, send: out.send };
      const last = rawLast === undefined ? undefined : Number(rawLast);
      if (last !== undefined && bounds.first > last + 1 && bounds.last > 0) out.send('gap', { from: last + 1, firstAvailable: bounds.first });
      metrics.sseClients.inc();
      let stop: (() => void) | undefined;
      let closed = false;
      const close = (): void => {
        if (closed) return;
        closed = true;
        streams.delete(close);
        stop?.();
        nodeFeed.remove(client);
        out.close();
        metrics.sseClients.dec();
      };
      req.raw.once('close', close);
      streams.add(close);
      try {
        stop = await followEvents(deps.nc, filter, last === undefined ? undefined : last + 1, (e) => {
          out.send('notification', e, e.seq);
          metrics.sseEvents.inc();
          if (e.event.type === 'Replica' && e.event.nodeId) nodeFeed.touch(e.event.nodeId);
        });
        if (closed) {
          stop();
          return;
        }
      } catch (err) {
        out.send('error', { code: 'UNAVAILABLE', message: `cannot follow ${EVENTS_STREAM}: ${(err as Error).message}` });
        close();
        return;
      }
      if (p.role === 'operator') nodeFeed.add(client);
      out.send('ready', { principal: p, lastEventId: last ?? bounds.last });
    },
  );

  // ---- actions ----
  const logAction = (req: FastifyRequest, fields: Record<string, unknown>): void => {
    const p = who(req);
    req.log.info({ ...fields, by: p.role === 'operator' ? 'operator' : `tenant:${p.tenantId}` }, p.role === 'operator' ? 'operator action' : 'tenant action');
  };
  for (const action of ['cordon', 'uncordon', 'drain'] as const) {
    app.post<{ Params: { id: string } }>(`/api/nodes/:id/${action}`, { schema: nodeSchema, preHandler: operatorOnly }, async (req) => {
      logAction(req, { nodeId: req.params.id, action });
      if (action === 'drain') {
        const r = await api.drainNode(req.params.id);
        nodeFeed.touch(req.params.id);
        return r;
      }
      const node = action === 'cordon' ? await api.cordonNode(req.params.id) : await api.uncordonNode(req.params.id);
      nodeFeed.publish(node);
      return node;
    });
  }
  const vnfAction = <B>(action: string, bodySchema: Record<string, unknown>, run: (tenant: string, id: string, body: B) => Promise<{ opOccId: string }>): void => {
    app.post<{ Params: { tenant: string; id: string }; Body: B }>(
      `/api/tenants/:tenant/vnfs/:id/${action}`,
      { schema: { ...tenantIdSchema, body: { type: 'object', additionalProperties: false, ...bodySchema } }, preHandler: sameTenant },
      async (req) => {
        logAction(req, { tenantId: req.params.tenant, vnfId: req.params.id, action });
        return run(req.params.tenant, req.params.id, (req.body ?? {}) as B);
      },
    );
  };
  vnfAction<{ mode?: 'GRACEFUL' | 'FORCEFUL' }>('terminate', { properties: { mode: { enum: ['GRACEFUL', 'FORCEFUL'] } } }, (t, id, b) =>
    api.terminate(t, { id, ...(b.mode ? { mode: b.mode } : {}) }),
  );
  vnfAction<{ replica?: number }>('heal', { properties: { replica: { type: 'integer', minimum: 0 } } }, (t, id, b) =>
    api.heal(t, { id, ...(b.replica !== undefined ? { replica: b.replica } : {}) }),
  );
  vnfAction<{ replicas: number }>('scale', { properties: { replicas: { type: 'integer', minimum: 0 } }, required: ['replicas'] }, (t, id, b) =>
    api.scale(t, { id, replicas: b.replicas }),
  );
  vnfAction<{ changeStateTo: 'STARTED' | 'STOPPED' }>('operate', { properties: { changeStateTo: { enum: ['STARTED', 'STOPPED'] } }, required: ['changeStateTo'] }, (t, id, b) =>
    api.operate(t, { id, changeStateTo: b.changeStateTo }),
  );
  // a FAILED_TEMP op occurrence waits for its tenant: retry, roll back, or give up (SOL003)
  for (const action of ['retry', 'rollback', 'fail'] as const) {
    app.post<{ Params: { tenant: string; id: string } }>(`/api/tenants/:tenant/opoccs/:id/${action}`, { schema: tenantIdSchema, preHandler: sameTenant }, async (req) => {
      logAction(req, { tenantId: req.params.tenant, opOccId: req.params.id, action });
      return api.resolveOpOcc(req.params.tenant, req.params.id, action);
    });
  }
  app.get<{ Params: { tenant: string }; Querystring: { vnfId?: string } }>(
    '/api/tenants/:tenant/opoccs',
    { schema: { ...tenantSchema, querystring: { type: 'object', properties: { vnfId: idParam }, additionalProperties: false } }, preHandler: sameTenant },
    async (req) => ({ items: await api.listOpOccs(req.params.tenant, req.query.vnfId) }),
  );
  app.get<{ Params: { tenant: string; id: string }; Querystring: { replica?: number; tailLines: number } }>(
    '/api/tenants/:tenant/vnfs/:id/logs',
    {
      schema: {
        ...tenantIdSchema,
        querystring: {
          type: 'object',
          properties: { replica: { type: 'integer', minimum: 0 }, tailLines: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } },
          additionalProperties: false,
        },
      },
      preHandler: sameTenant,
    },
    async (req) => api.logs(req.params.tenant, { id: req.params.id, tailLines: req.query.tailLines, ...(req.query.replica !== undefined ? { replica: req.query.replica } : {}) }),
  );

  return app;
}

function toBody(err: unknown): ErrorBody {
  const e = err as { code?: unknown; message?: unknown; toBody?: () => ErrorBody };
  if (typeof e.toBody === 'function') return e.toBody();
  return { code: 'INTERNAL', message: typeof e.message === 'string' ? e.message : String(err) };
}
