/**
 * The operations engine: runs on the leader only and carries each op occurrence (INSTANTIATE, SCALE, HEAL,
 * TERMINATE, OPERATE) from STARTING to a terminal state. A failure that may pass (a node that stopped answering,
 * a timeout, an image that could not be pulled) ends in FAILED_TEMP holding what the operation reserved, until the
 * tenant asks `opoccs.retry` (PROCESSING again: failed replicas are placed anew), `rollback` (ROLLING_BACK ->
 * ROLLED_BACK, done here: what the operation did is undone) or `fail` (FAILED: released), as in SOL003. Every step is idempotent and recorded in KV before the next, so a
 * new leader resumes an operation in flight without doing any of it twice (allocation ids are deterministic:
 * `<vnfId>-<replica>-<generation>`). Operations on one VNF run one at a time; different VNFs run concurrently.
 */
import {
  asAppError,
  UnavailableError,
  type ErrorBody,
  type OpOcc,
  type OpOccOf,
  type OperationState,
  type Replica,
  type ReplicaState,
  type ReplicaStatus,
  type Vnf,
} from '@edgenfv/contracts';
import type { Logger } from '@edgenfv/telemetry';
import type { Store } from '../state/store.js';
import type { Notifier } from './notifier.js';
import type { PlacementPort } from './placement-port.js';
import { demandOf, refundOnce } from './quota.js';
import { KvFollower, entryJson, hasStrings, type WatchReport } from '../state/follow.js';
import { Migrator, type MigratorDeps } from './migrate.js';

export interface EngineOptions {
  /** An operation whose replicas are not RUNNING by then fails (TCG boots are slow: minutes, not seconds). */
  startTimeoutMs?: number;
  /** How long to wait for a Ready node to confirm a replica stopped before releasing it anyway. */
  stopTimeoutMs?: number;
  tickMs?: number;
  /** Terminated VNFs and ended op occurrences are purged this long after they ended (default 7 days). */
  retentionMs?: number;
  /** How often the leader purges what is past retention (default min(60 s, retention / 2)). */
  purgeIntervalMs?: number;
}

export interface EngineDeps {
  store: Store;
  notifier: Notifier;
  logger: Logger;
  placement: PlacementPort;
  now?: () => Date;
  options?: EngineOptions;
  /** Called by the periodic sweep for each instantiated VNF with no operation in progress (auto-heal). */
  onIdleVnf?: (vnf: Vnf) => Promise<unknown>;
  /** Counts skipped malformed entries and restarted watches. */
  watchReport?: WatchReport;
  /** Called when an op occurrence this engine drives enters COMPLETED, FAILED_TEMP, FAILED or ROLLED_BACK (metrics). */
  onOpEnded?: (operation: OpOcc['operation'], state: OperationState) => void;
  /** Live migration's requests to node agents (migrate.ts); absent: a migrating HEAL restarts instead. */
  nodeRequest?: MigratorDeps['nodeRequest'];
}

const isOpOcc = (v: unknown): boolean => hasStrings(v, 'tenantId', 'vnfId', 'id', 'operationState', 'operation');
const isVnf = (v: unknown): boolean => hasStrings(v, 'tenantId', 'id', 'instantiationState') && Array.isArray((v as { replicas?: unknown }).replicas);
const isStatus = (v: unknown): boolean =>
  hasStrings(v, 'tenantId', 'vnfId', 'allocId', 'state') && Number.isInteger((v as { replica?: unknown }).replica) && Array.isArray((v as { interfaces?: unknown }).interfaces);

const TERMINAL: readonly OperationState[] = ['COMPLETED', 'FAILED', 'ROLLED_BACK'];

export function allocIdOf(vnfId: string, replica: number, generation: number): string {
  return `${vnfId}-${replica}-${generation}`;
}
const vkey = (tenantId: string, id: string): string => `${tenantId}.${id}`;

export class OperationsEngine {
  private readonly store: Store;
  private readonly notifier: Notifier;
  private readonly logger: Logger;
  private readonly placement: PlacementPort;
  private readonly now: () => Date;
  private readonly startTimeoutMs: number;
  private readonly stopTimeoutMs: number;
  private readonly tickMs: number;
  private running = false;
  private chains = new Map<string, Promise<void>>();
  /** Op occurrences not yet terminal, as the KV watch last showed them: what the tick drives again. */
  private readonly open = new Map<string, Pick<OpOcc, 'tenantId' | 'vnfId' | 'id' | 'operation' | 'startTime'>>();
  private watches: KvFollower[] = [];
  private readonly watchReport: WatchReport | undefined;
  private timer: NodeJS.Timeout | undefined;
  private purgeTimer: NodeJS.Timeout | undefined;
  private ticks = 0;
  /** VNFs the sweep looks at: instantiated, idle, with a FAILED replica (as the VNF watch last showed them). */
  private readonly attention = new Set<string>();
  /** When each ended op occurrence / terminated VNF ended: purged once past retention. */
  private readonly endedOps = new Map<string, number>();
  private readonly endedVnfs = new Map<string, number>();
  private readonly retentionMs: number;
  private readonly purgeIntervalMs: number;
  private readonly onIdleVnf: ((vnf: Vnf) => Promise<unknown>) | undefined;
  private readonly onOpEnded: EngineDeps['onOpEnded'];
  private readonly migrator: Migrator;

