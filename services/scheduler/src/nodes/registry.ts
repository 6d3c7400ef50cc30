/**
 * The node registry: serves `nfv.v1.internal.nodes.<n>.register` (any scheduler replica, queue group) and follows
 * heartbeats (every replica, so that a new leader already knows who is alive). The active replica (the leader)
 * declares a node NotReady when its heartbeats stop for longer than the grace (default 10 s, Nomad's heartbeat
 * grace) and fences it: the node's epoch moves on in its record and its ledger, and `onNodeLost` hands the
 * allocations it held to whoever heals them. A node that comes back registers again, learns the new epoch, and
 * tears down the sandboxes it no longer owns; the reservations of replicas healed away meanwhile stay booked
 * (fenced) until it confirms, so their VFs are never handed out twice.
 */
import type { KvEntry, Msg, NatsConnection, Subscription } from 'nats';
import type { Logger } from 'pino';
import {
  AppError,
  InvalidArgumentError,
  NotFoundError,
  asAppError,
  internalSubjects,
  isDnsLabel,
  replyAllowed,
  fromClient,
  type Allocation,
  type Heartbeat,
  type HeartbeatReply,
  type RegisterReply,
  type RegisterRequest,
} from '@edgenfv/contracts';
import { casPut, decodeEntry, getJson, isNodeRecord, type SchedulerBuckets } from '../placement/kv.js';
import { bumpLedgerEpoch, listNodeAllocations, unfenceReservations } from '../placement/ledger.js';
import type { Reservation } from '../placement/types.js';
import type { StoredNode } from '../placement/node-record.js';
import { KvFollower, type WatchReport } from '../state/follow.js';

export interface NodeRegistryOptions {
  logger?: Logger;
  /** Heartbeats may stop this long before the node is declared NotReady; default 10,000 ms. */
  graceMs?: number;
  /** How often the active replica looks for expired nodes; default min(1,000, grace/4) ms. */
  checkIntervalMs?: number;
  /** Told to agents in the register reply; default grace/4. */
  heartbeatIntervalMs?: number;
  /** Queue group of the register handlers of all scheduler replicas. */
  queueGroup?: string;
  now?: () => number;
  /** Counts skipped malformed node records and restarted watches. */
  watchReport?: WatchReport;
}

export interface NodeLostEvent {
  nodeId: string;
  /** The epoch the node had, and the new one it gets when it returns. */
  previousEpoch: number;
  epoch: number;
  reason: string;
  /** The live reservations it held, with their allocation records (null if a crash lost the record). */
  allocations: { reservation: Reservation; allocation: Allocation | null }[];
}

export type NodeLostHook = (ev: NodeLostEvent) => void | Promise<void>;
/** Fenced reservations freed because the returned node no longer runs them (release their IP leases now). */
export type FencedFreedHook = (nodeId: string, freed: Reservation[]) => void | Promise<void>;

const enc = new TextEncoder();
const dec = new TextDecoder();

function reply(msg: Msg, body: unknown): void {
  // only into an inbox: a node's request never makes the scheduler write into KV or a stream (docs/security.md)
  if (msg.reply && replyAllowed(msg.subject, msg.reply)) msg.respond(enc.encode(JSON.stringify(body)));
}

