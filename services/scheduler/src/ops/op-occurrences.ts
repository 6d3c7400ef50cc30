/**
 * Op occurrences are created here, for a tenant's request (api/) and for the leader's own (heal, drain): the VNF's
 * one operation slot is taken with CAS, the op occurrence recorded and announced. One module both use, so the API
 * and the operations never import each other's folders (api -> ops only).
 */
import {
  asAppError,
  ConflictError,
  NotFoundError,
  TERMINAL_OP_STATES,
  type OpOcc,
  type OpOccOf,
  type OpParamsOf,
  type Operation,
  type Vnf,
} from '@edgenfv/contracts';
import type { Logger } from '@edgenfv/telemetry';
import { persistently, type Store } from '../state/store.js';
import type { Notifier } from './notifier.js';

/** What creating an op occurrence needs (the API's context is one). */
export interface OpContext {
  store: Store;
  logger: Logger;
  notifier: Notifier;
  now: () => Date;
  newId: (prefix: string) => string;
  /** Called after an op occurrence was created, so the leader can pick it up at once. */
  onOpOccCreated: (op: OpOcc) => void;
}

export function vnfKey(tenantId: string, vnfId: string): string {
  return `${tenantId}.${vnfId}`;
}

/** A new op occurrence (STARTING) of `operation` with its params; `why` is said in its first step. */
export function newOpOcc<O extends Operation>(
  ctx: OpContext,
  tenantId: string,
  vnfId: string,
  operation: O,
  params: OpParamsOf<O>,
  extra: { requestId?: string | undefined; why?: string } = {},
): OpOccOf<O> {
  const at = ctx.now().toISOString();
  const op = {
    id: ctx.newId('op'),
    tenantId,
    vnfId,
    operation,
    operationState: 'STARTING' as const,
    startTime: at,
    stateEnteredTime: at,
    steps: [{ at, message: extra.why ? `${operation} requested: ${extra.why}` : `${operation} requested` }],
    ...(params ? { params } : {}),
    ...(extra.requestId ? { requestId: extra.requestId } : {}),
  };
  // one cast: TypeScript cannot relate a generic operation to its params (OpOccOf<O> is a union member per O)
  return op as unknown as OpOccOf<O>;
}

/** Records a new op occurrence (its write may have gone through although the answer was lost), announces it, tells the leader. */
export async function recordOpOcc(ctx: OpContext, op: OpOcc): Promise<void> {
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

/**
 * Takes the VNF's one operation slot with CAS: a second operation while one is in progress is a CONFLICT
 * (SOL003: 409). `check` may reject the request from the current record.
 */
async function lockVnf(
  ctx: OpContext,
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

/**
 * The operation in progress is this very request (the same requestId and operation): its first copy was carried out
 * but its answer lost on the way (a NATS server went away), and the retry's idempotency marker was gone with it. The
 * retry then gets the first copy's op occurrence, not a CONFLICT.
 */
async function sameRequestInProgress(ctx: OpContext, op: OpOcc, err: unknown): Promise<string | undefined> {
  const e = asAppError(err);
  const active = (e.details as { opOccId?: unknown } | undefined)?.opOccId;
  if (e.code !== 'CONFLICT' || !op.requestId || typeof active !== 'string') return undefined;
  const cur = await ctx.store.opoccs.get(vnfKey(op.tenantId, active));
  return cur && cur.value.requestId === op.requestId && cur.value.operation === op.operation && cur.value.vnfId === op.vnfId ? active : undefined;
}

/** A lock left by an operation that ended (its leader died between the two writes) does not block. */
async function isStaleLock(ctx: OpContext, tenantId: string, opOccId: string, lockedAt: string): Promise<boolean> {
  const op = await ctx.store.opoccs.get(vnfKey(tenantId, opOccId));
  if (op === null) {
    // a lock whose op occurrence was never recorded (the request failed and could not undo it): stale after a minute
    return Date.now() - Date.parse(lockedAt) > STALE_LOCK_MS;
  }
  return TERMINAL_OP_STATES.includes(op.value.operationState);
}

/** A lock naming an op occurrence that does not exist is taken over after this long. */
const STALE_LOCK_MS = 60_000;

async function unlockVnf(ctx: OpContext, tenantId: string, vnfId: string, opId: string): Promise<void> {
  await ctx.store.vnfs.mutate(vnfKey(tenantId, vnfId), (cur) => {
    if (!cur || cur.activeOpOccId !== opId) return undefined;
    const { activeOpOccId: _drop, ...rest } = cur;
    return rest;
  });
}

/**
 * Starts an operation on an existing VNF: takes the VNF's operation slot (CAS), runs `prepare` (quota), records
 * the op occurrence for the leader; on any failure the slot is given back and nothing else was written.
 */
export async function startOperation(
  ctx: OpContext,
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
    const mine = await sameRequestInProgress(ctx, op, err);
    if (mine) return { opOccId: mine };
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