  constructor(deps: EngineDeps) {
    this.store = deps.store;
    this.notifier = deps.notifier;
    this.logger = deps.logger.child({ component: 'engine' });
    this.placement = deps.placement;
    this.now = deps.now ?? (() => new Date());
    this.startTimeoutMs = deps.options?.startTimeoutMs ?? 300_000;
    this.stopTimeoutMs = deps.options?.stopTimeoutMs ?? 60_000;
    this.tickMs = deps.options?.tickMs ?? 1_000;
    this.retentionMs = deps.options?.retentionMs ?? 7 * 24 * 3600 * 1000;
    this.purgeIntervalMs = deps.options?.purgeIntervalMs ?? Math.max(100, Math.min(60_000, Math.floor(this.retentionMs / 2)));
    this.onIdleVnf = deps.onIdleVnf;
    this.watchReport = deps.watchReport;
    this.onOpEnded = deps.onOpEnded;
    this.migrator = new Migrator({
      store: this.store,
      placement: this.placement,
      ...(deps.nodeRequest ? { nodeRequest: deps.nodeRequest } : {}),
      note: (op, m) => this.note(op, m),
      setParams: async (op, patch) => {
        const next = await this.setOp(op.tenantId, op.id, (cur) => (cur.operation === 'HEAL' ? { ...cur, params: { ...cur.params, ...patch } } : undefined));
        return next?.operation === 'HEAL' ? next : op;
      },
      updateParams: async (tenantId, opId, change) => {
        const next = await this.setOp(tenantId, opId, (cur) => {
          if (cur.operation !== 'HEAL') return undefined;
          const patch = change(cur);
          return patch ? { ...cur, params: { ...cur.params, ...patch } } : undefined;
        });
        return next?.operation === 'HEAL' ? next : undefined;
      },
      setReplica: (vnf, i, patch) => this.setReplica(vnf, i, patch),
      failTemp: (op, e, m) => this.failTemp(op, e, m),
      complete: (op, vnf) => this.complete(op, vnf),
      stopTimeoutMs: this.stopTimeoutMs,
      startTimeoutMs: this.startTimeoutMs,
    });
  }

  /** The op occurrences not yet terminal (as the watch last showed them; empty unless this replica leads). */
  openOps(): Iterable<Pick<OpOcc, 'operation' | 'startTime'>> {
    return this.open.values();
  }

  get active(): boolean {
    return this.running;
  }

  /** Becomes the engine of record: resumes every operation not yet terminal, then follows new ones. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const running = (): boolean => this.running;
    const opWatch = await KvFollower.start({
      bucket: this.store.opoccs.name,
      open: (from) => this.store.opoccs.kv.watch({ key: '>', ...(from ? { resumeFromRevision: from } : {}) }),
      running,
      logger: this.logger,
      report: this.watchReport,
      onEntry: (e) => {
        if (e.operation !== 'PUT') {
          this.open.delete(e.key);
          this.endedOps.delete(e.key);
          return;
        }
        this.open.delete(e.key); // a malformed rewrite is no longer driven
        this.endedOps.delete(e.key);
        const op = entryJson<OpOcc>(e, isOpOcc, 'op occurrence');
        if (TERMINAL.includes(op.operationState)) {
          this.endedOps.set(e.key, Date.parse(op.stateEnteredTime) || Date.now());
          return;
        }
        this.open.set(e.key, { tenantId: op.tenantId, vnfId: op.vnfId, id: op.id, operation: op.operation, startTime: op.startTime });
        this.enqueue(op);
      },
    });
    const statusWatch = await KvFollower.start({
      bucket: this.store.status.name,
      open: (from) => this.store.status.kv.watch({ key: '>', ...(from ? { resumeFromRevision: from } : {}) }),
      running,
      logger: this.logger,
      report: this.watchReport,
      onEntry: (e) => {
        if (e.operation !== 'PUT') return;
        const st = entryJson<ReplicaStatus>(e, isStatus, 'replica status');
        this.schedule(vkey(st.tenantId, st.vnfId), () => this.onStatus(st));
      },
    });
    const vnfWatch = await KvFollower.start({
      bucket: this.store.vnfs.name,
      open: (from) => this.store.vnfs.kv.watch({ key: '>', ...(from ? { resumeFromRevision: from } : {}) }),
      running,
      logger: this.logger,
      report: this.watchReport,
      onEntry: (e) => {
        this.attention.delete(e.key);
        this.endedVnfs.delete(e.key);
        if (e.operation !== 'PUT') return;
        const v = entryJson<Vnf>(e, isVnf, 'VNF');
        if (v.activeOpOccId) return;
        if (v.instantiationState === 'INSTANTIATED' && v.replicas.some((r) => r.state === 'FAILED')) this.attention.add(e.key);
        if (v.instantiationState === 'NOT_INSTANTIATED' && v.lastOpOutcome) this.endedVnfs.set(e.key, Date.parse(v.updatedAt) || Date.now());
      },
    });
    this.watches = [opWatch, statusWatch, vnfWatch];
    this.purgeTimer = setInterval(() => void this.purge().catch((err) => this.logger.warn({ err }, 'purge failed')), this.purgeIntervalMs);
    this.purgeTimer.unref();
    this.timer = setInterval(() => this.tick(), this.tickMs);
    this.timer.unref();
    this.logger.info('operations engine started');
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (this.timer) clearInterval(this.timer);
    if (this.purgeTimer) clearInterval(this.purgeTimer);
    for (const w of this.watches) w.stop();
    this.watches = [];
    this.open.clear(); // the next start's watch shows them all again
    this.attention.clear();
    this.endedOps.clear();
    this.endedVnfs.clear();
    await Promise.allSettled([...this.chains.values()]);
    this.logger.info('operations engine stopped');
  }

  /** Waits until every queued step has run (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.chains.size > 0) await Promise.allSettled([...this.chains.values()]);
  }

  enqueue(op: Pick<OpOcc, 'tenantId' | 'vnfId' | 'id'>): void {
    if (!this.running) return;
    this.schedule(vkey(op.tenantId, op.vnfId), () => this.drive(op.tenantId, op.id));
  }

  private schedule(key: string, fn: () => Promise<void>): void {
    const prev = this.chains.get(key) ?? Promise.resolve();
    const next = prev
      .then(fn)
      .catch((err) => this.logger.error({ err, key }, 'operation step failed'))
      .finally(() => {
        if (this.chains.get(key) === next) this.chains.delete(key);
      });
    this.chains.set(key, next);
  }

  private tick(): void {
    const sweep = this.onIdleVnf && this.ticks++ % 5 === 0;
    for (const op of this.open.values()) this.enqueue(op);
    if (!sweep) return;
    // Only the VNFs the watch showed idle with a FAILED replica, not every VNF ever made.
    void (async () => {
      for (const key of [...this.attention]) {
        const vnf = (await this.store.vnfs.get(key))?.value;
        if (vnf && !vnf.activeOpOccId && vnf.instantiationState === 'INSTANTIATED') await this.onIdleVnf!(vnf);
      }
    })().catch((err) => this.logger.warn({ err }, 'tick failed'));
  }

  /** Deletes ended op occurrences and terminated VNFs past retention (CAS: only if unchanged since read). */
  async purge(now = Date.now()): Promise<{ opoccs: number; vnfs: number }> {
    let opoccs = 0;
    let vnfs = 0;
    for (const [key, endedAt] of [...this.endedOps]) {
      if (endedAt + this.retentionMs > now) continue;
      const cur = await this.store.opoccs.get(key);
      // an ended op still named as its VNF's lock (its leader died between the two writes) stays: the API reads it
      const vnf = cur ? (await this.store.vnfs.get(vkey(cur.value.tenantId, cur.value.vnfId)))?.value : undefined;
      if (vnf?.activeOpOccId === cur?.value.id) continue;
      if (cur && TERMINAL.includes(cur.value.operationState) && (await this.store.opoccs.delete(key, cur.revision))) opoccs++;
      this.endedOps.delete(key);
    }
    for (const [key, endedAt] of [...this.endedVnfs]) {
      if (endedAt + this.retentionMs > now) continue;
      const cur = await this.store.vnfs.get(key);
      if (cur && cur.value.instantiationState === 'NOT_INSTANTIATED' && !cur.value.activeOpOccId && (await this.store.vnfs.delete(key, cur.revision))) vnfs++;
      this.endedVnfs.delete(key);
    }
    if (opoccs || vnfs) this.logger.info({ opoccs, vnfs, retentionMs: this.retentionMs }, 'purged what ended before the retention');
    return { opoccs, vnfs };
  }

