/** Creating a HEAL op occurrence outside a tenant's request (drain, node loss). */
import type { OpOcc } from '@edgenfv/contracts';
import { newOpOcc, startOperation, type OpContext } from './op-occurrences.js';

export async function startHeal(
  ctx: OpContext,
  tenantId: string,
  vnfId: string,
  params: Record<string, unknown>,
  why: string,
): Promise<OpOcc> {
  const op = newOpOcc(ctx, tenantId, vnfId, 'HEAL', { params });
  op.steps = [{ at: op.startTime, message: `HEAL requested: ${why}` }];
  await startOperation(ctx, op, () => undefined);
  return op;
}
