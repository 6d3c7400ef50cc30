/**
 * Healing when a node is lost: its replicas are marked FAILED (the node is fenced: what they held stays booked
 * until the node confirms teardown), and each VNF gets a HEAL op occurrence that places them elsewhere. A VNF
 * with an operation in progress is left to the engine's sweep, which heals it once that operation has ended.
 */
import { lostOn, type ErrorBody, type Vnf } from '@edgenfv/contracts';
import { startHeal } from './heal-op.js';
import type { OpContext } from './op-occurrences.js';

/** What healing needs of the node registry's node-lost event (nodes/registry.ts NodeLostEvent). */
export interface LostNode {
  nodeId: string;
  reason: string;
  allocations: { reservation: { tenantId: string; vnfId: string; replica: number } }[];
}

export function nodeLostError(nodeId: string, reason: string): ErrorBody {
  return { code: 'UNAVAILABLE', message: `node ${nodeId} lost: ${reason}`, details: { nodeLost: nodeId } };
}

export async function healLostNode(ctx: OpContext, ev: LostNode): Promise<void> {
  const byVnf = new Map<string, { tenantId: string; replicas: number[] }>();
  for (const { reservation: r } of ev.allocations) {
    const e = byVnf.get(r.vnfId) ?? { tenantId: r.tenantId, replicas: [] };
    e.replicas.push(r.replica);
    byVnf.set(r.vnfId, e);
  }
  const at = ctx.now().toISOString();
  const error = nodeLostError(ev.nodeId, ev.reason);
  for (const [vnfId, { tenantId, replicas }] of byVnf) {
    let vnf: Vnf | undefined;
    await ctx.store.vnfs.mutate(`${tenantId}.${vnfId}`, (cur) => {
      if (!cur) return undefined;
      const next = { ...cur, replicas: cur.replicas.map((r) => (replicas.includes(r.index) && r.nodeId === ev.nodeId ? { ...r, state: 'FAILED' as const, error, updatedAt: at } : r)), updatedAt: at };
      vnf = next;
      return next;
    });
    if (!vnf) continue;
    for (const i of replicas) {
      await ctx.notifier.publish(tenantId, { type: 'Replica', vnfId, replica: i, state: 'FAILED', nodeId: ev.nodeId, at });
    }
    await healIfIdle(ctx, vnf, `node ${ev.nodeId} lost (${ev.reason})`);
  }
}

/** Starts a HEAL of the VNF's lost replicas (with their node, or alone: contracts' `lostOn`) unless an operation is in progress or it is not instantiated. */
export async function healIfIdle(ctx: OpContext, vnf: Vnf, why: string): Promise<boolean> {
  if (vnf.activeOpOccId || vnf.instantiationState !== 'INSTANTIATED') return false;
  // lost with their node, or alone on a node that lives (its guest agent restarted: the node may take it again)
  const lost = vnf.replicas.filter((r) => r.state === 'FAILED' && lostOn(r.error));
  if (!lost.length) return false;
  const nodeLost = lost.map((r) => lostOn(r.error)!).find((l) => l.nodeLost);
  try {
    await startHeal(ctx, vnf.tenantId, vnf.id, { replicas: lost.map((r) => r.index), ...(nodeLost ? { fromNode: nodeLost.nodeId } : {}), reason: nodeLost ? 'node lost' : 'replica lost' }, why);
    return true;
  } catch (err) {
    ctx.logger.info({ vnfId: vnf.id, err }, 'heal deferred: VNF busy');
    return false;
  }
}