  // ---------------------------------------------------------------- records

  private async setOp(tenantId: string, opId: string, change: (op: OpOcc) => OpOcc | undefined): Promise<OpOcc | null> {
    const res = await this.store.opoccs.mutate(vkey(tenantId, opId), (cur) => (cur ? change(cur) : undefined));
    return res?.value ?? null;
  }

  private async transition(op: OpOcc, state: OperationState, message: string, error?: ErrorBody): Promise<OpOcc> {
    const at = this.now().toISOString();
    const next = await this.setOp(op.tenantId, op.id, (cur) => {
      if (TERMINAL.includes(cur.operationState)) return undefined;
      return {
        ...cur,
        operationState: state,
        stateEnteredTime: cur.operationState === state ? cur.stateEnteredTime : at,
        steps: [...cur.steps, { at, message }],
        ...(error ? { error } : {}),
      };
    });
    if (next && next.operationState === state) {
      this.logger.info({ tenantId: op.tenantId, vnfId: op.vnfId, opOccId: op.id, state }, message);
      if (TERMINAL.includes(state) || state === 'FAILED_TEMP') this.onOpEnded?.(op.operation, state);
      await this.notifier.publish(op.tenantId, {
        type: 'OpOcc',
        opOccId: op.id,
        vnfId: op.vnfId,
        operation: op.operation,
        operationState: state,
        at,
        ...(error ? { error } : {}),
      });
    }
    return next ?? op;
  }

  private async note(op: OpOcc, message: string): Promise<void> {
    const at = this.now().toISOString();
    await this.setOp(op.tenantId, op.id, (cur) => ({ ...cur, steps: [...cur.steps, { at, message }] }));
  }

  private async setVnf(tenantId: string, vnfId: string, change: (v: Vnf) => Vnf | undefined): Promise<Vnf | null> {
    const res = await this.store.vnfs.mutate(vkey(tenantId, vnfId), (cur) => (cur ? change(cur) : undefined));
    return res?.value ?? null;
  }

  private async setReplica(vnf: Vnf, index: number, patch: Partial<Replica>): Promise<Vnf> {
    const at = this.now().toISOString();
    let changedState: ReplicaState | undefined;
    let nodeId: string | undefined;
    const next = await this.setVnf(vnf.tenantId, vnf.id, (cur) => {
      const r = cur.replicas[index];
      if (!r) return undefined;
      const merged: Replica = { ...r, ...patch, updatedAt: at };
      for (const k of Object.keys(patch) as (keyof Replica)[]) if (patch[k] === undefined) delete merged[k];
      if (merged.state !== r.state) changedState = merged.state;
      nodeId = merged.nodeId;
      const replicas = cur.replicas.slice();
      replicas[index] = merged;
      return { ...cur, replicas, updatedAt: at };
    });
    if (changedState) {
      await this.notifier.publish(vnf.tenantId, {
        type: 'Replica',
        vnfId: vnf.id,
        replica: index,
        state: changedState,
        ...(nodeId ? { nodeId } : {}),
        at,
      });
    }
    return next ?? vnf;
  }

  // ---------------------------------------------------------------- driving an operation

