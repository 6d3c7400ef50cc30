/** Operator API: nodes (read, cordon, uncordon, drain). Node records are written by the node registry. */
import { NotFoundError, type NodeRecord, type Allocation } from '@edgenfv/contracts';
import type { ApiContext } from './context.js';

function summarize(node: NodeRecord, allocs: Allocation[]): NodeRecord {
  const mine = allocs.filter((a) => a.nodeId === node.id);
  const perTenant = new Map<string, number>();
  for (const a of mine) perTenant.set(a.tenantId, (perTenant.get(a.tenantId) ?? 0) + 1);
  return {
    ...node,
    allocated: {
      vcpus: mine.reduce((s, a) => s + a.resources.vcpus, 0),
      memoryMiB: mine.reduce((s, a) => s + a.resources.memoryMiB, 0),
      vfs: mine.reduce((s, a) => s + a.interfaces.filter((i) => i.sriov).length, 0),
      replicas: mine.length,
    },
    sandboxes: [...perTenant].map(([tenantId, replicas]) => ({ tenantId, replicas })),
  };
}

export async function listNodes(ctx: ApiContext): Promise<{ items: NodeRecord[] }> {
  const [nodes, allocs] = await Promise.all([ctx.store.nodes.list(), ctx.store.allocs.list()]);
  const a = allocs.map((x) => x.value);
  return { items: nodes.map((n) => summarize(n.value, a)).sort((x, y) => x.id.localeCompare(y.id)) };
}

export async function getNode(ctx: ApiContext, id: string): Promise<NodeRecord> {
  const n = await ctx.store.nodes.get(id);
  if (!n) throw new NotFoundError(`node "${id}" not found`, { field: 'id' });
  const allocs = await ctx.store.allocs.list(`${id}.>`);
  return summarize(n.value, allocs.map((x) => x.value));
}

export async function setCordon(ctx: ApiContext, id: string, cordoned: boolean): Promise<NodeRecord> {
  const res = await ctx.store.nodes.mutate(id, (cur) => {
    if (!cur) throw new NotFoundError(`node "${id}" not found`, { field: 'id' });
    if (cur.cordoned === cordoned) return undefined;
    return { ...cur, cordoned };
  });
  ctx.logger.info({ nodeId: id, cordoned }, cordoned ? 'node cordoned' : 'node uncordoned');
  return getNode(ctx, res!.value.id);
}
