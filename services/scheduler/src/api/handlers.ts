/**
 * Which function answers each subject of the message API. The tables are typed per subject: a subject of
 * ADMIN_OPS / TENANT_OPS without a handler, or a handler taking another request or giving another result than
 * the contract's (`RequestOf<S>`, `ResultOf<S>` in packages/contracts), does not compile.
 */
import type { AdminOp, RequestOf, ResultOf, TenantOp } from '@edgenfv/contracts';
import type { ApiContext } from './context.js';
import * as tenants from './tenants.js';
import * as vnfs from './vnfs.js';
import * as nodes from './nodes.js';
import * as day2 from './day2.js';
import { drainNode } from './drain.js';
import { listNotifications } from './notifications.js';

export type AdminHandler<S extends AdminOp> = (ctx: ApiContext, req: RequestOf<S>) => Promise<ResultOf<S>>;
export type TenantHandler<S extends TenantOp> = (ctx: ApiContext, tenantId: string, req: RequestOf<S>) => Promise<ResultOf<S>>;

export const adminHandlers: { [S in AdminOp]: AdminHandler<S> } = {
  'tenants.create': tenants.createTenant,
  'tenants.get': (ctx, req) => tenants.getTenant(ctx, req.id),
  'tenants.list': (ctx) => tenants.listTenants(ctx),
  'tenants.delete': tenants.deleteTenant,
  'nodes.list': (ctx) => nodes.listNodes(ctx),
  'nodes.get': (ctx, req) => nodes.getNode(ctx, req.id),
  'nodes.cordon': (ctx, req) => nodes.setCordon(ctx, req.id, true),
  'nodes.uncordon': (ctx, req) => nodes.setCordon(ctx, req.id, false),
  'nodes.drain': (ctx, req) => drainNode(ctx, req.id, { ...(req.maxParallel !== undefined ? { maxParallel: req.maxParallel } : {}), ...(req.deadlineS !== undefined ? { deadlineS: req.deadlineS } : {}) }),
  'tenants.credentials': tenants.tenantCredentials,
};

export const tenantHandlers: { [S in TenantOp]: TenantHandler<S> } = {
  'vnfs.instantiate': vnfs.instantiate,
  'vnfs.get': vnfs.getVnf,
  'vnfs.list': async (ctx, tenantId) => {
    await tenants.getTenant(ctx, tenantId);
    return vnfs.listVnfs(ctx, tenantId);
  },
  'vnfs.scale': vnfs.scale,
  'vnfs.heal': vnfs.heal,
  'vnfs.terminate': vnfs.terminate,
  'opoccs.get': vnfs.getOpOcc,
  'notifications.list': async (ctx, tenantId, req) => {
    await tenants.getTenant(ctx, tenantId);
    return listNotifications(ctx, tenantId, req);
  },
  'vnfs.operate': day2.operate,
  'vnfs.logs': day2.logs,
  'vnfs.exec': day2.exec,
  'opoccs.list': day2.listOpOccs,
  'opoccs.retry': (ctx, tenantId, req) => day2.resolveFailedTemp(ctx, tenantId, req, 'retry'),
  'opoccs.rollback': (ctx, tenantId, req) => day2.resolveFailedTemp(ctx, tenantId, req, 'rollback'),
  'opoccs.fail': (ctx, tenantId, req) => day2.resolveFailedTemp(ctx, tenantId, req, 'fail'),
};

/** Mutating operations: a `requestId` makes them idempotent (API.md). */
export const MUTATING: ReadonlySet<TenantOp> = new Set<TenantOp>(['vnfs.instantiate', 'vnfs.scale', 'vnfs.heal', 'vnfs.terminate', 'vnfs.operate']);
