/**
 * Live migration of a replica (a HEAL with `params.migrate`: `vnfs.heal {replica, migrate: true}` and `nodes.drain`),
 * driven by the leader's operations engine; the two node agents never talk to each other (docs/migration.md).
 * Every step is recorded in the op occurrence (`params.migrations[<replica>]`) before the next, so a new leader
 * resumes it:
 *   place     the destination allocation (same MACs and addresses, `migration.from*`), CAS into the ledger as any;
 *   incoming  the destination node reports its QEMU waiting (`-incoming`, a URI) -> the source node sends the RAM
 *             and stops before the switchover (`pause-before-switchover`: the guest paused, nothing switched) ->
 *             the destination node agent must confirm its incoming VM (`check`), else the migration is cancelled
 *             on the source (the VM runs on there) and the op occurrence ends FAILED_TEMP -> `continue`: QEMU
 *             switches over and reports its downtime;
 *   switched  the destination reports RUNNING: the replica now is the destination allocation (state RUNNING
 *             throughout), the source allocation is asked to stop;
 *   stopping  the source node reports STOPPED (its paused VM torn down): its reservation is released, the
 *             addresses kept (they moved with the guest).
 * A VNF whose replicas cannot migrate (VFIO/macvtap NICs, a tenant VM shared with other replicas) is restarted
 * instead (the plain HEAL), and the op occurrence says why. Past `params.deadlineAt` (drain's `deadlineS`) a
 * migration not yet switched over is cancelled and the replica restarted.
 */
import {
  UnavailableError,
  asAppError,
  internalSubjects,
  type Envelope,
  type ErrorBody,
  type NodeMigrateReply,
  type NodeMigrateRequest,
  type HealParams,
  type MigrationRecord,
  type OpOccOf,
  type Replica,
  type ReplicaStatus,
  type Vnf,
} from '@edgenfv/contracts';
import type { NatsConnection } from 'nats';
import type { Store } from '../state/store.js';
import type { PlacementPort } from './placement-port.js';

export type Migration = MigrationRecord;
type OpOcc = OpOccOf<'HEAL'>;

export interface MigratorDeps {
  store: Store;
  placement: PlacementPort;
  /** Request/reply to a node agent's `nodes.<n>.migrate` (absent: nothing can migrate; replicas restart). */
  nodeRequest?: (nodeId: string, req: NodeMigrateRequest, timeoutMs: number) => Promise<NodeMigrateReply>;
  note(op: OpOcc, message: string): Promise<void>;
  setParams(op: OpOcc, patch: Partial<HealParams>): Promise<OpOcc>;
  setReplica(vnf: Vnf, index: number, patch: Partial<Replica>): Promise<Vnf>;
  failTemp(op: OpOcc, error: ErrorBody, message: string): Promise<void>;
  complete(op: OpOcc, vnf: Vnf): Promise<void>;
  stopTimeoutMs: number;
  startTimeoutMs: number;
}

const key = (a: string, b: string): string => `${a}.${b}`;

/** A NATS request to a node agent's migrate subject, the envelope unwrapped (its error becomes an AppError). */
export function natsNodeRequest(nc: NatsConnection): NonNullable<MigratorDeps['nodeRequest']> {
  return async (nodeId, req, timeoutMs) => {
    let data: Uint8Array;
    try {
      data = (await nc.request(internalSubjects.migrate(nodeId), JSON.stringify(req), { timeout: timeoutMs })).data;
    } catch (err) {
      throw new UnavailableError(`node ${nodeId} did not answer ${req.action}: ${(err as Error).message}`, { cause: err });
    }
    const env = JSON.parse(new TextDecoder().decode(data)) as Envelope<NodeMigrateReply>;
    if (!env.ok) throw new UnavailableError(`node ${nodeId}: ${req.action}: ${env.error.code}: ${env.error.message}`);
    return env.result;
  };
}

export class Migrator {
  constructor(private readonly d: MigratorDeps) {}

  /** The replicas a migrating HEAL moves. */
  static which(op: OpOcc): number[] {
    const p = op.params;
    return p.replica !== undefined ? [p.replica] : (p.replicas ?? []);
  }

