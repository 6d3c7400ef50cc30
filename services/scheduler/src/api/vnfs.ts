/** Tenant API: VNF lifecycle requests. Each mutating request records an op occurrence the leader carries out. */
import {
  AlreadyExistsError,
  ConflictError,
  InvalidArgumentError,
  NotFoundError,
  type FieldIssue,
  type HealRequest,
  type IdRequest,
  type InstantiateRequest,
  type OpOcc,
  type Replica,
  type ScaleRequest,
  type TerminateRequest,
  type Vnf,
  type Vnfd,
} from '@edgenfv/contracts';
import type { ApiContext } from './context.js';
import { checkNetworkPolicy } from './network-policy.js';
import { chargeQuota, demandOf, undoCharge } from '../ops/quota.js';
import { newOpOcc, recordOpOcc, startOperation, vnfKey } from '../ops/op-occurrences.js';
import { persistently } from '../state/store.js';

function checkNetworks(ctx: ApiContext, d: Vnfd): void {
  const issues: FieldIssue[] = [];
  (d.interfaces ?? []).forEach((i, n) => {
    if (i.network !== undefined && !ctx.networks.has(i.network)) {
      const known = [...ctx.networks.keys()];
      issues.push({
        field: `descriptor.interfaces[${n}].network`,
        message: `unknown network "${i.network}" (configured: ${known.length ? known.join(', ') : 'none'})`,
      });
    }
    if (i.type === 'vhostuser' && i.network === undefined && i.dataplane === undefined) {
      issues.push({ field: `descriptor.interfaces[${n}].network`, message: 'a vhost-user interface names the network whose DPDK switch serves it' });
    }
  });
  if (issues.length) throw new InvalidArgumentError(issues);
}

export async function instantiate(
  ctx: ApiContext,
  tenantId: string,
  req: InstantiateRequest,
): Promise<{ vnfId: string; opOccId: string }> {
  const d = req.descriptor;
  checkNetworks(ctx, d);
  checkNetworkPolicy(ctx.networks, tenantId, d);
  const tenant = await ctx.store.tenants.get(tenantId);
  if (!tenant) throw new NotFoundError(`tenant "${tenantId}" not found`, { field: 'tenant' });

  const vnfId = ctx.newId('vnf');
  const at = ctx.now().toISOString();
  // 1. the name, unique within the tenant
  const nameKey = `${tenantId}.${d.name}`;
  if ((await ctx.store.names.create(nameKey, { vnfId, at })) === null) {
    const claim = await ctx.store.names.get(nameKey);
    const owner = claim ? await ctx.store.vnfs.get(vnfKey(tenantId, claim.value.vnfId)) : null;
    const stale = claim && !owner && Date.now() - Date.parse(claim.value.at) > 60_000;
    if (!stale || (await ctx.store.names.update(nameKey, { vnfId, at }, claim.revision)) === null) {
      throw new AlreadyExistsError(`a VNF named "${d.name}" already exists in tenant "${tenantId}"`, {
        field: 'descriptor.name',
        vnfId: claim?.value.vnfId,
      });
    }
  }
  // 2. the quota, with one CAS on the tenant
  const demand = demandOf(d, d.replicas, 1);
  const op = newOpOcc(ctx, tenantId, vnfId, 'INSTANTIATE', undefined, { requestId: req.requestId });
  try {
    await chargeQuota(ctx.store, tenantId, demand, at, { forOp: op.id });
  } catch (err) {
    // the charge may have been written although its answer was lost (a NATS server going away)
    await undoSteps(ctx, { tenantId, opOccId: op.id }, {
      'quota charge': () => undoCharge(ctx.store, tenantId, op.id, demand, at),
      'name claim': () => ctx.store.names.delete(nameKey),
    });
    throw err;
  }
  // 3. the records
  const replicas: Replica[] = Array.from({ length: d.replicas }, (_, index) => ({
    index,
    state: 'PENDING',
    interfaces: [],
    updatedAt: at,
  }));
  const vnf: Vnf = {
    id: vnfId,
    tenantId,
    name: d.name,
    descriptor: d,
    instantiationState: 'NOT_INSTANTIATED',
    desiredReplicas: d.replicas,
    replicas,
    lastOpOccId: op.id,
    activeOpOccId: op.id,
    createdAt: at,
    updatedAt: at,
  };
  try {
    await ctx.store.vnfs.create(vnfKey(tenantId, vnfId), vnf);
    await recordOpOcc(ctx, op);
  } catch (err) {
    await undoSteps(ctx, { tenantId, opOccId: op.id }, {
      'VNF record': () => ctx.store.vnfs.delete(vnfKey(tenantId, vnfId)),
      'quota charge': () => undoCharge(ctx.store, tenantId, op.id, demand, at),
      'name claim': () => ctx.store.names.delete(nameKey),
    });
    throw err;
  }
  ctx.logger.info({ tenantId, vnfId, opOccId: op.id, name: d.name }, 'instantiate accepted');
  return { vnfId, opOccId: op.id };
}

