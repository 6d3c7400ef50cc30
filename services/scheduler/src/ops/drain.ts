/**
 * Drain: cordon the node, then move its replicas away: one HEAL op occurrence per VNF (covering that VNF's
 * replicas on the node, `fromNode` set so the new placement avoids it). VNFs with an operation in progress are
 * reported as skipped; draining again later picks them up.
 */
import { ConflictError, NotFoundError, type OpOcc } from '@edgenfv/contracts';
import type { ApiContext } from '../api/context.js';
import { setCordon } from '../api/nodes.js';

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
  for (const [vnfId, { tenantId, replicas }] of byVnf) {
    const at = ctx.now().toISOString();
    const op: OpOcc = {
      id: ctx.newId('op'),
      tenantId,
      vnfId,
      operation: 'HEAL',
      operationState: 'STARTING',
      startTime: at,
      stateEnteredTime: at,
      params: { replicas: replicas.sort((x, y) => x - y), fromNode: nodeId, reason: 'drain' },
      steps: [{ at, message: `HEAL requested: drain of node ${nodeId}` }],
    };
    try {
      await ctx.store.vnfs.mutate(`${tenantId}.${vnfId}`, (cur) => {
        if (!cur) throw new NotFoundError(`VNF ${vnfId} not found`);
        if (cur.activeOpOccId) throw new ConflictError(`operation ${cur.activeOpOccId} in progress`);
        return { ...cur, activeOpOccId: op.id, lastOpOccId: op.id, updatedAt: at };
      });
    } catch (err) {
      skipped.push({ vnfId, reason: err instanceof Error ? err.message : String(err) });
      continue;
    }
    await ctx.store.opoccs.create(`${tenantId}.${op.id}`, op);
    await ctx.notifier.publish(tenantId, { type: 'OpOcc', opOccId: op.id, vnfId, operation: 'HEAL', operationState: 'STARTING', at });
    ctx.onOpOccCreated(op);
    opOccIds.push(op.id);
  }
  ctx.logger.info({ nodeId, opOccIds, skipped: skipped.length }, 'node draining');
  return { opOccIds, skipped };
}