export class NodeRegistry {
  private readonly log: Logger | undefined;
  private readonly graceMs: number;
  private readonly now: () => number;
  private readonly subs: Subscription[] = [];
  private watch: KvFollower | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly records = new Map<string, { value: StoredNode; revision: number }>();
  private readonly lastSeen = new Map<string, number>();
  private readonly lastUnfence = new Map<string, number>();
  private readonly hooks = new Set<NodeLostHook>();
  private readonly freedHooks = new Set<FencedFreedHook>();
  private readonly busy = new Set<string>();
  private active = false;
  private activeSince = 0;
  private stopped = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly b: SchedulerBuckets,
    private readonly opts: NodeRegistryOptions = {},
  ) {
    this.log = opts.logger?.child({ component: 'node-registry' });
    this.graceMs = opts.graceMs ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  async start(): Promise<void> {
    let initialized!: () => void;
    const ready = new Promise<void>((r) => (initialized = r));
    this.watch = await KvFollower.start({
      bucket: 'edgenfv_nodes',
      open: (from) =>
        from ? this.b.nodes.watch({ key: '>', resumeFromRevision: from }) : this.b.nodes.watch({ key: '>', initializedFn: () => initialized() }),
      onEntry: (e) => this.onRecord(e),
      running: () => !this.stopped,
      logger: this.log,
      report: this.opts.watchReport,
    });
    await ready;
    const q = this.opts.queueGroup ?? 'edgenfv-scheduler';
    this.subs.push(this.nc.subscribe(internalSubjects.allRegisters, { queue: q, callback: (err, msg) => !err && void this.onRegister(msg) }));
    this.subs.push(this.nc.subscribe(internalSubjects.allHeartbeats, { callback: (err, msg) => !err && void this.onHeartbeat(msg) }));
    const every = this.opts.checkIntervalMs ?? Math.min(1000, Math.max(50, this.graceMs / 4));
    this.timer = setInterval(() => void this.checkExpired(), every);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    for (const s of this.subs) s.unsubscribe();
    this.subs.length = 0;
    this.watch?.stop();
  }

  /** The leader's registry is active: it declares nodes lost. A newly active one gives every node a fresh grace. */
  setActive(active: boolean): void {
    if (active && !this.active) this.activeSince = this.now();
    this.active = active;
  }
  isActive(): boolean {
    return this.active;
  }

  /** Registers a hook called (on the active replica) after a node was declared lost and fenced. */
  onNodeLost(hook: NodeLostHook): () => void {
    this.hooks.add(hook);
    return () => this.hooks.delete(hook);
  }

  /** Registers a hook called when fenced reservations are freed (the node confirmed their sandboxes are gone). */
  onFencedFreed(hook: FencedFreedHook): () => void {
    this.freedHooks.add(hook);
    return () => this.freedHooks.delete(hook);
  }

  private async unfence(nodeId: string, running: ReadonlySet<string>): Promise<string[]> {
    const freed = await unfenceReservations(this.b, nodeId, running);
    if (freed.length > 0) {
      for (const h of this.freedHooks) {
        try {
          await h(nodeId, freed);
        } catch (err) {
          this.log?.error({ err, nodeId }, 'onFencedFreed hook failed');
        }
      }
    }
    return freed.map((r) => r.allocId);
  }

  get(nodeId: string): StoredNode | undefined {
    return this.records.get(nodeId)?.value;
  }
  list(): StoredNode[] {
    return [...this.records.values()].map((r) => r.value).sort((a, b) => a.id.localeCompare(b.id));
  }
  /** When this replica last heard from the node (ms since epoch), if ever. */
  lastHeartbeat(nodeId: string): number | undefined {
    return this.lastSeen.get(nodeId);
  }

  // ---- operator commands ----

  cordon(nodeId: string): Promise<StoredNode> {
    return this.mutate(nodeId, (n) => ({ ...n, cordoned: true }));
  }
  /** Uncordon also ends a drain. */
  uncordon(nodeId: string): Promise<StoredNode> {
    return this.mutate(nodeId, (n) => {
      const { draining: _d, ...rest } = n;
      return { ...rest, cordoned: false };
    });
  }
  private async mutate(nodeId: string, fn: (n: StoredNode) => StoredNode): Promise<StoredNode> {
    for (;;) {
      const cur = await getJson<StoredNode>(this.b.nodes, nodeId);
      if (!cur) throw new NotFoundError(`node ${nodeId} not found`, { id: nodeId });
      const next = { ...fn(cur.value), updatedAt: new Date(this.now()).toISOString() };
      const rev = await casPut(this.b.nodes, nodeId, next, cur.revision);
      if (rev !== null) {
        this.noteRecord(nodeId, next, rev);
        return next;
      }
    }
  }

  private noteRecord(nodeId: string, value: StoredNode, revision: number): void {
    const cur = this.records.get(nodeId);
    if (!cur || cur.revision < revision) this.records.set(nodeId, { value, revision });
  }

  private onRecord(e: KvEntry): void {
    const d = decodeEntry<StoredNode>(e, isNodeRecord);
    if (!d) {
      this.records.delete(e.key);
      this.lastSeen.delete(e.key);
      return;
    }
    this.noteRecord(e.key, d.value, d.revision);
    const hb = d.value.lastHeartbeatAt ? Date.parse(d.value.lastHeartbeatAt) : NaN;
    if (!Number.isNaN(hb) && hb > (this.lastSeen.get(e.key) ?? 0)) this.lastSeen.set(e.key, hb);
  }

  // ---- protocol ----

  private async onRegister(msg: Msg): Promise<void> {
    if (!fromClient(msg.subject, msg.reply, msg.headers?.code)) return; // a JetStream delivery, not the node (docs/security.md)
    try {
      const nodeId = msg.subject.split('.')[4] ?? '';
      let body: RegisterRequest;
      try {
        body = JSON.parse(dec.decode(msg.data)) as RegisterRequest;
      } catch {
        throw new InvalidArgumentError([{ field: '', message: 'not JSON' }]);
      }
      const issues = [];
      if (typeof body !== 'object' || body === null) throw new InvalidArgumentError([{ field: '', message: 'must be an object' }]);
      if (!isDnsLabel(nodeId)) issues.push({ field: 'nodeId', message: 'the subject token must be a DNS label' });
      if (body.nodeId !== nodeId) issues.push({ field: 'nodeId', message: `must equal the subject's node id "${nodeId}"` });
      if (typeof body.inventory !== 'object' || body.inventory === null || body.inventory.nodeId !== nodeId)
        issues.push({ field: 'inventory', message: 'must be the inventory of this node' });
      if (body.running !== undefined && !(Array.isArray(body.running) && body.running.every((x) => typeof x === 'string')))
        issues.push({ field: 'running', message: 'must be a list of allocation ids' });
      if (issues.length > 0) throw new InvalidArgumentError(issues);
      const result = await this.register(nodeId, body);
      reply(msg, { ok: true, result });
    } catch (err) {
      const e = asAppError(err);
      if (!(err instanceof AppError)) this.log?.error({ err }, 'register failed');
      reply(msg, { ok: false, error: e.toBody() });
    }
  }

  /** Register (also callable in-process): creates or refreshes the node record, returns the node's epoch. */
  async register(nodeId: string, req: RegisterRequest): Promise<RegisterReply> {
    const at = new Date(this.now()).toISOString();
    const running = req.running ?? [];
    let rec: StoredNode;
    for (;;) {
      const cur = await getJson<StoredNode>(this.b.nodes, nodeId);
      rec = cur
        ? {
            ...cur.value,
            inventory: req.inventory,
            health: 'Ready',
            lastHeartbeatAt: at,
            running,
            updatedAt: at,
          }
        : { id: nodeId, inventory: req.inventory, health: 'Ready', cordoned: false, epoch: 1, registeredAt: at, lastHeartbeatAt: at, running, updatedAt: at };
      if (cur && cur.value.health !== 'Ready') {
        rec.registeredAt = at;
        delete rec.notReadySince;
        delete rec.notReadyReason;
      }
      const rev = await casPut(this.b.nodes, nodeId, rec, cur?.revision);
      if (rev !== null) {
        this.noteRecord(nodeId, rec, rev);
        break;
      }
    }
    await bumpLedgerEpoch(this.b, nodeId, rec.epoch);
    // Reservations healed away while the node was lost and that it no longer runs are free again.
    const freed = await this.unfence(nodeId, new Set(running));
    this.lastSeen.set(nodeId, this.now());
    this.lastUnfence.delete(nodeId);
    this.log?.info({ nodeId, epoch: rec.epoch, running: running.length, freed: freed.length }, 'node registered');
    const out: RegisterReply = { epoch: rec.epoch, heartbeatIntervalMs: this.opts.heartbeatIntervalMs ?? Math.max(100, Math.floor(this.graceMs / 4)), graceMs: this.graceMs };
    return out;
  }

  private async onHeartbeat(msg: Msg): Promise<void> {
    // a JetStream push consumer of another node could deliver its allocations ({nodeId, epoch, ...}) here: not a
    // heartbeat of this node, which would keep a silent node "alive" (docs/security.md)
    if (!fromClient(msg.subject, msg.reply, msg.headers?.code)) return;
    let hb: Heartbeat;
    try {
      hb = JSON.parse(dec.decode(msg.data)) as Heartbeat;
    } catch {
      return;
    }
    const nodeId = msg.subject.split('.')[4] ?? '';
    const rec = this.records.get(nodeId)?.value;
    const stale = !rec || rec.health !== 'Ready' || typeof hb?.epoch !== 'number' || hb.epoch < rec.epoch;
    // Only the active replica answers (one answer, from the freshest view); every replica follows the heartbeat.
    if (msg.reply && this.active) reply(msg, { ok: true, result: { epoch: rec?.epoch ?? 0, reregister: stale } satisfies HeartbeatReply });
    if (stale) return; // a fenced node must register again before it counts as alive
    this.lastSeen.set(nodeId, this.now());
    if (!this.active) return;
    const inv = hb.inventory;
    if (inv && typeof inv === 'object' && inv.nodeId === nodeId && JSON.stringify(inv) !== JSON.stringify(rec.inventory)) {
      // the node's inventory changed (a PF's VFs, hugepages, labels): placement sees it through the record
      void this.mutate(nodeId, (n) => ({ ...n, inventory: inv })).catch((err) => this.log?.warn({ err, nodeId }, 'inventory update failed'));
    }
    if (this.busy.has(nodeId)) return;
    // Fenced reservations (replicas healed away while the node was lost) are freed once the node no longer runs
    // them: checked at most once per grace when the heartbeat lists what runs, else at the first heartbeat after
    // a register that reported running sandboxes (the agent tears stale ones down before heartbeating).
    const listed = Array.isArray(hb.running);
    const due = listed ? this.now() - (this.lastUnfence.get(nodeId) ?? 0) >= this.graceMs : (rec.running?.length ?? 0) > 0;
    if (!due) return;
    this.busy.add(nodeId);
    try {
      this.lastUnfence.set(nodeId, this.now());
      const freed = await this.unfence(nodeId, new Set(listed ? hb.running : []));
      if (freed.length > 0) this.log?.info({ nodeId, freed }, 'stale sandboxes gone: fenced reservations freed');
      if (!listed) await this.mutate(nodeId, (n) => ({ ...n, running: [] }));
    } catch (err) {
      this.log?.warn({ err, nodeId }, 'unfence failed; a later heartbeat retries');
    } finally {
      this.busy.delete(nodeId);
    }
  }

  /** The active replica's sweep: declares nodes whose heartbeats stopped for longer than the grace lost. */
  async checkExpired(): Promise<string[]> {
    if (!this.active || this.stopped) return [];
    const now = this.now();
    const lost: string[] = [];
    for (const [nodeId, r] of this.records) {
      if (r.value.health !== 'Ready' || this.busy.has(nodeId)) continue;
      const seen = Math.max(this.lastSeen.get(nodeId) ?? 0, this.activeSince);
      if (now - seen <= this.graceMs) continue;
      lost.push(nodeId);
      this.busy.add(nodeId);
      void this.markLost(nodeId, `no heartbeat for ${Math.round((now - seen) / 1000)} s (grace ${this.graceMs / 1000} s)`)
        .catch((err) => this.log?.error({ err, nodeId }, 'marking the node lost failed; next sweep retries'))
        .finally(() => this.busy.delete(nodeId));
    }
    return lost;
  }

  /**
   * Declares a node lost and fences it: NotReady and epoch+1 in its record (CAS), the ledger moved to the new
   * epoch (so no commit made under the old epoch can land any more), then `onNodeLost` with its allocations.
   */
  async markLost(nodeId: string, reason: string): Promise<NodeLostEvent | undefined> {
    let prev: number;
    let epoch: number;
    for (;;) {
      const cur = await getJson<StoredNode>(this.b.nodes, nodeId);
      if (!cur || cur.value.health !== 'Ready') return undefined;
      prev = cur.value.epoch;
      epoch = prev + 1;
      const at = new Date(this.now()).toISOString();
      const next: StoredNode = { ...cur.value, health: 'NotReady', epoch, notReadySince: at, notReadyReason: reason, updatedAt: at };
      const rev = await casPut(this.b.nodes, nodeId, next, cur.revision);
      if (rev !== null) {
        this.noteRecord(nodeId, next, rev);
        break;
      }
    }
    await bumpLedgerEpoch(this.b, nodeId, epoch);
    const allocations = await listNodeAllocations(this.b, nodeId);
    const ev: NodeLostEvent = { nodeId, previousEpoch: prev, epoch, reason, allocations };
    this.log?.warn({ nodeId, epoch, reason, replicas: allocations.length }, 'node lost: fenced, replicas to heal');
    for (const h of this.hooks) {
      try {
        await h(ev);
      } catch (err) {
        this.log?.error({ err, nodeId }, 'onNodeLost hook failed');
      }
    }
    return ev;
  }
}
