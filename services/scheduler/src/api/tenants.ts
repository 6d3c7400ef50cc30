/** Operator API: tenants and their quotas. */
import {
  AlreadyExistsError,
  ConflictError,
  NotFoundError,
  UnavailableError,
  TERMINAL_OP_STATES,
  type CredentialsRequest,
  type IdRequest,
  type Tenant,
  type TenantCredentials,
  type TenantCreateRequest,
  type Usage,
} from '@edgenfv/contracts';
import type { ApiContext } from './context.js';
import type { StoredTenant } from '../state/store.js';

/** The API's view of a stored tenant (without the refund bookkeeping). */
export function tenantView(t: StoredTenant): Tenant {
  const { refunded: _r, charged: _c, ...view } = t;
  return view;
}

export const ZERO_USAGE: Usage = Object.freeze({ vcpus: 0, memoryMiB: 0, vfs: 0, vnfs: 0 });

export async function createTenant(ctx: ApiContext, req: TenantCreateRequest): Promise<Tenant> {
  const at = ctx.now().toISOString();
  const tenant: Tenant = {
    id: req.id,
    ...(req.displayName !== undefined ? { displayName: req.displayName } : {}),
    quota: req.quota ?? {},
    usage: { ...ZERO_USAGE },
    createdAt: at,
    updatedAt: at,
  };
  const rev = await ctx.store.tenants.create(req.id, tenant);
  if (rev === null) throw new AlreadyExistsError(`tenant "${req.id}" already exists`, { field: 'id' });
  ctx.logger.info({ tenantId: req.id }, 'tenant created');
  return tenant;
}

export async function getTenant(ctx: ApiContext, id: string): Promise<Tenant> {
  const t = await ctx.store.tenants.get(id);
  if (!t) throw new NotFoundError(`tenant "${id}" not found`, { field: 'id' });
  return tenantView(t.value);
}

export async function listTenants(ctx: ApiContext): Promise<{ items: Tenant[] }> {
  const items = (await ctx.store.tenants.list()).map((v) => tenantView(v.value)).sort((a, b) => a.id.localeCompare(b.id));
  return { items };
}

export async function deleteTenant(ctx: ApiContext, req: IdRequest): Promise<Record<string, never>> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const t = await ctx.store.tenants.get(req.id);
    if (!t) throw new NotFoundError(`tenant "${req.id}" not found`, { field: 'id' });
    if (t.value.usage.vnfs > 0) {
      throw new ConflictError(`tenant "${req.id}" still has ${t.value.usage.vnfs} VNF(s); terminate them first`, {
        vnfs: t.value.usage.vnfs,
      });
    }
    const busy = (await ctx.store.opoccs.list(`${req.id}.>`)).filter(
      (o) => !TERMINAL_OP_STATES.includes(o.value.operationState),
    );
    if (busy.length > 0) {
      throw new ConflictError(`tenant "${req.id}" has ${busy.length} operation(s) in progress`, {
        opOccIds: busy.map((o) => o.value.id),
      });
    }
    // Deleting at the revision read makes this atomic with a concurrent instantiate (which bumps usage by CAS).
    if (!(await ctx.store.tenants.delete(req.id, t.revision))) continue;
    const filter = `${req.id}.>`;
    for (const bucket of [ctx.store.vnfs, ctx.store.opoccs, ctx.store.names] as const) {
      for (const k of await bucket.keys(filter)) await bucket.delete(k);
    }
    // its credentials stop working now: connected clients of the tenant are disconnected
    await ctx.credentials?.revokeTenant(req.id);
    ctx.logger.info({ tenantId: req.id }, 'tenant deleted');
    return {};
  }
  throw new ConflictError(`tenant "${req.id}" is changing; retry`);
}

/** `tenants.credentials`: new NATS credentials for the tenant; `rotate` revokes the earlier ones. */
export async function tenantCredentials(ctx: ApiContext, req: CredentialsRequest): Promise<TenantCredentials> {
  await getTenant(ctx, req.id);
  if (!ctx.credentials) {
    throw new UnavailableError('this scheduler issues no NATS credentials: it runs without an issuer (credentials.issuerFile in its config)');
  }
  const creds = await ctx.credentials.issue(req.id, req.rotate === true);
  if (req.rotate === true) {
    // a new generation: the tenant's dashboard token is derived from it (docs/security.md), so the old one stops working
    const at = ctx.now().toISOString();
    await ctx.store.tenants.mutate(req.id, (cur) => (cur ? { ...cur, credentialsRotatedAt: at, updatedAt: at } : undefined));
  }
  return creds;
}