  /** Why these replicas cannot migrate (undefined: they can). */
  async blocker(vnf: Vnf, which: number[]): Promise<string | undefined> {
    if (!this.d.nodeRequest) return 'this scheduler has no NATS connection to the nodes';
    if (which.length === 0) return 'no replica named';
    for (const i of which) {
      const r = vnf.replicas[i];
      if (!r?.allocId || !r.nodeId || r.state !== 'RUNNING') return `replica ${i} is not RUNNING`;
      const a = await this.d.placement.findAllocation(r.allocId);
      if (!a) return `replica ${i} has no allocation`;
      if (a.interfaces.some((x) => x.type === 'sriov')) return `replica ${i} has SR-IOV (VFIO) NICs: a VFIO VM cannot migrate`;
      if (a.interfaces.some((x) => x.type === 'macvtap')) return `replica ${i} has macvtap NICs (their fd cannot be handed over)`;
      const shared = (await this.d.store.allocs.list(`${a.nodeId}.>`)).map((e) => e.value).filter((o) => o.tenantId === a.tenantId && o.allocId !== a.allocId);
      if (shared.length) return `replica ${i} shares its tenant VM on node ${a.nodeId} with ${shared.length} other replica(s) (only single-replica VMs migrate)`;
      // the source's node agent must serve live migration (an older or simulated agent does not answer)
      try {
        await this.d.nodeRequest(a.nodeId, { tenantId: a.tenantId, allocId: a.allocId, action: 'check' }, 5000);
      } catch (err) {
        return `the node agent of ${a.nodeId} does not serve live migration (${(err as Error).message})`;
      }
    }
    return undefined;
  }

  /** Drives the migration of every replica in turn; returns 'restart' when the caller should restart instead. */
  async drive(op: OpOcc, vnf: Vnf): Promise<'restart' | void> {
    if (op.params?.mode === 'restart') return 'restart';
    const which = Migrator.which(op);
    if (op.params?.mode !== 'migrate') {
      const why = await this.blocker(vnf, which);
      if (why) {
        await this.d.setParams(op, { mode: 'restart', restartReason: why });
        await this.d.note(op, `cannot migrate: ${why}: restarted instead`);
        return 'restart';
      }
      op = await this.d.setParams(op, { mode: 'migrate' });
    }
    for (const i of which) {
      const m = this.migrations(op)[String(i)];
      if (m?.phase === 'done') continue;
      const res = await this.step(op, vnf, i);
      if (res === 'wait' || res === 'ended') return;
      if (res === 'restart') return 'restart';
      op = await this.fresh(op);
      vnf = (await this.d.store.vnfs.get(key(vnf.tenantId, vnf.id)))?.value ?? vnf;
    }
    const ms = which.map((i) => this.migrations(op)[String(i)]).filter((m): m is Migration => !!m);
    const downtimes = ms.map((m) => m.downtimeMs).filter((x): x is number => typeof x === 'number');
    if (downtimes.length) await this.d.setParams(op, { qemuDowntimeMs: Math.max(...downtimes) });
    await this.d.complete(op, vnf);
  }

  private async fresh(op: OpOcc): Promise<OpOcc> {
    const cur = (await this.d.store.opoccs.get(key(op.tenantId, op.id)))?.value;
    return cur?.operation === 'HEAL' ? cur : op;
  }

  private migrations(op: OpOcc): Record<string, Migration> {
    return op.params.migrations ?? {};
  }

  private async save(op: OpOcc, i: number, m: Migration): Promise<OpOcc> {
    const cur = await this.fresh(op);
    return this.d.setParams(cur, { migrations: { ...this.migrations(cur), [String(i)]: m } });
  }

  private async status(nodeId: string, allocId: string): Promise<ReplicaStatus | undefined> {
    return (await this.d.store.status.get(key(nodeId, allocId)))?.value;
  }