  private async drive(tenantId: string, opId: string): Promise<void> {
    if (!this.running) return;
    let op = (await this.store.opoccs.get(vkey(tenantId, opId)))?.value;
    if (!op || TERMINAL.includes(op.operationState)) return;
    let vnf = (await this.store.vnfs.get(vkey(tenantId, op.vnfId)))?.value;
    if (!vnf) {
      await this.transition(op, 'FAILED', 'the VNF record is gone', { code: 'NOT_FOUND', message: `VNF ${op.vnfId} not found` });
      return;
    }
    if (!vnf.activeOpOccId && vnf.lastOpOutcome?.opOccId === op.id) {
      // the previous leader recorded the outcome on the VNF and stopped before updating the op occurrence
      const o = vnf.lastOpOutcome;
      const msg = o.state === 'COMPLETED' ? 'completed' : o.state === 'ROLLED_BACK' ? 'rolled back' : `failed: ${o.error?.message ?? ''}`;
      await this.transition(op, o.state, msg, o.error);
      return;
    }
    if (vnf.activeOpOccId !== op.id) {
      // superseded (a FORCEFUL terminate took the VNF over)
      await this.transition(op, 'FAILED', `superseded by ${vnf.activeOpOccId ?? 'another operation'}`, {
        code: 'CONFLICT',
        message: `superseded by ${vnf.activeOpOccId ?? 'another operation'}`,
      });
      return;
    }
    if (op.operationState === 'FAILED_TEMP') {
      // waits for the tenant: retry / rollback set another state; fail is carried out here (it releases)
      if (op.pendingAction === 'fail') await this.fail(op, op.error ?? { code: 'UNAVAILABLE', message: 'failed by request' }, 'failed by request (from FAILED_TEMP)');
      return;
    }
    if (op.operationState === 'STARTING') op = await this.transition(op, 'PROCESSING', 'processing');
    try {
      if (op.operationState === 'ROLLING_BACK') {
        await this.driveRollback(op, vnf);
        return;
      }
      if (op.retries && (op.params?.retriesHandled ?? 0) < op.retries) {
        vnf = await this.prepareRetry(op, vnf);
        const handled = op.retries;
        op = (await this.setOp(op.tenantId, op.id, (cur) => withParams(cur, { retriesHandled: handled }))) ?? op;
      }
      switch (op.operation) {
        case 'INSTANTIATE':
          await this.driveStart(op, vnf, range(0, vnf.desiredReplicas));
          break;
        case 'SCALE': {
          const target = op.params.replicas;
          if (target >= vnf.replicas.length) {
            vnf = await this.growReplicas(vnf, target);
            await this.driveStart(op, vnf, range(0, target));
          } else {
            await this.driveStop(op, vnf, range(target, vnf.replicas.length));
          }
          break;
        }
        case 'HEAL':
          await this.driveHeal(op, vnf);
          break;
        case 'TERMINATE':
          await this.driveStop(op, vnf, range(0, vnf.replicas.length));
          break;
        case 'OPERATE':
          await this.driveOperate(op, vnf, op.params.changeStateTo, false);
          break;
      }
    } catch (err) {
      const e = asAppError(err);
      if (e.retryable) {
        this.logger.warn({ err, opOccId: op.id }, 'retryable failure; the next tick retries');
        return;
      }
      await this.fail(op, e.toBody(), `failed: ${e.message}`);
    }
  }

  private async growReplicas(vnf: Vnf, target: number): Promise<Vnf> {
    if (vnf.replicas.length >= target) return vnf;
    const at = this.now().toISOString();
    return (
      (await this.setVnf(vnf.tenantId, vnf.id, (cur) => {
        if (cur.replicas.length >= target) return undefined;
        const add = range(cur.replicas.length, target).map((index) => ({ index, state: 'PENDING' as const, interfaces: [], updatedAt: at }));
        return { ...cur, replicas: [...cur.replicas, ...add], updatedAt: at };
      })) ?? vnf
    );
  }

  /** Places the replicas that have no allocation, then waits for all of them to run. */
  private async driveStart(op: OpOcc, vnf: Vnf, indexes: number[]): Promise<void> {
    for (const i of indexes) {
      const r = vnf.replicas[i]!;
      if (r.allocId) continue;
      vnf = await this.placeOne(op, vnf, i, r.generation ?? 0, []);
    }
    await this.evaluateStart(op, vnf, indexes);
  }

  private async placeOne(op: OpOcc, vnf: Vnf, index: number, generation: number, avoid: readonly string[]): Promise<Vnf> {
    const allocId = allocIdOf(vnf.id, index, generation);
    let alloc = await this.placement.findAllocation(allocId);
    if (!alloc) {
      alloc = await this.placement.placeReplica({ tenantId: vnf.tenantId, vnf, replica: index, allocId, avoidNodeIds: avoid });
      await this.note(op, `replica ${index} placed on node ${alloc.nodeId} (allocation ${allocId})`);
    }
    return this.setReplica(vnf, index, {
      state: 'SCHEDULED',
      nodeId: alloc.nodeId,
      allocId,
      generation,
      interfaces: alloc.interfaces.map((i) => ({
        name: i.name,
        type: i.type,
        mac: i.mac,
        ips: i.ips ?? [],
        ...(i.network ? { network: i.network } : {}),
        ...(i.type === 'sriov' ? { pciAddress: i.sriov.vfPciAddress } : {}),
      })),
      error: undefined,
      message: undefined,
    });
  }

