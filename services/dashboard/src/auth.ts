/**
 * Who is asking: every `/api/*` request carries `Authorization: Bearer <token>`. The operator's token (the
 * dashboard's own secret, `dashboardToken` in connect.json) sees and does everything; a tenant token sees and acts
 * on its own tenant only. Tenant tokens are derived, not stored: `edt.<tenant>.<HMAC-SHA256(operator token,
 * "tenant:<id>:<createdAt>")>`, so deleting (and re-creating) a tenant revokes its token, and rotating the operator
 * token rotates them all. Also here: the Host header check (DNS rebinding) and a per-client rate limit.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { DNS_LABEL_RE } from '@edgenfv/contracts';
import { TENANT_DASHBOARD_TOKEN_RE, tenantDashboardToken } from '@edgenfv/api-client';
import { HttpAuthError } from './errors.js';

export type Principal = { role: 'operator' } | { role: 'tenant'; tenantId: string };

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export class TokenAuthority {
  readonly #key: string | undefined;
  readonly #keyDigest: Buffer | undefined;
  /** tenant id -> createdAt (or null: no such tenant), cached briefly so a burst of requests asks once. */
  readonly #tenants = new Map<string, { createdAt: string | null; until: number }>();

  constructor(
    operatorToken: string | undefined,
    /** The tenant's createdAt, or null when the tenant does not exist. */
    private readonly tenantCreatedAt: (tenantId: string) => Promise<string | null>,
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
    const createdAt = await this.#createdAt(tenantId);
    return createdAt === null ? null : tenantDashboardToken(this.#key, tenantId, createdAt);
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
      const createdAt = await this.#createdAt(tenantId);
      if (createdAt !== null && timingSafeEqual(digest(token), digest(tenantDashboardToken(this.#key, tenantId, createdAt)))) {
        return { role: 'tenant', tenantId };
      }
    }
    throw new HttpAuthError(403, 'the token is not valid');
  }

  async #createdAt(tenantId: string): Promise<string | null> {
    if (!DNS_LABEL_RE.test(tenantId)) return null;
    const now = Date.now();
    const hit = this.#tenants.get(tenantId);
    if (hit && hit.until > now) return hit.createdAt;
    const createdAt = await this.tenantCreatedAt(tenantId);
    if (this.#tenants.size > 10_000) this.#tenants.clear();
    this.#tenants.set(tenantId, { createdAt, until: now + this.cacheMs });
    return createdAt;
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
