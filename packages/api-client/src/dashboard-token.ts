/**
 * A tenant's dashboard token, derived from the operator's dashboard token (the key) and the tenant's id and
 * createdAt: `edt.<tenant>.<HMAC-SHA256(key, "tenant:<id>:<createdAt>")>`. The dashboard checks it this way and
 * the operator's CLI hands it out with the tenant's credentials; nothing is stored. Deleting (and re-creating) the
 * tenant revokes it; changing the operator's token changes every tenant's.
 */
import { createHmac } from 'node:crypto';

export const TENANT_DASHBOARD_TOKEN_RE = /^edt\.([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\.([A-Za-z0-9_-]{43})$/;

export function tenantDashboardToken(operatorToken: string, tenantId: string, createdAt: string): string {
  return `edt.${tenantId}.${createHmac('sha256', operatorToken).update(`tenant:${tenantId}:${createdAt}`).digest('base64url')}`;
}
