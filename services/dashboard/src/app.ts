/**
 * The operator dashboard: JSON routes backed by the message API over NATS, operator actions (cordon, uncordon,
 * drain) behind a bearer token, a static page, /metrics and /healthz. Everything comes in through `deps`.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import type { NatsConnection } from 'nats';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { DNS_LABEL_RE, type ErrorBody, type NodeRecord, type OpOcc, type Tenant, type Vnf } from '@edgenfv/contracts';
import { ApiClient } from '@edgenfv/api-client';
import { HttpAuthError, installErrorHandlers } from './errors.js';
import { createMetrics } from './metrics.js';

export interface DashboardDeps {
  nc: NatsConnection;
  logger: Logger;
  registry: Registry;
  /** Bearer token operators present to POST actions; without one, actions are refused (403). */
  operatorToken?: string;
  apiTimeoutMs?: number;
  /** Folder of index.html, app.js, app.css; default the package's `public/`. */
  publicDir?: URL;
}

/** A VNF as the page shows it: with its tenant, its last operation, and why it is not placed when it is not. */
export interface VnfView extends Vnf {
  lastOpOcc?: OpOcc;
  unschedulable?: { message: string; reasons: string[] };
}

export interface Overview {
  nodes: NodeRecord[];
  tenants: Tenant[];
  vnfs: VnfView[];
  /** Parts that could not be read (one tenant's VNFs...): the rest is still shown. */
  errors: Array<{ what: string; error: ErrorBody }>;
}

const STATIC: Record<string, string> = {
  '/': 'index.html',
  '/app.js': 'app.js',
  '/app.css': 'app.css',
};
const CONTENT_TYPE: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
};