  private async evaluateStart(op: OpOcc, vnf: Vnf, indexes: number[]): Promise<void> {
    const rs = indexes.map((i) => vnf.replicas[i]!);
    const up = (r: Replica): boolean => isUp(vnf, r);
    const failed = rs.find((r) => r.state === 'FAILED');
    if (failed) {
      const error = failed.error ?? { code: 'INTERNAL', message: `replica ${failed.index} failed` };
      const message = `replica ${failed.index} failed on node ${failed.nodeId ?? '?'}: ${error.message}`;
      // a failure that may pass (node lost, image not pulled, timeouts) waits in FAILED_TEMP
      if (error.code === 'UNAVAILABLE') await this.failTemp(op, error, message);
      else await this.fail(op, error, message);
      return;
    }
    if (rs.every(up)) {
      await this.complete(op, vnf);
      return;
    }
    for (const r of rs) {
      if (!r.nodeId || !r.allocId || up(r) || (await this.placement.allocationLive(r.nodeId, r.allocId))) continue;
      // not Ready, or declared lost and back already (a short partition): either way the node will not run it
      const ready = await this.placement.nodeReady(r.nodeId);
      const why = ready ? `node ${r.nodeId} was declared lost after replica ${r.index} was placed on it (${r.state}); it fences that allocation` : `node ${r.nodeId} is not Ready (replica ${r.index} ${r.state})`;
      await this.failTemp(op, new UnavailableError(why, { details: { nodeId: r.nodeId } }).toBody(), `replica ${r.index}: node ${r.nodeId} stopped answering`);
      return;
    }
    if (Date.now() - Date.parse(op.retriedAt ?? op.startTime) > this.startTimeoutMs) {
      const waiting = rs.filter((r) => !up(r)).map((r) => `${r.index}@${r.nodeId ?? '?'}:${r.state}`);
      await this.failTemp(op, new UnavailableError(`replicas not running after ${this.startTimeoutMs} ms: ${waiting.join(', ')}`).toBody(), 'timed out waiting for replicas to run');
    }
  }

  /**
   * `opoccs.retry`: the replicas that failed, or whose node is not Ready, give back their allocation and get a
   * new generation, so that driving the operation again places them anew (elsewhere when their node is gone).
   */
  private async prepareRetry(op: OpOcc, vnf: Vnf): Promise<Vnf> {
    if (op.operation !== 'INSTANTIATE' && op.operation !== 'SCALE') return vnf;
    for (const r of vnf.replicas) {
      if (!r.allocId) continue;
      const lost = r.nodeId !== undefined && r.state !== 'RUNNING' && !(await this.placement.allocationLive(r.nodeId, r.allocId));
      if (r.state !== 'FAILED' && !lost) continue;
      const alloc = await this.placement.findAllocation(r.allocId);
      if (alloc) {
        const status = (await this.store.status.get(vkey(alloc.nodeId, alloc.allocId)))?.value;
        await this.placement.releaseAllocation(alloc, { confirmed: nodeConfirmedGone(status) });
        await this.store.status.delete(vkey(alloc.nodeId, alloc.allocId));
      }
      await this.note(op, `retry: replica ${r.index} (${r.state} on node ${r.nodeId ?? '?'}) released, to be placed again`);
      vnf = await this.setReplica(vnf, r.index, {
        state: 'PENDING',
        generation: (r.generation ?? 0) + 1,
        allocId: undefined,
        nodeId: undefined,
        sandboxId: undefined,
        error: undefined,
        interfaces: [],
      });
    }
    return vnf;
  }

  /**
   * OPERATE: every replica's allocation says the operational state the node converges on (containers stopped or
   * running; VM, NICs and addresses kept); done when every replica shows it. `rollingBack`: back to the VNF's state.
   */
  private async driveOperate(op: OpOcc, vnf: Vnf, target: 'STARTED' | 'STOPPED', rollingBack: boolean): Promise<void> {
    const want: ReplicaState = target === 'STOPPED' ? 'STOPPED' : 'RUNNING';
    let done = true;
    for (const r of vnf.replicas) {
      if (!r.allocId || !r.nodeId) continue;
      const alloc = await this.placement.findAllocation(r.allocId);
      if (!alloc) continue;
      if ((alloc.operationalState ?? 'STARTED') !== target) {
        await this.store.allocs.mutate(vkey(alloc.nodeId, alloc.allocId), (cur) => (cur ? { ...cur, operationalState: target } : undefined));
        await this.note(op, `replica ${r.index}: node ${alloc.nodeId} asked to ${target === 'STOPPED' ? 'stop' : 'start'} its container`);
      }
      if (r.state === want) continue;
      done = false;
      if (!(await this.placement.allocationLive(r.nodeId, r.allocId))) {
        if (!rollingBack) await this.failTemp(op, new UnavailableError(`node ${r.nodeId} is not Ready, or was declared lost since (replica ${r.index})`).toBody(), `replica ${r.index}: node ${r.nodeId} stopped answering`);
        return;
      }
      if (r.state === 'FAILED') {
        const error = r.error ?? { code: 'INTERNAL' as const, message: `replica ${r.index} failed` };
        if (!rollingBack) await this.failTemp(op, error, `replica ${r.index} failed on node ${r.nodeId}: ${error.message}`);
        return;
      }
    }
    if (done) {
      if (rollingBack) await this.rolledBack(op, vnf);
      else await this.complete(op, vnf);
      return;
    }
    if (!rollingBack && Date.now() - Date.parse(op.retriedAt ?? op.startTime) > this.startTimeoutMs) {
      await this.failTemp(op, new UnavailableError(`replicas not ${want} after ${this.startTimeoutMs} ms`).toBody(), `timed out waiting for replicas to be ${want}`);
    }
  }

  /** ROLLING_BACK (SOL003 rollback from FAILED_TEMP): undo what the operation did, then ROLLED_BACK. */
  private async driveRollback(op: OpOcc, vnf: Vnf): Promise<void> {
    switch (op.operation) {
      case 'INSTANTIATE':
      case 'SCALE': {
        const from = op.operation === 'INSTANTIATE' ? 0 : vnf.desiredReplicas;
        let pending = 0;
        for (const i of range(from, vnf.replicas.length)) {
          const r = vnf.replicas[i];
          if (!r || (r.state === 'STOPPED' && !r.allocId)) continue;
          if (!(await this.stopReplica(op, vnf, r))) pending++;
          vnf = (await this.store.vnfs.get(vkey(vnf.tenantId, vnf.id)))?.value ?? vnf;
        }
        if (pending === 0) await this.rolledBack(op, vnf);
        return;
      }
      case 'OPERATE':
        await this.driveOperate(op, vnf, vnf.operationalState ?? 'STARTED', true);
        return;
      default:
        // the API refuses rollback of HEAL and TERMINATE; an op record that asks anyway ends FAILED
        await this.fail(op, { code: 'CONFLICT', message: `${op.operation} cannot be rolled back` }, `${op.operation} cannot be rolled back`);
    }
  }

