/** Creating a HEAL op occurrence outside a tenant's request (drain, node loss): lock the VNF, record, announce. */
import { ConflictError, NotFoundError, type OpOcc } from '@edgenfv/contracts';
import type { ApiContext } from '../api/context.js';

export async function startHeal(
  ctx: ApiContext,
  tenantId: string,
  vnfId: string,
  params: Record<string, unknown>,
  why: string,
): Promise<OpOcc> {
  const at = ctx.now().toISOString();
  const op: OpOcc = {
    id: ctx.newId('op'),
    tenantId,
    vnfId,
    operation: 'HEAL',
    operationState: 'STARTING',
    startTime: at,
    stateEnteredTime: at,
    params,
    steps: [{ at, message: `HEAL requested: ${why}` }],
  };
  await ctx.store.vnfs.mutate(`${tenantId}.${vnfId}`, (cur) => {
    if (!cur) throw new NotFoundError(`VNF ${vnfId} not found`);
    if (cur.activeOpOccId) throw new ConflictError(`operation ${cur.activeOpOccId} in progress`, { opOccId: cur.activeOpOccId });
    return { ...cur, activeOpOccId: op.id, lastOpOccId: op.id, updatedAt: at };
  });
  await ctx.store.opoccs.create(`${tenantId}.${op.id}`, op);
  await ctx.notifier.publish(tenantId, { type: 'OpOcc', opOccId: op.id, vnfId, operation: 'HEAL', operationState: 'STARTING', at });
  ctx.onOpOccCreated(op);
  return op;
}