  /** One replica: 'wait' (come back on the next tick), 'next' (done), 'ended' (the op ended), 'restart'. */
  private async step(op: OpOcc, vnf: Vnf, i: number): Promise<'wait' | 'next' | 'ended' | 'restart'> {
    const r = vnf.replicas[i]!;
    let m: Migration = this.migrations(op)[String(i)] ?? { gen: (r.generation ?? 0) + 1, phase: 'place' };
    const deadlineAt = op.params.deadlineAt !== undefined ? Date.parse(op.params.deadlineAt) : undefined;
    const pastDeadline = deadlineAt !== undefined && Date.now() > deadlineAt;
    if (m.phase === 'place') {
      if (pastDeadline) return this.toRestart(op, `the drain's deadline passed before replica ${i} could migrate`);
      const src = r.allocId ? await this.d.placement.findAllocation(r.allocId) : null;
      if (!src) return this.toRestart(op, `replica ${i} has no allocation to migrate from`);
      const allocId = `${vnf.id}-${i}-${m.gen}`;
      const avoid = [src.nodeId, ...(op.params.fromNode !== undefined ? [op.params.fromNode] : [])];
      let dest = await this.d.placement.findAllocation(allocId);
      if (!dest) {
        try {
          dest = await this.d.placement.placeReplica({ tenantId: vnf.tenantId, vnf, replica: i, allocId, avoidNodeIds: avoid, migrateFrom: src });
        } catch (err) {
          const e = asAppError(err);
          if (e.retryable) throw err;
          await this.d.failTemp(op, e.toBody(), `replica ${i}: no destination for the live migration: ${e.message}`);
          return 'ended';
        }
      }
      m = { ...m, phase: 'incoming', from: src.nodeId, to: dest.nodeId, allocId, source: src.allocId };
      op = await this.save(op, i, m);
      await this.d.note(op, `replica ${i}: live migration from node ${src.nodeId} to node ${dest.nodeId} (allocation ${allocId}): the destination prepares an incoming VM`);
    }
    const srcAllocId = m.source ?? r.allocId!;
    if (m.phase === 'incoming') {
      const to = m.to!;
      const st = await this.status(to, m.allocId!);
      if (st?.state === 'FAILED') return this.abort(op, i, m, st.error ?? { code: 'UNAVAILABLE', message: 'the destination failed' }, `the destination node ${to} failed to prepare the incoming VM`);
      if (st?.state === 'RUNNING' && st.migration?.state === 'completed') {
        // switched over already (a previous leader's continue went through before it recorded it)
        m = { ...m, phase: 'switched' };
        op = await this.save(op, i, m);
        await this.d.note(op, `replica ${i}: node ${to} already runs the migrated VM`);
      } else if (st?.state === 'RUNNING' && !st.migration) {
        // a destination agent that does not know `migration` booted a fresh copy: that is a restart
        return this.abortToRestart(op, i, m, `the node agent of ${to} does not take incoming migrations`);
      }
    }
    if (m.phase === 'incoming') {
      const from = m.from!;
      const to = m.to!;
      const st = await this.status(to, m.allocId!);
      if (!st?.migration || st.migration.state !== 'incoming') {
        if (!(await this.d.placement.nodeReady(to))) return this.abort(op, i, m, { code: 'UNAVAILABLE', message: `node ${to} is not Ready` }, `the destination node ${to} stopped answering`);
        if (pastDeadline) return this.abortToRestart(op, i, m, `the drain's deadline passed while node ${to} prepared the incoming VM`);
        if (Date.now() - Date.parse(op.retriedAt ?? op.startTime) > this.d.startTimeoutMs) {
          return this.abort(op, i, m, { code: 'UNAVAILABLE', message: `no incoming VM on node ${to} after ${this.d.startTimeoutMs} ms` }, 'timed out waiting for the destination');
        }
        return 'wait';
      }
      const req = (action: NodeMigrateRequest['action'], nodeId: string, allocId: string, timeoutMs: number, uri?: string, token?: string): Promise<NodeMigrateReply> =>
        this.d.nodeRequest!(nodeId, { tenantId: vnf.tenantId, allocId, action, ...(uri ? { uri } : {}), ...(token ? { token } : {}) }, timeoutMs);
      await this.d.note(op, `replica ${i}: node ${to} waits for the VM's state (${st.migration.uri}); node ${from} sends it`);
      let sent: NodeMigrateReply;
      try {
        sent = await req('start', from, srcAllocId, 10 * 60_000, st.migration.uri, st.migration.token);
      } catch (err) {
        await req('cancel', from, srcAllocId, 60_000).catch(() => undefined);
        return this.abort(op, i, m, asAppError(err).toBody(), `sending the VM from node ${from} failed`);
      }
      const mib = sent.transferredBytes ? ` (${Math.round(sent.transferredBytes / 1048576)} MiB sent)` : '';
      await this.d.note(op, `replica ${i}: RAM copied${mib}; the VM is paused on node ${from} before the switchover`);
      // The fence: the switchover happens only when the destination's node agent confirms its incoming VM now.
      try {
        await req('check', to, m.allocId!, 5000);
      } catch (err) {
        const cancelled = await req('cancel', from, srcAllocId, 60_000).then((x) => x.state, (e: unknown) => `not confirmed (${(e as Error).message})`);
        return this.abort(op, i, m, asAppError(err).toBody(), `the destination node agent on ${to} did not confirm the incoming VM: migration cancelled (${cancelled}); the VNF runs on node ${from}`);
      }
      if (pastDeadline) {
        await req('cancel', from, srcAllocId, 60_000).catch(() => undefined);
        return this.abortToRestart(op, i, m, `the drain's deadline passed before the switchover of replica ${i}`);
      }
      let done: NodeMigrateReply;
      try {
        done = await req('continue', from, srcAllocId, 5 * 60_000);
      } catch (err) {
        // the answer may be lost although QEMU switched over: `cancel` says `completed` then (and resumes nothing)
        const cancelled = await req('cancel', from, srcAllocId, 60_000).then((x) => x.state, (e: unknown) => `not confirmed (${(e as Error).message})`);
        if (cancelled !== 'completed') return this.abort(op, i, m, asAppError(err).toBody(), `the switchover failed: migration cancelled (${cancelled})`);
        done = { state: 'completed' };
      }
      m = { ...m, phase: 'switched', ...(done.downtimeMs !== undefined ? { downtimeMs: done.downtimeMs } : {}), ...(done.totalMs !== undefined ? { totalMs: done.totalMs } : {}) };
      op = await this.save(op, i, m);
      await this.d.note(op, `replica ${i}: switched over to node ${to}: QEMU reported downtime ${done.downtimeMs ?? '?'} ms (migration ${done.totalMs ?? '?'} ms)`);
    }
    if (m.phase === 'switched') {
      const st = await this.status(m.to!, m.allocId!);
      if (st?.state === 'FAILED') {
        // the state moved but the destination could not take over: the source's paused VM runs on
        await this.d.nodeRequest!(m.from!, { tenantId: vnf.tenantId, allocId: srcAllocId, action: 'resume' }, 60_000).catch(() => undefined);
        return this.abort(op, i, m, st.error ?? { code: 'UNAVAILABLE', message: 'the destination failed' }, `the destination on node ${m.to} failed after the switchover; the source VM was resumed`);
      }
      if (st?.state !== 'RUNNING') return 'wait';
      const src = await this.d.placement.findAllocation(srcAllocId);
      vnf = await this.d.setReplica(vnf, i, {
        state: 'RUNNING',
        nodeId: m.to!,
        allocId: m.allocId!,
        generation: m.gen,
        ...(st.sandboxId ? { sandboxId: st.sandboxId } : {}),
        interfaces: r.interfaces,
        error: undefined,
        message: `live-migrated from node ${m.from} (QEMU downtime ${m.downtimeMs ?? '?'} ms)`,
      });
      if (src) await this.d.store.allocs.mutate(key(src.nodeId, src.allocId), (cur) => (cur ? { ...cur, desired: 'stopped' } : undefined));
      m = { ...m, phase: 'stopping' };
      op = await this.save(op, i, m);
      await this.d.note(op, `replica ${i} runs on node ${m.to}; node ${m.from} asked to tear down the source VM`);
    }
    if (m.phase === 'stopping') {
      const old = await this.d.placement.findAllocation(srcAllocId);
      if (old) {
        const st = await this.status(old.nodeId, old.allocId);
        const stopped = !st || st.state === 'STOPPED' || st.state === 'FAILED';
        const overdue = Date.now() - Date.parse(op.stateEnteredTime) > this.d.stopTimeoutMs;
        const ready = await this.d.placement.nodeReady(old.nodeId);
        if (!stopped && ready && !overdue) return 'wait';
        await this.d.placement.releaseAllocation(old, { confirmed: stopped, keepLeases: true });
        await this.d.store.status.delete(key(old.nodeId, old.allocId));
        await this.d.note(op, `source allocation ${old.allocId} on node ${old.nodeId} ${stopped ? 'stopped and released' : 'released (stop not confirmed)'}`);
      }
      m = { ...m, phase: 'done' };
      await this.save(op, i, m);
    }
    return 'next';
  }

