/**
 * A tenant's dashboard token, derived from the operator's dashboard token (the key) and the tenant's id, createdAt
 * and credentialsRotatedAt: `edt.<tenant>.<HMAC-SHA256(key, "tenant:<id>:<createdAt>[:<credentialsRotatedAt>]")>`.
 * The dashboard checks it this way and the operator's CLI hands it out with the tenant's credentials; nothing is
 * stored. Rotating the tenant's credentials (`tenants.credentials {rotate: true}`), deleting (and re-creating) the
 * tenant revoke it; changing the operator's token changes every tenant's.
 */
import { createHmac } from 'node:crypto';

export const TENANT_DASHBOARD_TOKEN_RE = /^edt\.([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\.([A-Za-z0-9_-]{43})$/;

/** What a tenant's dashboard token is bound to (fields of the API's Tenant). */
export interface TenantTokenBasis {
  id: string;
  createdAt: string;
  credentialsRotatedAt?: string;
}

export function tenantDashboardToken(operatorToken: string, tenant: TenantTokenBasis): string {
  const generation = tenant.credentialsRotatedAt === undefined ? '' : `:${tenant.credentialsRotatedAt}`;
  const mac = createHmac('sha256', operatorToken).update(`tenant:${tenant.id}:${tenant.createdAt}${generation}`).digest('base64url');
  return `edt.${tenant.id}.${mac}`;
}