  /** What a rolled-back operation leaves: INSTANTIATE nothing at all (quota, name, replicas), SCALE the old size. */
  private async rolledBack(op: OpOcc, vnf: Vnf): Promise<void> {
    const at = this.now().toISOString();
    if (op.operation === 'INSTANTIATE') {
      await refundOnce(this.store, vnf.tenantId, op.id, demandOf(vnf.descriptor, vnf.desiredReplicas, 1), at);
      await this.releaseName(vnf);
    } else if (op.operation === 'SCALE') {
      const added = op.params.replicas - vnf.desiredReplicas;
      if (added > 0) await refundOnce(this.store, vnf.tenantId, op.id, demandOf(vnf.descriptor, added, 0), at);
    }
    await this.setVnf(vnf.tenantId, vnf.id, (cur) => {
      const next: Vnf = { ...cur, updatedAt: at, lastOpOutcome: { opOccId: op.id, state: 'ROLLED_BACK' } };
      delete next.activeOpOccId;
      if (op.operation === 'INSTANTIATE') {
        next.instantiationState = 'NOT_INSTANTIATED';
        next.desiredReplicas = 0;
        next.replicas = [];
      } else if (op.operation === 'SCALE') next.replicas = cur.replicas.slice(0, cur.desiredReplicas);
      return next;
    });
    await this.transition(op, 'ROLLED_BACK', 'rolled back');
  }

  /** FAILED_TEMP: the operation keeps what it reserved and waits for retry, rollback or fail. */
  private async failTemp(op: OpOcc, error: ErrorBody, message: string): Promise<void> {
    await this.transition(op, 'FAILED_TEMP', `${message} (FAILED_TEMP: retry, rollback or fail)`, error);
  }

  /** Asks the nodes to stop the replicas, releases what they held once stopped (or the node is not Ready). */
  private async driveStop(op: OpOcc, vnf: Vnf, indexes: number[]): Promise<void> {
    let pending = 0;
    for (const i of indexes) {
      const r = vnf.replicas[i];
      // a replica the node reported STOPPED still holds its allocation until released here
      if (!r || (r.state === 'STOPPED' && !r.allocId)) continue;
      if (!(await this.stopReplica(op, vnf, r))) pending++;
      vnf = (await this.store.vnfs.get(vkey(vnf.tenantId, vnf.id)))?.value ?? vnf;
    }
    if (pending === 0) await this.complete(op, vnf);
  }

  /** True when the replica is stopped and its allocation released. */
  private async stopReplica(op: OpOcc, vnf: Vnf, r: Replica): Promise<boolean> {
    if (!r.allocId) {
      await this.setReplica(vnf, r.index, { state: 'STOPPED', nodeId: undefined, allocId: undefined });
      return true;
    }
    const alloc = await this.placement.findAllocation(r.allocId);
    if (!alloc) {
      await this.setReplica(vnf, r.index, { state: 'STOPPED', nodeId: undefined, allocId: undefined });
      return true;
    }
    const status = (await this.store.status.get(vkey(alloc.nodeId, alloc.allocId)))?.value;
    // a node declared lost since (back or not) tore the sandbox down or never ran it: nothing to wait for
    const ready = await this.placement.allocationLive(alloc.nodeId, alloc.allocId);
    const forceful = op.operation === 'TERMINATE' && op.params.mode === 'FORCEFUL';
    // STOPPED by OPERATE (containers only) is not a stopped allocation: the node must still tear the replica down
    const stopped = !status || (status.state === 'STOPPED' && !status.containersStopped) || status.state === 'FAILED';
    const since = Date.parse(op.stateEnteredTime);
    const overdue = Date.now() - since > this.stopTimeoutMs;
    if (stopped || !ready || forceful || overdue) {
      await this.placement.releaseAllocation(alloc, { confirmed: nodeConfirmedGone(status) });
      await this.store.status.delete(vkey(alloc.nodeId, alloc.allocId));
      const why = stopped ? 'stopped' : !ready ? 'node not Ready: released' : forceful ? 'FORCEFUL: released' : 'stop not confirmed in time: released';
      await this.note(op, `replica ${r.index} on node ${alloc.nodeId} ${why}`);
      await this.setReplica(vnf, r.index, { state: 'STOPPED', nodeId: undefined, allocId: undefined, sandboxId: undefined });
      return true;
    }
    if (alloc.desired !== 'stopped') {
      await this.store.allocs.mutate(vkey(alloc.nodeId, alloc.allocId), (cur) => (cur ? { ...cur, desired: 'stopped' } : undefined));
      await this.setReplica(vnf, r.index, { state: 'STOPPING' });
      await this.note(op, `replica ${r.index}: node ${alloc.nodeId} asked to stop it`);
    }
    return false;
  }

