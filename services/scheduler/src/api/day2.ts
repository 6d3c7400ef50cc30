/**
 * Day-2 requests (API.md "Additions to v1", "Day-2 operations"): OPERATE, the op occurrence list, SOL003's
 * retry / rollback / fail of a FAILED_TEMP operation, and a replica's logs and exec, which go to the node that runs
 * it over `nfv.v1.internal.nodes.<n>.logs|exec` (the node agent asks its guest agent).
 */
import {
  AppError,
  ConflictError,
  EXEC_DEFAULT_TIMEOUT_MS,
  InvalidArgumentError,
  LOGS_DEFAULT_LINES,
  NotFoundError,
  UnavailableError,
  internalSubjects,
  type Envelope,
  type ExecRequest,
  type ExecResult,
  type IdRequest,
  type LogsRequest,
  type OpOcc,
  type OpOccListRequest,
  type OperateRequest,
  type Replica,
  type Vnf,
} from '@edgenfv/contracts';
import type { ApiContext } from './context.js';
import { getOpOcc, getVnf } from './vnfs.js';
import { newOpOcc, startOperation, vnfKey } from '../ops/op-occurrences.js';
import { getTenant } from './tenants.js';

export async function operate(ctx: ApiContext, tenantId: string, req: OperateRequest): Promise<{ opOccId: string }> {
  const op = newOpOcc(ctx, tenantId, req.id, 'OPERATE', { changeStateTo: req.changeStateTo }, { requestId: req.requestId });
  return startOperation(ctx, op, (v) => {
    if (v.instantiationState !== 'INSTANTIATED') throw new ConflictError(`VNF "${v.id}" is ${v.instantiationState}`, { instantiationState: v.instantiationState });
    const now = v.operationalState ?? 'STARTED';
    if (now === req.changeStateTo) throw new ConflictError(`VNF "${v.id}" is already ${now}`, { field: 'changeStateTo', operationalState: now });
  });
}

export async function listOpOccs(ctx: ApiContext, tenantId: string, req: OpOccListRequest): Promise<{ items: OpOcc[] }> {
  await getTenant(ctx, tenantId);
  const items = (await ctx.store.opoccs.list(`${tenantId}.>`))
    .map((o) => o.value)
    .filter((o) => req.vnfId === undefined || o.vnfId === req.vnfId)
    .sort((a, b) => a.startTime.localeCompare(b.startTime) || a.id.localeCompare(b.id));
  return { items };
}

const ROLLBACK_OPS = ['INSTANTIATE', 'SCALE', 'OPERATE'];

/**
 * retry / rollback / fail: only from FAILED_TEMP (SOL003: 409 otherwise). retry and rollback change the state here
 * and the leader carries on; fail is carried out by the leader (it releases what the operation held), and the
 * reply waits a little for it so that it usually shows FAILED.
 */
export async function resolveFailedTemp(ctx: ApiContext, tenantId: string, req: IdRequest, action: 'retry' | 'rollback' | 'fail'): Promise<OpOcc> {
  const at = ctx.now().toISOString();
  const res = await ctx.store.opoccs.mutate(vnfKey(tenantId, req.id), (cur) => {
    if (!cur) throw new NotFoundError(`operation occurrence "${req.id}" not found in tenant "${tenantId}"`, { field: 'id' });
    if (cur.operationState !== 'FAILED_TEMP' || cur.pendingAction) {
      throw new ConflictError(`operation occurrence "${req.id}" is ${cur.operationState}${cur.pendingAction ? ` (${cur.pendingAction} under way)` : ''}: ${action} needs FAILED_TEMP`, {
        operationState: cur.operationState,
      });
    }
    if (action === 'rollback' && !ROLLBACK_OPS.includes(cur.operation)) {
      throw new ConflictError(`${cur.operation} cannot be rolled back (SOL003): retry or fail it`, { operation: cur.operation });
    }
    const steps = [...cur.steps, { at, message: `${action} requested` }];
    if (action === 'fail') return { ...cur, pendingAction: 'fail' as const, steps };
    const next: OpOcc = { ...cur, operationState: action === 'retry' ? 'PROCESSING' : 'ROLLING_BACK', stateEnteredTime: at, steps };
    if (action === 'retry') {
      next.retries = (cur.retries ?? 0) + 1;
      next.retriedAt = at;
    }
    delete next.error;
    return next;
  });
  let op = res!.value;
  if (action !== 'fail') {
    await ctx.notifier.publish(tenantId, { type: 'OpOcc', opOccId: op.id, vnfId: op.vnfId, operation: op.operation, operationState: op.operationState, at });
  }
  ctx.onOpOccCreated(op);
  if (action === 'fail') {
    for (let i = 0; i < 50 && op.operationState === 'FAILED_TEMP'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      op = await getOpOcc(ctx, tenantId, { id: op.id });
    }
  }
  return op;
}

/** The replica a logs/exec request names (default 0), which must be on a node. */
function replicaOf(vnf: Vnf, index: number | undefined): Replica & { nodeId: string; allocId: string } {
  const i = index ?? 0;
  const r = vnf.replicas[i];
  if (!r) throw new InvalidArgumentError([{ field: 'replica', message: vnf.replicas.length ? `VNF "${vnf.id}" has replicas 0..${vnf.replicas.length - 1}` : `VNF "${vnf.id}" has no replicas` }]);
  if (!r.nodeId || !r.allocId) throw new ConflictError(`replica ${i} of VNF "${vnf.id}" is ${r.state} and on no node`, { replica: i, state: r.state });
  return r as Replica & { nodeId: string; allocId: string };
}

async function askNode<T>(ctx: ApiContext, subject: string, body: unknown, timeoutMs: number, nodeId: string): Promise<T> {
  let data: Uint8Array;
  try {
    data = (await ctx.nc.request(subject, JSON.stringify(body), { timeout: timeoutMs })).data;
  } catch (err) {
    throw new UnavailableError(`node ${nodeId} did not answer (${(err as Error).message})`, { details: { nodeId }, cause: err });
  }
  const env = JSON.parse(new TextDecoder().decode(data)) as Envelope<T>;
  if (!env.ok) throw new AppError(env.error.code, env.error.message, env.error.details === undefined ? {} : { details: env.error.details });
  return env.result;
}

export async function logs(ctx: ApiContext, tenantId: string, req: LogsRequest): Promise<{ lines: string[]; truncated?: boolean }> {
  const r = replicaOf(await getVnf(ctx, tenantId, { id: req.id }), req.replica);
  return askNode(ctx, internalSubjects.logs(r.nodeId), { tenantId, allocId: r.allocId, tailLines: req.tailLines ?? LOGS_DEFAULT_LINES }, 15_000, r.nodeId);
}

export async function exec(ctx: ApiContext, tenantId: string, req: ExecRequest): Promise<ExecResult> {
  const vnf = await getVnf(ctx, tenantId, { id: req.id });
  const r = replicaOf(vnf, req.replica);
  if (r.state !== 'RUNNING') throw new ConflictError(`replica ${r.index} of VNF "${vnf.id}" is ${r.state}: exec needs RUNNING`, { replica: r.index, state: r.state });
  const timeoutMs = req.timeoutMs ?? EXEC_DEFAULT_TIMEOUT_MS;
  return askNode(ctx, internalSubjects.exec(r.nodeId), { tenantId, allocId: r.allocId, command: req.command, timeoutMs }, timeoutMs + 10_000, r.nodeId);
}
