/**
 * Quota bookkeeping, one place for the API (charges when a request is accepted) and the engine (gives back when an
 * operation ends): every change is one CAS on the tenant record, so two concurrent requests can never both take
 * the last unit.
 */
import { NotFoundError, QUOTA_KEYS, QuotaExceededError, replicaDemand, type Tenant, type Usage, type Vnfd } from '@edgenfv/contracts';
import type { Store, StoredTenant } from '../state/store.js';

/** What `replicas` replicas of a VNFD (and `vnfs` VNFs) count against a quota; negative to give back. */
export function demandOf(d: Vnfd, replicas: number, vnfs: number): Usage {
  const r = replicaDemand(d);
  return { vcpus: r.vcpus * replicas, memoryMiB: r.memoryMiB * replicas, vfs: r.vfs * replicas, vnfs };
}

/**
 * Takes (positive) or gives back (negative) quota. Taking checks the limits and throws QuotaExceededError naming
 * the first resource over quota; giving back never exceeds one. A missing tenant is NOT_FOUND, unless
 * `missingOk` (the engine giving back what a deleted tenant held): then nothing is written.
 */
export async function chargeQuota(
  store: Store,
  tenantId: string,
  delta: Usage,
  at: string,
  opts: { missingOk?: boolean; forOp?: string } = {},
): Promise<Tenant | null> {
  const res = await store.tenants.mutate(tenantId, (cur): StoredTenant | undefined => {
    if (!cur) {
      if (opts.missingOk) return undefined;
      throw new NotFoundError(`tenant "${tenantId}" not found`, { field: 'tenant' });
    }
    const next: Usage = { ...cur.usage };
    for (const k of QUOTA_KEYS) {
      next[k] = Math.max(0, cur.usage[k] + delta[k]);
      const limit = cur.quota[k];
      if (delta[k] > 0 && limit !== undefined && next[k] > limit) {
        throw new QuotaExceededError(
          `tenant "${tenantId}" quota exceeded for ${k}: ${cur.usage[k]} used + ${delta[k]} requested > ${limit}`,
          { resource: k, quota: limit, used: cur.usage[k], requested: delta[k] },
        );
      }
    }
    const charged = opts.forOp ? { charged: [...(cur.charged ?? []), opts.forOp].slice(-REFUND_MEMORY) } : {};
    return { ...cur, usage: next, ...charged, updatedAt: at };
  });
  return res?.value ?? null;
}

/**
 * Takes back a charge made `forOp` when the request that made it failed afterwards: only if that charge is
 * recorded on the tenant (a charge whose write failed, or was already undone, is not given back), so that an
 * ambiguous failure (the write went through, its answer was lost) neither leaks nor gives back twice.
 */
export async function undoCharge(store: Store, tenantId: string, opOccId: string, delta: Usage, at: string): Promise<void> {
  await store.tenants.mutate(tenantId, (cur): StoredTenant | undefined => {
    if (!cur || !cur.charged?.includes(opOccId)) return undefined;
    const usage: Usage = { ...cur.usage };
    for (const k of QUOTA_KEYS) usage[k] = Math.max(0, cur.usage[k] - Math.max(0, delta[k]));
    return { ...cur, usage, charged: cur.charged.filter((id) => id !== opOccId), updatedAt: at };
  });
}

/** How many refunded op occurrence ids a tenant record remembers (a retry comes within seconds of the first). */
export const REFUND_MEMORY = 256;

/**
 * Gives back `give` (positive amounts) once per op occurrence: the tenant record remembers which op occurrences
 * were refunded, in the same CAS as the usage, so a new leader that finishes an operation its predecessor was
 * ending (refund written, outcome not yet) does not give the quota back twice. A missing tenant writes nothing.
 */
export async function refundOnce(store: Store, tenantId: string, opOccId: string, give: Usage, at: string): Promise<boolean> {
  let done = false;
  await store.tenants.mutate(tenantId, (cur): StoredTenant | undefined => {
    done = false;
    if (!cur || cur.refunded?.includes(opOccId)) return undefined;
    const usage: Usage = { ...cur.usage };
    for (const k of QUOTA_KEYS) usage[k] = Math.max(0, cur.usage[k] - Math.max(0, give[k]));
    done = true;
    return { ...cur, usage, refunded: [...(cur.refunded ?? []), opOccId].slice(-REFUND_MEMORY), updatedAt: at };
  });
  return done;
}
