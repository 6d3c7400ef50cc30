/**
 * Drain: cordon the node, then move its replicas away: one HEAL op occurrence per VNF (covering that VNF's replicas
 * on the node, `fromNode` set so the new placement avoids it). Each VNF is live-migrated (`params.migrate`,
 * migrate.ts) unless it cannot be (VFIO/macvtap NICs, its own or another replica's in the same tenant VM): then it is
 * restarted elsewhere, and its op occurrence says why. A tenant VM holding several VNFs' replicas moves as one: the
 * first of their HEALs to run drives it, the others follow. `maxParallel` VNFs move at once (default 1): op occurrence j waits for
 * j - maxParallel to end (`params.after`). `deadlineS`: a migration not switched over by then is cancelled and the
 * replica restarted. The reply reports per VNF what the drain does (`vnfs`); each op occurrence how it ended.
 * VNFs with an operation in progress are reported as skipped; drain again later.
 */
import { NotFoundError, type DrainVnfReport, type HealParams } from '@edgenfv/contracts';
import type { ApiContext } from './context.js';
import { setCordon } from './nodes.js';
import { startHeal } from '../ops/heal-op.js';

export interface DrainOptions {
  maxParallel?: number;
  deadlineS?: number;
}

export async function drainNode(
  ctx: ApiContext,
  nodeId: string,
  opts: DrainOptions = {},
): Promise<{ opOccIds: string[]; skipped: { vnfId: string; reason: string }[]; vnfs: DrainVnfReport[] }> {
  if (!(await ctx.store.nodes.get(nodeId))) throw new NotFoundError(`node "${nodeId}" not found`, { field: 'id' });
  await setCordon(ctx, nodeId, true);
  const allocs = (await ctx.store.allocs.list(`${nodeId}.>`)).map((a) => a.value);
  const byVnf = new Map<string, { tenantId: string; replicas: number[]; restart?: string }>();
  for (const a of allocs) {
    const e = byVnf.get(a.vnfId) ?? { tenantId: a.tenantId, replicas: [] };
    e.replicas.push(a.replica);
    if (a.interfaces.some((i) => i.type === 'sriov')) e.restart = 'SR-IOV (VFIO) NICs cannot migrate';
    else if (a.interfaces.some((i) => i.type === 'macvtap')) e.restart ??= 'macvtap NICs cannot migrate';
    byVnf.set(a.vnfId, e);
  }
  // a tenant VM holding several replicas moves as one (migrate.ts): it cannot when one of them cannot
  for (const [vnfId, e] of byVnf) {
    const blocking = [...byVnf].find(([other, o]) => other !== vnfId && o.tenantId === e.tenantId && o.restart && !o.restart.startsWith('its tenant VM'));
    if (blocking) e.restart ??= `its tenant VM also holds VNF ${blocking[0]}, which cannot migrate (${blocking[1].restart}): the VM cannot move as one`;
  }
  const parallel = Math.max(1, opts.maxParallel ?? 1);
  const deadlineAt = opts.deadlineS ? new Date(ctx.now().getTime() + opts.deadlineS * 1000).toISOString() : undefined;
  const opOccIds: string[] = [];
  const started: { tenantId: string; id: string }[] = [];
  const skipped: { vnfId: string; reason: string }[] = [];
  const vnfs: DrainVnfReport[] = [];
  for (const [vnfId, { tenantId, replicas, restart }] of byVnf) {
    const sorted = replicas.sort((x, y) => x - y);
    const params: HealParams = { replicas: sorted, fromNode: nodeId, reason: 'drain' };
    if (!restart) params.migrate = true;
    else Object.assign(params, { mode: 'restart', restartReason: restart });
    if (deadlineAt) params.deadlineAt = deadlineAt;
    const after = started[started.length - parallel];
    if (after) params.after = after;
    try {
      const op = await startHeal(ctx, tenantId, vnfId, params, `drain of node ${nodeId}${restart ? ` (restart: ${restart})` : ' (live migration)'}`);
      opOccIds.push(op.id);
      started.push({ tenantId, id: op.id });
      vnfs.push({ vnfId, tenantId, replicas: sorted, opOccId: op.id, mode: restart ? 'restart' : 'migrate', ...(restart ? { reason: restart } : {}) });
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      skipped.push({ vnfId, reason });
      vnfs.push({ vnfId, tenantId, replicas: sorted, skipped: reason });
    }
  }
  ctx.logger.info({ nodeId, opOccIds, skipped: skipped.length, maxParallel: parallel, deadlineAt }, 'node draining');
  return { opOccIds, skipped, vnfs };
}
