/**
 * ClusterState: the leader's in-memory picture of every node (views built from `edgenfv_nodes` and
 * `edgenfv_ledger`, kept current by KV watches), the placement entry point (`schedule`) and a per-node commit
 * queue that coalesces reservations into one ledger CAS per node and pipelines nodes, so that commits are not
 * limited by one KV round trip each (kube-scheduler's "assume, then bind asynchronously").
 *
 * Choosing is separate from committing: `schedule` places on the local views, applies the reservation locally
 * (the next decision already sees it), then commits it with CAS on the node's ledger. A CAS conflict (another
 * scheduler replica, the registry) re-reads that ledger, re-checks every local reservation against it, and sends
 * the ones that no longer fit back to placement.
 */
import type { KV, KvEntry, NatsConnection } from 'nats';
import type { Logger } from 'pino';
import { UnavailableError, allocKey, type Allocation, type SriovReservation } from '@edgenfv/contracts';
import type { StoredNode } from './node-record.js';
import { LEDGER_BUCKET, casPut, decodeEntry, encodeJson, getJson, isLedger, isNodeRecord, type SchedulerBuckets } from './kv.js';
import { KvFollower, type WatchReport } from '../state/follow.js';
import { KvPublisher } from './publisher.js';
import { emptyLedger, ensureAllocationRecord, type NodeLedger } from './ledger.js';
import {
  applyReservation,
  buildNodeView,
  checkReservation,
  removeReservation,
  reservationFor,
} from './node-view.js';
import { place, type PlaceOptions } from './place.js';
import type { AssignedVf, Assignment, Explanation, Filter, NodeView, PlacementRequest, PlaceResult, Reservation, Scorer } from './types.js';

export interface ClusterStateOptions {
  logger?: Logger;
  filters?: readonly Filter[];
  scorers?: readonly Scorer[];
  candidateLimit?: number;
  /** Mixed into every decision's seed (the decision seed is otherwise a hash of allocId and attempt). */
  seed?: number;
  /** Placement attempts when commits lose races; default 5. */
  maxAttempts?: number;
  /**
   * The connection the buckets use: commits then go through the lean `KvPublisher` instead of nats.js's KV
   * calls (same CAS semantics, a fraction of the client CPU). Without it, nats.js KV calls are used.
   */
  nc?: NatsConnection;
  /**
   * Checked before every ledger write: false (e.g. the leader lease was lost while a decision was in flight)
   * fails the commit with UNAVAILABLE instead of writing, so a deposed leader never commits after its successor
   * started. Default: always true.
   */
  canCommit?: () => boolean;
  /** Followers fetch the ledgers the leader changed this often (ms); default 1,000. */
  followerRefreshMs?: number;
  /** Called after each placement decision with its duration (metrics, the benchmark). */
  onDecision?: (ms: number, ok: boolean) => void;
  /** Counts skipped malformed node records / ledgers and restarted watches. */
  watchReport?: WatchReport;
}

/** A placement decision: the node, its epoch, and the concrete resources. */
export interface Decision {
  nodeId: string;
  epoch: number;
  assignment: Assignment;
}

export type ScheduleResult =
  | { ok: true; allocation: Allocation; decision: Decision; attempts: number; alreadyCommitted: boolean }
  | { ok: false; explanation: Explanation; attempts: number };

/** Builds the allocation record for a decision (MACs, IP leases, image...: the API's part). */
export type AllocationBuilder = (decision: Decision, req: PlacementRequest) => Allocation | Promise<Allocation>;

/** A reservation that lost to the ledger's current content (another writer got there first). */
export class LedgerConflictError extends Error {
  constructor(
    readonly nodeId: string,
    reason: string,
  ) {
    super(`ledger conflict on ${nodeId}: ${reason}`);
    this.name = 'LedgerConflictError';
  }
}

type QueueItem =
  | { kind: 'reserve'; res: Reservation; alloc: Allocation; resolve: () => void; reject: (e: unknown) => void }
  | { kind: 'release'; allocId: string; fence: boolean; leasesMoved?: boolean; resolve: () => void; reject: (e: unknown) => void };

