/** Creating a HEAL op occurrence outside a tenant's request (drain, node loss). */
import type { HealParams, OpOccOf } from '@edgenfv/contracts';
import { newOpOcc, startOperation, type OpContext } from './op-occurrences.js';

export async function startHeal(ctx: OpContext, tenantId: string, vnfId: string, params: HealParams, why: string): Promise<OpOccOf<'HEAL'>> {
  const op = newOpOcc(ctx, tenantId, vnfId, 'HEAL', params, { why });
  await startOperation(ctx, op, () => undefined);
  return op;
}