/** UNSCHEDULABLE details as sentences: `node-a: [cordon] node is cordoned`, or whatever shape the server sends. */
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
        reasons.push(`${o.filter !== undefined ? `[${String(o.filter)}] ` : ''}${String(o.reason ?? JSON.stringify(o))}${n}`);
      }
    } else if (Array.isArray(list)) {
      for (const r of list) {
        if (typeof r === 'string') reasons.push(r);
        else if (r && typeof r === 'object') {
          const o = r as Record<string, unknown>;
          const who = o.node ?? o.nodeClass ?? o.nodeId;
          reasons.push(`${who !== undefined ? `${String(who)}: ` : ''}${o.filter !== undefined ? `[${String(o.filter)}] ` : ''}${String(o.reason ?? JSON.stringify(o))}`);
        }
      }
    } else if (!Array.isArray(d)) {
      for (const [k, v] of Object.entries(d as Record<string, unknown>)) reasons.push(`${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`);
    }
  }
  return { message: error.message, reasons };
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
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
    files.set(route, { body: readFileSync(new URL(name, publicDir)), type: CONTENT_TYPE[name.split('.').pop()!]! });
  }
  const tokenDigest = deps.operatorToken ? digest(deps.operatorToken) : undefined;

  const app: FastifyInstance = Fastify({
    // pino's Logger is a FastifyBaseLogger; the cast only widens its generic type
    loggerInstance: deps.logger.child({ component: 'dashboard' }) as FastifyBaseLogger,
    disableRequestLogging: true,
  });
  installErrorHandlers(app);

  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.httpRequests.inc({ method: request.method, route, status_code: String(reply.statusCode) });
    metrics.httpDuration.observe({ method: request.method, route }, reply.elapsedTime / 1000);
  });

  /** Operator actions: `Authorization: Bearer <token>`, compared in constant time. */
  const requireOperator = async (request: FastifyRequest): Promise<void> => {
    if (!tokenDigest) throw new HttpAuthError(403, 'operator actions are disabled: the dashboard has no operator token configured');
    const h = request.headers.authorization;
    const m = typeof h === 'string' ? /^Bearer\s+(.+)$/i.exec(h.trim()) : null;
    if (!m) throw new HttpAuthError(401, 'operator actions need "Authorization: Bearer <operator token>"');
    if (!timingSafeEqual(digest(m[1]!), tokenDigest)) throw new HttpAuthError(403, 'the operator token is not valid');
  };

  const tenantParam = { type: 'string', pattern: DNS_LABEL_RE.source } as const;
  const idParam = { type: 'string', minLength: 1, maxLength: 253, pattern: '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' } as const;

  // ---- static page, health, metrics ----
  for (const route of files.keys()) {
    app.get(route, async (_req, reply) => {
      const f = files.get(route)!;
      return reply.type(f.type).header('cache-control', 'no-cache').send(f.body);
    });
  }
  app.get('/healthz', async (_req, reply) => {
    const closed = deps.nc.isClosed();
    return reply.status(closed ? 503 : 200).send({ status: closed ? 'unavailable' : 'ok', nats: closed ? 'closed' : 'connected' });
  });
  app.get('/metrics', async (_req, reply) => {
    return reply.type(deps.registry.contentType).send(await deps.registry.metrics());
  });

  // ---- reads ----
  app.get('/api/overview', async (): Promise<Overview> => {
    const errors: Overview['errors'] = [];
    const [nodes, tenants] = await Promise.all([api.listNodes(), api.listTenants()]);
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
    const vnfs = await Promise.all(
      perTenant.flat().map(async (v): Promise<VnfView> => {
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
      }),
    );
    return { nodes, tenants, vnfs, errors };
  });
  app.get('/api/tenants', async () => ({ items: await api.listTenants() }));
  app.get<{ Params: { tenant: string } }>(
    '/api/tenants/:tenant',
    { schema: { params: { type: 'object', properties: { tenant: tenantParam }, required: ['tenant'] } } },
    async (req) => api.getTenant(req.params.tenant),
  );
  app.get('/api/nodes', async () => ({ items: await api.listNodes() }));
  app.get<{ Params: { id: string } }>(
    '/api/nodes/:id',
    { schema: { params: { type: 'object', properties: { id: idParam }, required: ['id'] } } },
    async (req) => api.getNode(req.params.id),
  );
  app.get<{ Params: { tenant: string } }>(
    '/api/tenants/:tenant/vnfs',
    { schema: { params: { type: 'object', properties: { tenant: tenantParam }, required: ['tenant'] } } },
    async (req) => ({ items: await api.listVnfs(req.params.tenant) }),
  );
  app.get<{ Params: { tenant: string; id: string } }>(
    '/api/tenants/:tenant/vnfs/:id',
    { schema: { params: { type: 'object', properties: { tenant: tenantParam, id: idParam }, required: ['tenant', 'id'] } } },
    async (req) => api.getVnf(req.params.tenant, req.params.id),
  );
  app.get<{ Params: { tenant: string; id: string } }>(
    '/api/tenants/:tenant/opoccs/:id',
    { schema: { params: { type: 'object', properties: { tenant: tenantParam, id: idParam }, required: ['tenant', 'id'] } } },
    async (req) => api.getOpOcc(req.params.tenant, req.params.id),
  );
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
      // the newest `limit` events of all tenants, then the tenant's among them (newest first for the page)
      const events = await api.recentEvents(req.query.limit);
      const items = req.query.tenant ? events.filter((e) => e.tenantId === req.query.tenant) : events;
      return { items: items.reverse() };
    },
  );

  // ---- operator actions ----
  const actionSchema = { schema: { params: { type: 'object', properties: { id: idParam }, required: ['id'] } } };
  app.post<{ Params: { id: string } }>('/api/nodes/:id/cordon', { ...actionSchema, preHandler: requireOperator }, async (req) => {
    req.log.info({ nodeId: req.params.id, action: 'cordon' }, 'operator action');
    return api.cordonNode(req.params.id);
  });
  app.post<{ Params: { id: string } }>('/api/nodes/:id/uncordon', { ...actionSchema, preHandler: requireOperator }, async (req) => {
    req.log.info({ nodeId: req.params.id, action: 'uncordon' }, 'operator action');
    return api.uncordonNode(req.params.id);
  });
  app.post<{ Params: { id: string } }>('/api/nodes/:id/drain', { ...actionSchema, preHandler: requireOperator }, async (req) => {
    req.log.info({ nodeId: req.params.id, action: 'drain' }, 'operator action');
    return api.drainNode(req.params.id);
  });

  return app;
}

function toBody(err: unknown): ErrorBody {
  const e = err as { code?: unknown; message?: unknown; toBody?: () => ErrorBody };
  if (typeof e.toBody === 'function') return e.toBody();
  return { code: 'INTERNAL', message: typeof e.message === 'string' ? e.message : String(err) };
}
