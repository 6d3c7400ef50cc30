/**
 * Who is asking: every `/api/*` request carries `Authorization: Bearer <token>`. The operator's token (the
 * dashboard's own secret, `dashboardToken` in connect.json) sees and does everything; a tenant token sees and acts
 * on its own tenant only. Tenant tokens are derived, not stored: `edt.<tenant>.<HMAC-SHA256(operator token,
 * "tenant:<id>:<createdAt>[:<credentialsRotatedAt>]")>`, so rotating a tenant's credentials or deleting (and
 * re-creating) the tenant revokes its token (within `cacheMs`), and rotating the operator token rotates them all. Also here: the Host header check (DNS rebinding) and a per-client rate limit.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { DNS_LABEL_RE } from '@edgenfv/contracts';
import { TENANT_DASHBOARD_TOKEN_RE, tenantDashboardToken, type TenantTokenBasis } from '@edgenfv/api-client';
import { HttpAuthError } from './errors.js';

export type Principal = { role: 'operator' } | { role: 'tenant'; tenantId: string };

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export class TokenAuthority {
  readonly #key: string | undefined;
  readonly #keyDigest: Buffer | undefined;
  /** tenant id -> what its token is bound to (or null: no such tenant), cached briefly so a burst of requests asks once. */
  readonly #tenants = new Map<string, { basis: TenantTokenBasis | null; at: number }>();

  constructor(
    operatorToken: string | undefined,
    /** The tenant (its id, createdAt, credentialsRotatedAt), or null when the tenant does not exist. */
    private readonly tenantBasis: (tenantId: string) => Promise<TenantTokenBasis | null>,
    private readonly cacheMs = 5_000,
  ) {
    this.#key = operatorToken || undefined;
    this.#keyDigest = this.#key ? digest(this.#key) : undefined;
  }

  get enabled(): boolean {
    return this.#key !== undefined;
  }

  /** The dashboard token of a tenant (for the operator to hand out). */
  async tenantToken(tenantId: string): Promise<string | null> {
    if (!this.#key) return null;
    const basis = await this.#basis(tenantId);
    return basis === null ? null : tenantDashboardToken(this.#key, basis);
  }

  /** The principal behind an Authorization header value; throws HttpAuthError 401/403. */
  async authenticate(header: string | string[] | undefined): Promise<Principal> {
    if (!this.#key || !this.#keyDigest) {
      throw new HttpAuthError(403, 'the dashboard has no token configured (EDGENFV_DASHBOARD_TOKEN): every /api request is refused');
    }
    const m = typeof header === 'string' ? /^Bearer\s+(\S+)$/i.exec(header.trim()) : null;
    if (!m) throw new HttpAuthError(401, 'this needs "Authorization: Bearer <token>" (the operator\'s dashboardToken from connect.json, or a tenant token)');
    const token = m[1]!;
    if (timingSafeEqual(digest(token), this.#keyDigest)) return { role: 'operator' };
    const t = TENANT_DASHBOARD_TOKEN_RE.exec(token);
    if (t) {
      const tenantId = t[1]!;
      const matches = (b: TenantTokenBasis | null): boolean =>
        b !== null && b.id === tenantId && timingSafeEqual(digest(token), digest(tenantDashboardToken(this.#key!, b)));
      // a token that does not match the cached tenant may be a newer one (its credentials were just rotated): look
      // the tenant up again (at most once a second per tenant)
      if (matches(await this.#basis(tenantId)) || matches(await this.#basis(tenantId, 1_000))) return { role: 'tenant', tenantId };
    }
    throw new HttpAuthError(403, 'the token is not valid');
  }

  /** The tenant from the cache, or looked up when the cached one is older than `maxAgeMs` (default `cacheMs`). */
  async #basis(tenantId: string, maxAgeMs = this.cacheMs): Promise<TenantTokenBasis | null> {
    if (!DNS_LABEL_RE.test(tenantId)) return null;
    const now = Date.now();
    const hit = this.#tenants.get(tenantId);
    if (hit && now - hit.at < maxAgeMs) return hit.basis;
    const basis = await this.tenantBasis(tenantId);
    if (this.#tenants.size > 10_000) this.#tenants.clear();
    this.#tenants.set(tenantId, { basis, at: now });
    return basis;
  }
}

/** Throws 403 unless the principal may see/act on `tenantId`. */
export function requireTenant(p: Principal, tenantId: string): void {
  if (p.role === 'tenant' && p.tenantId !== tenantId) {
    throw new HttpAuthError(403, `a token of tenant "${p.tenantId}" cannot see or act on tenant "${tenantId}"`);
  }
}

export function requireOperatorRole(p: Principal, what: string): void {
  if (p.role !== 'operator') throw new HttpAuthError(403, `${what} needs the operator's token`);
}

/**
 * Host header check against DNS rebinding: the names the dashboard is reached by. Loopback names are always
 * allowed; `allowed` adds more (`EDGENFV_DASHBOARD_ALLOWED_HOSTS`, the listen host).
 */
export function hostAllowed(hostHeader: string | undefined, allowed: ReadonlySet<string>): boolean {
  if (!hostHeader) return false;
  const h = hostHeader.trim().toLowerCase();
  const name = h.startsWith('[') ? h.slice(0, h.indexOf(']') + 1) : h.replace(/:\d+$/, '');
  return name === 'localhost' || name === '127.0.0.1' || name === '[::1]' || allowed.has(name) || allowed.has(h);
}

/** A token bucket per key (client address): `ratePerSec` sustained, `burst` at once. */
export class RateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  constructor(
    readonly ratePerSec: number,
    readonly burst: number,
  ) {}

  /** 0 when allowed, else the seconds to wait. */
  take(key: string, now = Date.now()): number {
    let b = this.#buckets.get(key);
    if (!b) {
      if (this.#buckets.size > 10_000) this.#buckets.clear();
      b = { tokens: this.burst, at: now };
      this.#buckets.set(key, b);
    }
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.ratePerSec);
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - b.tokens) / this.ratePerSec);
  }
}
