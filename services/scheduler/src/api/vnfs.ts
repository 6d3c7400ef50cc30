/** Tenant API: VNF lifecycle requests. Each mutating request records an op occurrence the leader carries out. */
import {
  asAppError,
  AlreadyExistsError,
  ConflictError,
  InvalidArgumentError,
  NotFoundError,
  TERMINAL_OP_STATES,
  type FieldIssue,
  type HealRequest,
  type IdRequest,
  type InstantiateRequest,
  type OpOcc,
  type Operation,
  type Replica,
  type ScaleRequest,
  type TerminateRequest,
  type Vnf,
  type Vnfd,
} from '@edgenfv/contracts';
import type { ApiContext } from './context.js';
import { checkNetworkPolicy } from './network-policy.js';
import { chargeQuota, demandOf, undoCharge } from '../ops/quota.js';
import { persistently } from '../state/store.js';

export function vnfKey(tenantId: string, vnfId: string): string {
  return `${tenantId}.${vnfId}`;
}


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

export function newOpOcc(ctx: ApiContext, tenantId: string, vnfId: string, operation: Operation, extra: Partial<OpOcc>): OpOcc {
  const at = ctx.now().toISOString();
  return {
    id: ctx.newId('op'),
    tenantId,
    vnfId,
    operation,
    operationState: 'STARTING',
    startTime: at,
    stateEnteredTime: at,
    steps: [{ at, message: `${operation} requested` }],
    ...extra,
  };
}