/**
 * Undoes what a request that failed half-way had written. The failure is often a NATS server going away, and the
 * first undo attempt meets the same outage: each step is retried while the error is transient (`persistently`,
 * ~15 s), and each runs even when one before it failed. Before, one failed step (the VNF record's delete) skipped
 * the quota undo, and an undo that met the outage was dropped: the tenant kept a charge nothing held (the
 * cluster test's `quotaDrift`).
 */
async function undoSteps(ctx: ApiContext, ids: { tenantId: string; opOccId: string }, steps: Record<string, () => Promise<unknown>>): Promise<void> {
  for (const [what, step] of Object.entries(steps)) {
    await persistently(step).catch((err: unknown) => ctx.logger.error({ err, ...ids }, `${what} not undone`));
  }
}

export async function getVnf(ctx: ApiContext, tenantId: string, req: IdRequest): Promise<Vnf> {
  const v = await ctx.store.vnfs.get(vnfKey(tenantId, req.id));
  if (!v) throw new NotFoundError(`VNF "${req.id}" not found in tenant "${tenantId}"`, { field: 'id' });
  return v.value;
}

export async function listVnfs(ctx: ApiContext, tenantId: string): Promise<{ items: Vnf[] }> {
  const items = (await ctx.store.vnfs.list(`${tenantId}.>`))
    .map((v) => v.value)
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
  return { items };
}

export async function getOpOcc(ctx: ApiContext, tenantId: string, req: IdRequest): Promise<OpOcc> {
  const o = await ctx.store.opoccs.get(vnfKey(tenantId, req.id));
  if (!o) throw new NotFoundError(`operation occurrence "${req.id}" not found in tenant "${tenantId}"`, { field: 'id' });
  return o.value;
}

function mustBeInstantiated(v: Vnf): void {
  if (v.instantiationState !== 'INSTANTIATED') {
    throw new ConflictError(`VNF "${v.id}" is ${v.instantiationState}`, { instantiationState: v.instantiationState });
  }
}

export async function scale(ctx: ApiContext, tenantId: string, req: ScaleRequest): Promise<{ opOccId: string }> {
  const op = newOpOcc(ctx, tenantId, req.id, 'SCALE', { replicas: req.replicas }, { requestId: req.requestId });
  let charged: ReturnType<typeof demandOf> | undefined;
  return startOperation(ctx, op, mustBeInstantiated, {
    prepare: async (vnf) => {
      const delta = demandOf(vnf.descriptor, req.replicas - vnf.desiredReplicas, 0);
      if (delta.vcpus > 0 || delta.memoryMiB > 0 || delta.vfs > 0) {
        charged = delta;
        await chargeQuota(ctx.store, tenantId, delta, ctx.now().toISOString(), { forOp: op.id });
      }
    },
    undo: async () => {
      const delta = charged;
      if (delta) await undoSteps(ctx, { tenantId, opOccId: op.id }, { 'quota charge': () => undoCharge(ctx.store, tenantId, op.id, delta, ctx.now().toISOString()) });
    },
  });
}

export async function heal(ctx: ApiContext, tenantId: string, req: HealRequest): Promise<{ opOccId: string }> {
  if (req.migrate && req.replica === undefined) throw new InvalidArgumentError([{ field: 'replica', message: 'migrate: true moves one replica: name it' }]);
  const op = newOpOcc(ctx, tenantId, req.id, 'HEAL', req.replica === undefined ? {} : { replica: req.replica, ...(req.migrate ? { migrate: true } : {}) }, { requestId: req.requestId });
  return startOperation(ctx, op, (v) => {
    mustBeInstantiated(v);
    if (req.replica !== undefined && req.replica >= v.replicas.length) {
      throw new InvalidArgumentError([{ field: 'replica', message: `VNF "${v.id}" has replicas 0..${v.replicas.length - 1}` }]);
    }
    // a migration moves the replica off its node; so does its restart when it cannot migrate
    const from = req.migrate && req.replica !== undefined ? v.replicas[req.replica]?.nodeId : undefined;
    if (from) op.params = { ...op.params, fromNode: from };
  });
}

export async function terminate(ctx: ApiContext, tenantId: string, req: TerminateRequest): Promise<{ opOccId: string }> {
  const mode = req.mode ?? 'GRACEFUL';
  const op = newOpOcc(ctx, tenantId, req.id, 'TERMINATE', { mode }, { requestId: req.requestId });
  let superseded: string | undefined;
  const check = (v: Vnf): void => {
    if (v.instantiationState !== 'INSTANTIATED' && !v.activeOpOccId) {
      throw new ConflictError(`VNF "${v.id}" is NOT_INSTANTIATED`, { instantiationState: v.instantiationState });
    }
    superseded = v.activeOpOccId;
  };
  // FORCEFUL takes over from an operation in progress (the leader fails that one as superseded)
  return startOperation(ctx, op, check, {
    force: mode === 'FORCEFUL',
    prepare: async () => {
      if (superseded) op.params = { ...op.params, supersedes: superseded };
    },
  });
}

