/**
 * Drain: cordon the node, then move its replicas away one at a time: one HEAL op occurrence per VNF (covering
 * that VNF's replicas on the node, `fromNode` set so the new placement avoids it), each waiting for the one before
 * it to end (`params.after`). VNFs with an operation in progress are reported as skipped; drain again later.
 */
import { NotFoundError, type HealParams } from '@edgenfv/contracts';
import type { ApiContext } from './context.js';
import { setCordon } from './nodes.js';
import { startHeal } from '../ops/heal-op.js';

export async function drainNode(
  ctx: ApiContext,
  nodeId: string,
): Promise<{ opOccIds: string[]; skipped: { vnfId: string; reason: string }[] }> {
  if (!(await ctx.store.nodes.get(nodeId))) throw new NotFoundError(`node "${nodeId}" not found`, { field: 'id' });
  await setCordon(ctx, nodeId, true);
  const allocs = (await ctx.store.allocs.list(`${nodeId}.>`)).map((a) => a.value);
  const byVnf = new Map<string, { tenantId: string; replicas: number[] }>();
  for (const a of allocs) {
    const e = byVnf.get(a.vnfId) ?? { tenantId: a.tenantId, replicas: [] };
    e.replicas.push(a.replica);
    byVnf.set(a.vnfId, e);
  }
  const opOccIds: string[] = [];
  const skipped: { vnfId: string; reason: string }[] = [];
  let after: { tenantId: string; id: string } | undefined;
  for (const [vnfId, { tenantId, replicas }] of byVnf) {
    const params: HealParams = { replicas: replicas.sort((x, y) => x - y), fromNode: nodeId, reason: 'drain', ...(after ? { after } : {}) };
    try {
      const op = await startHeal(ctx, tenantId, vnfId, params, `drain of node ${nodeId}`);
      opOccIds.push(op.id);
      after = { tenantId, id: op.id };
    } catch (err) {
      skipped.push({ vnfId, reason: err instanceof Error ? err.message : String(err) });
    }
  }
  ctx.logger.info({ nodeId, opOccIds, skipped: skipped.length }, 'node draining');
  return { opOccIds, skipped };
}