  private async driveHeal(op: OpOccOf<'HEAL'>, vnf: Vnf): Promise<void> {
    // A drain moves replicas one at a time: this HEAL waits for the one before it to end.
    const after = op.params.after;
    if (after) {
      const prev = (await this.store.opoccs.get(vkey(after.tenantId, after.id)))?.value;
      if (prev && !TERMINAL.includes(prev.operationState)) return;
    }
    // Live migration (migrate.ts): the VM moves and keeps running; what cannot migrate is restarted below.
    if (op.params.migrate === true && op.params.mode !== 'restart') {
      if ((await this.migrator.drive(op, vnf)) !== 'restart') return;
      const fresh = (await this.store.opoccs.get(vkey(op.tenantId, op.id)))?.value;
      if (fresh?.operation === 'HEAL') op = fresh;
      vnf = (await this.store.vnfs.get(vkey(vnf.tenantId, vnf.id)))?.value ?? vnf;
    }
    // First drive: fix the targets (replica -> new generation) in the op record, so a new leader does the same.
    let targets = op.params.targets;
    if (!targets) {
      const which: number[] =
        op.params.replica !== undefined
          ? [op.params.replica]
          : (op.params.replicas ?? vnf.replicas.filter((r) => !isUp(vnf, r)).map((r) => r.index));
      targets = Object.fromEntries(which.map((i) => [String(i), (vnf.replicas[i]?.generation ?? 0) + 1]));
      const t = targets;
      const next = await this.setOp(op.tenantId, op.id, (cur) => (cur.operation === 'HEAL' ? { ...cur, params: { ...cur.params, targets: t } } : undefined));
      if (next?.operation === 'HEAL') op = next;
    }
    const avoid = op.params.fromNode !== undefined ? [op.params.fromNode] : [];
    const indexes = Object.keys(targets).map(Number);
    for (const i of indexes) {
      const r = vnf.replicas[i];
      if (!r) continue;
      const gen = targets[String(i)]!;
      if ((r.generation ?? 0) >= gen && r.allocId) continue; // already replaced
      if (r.allocId) {
        if (!(await this.stopReplica(op, vnf, r))) return; // wait for the old one to stop
        vnf = (await this.store.vnfs.get(vkey(vnf.tenantId, vnf.id)))?.value ?? vnf;
      }
      const oldNode = r.nodeId;
      vnf = await this.placeOne(op, vnf, i, gen, oldNode && avoid.length ? [...avoid, oldNode] : avoid);
    }
    await this.evaluateStart(op, vnf, indexes);
  }

  // ---------------------------------------------------------------- node reports

  private async onStatus(st: ReplicaStatus): Promise<void> {
    const cur = (await this.store.vnfs.get(vkey(st.tenantId, st.vnfId)))?.value;
    if (!cur) return;
    const r = cur.replicas[st.replica];
    if (!r || r.allocId !== st.allocId) return; // a stale report of an allocation the replica no longer has
    // a live migration's destination waiting for the state: the replica runs at the source meanwhile (a report seen
    // late, once the migration pointed the replica here, is not its state: it stays RUNNING)
    if (st.migration?.state === 'incoming' && r.state === 'RUNNING') return;
    const state: ReplicaState = st.state;
    if (st.progress && st.state === 'STARTING' && cur.activeOpOccId) {
      const message = `replica ${st.replica} on node ${st.nodeId}: ${st.progress}`;
      await this.setOp(cur.tenantId, cur.activeOpOccId, (op) =>
        TERMINAL.includes(op.operationState) || op.steps[op.steps.length - 1]?.message === message
          ? undefined
          : { ...op, steps: [...op.steps, { at: this.now().toISOString(), message }] },
      );
    }
    const vnf = await this.setReplica(cur, st.replica, {
      state,
      ...(st.sandboxId ? { sandboxId: st.sandboxId } : {}),
      ...(st.imageDigest ? { imageDigest: st.imageDigest } : {}),
      interfaces: r.interfaces.map((i) => {
        const seen = st.interfaces.find((x) => x.name === i.name);
        if (!seen) return i;
        const out = { ...i, mac: seen.mac, ips: seen.ips.length ? seen.ips : i.ips };
        if (seen.pciAddress) out.pciAddress = seen.pciAddress;
        if (seen.guestPciAddress) out.guestPciAddress = seen.guestPciAddress;
        if (seen.socketPath) out.socketPath = seen.socketPath;
        if (seen.portName) out.portName = seen.portName;
        return out;
      }),
      error: st.error,
    });
    if (vnf.activeOpOccId) await this.drive(vnf.tenantId, vnf.activeOpOccId);
  }

  // ---------------------------------------------------------------- endings

  private async complete(op: OpOcc, vnf: Vnf): Promise<void> {
    const at = this.now().toISOString();
    const fresh = (await this.store.vnfs.get(vkey(vnf.tenantId, vnf.id)))?.value;
    if (fresh && fresh.activeOpOccId !== op.id) {
      // a FORCEFUL terminate took the VNF over meanwhile: it owns the record and the quota from here
      await this.supersededBy(op, fresh.activeOpOccId);
      return;
    }
    if (fresh) vnf = fresh;
    const scaleTo = op.operation === 'SCALE' ? op.params.replicas : undefined;
    if (op.operation === 'TERMINATE' || (scaleTo !== undefined && scaleTo < vnf.replicas.length)) {
      const target = scaleTo ?? 0;
      const removed = vnf.desiredReplicas - target;
      if (removed > 0 || op.operation === 'TERMINATE') {
        await refundOnce(this.store, vnf.tenantId, op.id, demandOf(vnf.descriptor, Math.max(0, removed), op.operation === 'TERMINATE' ? 1 : 0), at);
      }
      if (op.operation === 'TERMINATE') {
        await this.refundSupersededScale(op, vnf, at);
        await this.releaseName(vnf);
      }
    }
    let superseded: string | undefined;
    await this.setVnf(vnf.tenantId, vnf.id, (cur) => {
      if (cur.activeOpOccId !== op.id) {
        superseded = cur.activeOpOccId ?? 'another operation';
        return undefined;
      }
      const next: Vnf = { ...cur, updatedAt: at, lastOpOutcome: { opOccId: op.id, state: 'COMPLETED' } };
      delete next.activeOpOccId;
      switch (op.operation) {
        case 'INSTANTIATE':
          next.instantiationState = 'INSTANTIATED';
          break;
        case 'SCALE':
          next.desiredReplicas = op.params.replicas;
          next.replicas = cur.replicas.slice(0, next.desiredReplicas);
          break;
        case 'TERMINATE':
          next.instantiationState = 'NOT_INSTANTIATED';
          next.desiredReplicas = 0;
          break;
        case 'HEAL':
          break;
        case 'OPERATE':
          next.operationalState = op.params.changeStateTo;
          break;
      }
      return next;
    });
    if (superseded) {
      await this.supersededBy(op, superseded);
      return;
    }
    await this.transition(op, 'COMPLETED', 'completed');
  }

