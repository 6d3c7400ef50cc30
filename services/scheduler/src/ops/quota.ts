/** Quota bookkeeping the engine does when an operation ends (the API charges at request time). */
import { QUOTA_KEYS, replicaDemand, type Tenant, type Usage, type Vnf } from '@edgenfv/contracts';
import type { Store } from '../state/store.js';

export function demandOfVnf(vnf: Vnf, replicas: number, vnfs: number): Usage {
  const r = replicaDemand(vnf.descriptor);
  return { vcpus: r.vcpus * replicas, memoryMiB: r.memoryMiB * replicas, vfs: r.vfs * replicas, vnfs };
}

/** Applies a usage delta without quota checks (giving back never exceeds a quota). */
export async function chargeQuotaRaw(store: Store, tenantId: string, delta: Usage, at: string): Promise<void> {
  await store.tenants.mutate(tenantId, (cur: Tenant | null) => {
    if (!cur) return undefined;
    const usage = { ...cur.usage };
    for (const k of QUOTA_KEYS) usage[k] = Math.max(0, usage[k] + delta[k]);
    return { ...cur, usage, updatedAt: at };
  });
}