interface NodeQueue {
  items: QueueItem[];
  running: boolean;
  /** Newest ledger entry seen by the watch while a flush ran. */
  seen?: { value: NodeLedger; revision: number };
}

/** FNV-1a: a decision's seed from its allocId and attempt, so that it replays independently of order. */
export function decisionSeed(allocId: string, attempt: number, base = 0): number {
  let h = 0x811c9dc5 ^ base;
  const s = `${allocId}#${attempt}`;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** The `resources` of an allocation record for a decision (what the ledger accounts for). */
export function allocationResources(req: PlacementRequest, d: Decision): Allocation['resources'] {
  const r: Allocation['resources'] = { vcpus: req.vcpus, memoryMiB: req.memoryMiB, cpuPolicy: req.cpuPolicy };
  if (d.assignment.cpus) r.cpus = d.assignment.cpus;
  if (d.assignment.numaNode !== undefined) r.numaNode = d.assignment.numaNode;
  if (d.assignment.hugepages) r.hugepages = d.assignment.hugepages;
  if (d.assignment.vmOverhead) r.vmOverhead = d.assignment.vmOverhead;
  if (req.guestDataplane) r.dataplane = req.guestDataplane;
  return r;
}

/** The `sriov` part of an allocation interface for an assigned VF. */
export function sriovOf(vf: AssignedVf): SriovReservation {
  return { pfPciAddress: vf.pfPciAddress, vfPciAddress: vf.vfPciAddress, vfIndex: vf.vfIndex, physnet: vf.physnet };
}

export class ClusterState {
  private readonly views = new Map<string, NodeView>();
  private list: NodeView[] = [];
  private readonly pos = new Map<string, number>();
  private readonly records = new Map<string, { value: StoredNode; revision: number }>();
  private readonly ledgers = new Map<string, { value: NodeLedger; revision: number }>();
  /** Reserved locally, not yet in the ledger. */
  private readonly pending = new Map<string, Map<string, Reservation>>();
  private readonly queues = new Map<string, NodeQueue>();
  private readonly allocIndex = new Map<string, string>();
  /** Local reservations found colliding while their builder still ran: their commit fails at once. */
  private readonly doomed = new Map<string, string>();
  private readonly tenantIndex = new Map<string, Set<string>>();
  private readonly watches: KvFollower[] = [];
  private readonly log: Logger | undefined;
  private stopped = false;
  private readonly pub: KvPublisher | undefined;
  private active = true;
  private readonly dirty = new Set<string>();
  private catchUpTimer: NodeJS.Timeout | undefined;
  /** Counters for metrics and the benchmark. */
  readonly stats = { ledgerWrites: 0, ledgerConflicts: 0, reservationsCommitted: 0, released: 0, maxBatch: 0, decisions: 0, nodesEvaluated: 0 };

  constructor(
    private readonly b: SchedulerBuckets,
    private readonly opts: ClusterStateOptions = {},
  ) {
    this.log = opts.logger?.child({ component: 'cluster-state' });
    this.pub = opts.nc ? new KvPublisher(opts.nc) : undefined;
  }

  private bucketName(kv: KV): string {
    return (kv as unknown as { bucket: string }).bucket;
  }

  /** Ledger CAS: the lean publisher for updates; creates go through nats.js (it handles deleted-key markers). */
  private async ledgerCas(nodeId: string, value: NodeLedger, revision: number | undefined): Promise<number | null> {
    if (this.pub && revision) return this.pub.cas(this.bucketName(this.b.ledger), nodeId, encodeJson(value), revision);
    return casPut(this.b.ledger, nodeId, value, revision);
  }

  /** CAS-creates the allocation record; an existing one (or a deleted-key marker) falls back to nats.js. */
  private async createAllocation(alloc: Allocation): Promise<void> {
    if (this.pub) {
      const rev = await this.pub.cas(this.bucketName(this.b.allocs), allocKey(alloc.nodeId, alloc.allocId), encodeJson(alloc), 0);
      if (rev !== null) return;
    }
    await ensureAllocationRecord(this.b, alloc);
  }

  /** Loads every node record and ledger and keeps following them; resolves once the initial state is in. */
  async start(): Promise<void> {
    await Promise.all([this.follow(this.b.nodes, (e) => this.onNodeEntry(e)), this.followLedgers()]);
  }

  /**
   * Ledgers: loaded with values once, then followed headers-only (revision and operation, no body): the leader's
   * own writes come back as a few bytes each instead of the whole ledger, and a foreign write is fetched.
   */
  private async followLedgers(): Promise<void> {
    const status = await this.b.ledger.status();
    const lastSeq = status.streamInfo.state.last_seq;
    let initialized!: () => void;
    const ready = new Promise<void>((r) => (initialized = r));
    let loaded = false;
    const load = await KvFollower.start({
      bucket: LEDGER_BUCKET,
      open: () => this.b.ledger.watch({ key: '>', initializedFn: () => initialized() }),
      onEntry: (e) => this.onLedgerEntry(e),
      running: () => !this.stopped && !loaded,
      logger: this.log,
      report: this.opts.watchReport,
    });
    await ready;
    loaded = true;
    load.stop();
    const w = await KvFollower.start({
      bucket: LEDGER_BUCKET,
      open: (from) => this.b.ledger.watch({ key: '>', headers_only: true, resumeFromRevision: from ?? lastSeq + 1 }),
      onEntry: (e) => this.onLedgerHeader(e),
      running: () => !this.stopped,
      logger: this.log,
      report: this.opts.watchReport,
    });
    this.watches.push(w);
  }

  private onLedgerHeader(e: KvEntry): void {
    const nodeId = e.key;
    const cur = this.ledgers.get(nodeId);
    if (cur && e.revision <= cur.revision) return; // our own write, or older
    if (e.operation !== 'PUT') {
      this.onLedgerEntry(e);
      return;
    }
    if (!this.active) {
      // A follower does not fetch every write of the leader: it catches up in batches (reads may lag ~1 s).
      this.dirty.add(nodeId);
      if (!this.catchUpTimer) {
        this.catchUpTimer = setTimeout(() => void this.catchUp(), this.opts.followerRefreshMs ?? 1000);
        this.catchUpTimer.unref();
      }
      return;
    }
    void this.refreshLedger(nodeId).catch((err) => this.log?.warn({ err, nodeId }, 'ledger refresh failed'));
  }

  private async refreshLedger(nodeId: string): Promise<void> {
    const d = await getJson<NodeLedger>(this.b.ledger, nodeId, isLedger);
    if (!d) return;
    const now = this.ledgers.get(nodeId);
    if (now && d.revision <= now.revision) return;
    const q = this.queues.get(nodeId);
    if (q?.running) {
      if (!q.seen || d.revision > q.seen.revision) q.seen = d;
      return;
    }
    this.ledgers.set(nodeId, d);
    this.rebuild(nodeId);
  }

  /** Fetches the ledgers that changed while this replica followed (16 reads in flight). */
  async catchUp(): Promise<void> {
    if (this.catchUpTimer) clearTimeout(this.catchUpTimer);
    this.catchUpTimer = undefined;
    const ids = [...this.dirty];
    this.dirty.clear();
    let i = 0;
    await Promise.all(
      Array.from({ length: Math.min(16, ids.length) }, async () => {
        while (i < ids.length) {
          const id = ids[i++];
          await this.refreshLedger(id).catch((err) => {
            this.dirty.add(id);
            this.log?.warn({ err, nodeId: id }, 'ledger catch-up failed');
          });
        }
      }),
    );
  }

  /**
   * Leader (active: follows every ledger write at once, places) or follower (catches up in batches, serves
   * reads). Becoming active first catches up, so the first decision sees every committed reservation.
   */
  async setActive(active: boolean): Promise<void> {
    this.active = active;
    if (active) await this.catchUp();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.catchUpTimer) clearTimeout(this.catchUpTimer);
    this.pub?.close();
    for (const w of this.watches) w.stop();
    this.watches.length = 0;
  }

  private async follow(kv: KV, on: (e: KvEntry) => void): Promise<void> {
    let initialized!: () => void;
    const ready = new Promise<void>((r) => (initialized = r));
    const w = await KvFollower.start({
      bucket: this.bucketName(kv),
      open: (from) => (from ? kv.watch({ key: '>', resumeFromRevision: from }) : kv.watch({ key: '>', initializedFn: () => initialized() })),
      onEntry: on,
      running: () => !this.stopped,
      logger: this.log,
      report: this.opts.watchReport,
    });
    this.watches.push(w);
    await ready;
  }

  // ---- reads ----

  get buckets(): SchedulerBuckets {
    return this.b;
  }

  nodes(): readonly NodeView[] {
    return this.list;
  }
  node(nodeId: string): NodeView | undefined {
    return this.views.get(nodeId);
  }
  nodeRecord(nodeId: string): StoredNode | undefined {
    return this.records.get(nodeId)?.value;
  }
  /** Where an allocation is reserved (ledger or in flight), if anywhere. */
  findReservation(allocId: string): { nodeId: string; reservation: Reservation; committed: boolean } | undefined {
    const nodeId = this.allocIndex.get(allocId);
    if (!nodeId) return undefined;
    const p = this.pending.get(nodeId)?.get(allocId);
    if (p) return { nodeId, reservation: p, committed: false };
    const r = this.ledgers.get(nodeId)?.value.reservations[allocId];
    return r ? { nodeId, reservation: r, committed: true } : undefined;
  }
  /** Whether a reservation other than `except` (fenced or not) holds the IP lease owner. */
  leaseHeld(owner: string, except: ReadonlySet<string>): boolean {
    for (const l of this.ledgers.values()) {
      for (const r of Object.values(l.value.reservations)) if (!except.has(r.allocId) && r.ipOwners?.includes(owner)) return true;
    }
    return false;
  }
  /** Nodes where the tenant already has a VM. */
  tenantNodes(tenantId: string): NodeView[] {
    const ids = this.tenantIndex.get(tenantId);
    if (!ids) return [];
    const out: NodeView[] = [];
    for (const id of ids) {
      const v = this.views.get(id);
      if (v) out.push(v);
    }
    return out;
  }

  /** A decision only (no reservation): for dry runs and explanations. */
  place(req: PlacementRequest, seed: number): PlaceResult {
    const o: PlaceOptions = { seed, first: this.tenantNodes(req.tenantId) };
    if (this.opts.filters) o.filters = this.opts.filters;
    if (this.opts.scorers) o.scorers = this.opts.scorers;
    if (this.opts.candidateLimit !== undefined) o.candidateLimit = this.opts.candidateLimit;
    return place(req, this.list, o);
  }

  // ---- schedule / release ----

  /**
   * Places one replica and commits its reservation and allocation record. Idempotent per allocId: when the
   * allocId is already reserved (a new leader finishing an operation), the existing allocation is returned, or
   * built and written if a crash lost it, and nothing is booked twice.
   */
  async schedule(req: PlacementRequest, allocId: string, build: AllocationBuilder): Promise<ScheduleResult> {
    const existing = this.findReservation(allocId);
    if (existing) {
      if (!existing.committed) throw new UnavailableError(`allocation ${allocId} is being committed already`);
      const rec = await getJson<Allocation>(this.b.allocs, allocKey(existing.nodeId, allocId));
      const decision: Decision = { nodeId: existing.nodeId, epoch: existing.reservation.epoch, assignment: this.assignmentOf(req, existing.nodeId, existing.reservation) };
      if (rec) return { ok: true, allocation: rec.value, decision, attempts: 0, alreadyCommitted: true };
      const alloc = await build(decision, req);
      await ensureAllocationRecord(this.b, alloc);
      return { ok: true, allocation: alloc, decision, attempts: 0, alreadyCommitted: true };
    }
    const max = this.opts.maxAttempts ?? 5;
    let lastConflict = '';
    for (let attempt = 1; attempt <= max; attempt++) {
      const t0 = performance.now();
      const r = this.place(req, decisionSeed(allocId, attempt, this.opts.seed ?? 0));
      this.opts.onDecision?.(performance.now() - t0, r.ok);
      this.stats.decisions++;
      this.stats.nodesEvaluated += r.ok ? r.evaluated : this.list.length;
      if (!r.ok) return { ok: false, explanation: r.explanation, attempts: attempt };
      const decision: Decision = { nodeId: r.nodeId, epoch: r.node.epoch, assignment: r.assignment };
      const res = reservationFor(req, allocId, decision.epoch, r.assignment);
      this.reserveLocal(r.nodeId, res);
      let alloc: Allocation;
      try {
        alloc = await build(decision, req);
      } catch (err) {
        this.unreserveLocal(r.nodeId, allocId);
        throw err;
      }
      // the leases the allocation holds: its own, or those it carries (a migrated replica keeps its source's)
      const owners = alloc.leaseOwners ?? alloc.interfaces.filter((i) => i.network && (i.ips?.length ?? 0) > 0).map((i) => `${allocId}.${i.name}`);
      if (owners.length > 0) res.ipOwners = owners;
      try {
        await this.enqueue(r.nodeId, { kind: 'reserve', res, alloc });
        return { ok: true, allocation: alloc, decision, attempts: attempt, alreadyCommitted: false };
      } catch (err) {
        if (!(err instanceof LedgerConflictError)) throw err;
        lastConflict = err.message;
        this.log?.info({ nodeId: r.nodeId, allocId, attempt, reason: err.message }, 'commit lost a race; placing again');
      }
    }
    throw new UnavailableError(`placement of ${allocId} lost ${max} commit races; retry (last: ${lastConflict})`);
  }

  /**
   * Releases an allocation idempotently: deletes its allocation record, then drops its reservation from the
   * ledger, or fences it (keeps it booked) when its node is lost or moved to a newer epoch. `leasesMoved`: its IP
   * leases belong to another allocation now (a live migration's other end): a fenced reservation keeps none of them,
   * so freeing it later frees no address.
   */
  async release(allocId: string, opts: { nodeId?: string; fence?: boolean; leasesMoved?: boolean } = {}): Promise<{ released: boolean; fenced: boolean }> {
    const found = this.findReservation(allocId);
    const nodeId = opts.nodeId ?? found?.nodeId;
    if (!nodeId) return { released: false, fenced: false };
    await this.b.allocs.delete(allocKey(nodeId, allocId));
    const res = found?.reservation ?? this.ledgers.get(nodeId)?.value.reservations[allocId];
    if (!res) return { released: false, fenced: false };
    const view = this.views.get(nodeId);
    const fence = opts.fence ?? (!view || view.health !== 'Ready' || view.epoch > res.epoch);
    if (fence && res.fenced && !(opts.leasesMoved && res.ipOwners)) return { released: false, fenced: true };
    await this.enqueue(nodeId, { kind: 'release', allocId, fence, ...(opts.leasesMoved ? { leasesMoved: true } : {}) });
    return { released: true, fenced: fence };
  }

  /** Rebuilds the assignment a reservation holds (interfaces in request order). */
  private assignmentOf(req: PlacementRequest, nodeId: string, r: Reservation): Assignment {
    const view = this.views.get(nodeId);
    const vfs: AssignedVf[] = r.vfs.map((pci, i) => {
      const s = view?.vfByPci.get(pci);
      const d = req.vfs[i];
      return {
        interface: d?.interface ?? `vf${i}`,
        physnet: s?.physnet ?? d?.physnet ?? '',
        pfPciAddress: s?.pfPciAddress ?? '',
        vfIndex: s?.vfIndex ?? -1,
        vfPciAddress: pci,
        numaNode: s?.numaNode ?? -1,
      };
    });
    const a: Assignment = { vfs, numaAligned: false };
    if (r.numaNode !== undefined) a.numaNode = r.numaNode;
    if (r.cpus) a.cpus = r.cpus;
    if (r.hugepages) a.hugepages = r.hugepages;
    if (r.vmOverhead) a.vmOverhead = r.vmOverhead;
    a.numaAligned = vfs.every((v) => v.numaNode === a.numaNode) && (!a.hugepages || a.hugepages.numaNode === a.numaNode);
    return a;
  }

  private reserveLocal(nodeId: string, res: Reservation): void {
    let p = this.pending.get(nodeId);
    if (!p) this.pending.set(nodeId, (p = new Map<string, Reservation>()));
    p.set(res.allocId, res);
    this.allocIndex.set(res.allocId, nodeId);
    const view = this.views.get(nodeId)!;
    applyReservation(view, res);
    this.indexTenant(res.tenantId, nodeId, view);
  }

  private unreserveLocal(nodeId: string, allocId: string): void {
    this.pending.get(nodeId)?.delete(allocId);
    const view = this.views.get(nodeId);
    const r = view ? removeReservation(view, allocId) : undefined;
    if (!this.ledgers.get(nodeId)?.value.reservations[allocId]) this.allocIndex.delete(allocId);
    if (r && view) this.indexTenant(r.tenantId, nodeId, view);
  }

  private indexTenant(tenantId: string, nodeId: string, view: NodeView): void {
    let s = this.tenantIndex.get(tenantId);
    if (view.tenants.has(tenantId)) {
      if (!s) this.tenantIndex.set(tenantId, (s = new Set()));
      s.add(nodeId);
    } else if (s) {
      s.delete(nodeId);
      if (s.size === 0) this.tenantIndex.delete(tenantId);
    }
  }

  private enqueue(nodeId: string, item: Omit<Extract<QueueItem, { kind: 'reserve' }>, 'resolve' | 'reject'> | Omit<Extract<QueueItem, { kind: 'release' }>, 'resolve' | 'reject'>): Promise<void> {
    if (item.kind === 'reserve') {
      const why = this.doomed.get(item.res.allocId);
      if (why !== undefined) {
        this.doomed.delete(item.res.allocId);
        return Promise.reject(new LedgerConflictError(nodeId, why));
      }
    }
    let q = this.queues.get(nodeId);
    if (!q) this.queues.set(nodeId, (q = { items: [], running: false }));
    const p = new Promise<void>((resolve, reject) => q.items.push({ ...item, resolve, reject }));
    if (!q.running) void this.flush(nodeId, q);
    return p;
  }

  /** One ledger CAS for everything queued on the node, repeated until the queue is empty. */
  private async flush(nodeId: string, q: NodeQueue): Promise<void> {
    q.running = true;
    try {
      while (q.items.length > 0) {
        let batch = q.items.splice(0);
        let refreshed = false;
        if (this.opts.canCommit && !this.opts.canCommit()) {
          for (const it of batch) {
            if (it.kind === 'reserve') this.unreserveLocal(nodeId, it.res.allocId);
            it.reject(new UnavailableError('this scheduler replica is not the leader any more; nothing was committed'));
          }
          continue;
        }
        for (;;) {
          const cached = this.ledgers.get(nodeId);
          const base = cached?.value ?? emptyLedger(nodeId, this.views.get(nodeId)?.epoch ?? 0);
          const reservations = { ...base.reservations };
          for (const it of batch) {
            if (it.kind === 'reserve') reservations[it.res.allocId] = it.res;
            else if (it.fence) {
              const r = reservations[it.allocId];
              if (r) reservations[it.allocId] = { ...(it.leasesMoved ? withoutLeases(r) : r), fenced: true };
            } else delete reservations[it.allocId];
          }
          const stale = batch.filter((it) => it.kind === 'reserve' && it.res.epoch !== base.epoch);
          if (stale.length > 0 && !refreshed) {
            // our copy of the ledger may be behind the node record: read it before judging
            refreshed = true;
            const fresh = await getJson<NodeLedger>(this.b.ledger, nodeId);
            if (fresh) this.ledgers.set(nodeId, fresh);
            continue;
          }
          if (stale.length > 0) {
            for (const it of stale) this.failReserve(nodeId, it, `node is at epoch ${base.epoch}`);
            batch = batch.filter((it) => !stale.includes(it));
            continue;
          }
          if (batch.length === 0) break;
          const next: NodeLedger = { ...base, reservations, updatedAt: new Date().toISOString() };
          let rev: number | null;
          try {
            rev = await this.ledgerCas(nodeId, next, cached?.revision);
          } catch (err) {
            for (const it of batch) {
              if (it.kind === 'reserve') this.unreserveLocal(nodeId, it.res.allocId);
              it.reject(err);
            }
            batch = [];
            break;
          }
          this.stats.ledgerWrites++;
          if (rev !== null) {
            this.ledgers.set(nodeId, { value: next, revision: rev });
            this.stats.maxBatch = Math.max(this.stats.maxBatch, batch.length);
            break;
          }
          this.stats.ledgerConflicts++;
          // Lost the CAS: read the ledger as it is, rebuild the view, re-check what is still ours.
          const fresh = await getJson<NodeLedger>(this.b.ledger, nodeId);
          if (fresh) this.ledgers.set(nodeId, fresh);
          else this.ledgers.delete(nodeId);
          batch = this.recheck(nodeId, batch);
          if (batch.length === 0) break;
        }
        const pend = this.pending.get(nodeId);
        for (const it of batch) {
          if (it.kind === 'reserve') {
            this.stats.reservationsCommitted++;
            pend?.delete(it.res.allocId);
            const alloc = it.alloc;
            this.createAllocation(alloc).then(it.resolve, it.reject);
          } else {
            const view = this.views.get(nodeId);
            if (!it.fence) {
              this.allocIndex.delete(it.allocId);
              const r = view ? removeReservation(view, it.allocId) : undefined;
              if (r && view) this.indexTenant(r.tenantId, nodeId, view);
            } else {
              const r = view?.reservations.get(it.allocId);
              if (r) r.fenced = true;
              if (r && it.leasesMoved) delete r.ipOwners;
            }
            this.stats.released++;
            it.resolve();
          }
        }
      }
    } finally {
      q.running = false;
      const seen = q.seen;
      q.seen = undefined;
      const cur = this.ledgers.get(nodeId);
      if (seen && (!cur || seen.revision > cur.revision)) {
        this.ledgers.set(nodeId, seen);
        this.rebuild(nodeId);
      }
    }
  }

  private failReserve(nodeId: string, it: QueueItem, reason: string): void {
    if (it.kind !== 'reserve') return;
    this.unreserveLocal(nodeId, it.res.allocId);
    it.reject(new LedgerConflictError(nodeId, reason));
  }

  /**
   * After a lost CAS: rebuilds the node's view from the ledger just read plus what is still ours, re-checking
   * each local reservation (this batch first, then the queued ones); those that no longer fit are rejected.
   */
  private recheck(nodeId: string, batch: QueueItem[]): QueueItem[] {
    const rec = this.records.get(nodeId);
    const ledger = this.ledgers.get(nodeId)?.value;
    const pend = this.pending.get(nodeId) ?? new Map<string, Reservation>();
    if (!rec) {
      for (const it of batch) this.failReserve(nodeId, it, 'node is gone');
      return batch.filter((it) => it.kind === 'release');
    }
    const view = this.freshView(rec.value, ledger, []);
    const keep: QueueItem[] = [];
    const check = (res: Reservation): string | undefined => {
      if (ledger && ledger.reservations[res.allocId]) return undefined; // already in (idempotent)
      const v = checkReservation(view, res);
      if (!v.ok) return v.reason;
      applyReservation(view, res);
      return undefined;
    };
    for (const it of batch) {
      if (it.kind === 'release') {
        keep.push(it);
        continue;
      }
      const why = check(it.res);
      if (why) {
        pend.delete(it.res.allocId);
        this.allocIndex.delete(it.res.allocId);
        it.reject(new LedgerConflictError(nodeId, why));
      } else keep.push(it);
    }
    // Everything else still only local: queued behind this batch, or decided and waiting for its builder.
    const queued = this.queues.get(nodeId)?.items ?? [];
    const inBatch = new Set(keep.flatMap((it) => (it.kind === 'reserve' ? [it.res.allocId] : [])));
    for (const res of [...pend.values()]) {
      if (inBatch.has(res.allocId)) continue;
      const why = check(res);
      if (!why) continue;
      pend.delete(res.allocId);
      this.allocIndex.delete(res.allocId);
      const qi = queued.findIndex((it) => it.kind === 'reserve' && it.res.allocId === res.allocId);
      if (qi >= 0) queued.splice(qi, 1)[0].reject(new LedgerConflictError(nodeId, why));
      else this.doomed.set(res.allocId, why);
    }
    this.install(nodeId, view);
    return keep;
  }

  private freshView(rec: StoredNode, ledger: NodeLedger | undefined, extra: Iterable<Reservation>): NodeView {
    // A ledger ahead of the record means the node is being fenced (declared lost): treat it as NotReady now.
    const fencing = ledger !== undefined && ledger.epoch > rec.epoch;
    const view = buildNodeView(
      {
        nodeId: rec.id,
        epoch: fencing ? ledger.epoch : rec.epoch,
        health: fencing ? 'NotReady' : rec.health,
        cordoned: rec.cordoned,
        draining: rec.draining ?? false,
        inventory: rec.inventory,
      },
      ledger ? Object.values(ledger.reservations) : [],
    );
    for (const r of extra) if (!view.reservations.has(r.allocId)) applyReservation(view, r);
    return view;
  }

  /** Rebuilds a node's view from its record, its ledger and the local pending reservations. */
  private rebuild(nodeId: string): void {
    const rec = this.records.get(nodeId);
    if (!rec) return;
    const view = this.freshView(rec.value, this.ledgers.get(nodeId)?.value, this.pending.get(nodeId)?.values() ?? []);
    this.install(nodeId, view);
  }

  private install(nodeId: string, view: NodeView): void {
    const old = this.views.get(nodeId);
    if (old) {
      for (const id of old.reservations.keys()) if (!view.reservations.has(id) && this.allocIndex.get(id) === nodeId) this.allocIndex.delete(id);
      for (const t of old.tenants.keys()) this.indexTenant(t, nodeId, view);
    }
    for (const id of view.reservations.keys()) this.allocIndex.set(id, nodeId);
    for (const t of view.tenants.keys()) this.indexTenant(t, nodeId, view);
    this.views.set(nodeId, view);
    const i = this.pos.get(nodeId);
    if (i === undefined) {
      this.pos.set(nodeId, this.list.length);
      this.list.push(view);
    } else this.list[i] = view;
  }

  private removeNode(nodeId: string): void {
    const i = this.pos.get(nodeId);
    if (i === undefined) return;
    const old = this.views.get(nodeId)!;
    this.views.delete(nodeId);
    this.pos.delete(nodeId);
    const last = this.list.pop()!;
    if (last !== old) {
      this.list[i] = last;
      this.pos.set(last.nodeId, i);
    }
    for (const t of old.tenants.keys()) this.tenantIndex.get(t)?.delete(nodeId);
  }

  private onNodeEntry(e: KvEntry): void {
    const nodeId = e.key;
    const d = decodeEntry<StoredNode>(e, isNodeRecord);
    if (!d) {
      this.records.delete(nodeId);
      this.removeNode(nodeId);
      return;
    }
    const old = this.records.get(nodeId);
    if (old && old.revision >= d.revision) return;
    this.records.set(nodeId, d);
    const view = this.views.get(nodeId);
    if (view && old && JSON.stringify(old.value.inventory) === JSON.stringify(d.value.inventory)) {
      view.health = d.value.health;
      view.cordoned = d.value.cordoned;
      view.draining = d.value.draining ?? false;
      view.epoch = d.value.epoch;
      return;
    }
    this.rebuild(nodeId);
  }

  private onLedgerEntry(e: KvEntry): void {
    const nodeId = e.key;
    const cur = this.ledgers.get(nodeId);
    if (cur && e.revision <= cur.revision) return; // our own write, or older
    const d = decodeEntry<NodeLedger>(e, isLedger);
    const q = this.queues.get(nodeId);
    if (q?.running) {
      if (d && (!q.seen || d.revision > q.seen.revision)) q.seen = d;
      return;
    }
    if (d) this.ledgers.set(nodeId, d);
    else this.ledgers.delete(nodeId);
    this.rebuild(nodeId);
  }
}

function withoutLeases(r: Reservation): Reservation {
  const { ipOwners: _o, ...rest } = r;
  return rest;
}