  private async supersededBy(op: OpOcc, by: string | undefined): Promise<void> {
    const msg = `superseded by ${by ?? 'another operation'}`;
    await this.transition(op, 'FAILED', msg, { code: 'CONFLICT', message: msg });
  }

  /**
   * A FORCEFUL terminate that took over a scale-out gives back what the scale-out charged when it was accepted
   * (its replicas beyond the VNF's desired count), keyed by the scale's op occurrence: its own failure path may
   * have given it back already.
   */
  private async refundSupersededScale(op: OpOcc, vnf: Vnf, at: string): Promise<void> {
    const supersedes = op.operation === 'TERMINATE' ? op.params.supersedes : undefined;
    if (supersedes === undefined) return;
    const prev = (await this.store.opoccs.get(vkey(op.tenantId, supersedes)))?.value;
    if (!prev || prev.operation !== 'SCALE') return;
    const extra = prev.params.replicas - vnf.desiredReplicas;
    if (extra > 0) await refundOnce(this.store, vnf.tenantId, prev.id, demandOf(vnf.descriptor, extra, 0), at);
  }

  /**
   * Ends the operation FAILED with the reason. A failed INSTANTIATE gives back everything (allocations, quota,
   * the name): the VNF stays NOT_INSTANTIATED. A failed SCALE-out gives back the replicas it added.
   */
  private async fail(op: OpOcc, error: ErrorBody, message: string): Promise<void> {
    const vnf = (await this.store.vnfs.get(vkey(op.tenantId, op.vnfId)))?.value;
    const at = this.now().toISOString();
    if (vnf && vnf.activeOpOccId === op.id) {
      let keep = vnf.replicas.length;
      if (op.operation === 'INSTANTIATE') keep = 0;
      const scaleTo = op.operation === 'SCALE' ? op.params.replicas : undefined;
      if (scaleTo !== undefined && scaleTo > vnf.desiredReplicas) keep = vnf.desiredReplicas;
      for (const r of vnf.replicas.slice(keep)) {
        if (!r.allocId) continue;
        const alloc = await this.placement.findAllocation(r.allocId);
        if (alloc) {
          const status = (await this.store.status.get(vkey(alloc.nodeId, alloc.allocId)))?.value;
          await this.placement.releaseAllocation(alloc, { confirmed: nodeConfirmedGone(status) });
          await this.store.status.delete(vkey(alloc.nodeId, alloc.allocId));
        }
      }
      if (op.operation === 'INSTANTIATE') {
        await refundOnce(this.store, vnf.tenantId, op.id, demandOf(vnf.descriptor, vnf.desiredReplicas, 1), at);
        await this.releaseName(vnf);
      } else if (scaleTo !== undefined && scaleTo > vnf.desiredReplicas) {
        await refundOnce(this.store, vnf.tenantId, op.id, demandOf(vnf.descriptor, scaleTo - vnf.desiredReplicas, 0), at);
      }
      await this.setVnf(vnf.tenantId, vnf.id, (cur) => {
        if (cur.activeOpOccId !== op.id) return undefined; // taken over meanwhile: the new operation owns it
        const next: Vnf = { ...cur, updatedAt: at, lastOpOutcome: { opOccId: op.id, state: 'FAILED', error } };
        delete next.activeOpOccId;
        next.replicas = cur.replicas.map((r, i) =>
          i >= keep
            ? { index: r.index, state: 'FAILED' as const, interfaces: [], error, ...(r.generation ? { generation: r.generation } : {}), updatedAt: at }
            : r,
        );
        if (op.operation === 'SCALE' && keep < cur.replicas.length) next.replicas = next.replicas.slice(0, keep);
        return next;
      });
    }
    await this.transition(op, 'FAILED', message, error);
  }

  private async releaseName(vnf: Vnf): Promise<void> {
    const key = `${vnf.tenantId}.${vnf.name}`;
    const claim = await this.store.names.get(key);
    if (claim && claim.value.vnfId === vnf.id) await this.store.names.delete(key, claim.revision);
  }
}

/**
 * Whether the node said the replica's sandbox is gone: it reported STOPPED, or it never reported at all (a node
 * writes STARTING before it boots anything, and the allocation record is deleted before this release, so it will
 * not start it now). Otherwise (FORCEFUL, node not Ready, no confirmation in time, a FAILED or RUNNING report) the
 * CPUs, VFs and IP leases stay fenced until the node's heartbeat or register shows it no longer runs it.
 */
function nodeConfirmedGone(status: ReplicaStatus | undefined): boolean {
  return !status || (status.state === 'STOPPED' && !status.containersStopped);
}

/**
 * Whether a replica is where its VNF wants it: RUNNING, or, while the VNF is OPERATEd STOPPED, on its node with its
 * container stopped (a scale-out or heal of a STOPPED VNF places replicas without starting them).
 */
function isUp(vnf: Vnf, r: Replica): boolean {
  return vnf.operationalState === 'STOPPED' ? r.state === 'STOPPED' && r.allocId !== undefined : r.state === 'RUNNING';
}

/** The op occurrence with the leader's own notes added to its params (whatever its operation). */
function withParams<T extends OpOcc>(op: T, notes: { retriesHandled?: number }): T {
  return { ...op, params: { ...op.params, ...notes } };
}

function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
}