async function recordOpOcc(ctx: ApiContext, op: OpOcc): Promise<void> {
  try {
    await ctx.store.opoccs.create(vnfKey(op.tenantId, op.id), op);
  } catch (err) {
    // The write may have gone through although its answer was lost: then the operation is accepted (the leader
    // is already carrying it out) and undoing the request's charge and lock would be wrong.
    if (!asAppError(err).retryable) throw err;
    const found = await persistently(() => ctx.store.opoccs.get(vnfKey(op.tenantId, op.id)));
    if (!found) throw err;
  }
  await ctx.notifier.publish(op.tenantId, {
    type: 'OpOcc',
    opOccId: op.id,
    vnfId: op.vnfId,
    operation: op.operation,
    operationState: op.operationState,
    at: op.startTime,
  });
  ctx.onOpOccCreated(op);
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
  const op = newOpOcc(ctx, tenantId, vnfId, 'INSTANTIATE', req.requestId ? { requestId: req.requestId } : {});
  try {
    await chargeQuota(ctx.store, tenantId, demand, at, { forOp: op.id });
  } catch (err) {
    // the charge may have been written although its answer was lost (a NATS server going away)
    await undoCharge(ctx.store, tenantId, op.id, demand, at).catch((e: unknown) => ctx.logger.error({ err: e, tenantId, opOccId: op.id }, 'quota charge not undone'));
    await ctx.store.names.delete(nameKey);
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
    await ctx.store.vnfs.delete(vnfKey(tenantId, vnfId));
    await undoCharge(ctx.store, tenantId, op.id, demand, at).catch((e: unknown) => ctx.logger.error({ err: e, tenantId, opOccId: op.id }, 'quota charge not undone'));
    await ctx.store.names.delete(nameKey);
    throw err;
  }
  ctx.logger.info({ tenantId, vnfId, opOccId: op.id, name: d.name }, 'instantiate accepted');
  return { vnfId, opOccId: op.id };
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

/**
 * Takes the VNF's one operation slot with CAS: a second operation while one is in progress is a CONFLICT
 * (SOL003: 409). `check` may reject the request from the current record.
 */
async function lockVnf(
  ctx: ApiContext,
  tenantId: string,
  vnfId: string,
  opId: string,
  check: (v: Vnf) => void,
  opts: { force?: boolean } = {},
): Promise<Vnf> {
  const res = await ctx.store.vnfs.mutate(vnfKey(tenantId, vnfId), async (cur) => {
    if (!cur) throw new NotFoundError(`VNF "${vnfId}" not found in tenant "${tenantId}"`, { field: 'id' });
    check(cur);
    if (cur.activeOpOccId && !opts.force && !(await isStaleLock(ctx, tenantId, cur.activeOpOccId, cur.updatedAt))) {
      throw new ConflictError(`VNF "${vnfId}" has an operation in progress (${cur.activeOpOccId})`, {
        opOccId: cur.activeOpOccId,
      });
    }
    return { ...cur, activeOpOccId: opId, lastOpOccId: opId, updatedAt: ctx.now().toISOString() };
  });
  return res!.value;
}

/** A lock left by an operation that ended (its leader died between the two writes) does not block. */
async function isStaleLock(ctx: ApiContext, tenantId: string, opOccId: string, lockedAt: string): Promise<boolean> {
  const op = await ctx.store.opoccs.get(vnfKey(tenantId, opOccId));
  if (op === null) {
    // a lock whose op occurrence was never recorded (the request failed and could not undo it): stale after a minute
    return Date.now() - Date.parse(lockedAt) > STALE_LOCK_MS;
  }
  return TERMINAL_OP_STATES.includes(op.value.operationState);
}

/** A lock naming an op occurrence that does not exist is taken over after this long. */
const STALE_LOCK_MS = 60_000;

async function unlockVnf(ctx: ApiContext, tenantId: string, vnfId: string, opId: string): Promise<void> {
  await ctx.store.vnfs.mutate(vnfKey(tenantId, vnfId), (cur) => {
    if (!cur || cur.activeOpOccId !== opId) return undefined;
    const { activeOpOccId: _drop, ...rest } = cur;
    return rest;
  });
}

function mustBeInstantiated(v: Vnf): void {
  if (v.instantiationState !== 'INSTANTIATED') {
    throw new ConflictError(`VNF "${v.id}" is ${v.instantiationState}`, { instantiationState: v.instantiationState });
  }
}

/**
 * Starts an operation on an existing VNF: takes the VNF's operation slot (CAS), runs `prepare` (quota), records
 * the op occurrence for the leader; on any failure the slot is given back and nothing else was written.
 */
export async function startOperation(
  ctx: ApiContext,
  op: OpOcc,
  check: (v: Vnf) => void,
  opts: { force?: boolean; prepare?: (v: Vnf) => Promise<void>; undo?: () => Promise<void> } = {},
): Promise<{ opOccId: string }> {
  let vnf: Vnf;
  try {
    vnf = await lockVnf(ctx, op.tenantId, op.vnfId, op.id, check, opts.force ? { force: true } : {});
  } catch (err) {
    // the lock may have been written although its answer was lost: a lock nobody will record an op for
    if (asAppError(err).code === 'UNAVAILABLE') {
      await unlockVnf(ctx, op.tenantId, op.vnfId, op.id).catch((e: unknown) => ctx.logger.error({ err: e, opOccId: op.id }, 'lock not undone'));
    }
    throw err;
  }
  try {
    await opts.prepare?.(vnf);
    await recordOpOcc(ctx, op);
  } catch (err) {
    // what prepare charged is given back (the op occurrence, if its write went through, ends superseded)
    await opts.undo?.().catch((e: unknown) => ctx.logger.error({ err: e, opOccId: op.id }, 'undo of a failed request failed'));
    await unlockVnf(ctx, op.tenantId, op.vnfId, op.id);
    throw err;
  }
  return { opOccId: op.id };
}

export async function scale(ctx: ApiContext, tenantId: string, req: ScaleRequest): Promise<{ opOccId: string }> {
  const op = newOpOcc(ctx, tenantId, req.id, 'SCALE', {
    params: { replicas: req.replicas },
    ...(req.requestId ? { requestId: req.requestId } : {}),
  });
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
      if (charged) await undoCharge(ctx.store, tenantId, op.id, charged, ctx.now().toISOString());
    },
  });
}

export async function heal(ctx: ApiContext, tenantId: string, req: HealRequest): Promise<{ opOccId: string }> {
  const op = newOpOcc(ctx, tenantId, req.id, 'HEAL', {
    params: req.replica === undefined ? {} : { replica: req.replica },
    ...(req.requestId ? { requestId: req.requestId } : {}),
  });
  return startOperation(ctx, op, (v) => {
    mustBeInstantiated(v);
    if (req.replica !== undefined && req.replica >= v.replicas.length) {
      throw new InvalidArgumentError([{ field: 'replica', message: `VNF "${v.id}" has replicas 0..${v.replicas.length - 1}` }]);
    }
  });
}

export async function terminate(ctx: ApiContext, tenantId: string, req: TerminateRequest): Promise<{ opOccId: string }> {
  const mode = req.mode ?? 'GRACEFUL';
  const op = newOpOcc(ctx, tenantId, req.id, 'TERMINATE', {
    params: { mode },
    ...(req.requestId ? { requestId: req.requestId } : {}),
  });
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