  /** Releases the destination, records a new generation for the next try, and waits in FAILED_TEMP. */
  private async abort(op: OpOcc, i: number, m: Migration, error: ErrorBody, message: string): Promise<'ended'> {
    await this.releaseDest(m);
    op = await this.save(op, i, { gen: m.gen + 1, phase: 'place' });
    await this.d.failTemp(op, error, `replica ${i}: ${message}`);
    return 'ended';
  }

  private async abortToRestart(op: OpOcc, i: number, m: Migration, why: string): Promise<'restart'> {
    await this.releaseDest(m);
    op = await this.save(op, i, { gen: m.gen + 1, phase: 'place' });
    return this.toRestart(op, why);
  }

  private async releaseDest(m: Migration): Promise<void> {
    if (!m.allocId) return;
    const dest = await this.d.placement.findAllocation(m.allocId);
    if (!dest) return;
    const st = await this.status(dest.nodeId, dest.allocId);
    await this.d.placement.releaseAllocation(dest, { confirmed: !st || st.state === 'STOPPED', keepLeases: true });
    await this.d.store.status.delete(key(dest.nodeId, dest.allocId));
  }

  private async toRestart(op: OpOcc, why: string): Promise<'restart'> {
    // the restart's allocations get generations no migration attempt used
    const cur = await this.fresh(op);
    const vnf = (await this.d.store.vnfs.get(key(op.tenantId, op.vnfId)))?.value;
    const targets = Object.fromEntries(
      Migrator.which(cur).map((i) => [String(i), Math.max((vnf?.replicas[i]?.generation ?? 0) + 1, (this.migrations(cur)[String(i)]?.gen ?? 0) + 1)]),
    );
    await this.d.setParams(cur, { mode: 'restart', restartReason: why, targets });
    await this.d.note(op, `${why}: restarted instead`);
    return 'restart';
  }
}
