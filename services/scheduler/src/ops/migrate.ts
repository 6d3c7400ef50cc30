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
 * A tenant VM holding several replicas (other VNFs' or this one's) moves as one group: the first HEAL to reach
 * `place` claims it (its record's `group`, under a per-tenant lock), places every member on one node (the first
 * avoiding the source, the others `onlyNodeId`; the VM overhead is booked once, by the first), waits for every
 * destination allocation to report `incoming`, drives start/check/continue once (on its own replica's allocations:
 * the nodes act on the VM they are in), points every member replica at its destination at the switchover and
 * releases every source; then writes `done` into each member's HEAL, which completes. The other members' HEALs
 * follow it (`drivenBy`): they restart when it restarts, and end FAILED_TEMP when it does (a failed fence aborts
 * the whole group: every destination released, every replica runs on at the source).
 * A VNF whose replicas cannot migrate (VFIO/macvtap NICs, in its VM or another member's; a VM member no migrating
 * HEAL covers) is restarted instead (the plain HEAL), and the op occurrence says why. Past `params.deadlineAt`
 * (drain's `deadlineS`) a migration not yet switched over is cancelled and the replica restarted.
 */
import {
  UnavailableError,
  asAppError,
  internalSubjects,
  type Envelope,
  type ErrorBody,
  type NodeMigrateReply,
  type NodeMigrateRequest,
  type Allocation,
  type HealParams,
  type MigrationGroupEntry,
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
  /** CAS on any HEAL's params: `change` sees the current op occurrence; undefined changes nothing. */
  updateParams(tenantId: string, opId: string, change: (cur: OpOcc) => Partial<HealParams> | undefined): Promise<OpOcc | undefined>;
  setReplica(vnf: Vnf, index: number, patch: Partial<Replica>): Promise<Vnf>;
  failTemp(op: OpOcc, error: ErrorBody, message: string): Promise<void>;
  complete(op: OpOcc, vnf: Vnf): Promise<void>;
  stopTimeoutMs: number;
  startTimeoutMs: number;
}

const key = (a: string, b: string): string => `${a}.${b}`;
const TERMINAL: readonly OpOcc['operationState'][] = ['COMPLETED', 'FAILED', 'ROLLED_BACK'];
/** blocker(): the group cannot be judged yet (a drain still starting its HEALs). */
const PENDING = 'pending';
/** How long a drain's HEAL waits for the drain to start its VM peers' HEALs. */
const DRAIN_START_MS = 60_000;
const nameOf = (a: Allocation): string => `VNF ${a.vnfName ?? a.vnfId} replica ${a.replica}`;

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
  /** Per tenant: claiming a group (reading the others' claims, writing one's own) is one step at a time. */
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(private readonly d: MigratorDeps) {}

  /** The replicas a migrating HEAL moves. */
  static which(op: OpOcc): number[] {
    const p = op.params;
    return p.replica !== undefined ? [p.replica] : (p.replicas ?? []);
  }

  /** Why these replicas cannot migrate (undefined: they can). */
  async blocker(op: OpOcc, vnf: Vnf, which: number[]): Promise<string | undefined> {
    if (!this.d.nodeRequest) return 'this scheduler has no NATS connection to the nodes';
    if (which.length === 0) return 'no replica named';
    for (const i of which) {
      const r = vnf.replicas[i];
      if (!r?.allocId || !r.nodeId || r.state !== 'RUNNING') return `replica ${i} is not RUNNING`;
      const a = await this.d.placement.findAllocation(r.allocId);
      if (!a) return `replica ${i} has no allocation`;
      if (a.interfaces.some((x) => x.type === 'sriov')) return `replica ${i} has SR-IOV (VFIO) NICs: a VFIO VM cannot migrate`;
      if (a.interfaces.some((x) => x.type === 'macvtap')) return `replica ${i} has macvtap NICs (their fd cannot be handed over)`;
      const vm = await this.vmOf(a);
      for (const o of vm) {
        if (o.allocId === a.allocId) continue;
        const what = `replica ${i} shares its tenant VM on node ${a.nodeId} with ${nameOf(o)}`;
        if (o.interfaces.some((x) => x.type === 'sriov' || x.type === 'macvtap')) return `${what}, whose SR-IOV/macvtap NICs cannot migrate`;
        if (o.desired === 'stopped') return `${what}, which is being stopped`;
        if (!(await this.coveringOp(op, o))) {
          if (await this.drainPending(op, o)) return PENDING;
          return `${what}, which no live-migrating HEAL moves (they move as one: nodes.drain moves the whole VM)`;
        }
      }
      // the source's node agent must serve live migration (an older or simulated agent does not answer)
      let reply: NodeMigrateReply;
      try {
        reply = await this.d.nodeRequest(a.nodeId, { tenantId: a.tenantId, allocId: a.allocId, action: 'check' }, 5000);
      } catch (err) {
        return `the node agent of ${a.nodeId} does not serve live migration (${(err as Error).message})`;
      }
      if (vm.length > 1) {
        const want = vm.map((o) => o.allocId).sort();
        const got = [...(reply.members ?? [])].sort();
        if (!reply.members) return `replica ${i} shares its tenant VM with ${vm.length - 1} other replica(s) and the node agent of ${a.nodeId} does not migrate several replicas as one`;
        if (got.join() !== want.join()) return `the node agent of ${a.nodeId} says its tenant VM holds ${got.join(', ')}, the ledger ${want.join(', ')}: not migrated`;
      }
    }
    return undefined;
  }

  /** Drives the migration of every replica in turn; returns 'restart' when the caller should restart instead. */
  async drive(op: OpOcc, vnf: Vnf): Promise<'restart' | void> {
    if (op.params?.mode === 'restart') return 'restart';
    const which = Migrator.which(op);
    if (op.params?.mode !== 'migrate') {
      // replicas a group another HEAL drives takes along (or took along already) need no check of their own
      const claimed = await Promise.all(which.map(async (i) => this.migrations(op)[String(i)]?.phase === 'done' || !!(await this.driverOf(op, vnf.id, i))));
      const why = claimed.every(Boolean) ? undefined : await this.blocker(op, vnf, which);
      if (why === PENDING) return; // the drain is still starting the HEALs of the VM's other replicas: next tick
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
      const res = m?.drivenBy ? await this.follow(op, i, m) : await this.step(op, vnf, i);
      if (res === 'wait' || res === 'ended') return;
      if (res === 'restart') return 'restart';
      op = await this.fresh(op);
      vnf = (await this.d.store.vnfs.get(key(vnf.tenantId, vnf.id)))?.value ?? vnf;
    }
    op = await this.fresh(op);
    for (const i of which) {
      const m = this.migrations(op)[String(i)];
      if (m?.drivenBy) await this.d.note(op, `replica ${i} moved with its tenant VM by op ${m.drivenBy}: node ${m.from} -> node ${m.to} (allocation ${m.allocId})`);
    }
    const ms = which.map((i) => this.migrations(op)[String(i)]).filter((m): m is Migration => !!m);
    const downtimes = ms.map((m) => m.downtimeMs).filter((x): x is number => typeof x === 'number');
    if (downtimes.length) await this.d.setParams(op, { qemuDowntimeMs: Math.max(...downtimes) });
    await this.d.complete(op, vnf);
  }

  private locked<T>(tenantId: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.locks.get(tenantId) ?? Promise.resolve()).then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(tenantId, tail);
    void tail.then(() => {
      if (this.locks.get(tenantId) === tail) this.locks.delete(tenantId);
    });
    return run;
  }

  /** Every replica in the tenant VM `a` runs in (the tenant's allocations on its node), `a` first. */
  private async vmOf(a: Allocation): Promise<Allocation[]> {
    const others = (await this.d.store.allocs.list(`${a.nodeId}.>`)).map((e) => e.value).filter((o) => o.tenantId === a.tenantId && o.allocId !== a.allocId);
    return [a, ...others.sort((x, y) => x.allocId.localeCompare(y.allocId))];
  }

  /** The open live-migrating HEAL that moves this allocation's replica (the one its VNF is busy with), if any. */
  private async coveringOp(self: OpOcc, a: Allocation): Promise<OpOcc | undefined> {
    if (a.vnfId === self.vnfId) return Migrator.which(self).includes(a.replica) ? self : undefined;
    const vnf = (await this.d.store.vnfs.get(key(a.tenantId, a.vnfId)))?.value;
    if (!vnf?.activeOpOccId || vnf.replicas[a.replica]?.allocId !== a.allocId) return undefined;
    const op = (await this.d.store.opoccs.get(key(a.tenantId, vnf.activeOpOccId)))?.value;
    // a FAILED_TEMP one still owns its VNF (it follows a failed group whose driver is retried)
    if (op?.operation !== 'HEAL' || TERMINAL.includes(op.operationState)) return undefined;
    if (op.params.migrate !== true || op.params.mode === 'restart' || !Migrator.which(op).includes(a.replica)) return undefined;
    return op;
  }

  /**
   * A drain of the member's node that has not started the member's HEAL yet: the drain starts one per VNF on the
   * node, one after the other, and the leader may drive the first before the last exists. True while the member's
   * VNF is idle and the drain began less than DRAIN_START_MS ago (a drain cut off midway does not hold it longer).
   */
  private async drainPending(self: OpOcc, a: Allocation): Promise<boolean> {
    if (self.params.reason !== 'drain' || self.params.fromNode !== a.nodeId || Date.now() - Date.parse(self.startTime) > DRAIN_START_MS) return false;
    const vnf = (await this.d.store.vnfs.get(key(a.tenantId, a.vnfId)))?.value;
    return !!vnf && !vnf.activeOpOccId && vnf.replicas[a.replica]?.allocId === a.allocId;
  }

  /** The HEAL (not this replica's own record) whose group claims VNF `vnfId`'s replica `i` and has not moved it yet. */
  private async driverOf(self: OpOcc, vnfId: string, i: number): Promise<OpOcc | undefined> {
    for (const e of await this.d.store.opoccs.list(`${self.tenantId}.>`)) {
      const o = e.value;
      if (o.operation !== 'HEAL' || TERMINAL.includes(o.operationState) || o.params.mode === 'restart') continue;
      for (const [k, rec] of Object.entries(o.params.migrations ?? {})) {
        if (o.id === self.id && k === String(i) && o.vnfId === vnfId) continue;
        if (rec.phase !== 'done' && rec.group?.some((g) => g.vnfId === vnfId && g.replica === i)) return o;
      }
    }
    return undefined;
  }

  private async fresh(op: OpOcc): Promise<OpOcc> {
    const cur = (await this.d.store.opoccs.get(key(op.tenantId, op.id)))?.value;
    return cur?.operation === 'HEAL' ? cur : op;
  }

  private migrations(op: OpOcc): Record<string, Migration> {
    return op.params.migrations ?? {};
  }

  /** Writes replica `i`'s record into HEAL `opId` (CAS); `unless` the current record says otherwise. */
  private async saveInto(tenantId: string, opId: string, i: number, m: Migration, unless?: (cur: Migration | undefined) => boolean): Promise<OpOcc | undefined> {
    return this.d.updateParams(tenantId, opId, (cur) => {
      if (cur.operation !== 'HEAL') return undefined;
      const all = cur.params.migrations ?? {};
      if (unless?.(all[String(i)])) return undefined;
      return { migrations: { ...all, [String(i)]: m } };
    });
  }

  private async save(op: OpOcc, i: number, m: Migration, unless?: (cur: Migration | undefined) => boolean): Promise<OpOcc> {
    return (await this.saveInto(op.tenantId, op.id, i, m, unless)) ?? (await this.fresh(op));
  }

  private async status(nodeId: string, allocId: string): Promise<ReplicaStatus | undefined> {
    return (await this.d.store.status.get(key(nodeId, allocId)))?.value;
  }

  /** The members a record moves: its group, or the replica alone. */
  private members(op: OpOcc, vnf: Vnf, i: number, m: Migration): MigrationGroupEntry[] {
    return m.group ?? [{ vnfId: vnf.id, replica: i, opOccId: op.id, source: m.source ?? vnf.replicas[i]?.allocId ?? '', allocId: m.allocId ?? `${vnf.id}-${i}-${m.gen}`, gen: m.gen }];
  }

  /**
   * A replica another HEAL moves with its tenant VM: done once the driver wrote `done` here (drive() sees it);
   * restarts when the driver restarts, ends FAILED_TEMP when it does; drives it itself when the driver ended.
   */
  private async follow(op: OpOcc, i: number, m: Migration): Promise<'wait' | 'ended' | 'restart'> {
    const drv = (await this.d.store.opoccs.get(key(op.tenantId, m.drivenBy!)))?.value;
    const claims =
      drv?.operation === 'HEAL' && Object.values(drv.params.migrations ?? {}).some((rec) => rec.phase !== 'done' && rec.group?.some((g) => g.vnfId === op.vnfId && g.replica === i));
    const reset = (): Promise<OpOcc> => this.save(op, i, { gen: m.gen, phase: 'place' }, (cur) => cur?.phase === 'done' || cur?.drivenBy !== m.drivenBy);
    if (drv?.operation !== 'HEAL' || TERMINAL.includes(drv.operationState) || (!claims && drv.params.mode !== 'restart')) {
      // the driver ended (or dropped the group) without moving this replica: this HEAL moves it (next tick)
      await reset();
      await this.d.note(op, `replica ${i}: op ${m.drivenBy} no longer moves its tenant VM; this HEAL takes it over`);
      return 'wait';
    }
    if (drv.params.mode === 'restart') {
      // the restart's generation is past every one the driver tried for this replica
      const tried = Object.values(drv.params.migrations ?? {}).flatMap((rec) => rec.group ?? []).filter((g) => g.vnfId === op.vnfId && g.replica === i);
      op = await this.save(op, i, { ...m, gen: Math.max(m.gen, ...tried.map((g) => g.gen)) });
      return this.toRestart(op, `replica ${i} moves with its tenant VM, which op ${drv.id} restarts instead (${drv.params.restartReason ?? '?'})`);
    }
    if (drv.operationState === 'FAILED_TEMP') {
      await reset();
      const error = drv.error ?? { code: 'UNAVAILABLE', message: 'the migration of the tenant VM failed' };
      await this.d.failTemp(op, error, `replica ${i}: the migration of its tenant VM (driven by op ${drv.id} of VNF ${drv.vnfId}) failed: ${error.message}; retry op ${drv.id} first`);
      return 'ended';
    }
    return 'wait';
  }

  /** Claims the group of replica `i`'s tenant VM (or finds the HEAL that did); under the tenant's lock. */
  private async claim(op: OpOcc, vnf: Vnf, i: number, m: Migration, src: Allocation): Promise<{ m: Migration; op: OpOcc } | { driver: OpOcc } | { why: string } | { pending: true }> {
    return this.locked(op.tenantId, async () => {
      const drv = await this.driverOf(op, vnf.id, i);
      if (drv) return { driver: drv };
      const vm = await this.vmOf(src);
      if (vm.length === 1) {
        if (!m.group) return { m, op };
        const { group: _g, ...single } = m;
        return { m: single, op: await this.save(op, i, single) };
      }
      const group: MigrationGroupEntry[] = [];
      for (const a of vm) {
        const cover = await this.coveringOp(op, a);
        if (!cover && (await this.drainPending(op, a))) return { pending: true };
        if (!cover) return { why: `replica ${i} shares its tenant VM on node ${src.nodeId} with ${nameOf(a)}, which no live-migrating HEAL moves (they move as one)` };
        const old = m.group?.find((g) => g.source === a.allocId);
        const owner = a.vnfId === vnf.id ? vnf : (await this.d.store.vnfs.get(key(a.tenantId, a.vnfId)))?.value;
        const gen = a.allocId === src.allocId ? m.gen : (old?.gen ?? (owner?.replicas[a.replica]?.generation ?? 0) + 1);
        group.push({ vnfId: a.vnfId, replica: a.replica, opOccId: cover.id, source: a.allocId, allocId: `${a.vnfId}-${a.replica}-${gen}`, gen });
      }
      const next: Migration = { ...m, group };
      return { m: next, op: await this.save(op, i, next) };
    });
  }

  /** One replica (with its tenant VM's other members): 'wait' (next tick), 'next' (done), 'ended' (the op ended), 'restart'. */
  private async step(op: OpOcc, vnf: Vnf, i: number): Promise<'wait' | 'next' | 'ended' | 'restart'> {
    const r = vnf.replicas[i]!;
    let m: Migration = this.migrations(op)[String(i)] ?? { gen: (r.generation ?? 0) + 1, phase: 'place' };
    const deadlineAt = op.params.deadlineAt !== undefined ? Date.parse(op.params.deadlineAt) : undefined;
    // asked again at each point it matters: sending the RAM takes long (the deadline may pass meanwhile)
    const pastDeadline = (): boolean => deadlineAt !== undefined && Date.now() > deadlineAt;
    if (m.phase === 'place') {
      if (pastDeadline()) return this.toRestart(op, `the drain's deadline passed before replica ${i} could migrate`);
      const src = r.allocId ? await this.d.placement.findAllocation(r.allocId) : null;
      if (!src) return this.toRestart(op, `replica ${i} has no allocation to migrate from`);
      const claimed = await this.claim(op, vnf, i, m, src);
      if ('why' in claimed) return this.toRestart(op, claimed.why);
      if ('pending' in claimed) return 'wait';
      if ('driver' in claimed) {
        op = await this.save(op, i, { gen: m.gen, phase: 'place', drivenBy: claimed.driver.id }, (cur) => cur?.phase === 'done');
        await this.d.note(op, `replica ${i} moves with its tenant VM: op ${claimed.driver.id} (VNF ${claimed.driver.vnfId}) drives the migration of the VM`);
        return 'wait';
      }
      ({ m, op } = claimed);
      const group = this.members(op, vnf, i, m);
      const pairs = group.map((g) => ({ fromAllocId: g.source, allocId: g.allocId }));
      const avoid = [src.nodeId, ...(op.params.fromNode !== undefined ? [op.params.fromNode] : [])];
      // the source VM as its node agent sees it now: what the destination must start for the state to load
      // (`vm`, copied unread into every destination allocation), and its members: they must still be the group's
      let vm: NodeMigrateReply['vm'];
      if (!(await Promise.all(group.map((g) => this.d.placement.findAllocation(g.allocId)))).every(Boolean)) {
        let probe: NodeMigrateReply;
        try {
          probe = await this.d.nodeRequest!(src.nodeId, { tenantId: src.tenantId, allocId: src.allocId, action: 'check' }, 5000);
        } catch (err) {
          const e = asAppError(err);
          await this.d.failTemp(op, e.toBody(), `replica ${i}: the node agent of ${src.nodeId} did not describe the VM to migrate: ${e.message}`);
          return 'ended';
        }
        const want = group.map((g) => g.source).sort();
        if (group.length > 1 && [...(probe.members ?? [])].sort().join() !== want.join()) {
          await this.releaseDests({ ...m, allocId: group[0]!.allocId });
          return this.abortToRestart(op, i, m, `the node agent of ${src.nodeId} says its tenant VM holds ${(probe.members ?? []).join(', ') || 'nothing it reports'}, the group ${want.join(', ')}`);
        }
        vm = probe.vm;
      }
      const placed: Allocation[] = [];
      for (const g of group) {
        const from = g.source === src.allocId ? src : await this.d.placement.findAllocation(g.source);
        let dest = await this.d.placement.findAllocation(g.allocId);
        const onlyNodeId = placed[0]?.nodeId;
        const giveUp = async (why: string): Promise<'restart'> => {
          await this.releaseDests({ ...m, allocId: group[0]!.allocId });
          return this.abortToRestart(op, i, m, why);
        };
        if (!from) return giveUp(`${g.vnfId} replica ${g.replica} of the tenant VM has no allocation to migrate from`);
        if (!dest) {
          const owner = g.vnfId === vnf.id ? vnf : (await this.d.store.vnfs.get(key(vnf.tenantId, g.vnfId)))?.value;
          if (!owner) return giveUp(`VNF ${g.vnfId} of the tenant VM is gone`);
          try {
            dest = await this.d.placement.placeReplica({
              tenantId: vnf.tenantId,
              vnf: owner,
              replica: g.replica,
              allocId: g.allocId,
              avoidNodeIds: avoid,
              migrateFrom: from,
              ...(group.length > 1 ? { migrationGroup: pairs } : {}),
              ...(vm ? { migrationVm: vm } : {}),
              ...(onlyNodeId !== undefined ? { onlyNodeId } : {}),
            });
          } catch (err) {
            const e = asAppError(err);
            if (e.retryable) throw err;
            if (onlyNodeId !== undefined) return giveUp(`the tenant VM's ${group.length} replicas do not fit together on node ${onlyNodeId} (${nameOf(from)}: ${e.message})`);
            await this.d.failTemp(op, e.toBody(), `replica ${i}: no destination for the live migration: ${e.message}`);
            return 'ended';
          }
        }
        if (onlyNodeId !== undefined && dest.nodeId !== onlyNodeId) return giveUp(`the tenant VM's replicas were placed on nodes ${onlyNodeId} and ${dest.nodeId}`);
        placed.push(dest);
      }
      const to = placed[0]!.nodeId;
      m = { ...m, phase: 'incoming', from: src.nodeId, to, allocId: group[0]!.allocId, source: src.allocId };
      op = await this.save(op, i, m);
      const others = group.length > 1 ? ` with the ${group.length - 1} other replica(s) of its tenant VM (${group.slice(1).map((g) => `${g.vnfId} replica ${g.replica}`).join(', ')}) as one VM` : '';
      await this.d.note(op, `replica ${i}: live migration from node ${src.nodeId} to node ${to} (allocation ${m.allocId})${others}: the destination prepares an incoming VM`);
    }
    const srcAllocId = m.source ?? r.allocId!;
    const group = this.members(op, vnf, i, m);
    const statuses = async (): Promise<(ReplicaStatus | undefined)[]> => Promise.all(group.map((g) => this.status(m.to!, g.allocId)));
    if (m.phase === 'incoming') {
      const to = m.to!;
      const sts = await statuses();
      const failed = sts.find((st) => st?.state === 'FAILED');
      if (failed) return this.abort(op, i, m, failed.error ?? { code: 'UNAVAILABLE', message: 'the destination failed' }, `the destination node ${to} failed to prepare the incoming VM`);
      if (sts.some((st) => st?.state === 'RUNNING' && st.migration?.state === 'completed')) {
        // switched over already (a previous leader's continue went through before it recorded it)
        m = { ...m, phase: 'switched' };
        op = await this.save(op, i, m);
        await this.d.note(op, `replica ${i}: node ${to} already runs the migrated VM`);
      } else if (sts.some((st) => st?.state === 'RUNNING' && !st.migration)) {
        // a destination agent that does not know `migration` booted a fresh copy: that is a restart
        return this.abortToRestart(op, i, m, `the node agent of ${to} does not take incoming migrations`);
      }
    }
    if (m.phase === 'incoming') {
      const from = m.from!;
      const to = m.to!;
      const sts = await statuses();
      const st = sts[0];
      if (!st?.migration || sts.some((x) => x?.migration?.state !== 'incoming')) {
        if (!(await this.d.placement.nodeReady(to))) return this.abort(op, i, m, { code: 'UNAVAILABLE', message: `node ${to} is not Ready` }, `the destination node ${to} stopped answering`);
        if (pastDeadline()) return this.abortToRestart(op, i, m, `the drain's deadline passed while node ${to} prepared the incoming VM`);
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
        const all = group.length > 1 ? `every replica of the tenant VM runs on node ${from}` : `the VNF runs on node ${from}`;
        return this.abort(op, i, m, asAppError(err).toBody(), `the destination node agent on ${to} did not confirm the incoming VM: migration cancelled (${cancelled}); ${all}`);
      }
      if (pastDeadline()) {
        const cancelled = await req('cancel', from, srcAllocId, 60_000).then((x) => x.state, (e: unknown) => `not confirmed (${(e as Error).message})`);
        return this.abortToRestart(op, i, m, `the drain's deadline passed before the switchover of replica ${i} (migration cancelled on node ${from}: ${cancelled})`);
      }
      let done: NodeMigrateReply;
      try {
        done = await req('continue', from, srcAllocId, 5 * 60_000);
      } catch (err) {
        // the answer may be lost although QEMU switched over: `cancel` says `completed` then (and resumes nothing)
        const cancelled = await req('cancel', from, srcAllocId, 60_000).then((x) => x.state, (e: unknown) => `not confirmed (${(e as Error).message})`);
        if (cancelled !== 'completed') return this.abort(op, i, m, asAppError(err).toBody(), `the switchover failed: migration cancelled (${cancelled})`);
        await this.d.note(op, `replica ${i}: no answer to continue (${(err as Error).message}); node ${from} says the VM switched over (cancel: completed)`);
        done = { state: 'completed' };
      }
      m = { ...m, phase: 'switched', ...(done.downtimeMs !== undefined ? { downtimeMs: done.downtimeMs } : {}), ...(done.totalMs !== undefined ? { totalMs: done.totalMs } : {}) };
      op = await this.save(op, i, m);
      await this.d.note(op, `replica ${i}: switched over to node ${to}: QEMU reported downtime ${done.downtimeMs ?? '?'} ms (migration ${done.totalMs ?? '?'} ms)`);
    }
    if (m.phase === 'switched') {
      const sts = await statuses();
      const failed = sts.find((st) => st?.state === 'FAILED');
      if (failed) {
        // the state moved but the destination could not take over: the source's paused VM runs on
        await this.d.nodeRequest!(m.from!, { tenantId: vnf.tenantId, allocId: srcAllocId, action: 'resume' }, 60_000).catch(() => undefined);
        return this.abort(op, i, m, failed.error ?? { code: 'UNAVAILABLE', message: 'the destination failed' }, `the destination on node ${m.to} failed after the switchover; the source VM was resumed`);
      }
      if (sts.some((st) => st?.state !== 'RUNNING')) return 'wait';
      // every member replica is now its destination allocation (RUNNING throughout); every source is asked to stop
      for (const [k, g] of group.entries()) {
        const owner = g.vnfId === vnf.id ? ((await this.d.store.vnfs.get(key(vnf.tenantId, vnf.id)))?.value ?? vnf) : (await this.d.store.vnfs.get(key(vnf.tenantId, g.vnfId)))?.value;
        const rep = owner?.replicas[g.replica];
        if (owner && rep && rep.allocId === g.source) {
          const st = sts[k]!;
          await this.d.setReplica(owner, g.replica, {
            state: 'RUNNING',
            nodeId: m.to!,
            allocId: g.allocId,
            generation: g.gen,
            ...(st.sandboxId ? { sandboxId: st.sandboxId } : {}),
            interfaces: rep.interfaces,
            error: undefined,
            message: `live-migrated from node ${m.from} (QEMU downtime ${m.downtimeMs ?? '?'} ms)${group.length > 1 ? ` with its tenant VM (op ${op.id})` : ''}`,
          });
        }
        const src = await this.d.placement.findAllocation(g.source);
        if (src) await this.d.store.allocs.mutate(key(src.nodeId, src.allocId), (cur) => (cur ? { ...cur, desired: 'stopped' } : undefined));
      }
      m = { ...m, phase: 'stopping' };
      op = await this.save(op, i, m);
      const who = group.length > 1 ? `the ${group.length} replicas of the tenant VM run` : `replica ${i} runs`;
      await this.d.note(op, `${who} on node ${m.to}; node ${m.from} asked to tear down the source VM`);
    }
    if (m.phase === 'stopping') {
      let pending = 0;
      for (const g of group) {
        const old = await this.d.placement.findAllocation(g.source);
        if (!old) continue;
        const st = await this.status(old.nodeId, old.allocId);
        const stopped = !st || st.state === 'STOPPED' || st.state === 'FAILED';
        const overdue = Date.now() - Date.parse(op.stateEnteredTime) > this.d.stopTimeoutMs;
        const ready = await this.d.placement.nodeReady(old.nodeId);
        if (!stopped && ready && !overdue) {
          pending++;
          continue;
        }
        await this.d.placement.releaseAllocation(old, { confirmed: stopped, keepLeases: true });
        await this.d.store.status.delete(key(old.nodeId, old.allocId));
        await this.d.note(op, `source allocation ${old.allocId} on node ${old.nodeId} ${stopped ? 'stopped and released' : 'released (stop not confirmed)'}`);
      }
      if (pending > 0) return 'wait';
      // the other members' HEALs find their replica moved and complete
      for (const g of group) {
        if (g.opOccId === op.id && g.replica === i) continue;
        const rec: Migration = { gen: g.gen, phase: 'done', from: m.from!, to: m.to!, allocId: g.allocId, source: g.source, drivenBy: op.id, ...(m.downtimeMs !== undefined ? { downtimeMs: m.downtimeMs } : {}), ...(m.totalMs !== undefined ? { totalMs: m.totalMs } : {}) };
        await this.saveInto(op.tenantId, g.opOccId, g.replica, rec);
      }
      m = { ...m, phase: 'done' };
      await this.save(op, i, m);
    }
    return 'next';
  }

  /** Releases the destination(s), records a new generation for the next try, and waits in FAILED_TEMP. */
  private async abort(op: OpOcc, i: number, m: Migration, error: ErrorBody, message: string): Promise<'ended'> {
    await this.releaseDests(m);
    op = await this.save(op, i, this.nextTry(m));
    await this.d.failTemp(op, error, `replica ${i}: ${message}`);
    return 'ended';
  }

  private async abortToRestart(op: OpOcc, i: number, m: Migration, why: string): Promise<'restart'> {
    await this.releaseDests(m);
    op = await this.save(op, i, this.nextTry(m));
    return this.toRestart(op, why);
  }

  /** The record of the next attempt: new generations (the group kept: the other members' HEALs still follow it). */
  private nextTry(m: Migration): Migration {
    const group = m.group?.map((g) => ({ ...g, gen: g.gen + 1, allocId: `${g.vnfId}-${g.replica}-${g.gen + 1}` }));
    return { gen: m.gen + 1, phase: 'place', ...(group ? { group } : {}) };
  }

  private async releaseDests(m: Migration): Promise<void> {
    const ids = m.group ? m.group.map((g) => g.allocId) : m.allocId ? [m.allocId] : [];
    for (const id of ids) {
      const dest = await this.d.placement.findAllocation(id);
      if (!dest) continue;
      const st = await this.status(dest.nodeId, dest.allocId);
      await this.d.placement.releaseAllocation(dest, { confirmed: !st || st.state === 'STOPPED', keepLeases: true });
      await this.d.store.status.delete(key(dest.nodeId, dest.allocId));
    }
  }

  private async toRestart(op: OpOcc, why: string): Promise<'restart'> {
    // the restart's allocations get generations no migration attempt used
    const cur = await this.fresh(op);
    const vnf = (await this.d.store.vnfs.get(key(op.tenantId, op.vnfId)))?.value;
    const gens = (i: number): number => {
      const rec = this.migrations(cur)[String(i)];
      const mine = rec?.group?.find((g) => g.vnfId === op.vnfId && g.replica === i)?.gen ?? 0;
      return Math.max((vnf?.replicas[i]?.generation ?? 0) + 1, (rec?.gen ?? 0) + 1, mine + 1);
    };
    const targets = Object.fromEntries(Migrator.which(cur).map((i) => [String(i), gens(i)]));
    await this.d.setParams(cur, { mode: 'restart', restartReason: why, targets });
    await this.d.note(op, `${why}: restarted instead`);
    return 'restart';
  }
}
