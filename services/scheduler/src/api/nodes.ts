/**
 * Operator API: nodes (read, cordon, uncordon). Node records are written by the node registry; what each node
 * holds comes from the cluster state's view of its ledger (every replica keeps one).
 */
import { NotFoundError, type NodeRecord } from '@edgenfv/contracts';
import { summarizeView } from '../placement/node-view.js';
import type { ApiContext } from './context.js';

function withUsage(ctx: ApiContext, node: NodeRecord): NodeRecord & { free?: unknown } {
  const view = ctx.nodes.cluster.node(node.id);
  if (!view) return { ...node, allocated: { vcpus: 0, memoryMiB: 0, vfs: 0, replicas: 0 }, sandboxes: [], reservations: [] };
  const s = summarizeView(view);
  return { ...node, allocated: s.allocated, sandboxes: s.sandboxes, free: s.free, reservations: s.reservations };
}

export async function listNodes(ctx: ApiContext): Promise<{ items: NodeRecord[] }> {
  const nodes = await ctx.store.nodes.list();
  return { items: nodes.map((n) => withUsage(ctx, n.value)).sort((x, y) => x.id.localeCompare(y.id)) };
}

export async function getNode(ctx: ApiContext, id: string): Promise<NodeRecord> {
  const n = await ctx.store.nodes.get(id);
  if (!n) throw new NotFoundError(`node "${id}" not found`, { field: 'id' });
  return withUsage(ctx, n.value);
}

export async function setCordon(ctx: ApiContext, id: string, cordoned: boolean): Promise<NodeRecord> {
  if (!(await ctx.store.nodes.get(id))) throw new NotFoundError(`node "${id}" not found`, { field: 'id' });
  const rec = cordoned ? await ctx.nodes.registry.cordon(id) : await ctx.nodes.registry.uncordon(id);
  ctx.logger.info({ nodeId: id, cordoned }, cordoned ? 'node cordoned' : 'node uncordoned');
  return withUsage(ctx, rec);
}
