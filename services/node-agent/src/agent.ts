/**
 * The node agent's NATS side (after Nomad's client): register with the inventory, heartbeat, watch `edgenfv_allocs`
 * keys `<nodeId>.>`, re-check each allocation, converge the sandboxes on them, and write what it observes into
 * `edgenfv_status` `<nodeId>.<allocId>`. Allocations made under an older epoch than the node's are fenced: their
 * replicas are torn down.
 *
 * Fencing (a partitioned node, after Nomad's `stop_on_client_after`): when neither a heartbeat answer nor a NATS
 * round trip came back for longer than the grace (the scheduler's, told at register, or `fencing.graceMs`), the
 * agent fences itself: it acts on no allocation change, since the scheduler has declared it lost and heals its
 * replicas elsewhere. `fencing.stopAfterMs` after its last contact it removes the replicas of VNFs with
 * `onPartition: stop` (the default); `keep` ones stay. Once NATS answers again it registers (learning its new epoch)
 * and re-reads its allocations from a fresh watch before acting: what was healed away is torn down, so after healing
 * one copy of each replica serves.
 */
import { Events, JSONCodec, type KV, type KvEntry, type NatsConnection } from 'nats';
import type { Logger } from 'pino';
import {
  KV_BUCKETS,
  allocKey,
  asAppError,
  replicaLostError,
  internalSubjects,
  type Allocation,
  type Heartbeat,
  type HeartbeatReply,
  type NodeInventory,
  type RegisterReply,
  type RegisterRequest,
  type ReplicaRunState,
  type ReplicaStatus,
  type ErrorBody,
} from '@edgenfv/contracts';
import type { NodeAgentMetrics } from './metrics.js';
import { recheck } from './recheck.js';
import { rotateGuestLogs } from './console-log.js';
import type { SandboxManager } from './sandbox/manager.js';
import { sourceAddressTowards } from './sandbox/migration-relay.js';

const jc = JSONCodec();

/** The inventory's parts that change while the agent runs. */
export type LiveInventory = Partial<Pick<NodeInventory, 'dataplanes' | 'warmPool' | 'noViommuTenants'>>;

export interface NodeAgentOptions {
  nodeId: string;
  nc: NatsConnection;
  manager: SandboxManager;
  inventory: () => Promise<NodeInventory>;
  /**
   * The parts of the inventory that change at run time, as they are now: the data planes (the agent's own switch
   * changes state), the warm pools (the scheduler counts what they hold), the tenants whose VM has no virtual IOMMU.
   * A change rides on the next heartbeat.
   */
  live?: () => LiveInventory;
  logger: Logger;
  metrics?: NodeAgentMetrics;
  heartbeatIntervalMs: number;
  /** Full resync (re-list allocations, check VMs) every this many ms. */
  resyncIntervalMs?: number;
  /** How long to wait for the scheduler's KV buckets and register reply before retrying. */
  retryMs?: number;
  /** Each VM's console and QEMU log are rotated past this size (default 1 MiB; one older generation kept). */
  guestLogMaxBytes?: number;
  /** Self-fencing when NATS is out of reach (config `fencing`); default: the scheduler's grace, stop after 60 s. */
  fencing?: { graceMs?: number; stopAfterMs: number };
  /** Guest liveness (config `guest.livenessIntervalMs`): every running VM's guest agent looked at this often; 0: never. */
  guestLivenessIntervalMs?: number;
}

const now = (): number => performance.now();

type Envelope<T> = { ok: true; result: T } | { ok: false; error: ErrorBody };

export class NodeAgent {
  private epoch = 0;
  private allocs?: KV;
  private status?: KV;
  private readonly desired = new Map<string, Allocation>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly failed = new Set<string>();
  private readonly seenAt = new Map<string, bigint>();
  private stopped = false;
  private synced = false;
  private hbTimer?: NodeJS.Timeout;
  private heartbeatMs: number;
  private timers: NodeJS.Timeout[] = [];
  private watchStop?: () => void;
  private reconcileQueued = false;
  private reconciling?: Promise<void>;
  private readonly log: Logger;
  private lastInventory?: NodeInventory;
  /** When NATS last answered this agent (a register or heartbeat reply, a round trip). */
  private lastContact = now();
  private schedulerGraceMs?: number;
  private fenced = false;
  private unfencing?: Promise<void>;
  private watchGen = 0;

  constructor(private readonly o: NodeAgentOptions) {
    this.log = o.logger.child({ component: 'agent', nodeId: o.nodeId });
    this.heartbeatMs = o.heartbeatIntervalMs;
  }

  get currentEpoch(): number {
    return this.epoch;
  }

  /** True while the agent is fenced off NATS (acting on no allocation change). */
  get isFenced(): boolean {
    return this.fenced;
  }

  private get graceMs(): number {
    return this.o.fencing?.graceMs ?? this.schedulerGraceMs ?? 10_000;
  }

  /** Registers, opens the buckets, starts heartbeats and the allocation watch. Resolves once registered. */
  async start(): Promise<void> {
    await this.register();
    const js = this.o.nc.jetstream();
    for (;;) {
      try {
        this.allocs = await js.views.kv(KV_BUCKETS.allocs, { bindOnly: true });
        this.status = await js.views.kv(KV_BUCKETS.status, { bindOnly: true });
        break;
      } catch (err) {
        if (this.stopped) return;
        this.log.info({ err: (err as Error).message }, 'waiting for the scheduler to create the KV buckets');
        await new Promise((r) => setTimeout(r, this.o.retryMs ?? 1000));
      }
    }
    await this.watch();
    this.hbTimer = setInterval(() => void this.heartbeat(), this.heartbeatMs);
    this.timers.push(
      setInterval(() => {
        this.kick();
        void this.checkWatch();
      }, this.o.resyncIntervalMs ?? 10_000),
    );
    this.timers.push(setInterval(() => this.rotateLogs(), 15_000));
    const livenessMs = this.o.guestLivenessIntervalMs ?? 10_000;
    if (livenessMs > 0) this.timers.push(setInterval(() => void this.checkGuests(), livenessMs));
    this.timers.push(setInterval(() => this.checkFence(), Math.min(1000, Math.max(100, this.graceMs / 4))));
    void this.heartbeat();
    void this.watchConnection();
  }

  private async watchConnection(): Promise<void> {
    for await (const s of this.o.nc.status()) {
      if (this.stopped) return;
      if (s.type === Events.Reconnect) {
        if (this.fenced) {
          void this.unfence();
          continue;
        }
        this.log.info('NATS reconnected: registering again and re-reading the allocations');
        await this.register().catch((err) => this.log.warn({ err }, 'register after reconnect failed'));
        // the allocation watch may not survive the server's restart: a fresh one, from the current state
        if (!this.fenced) await this.rewatch().catch((err) => this.log.warn({ err }, 'allocation watch not reopened after reconnect'));
      }
    }
  }

  async register(): Promise<number> {
    for (;;) {
      try {
        const inventory = await this.o.inventory();
        this.lastInventory = inventory;
        const req: RegisterRequest = {
          nodeId: this.o.nodeId,
          inventory,
          running: [...this.o.manager.replicas().keys()],
          startedAt: new Date().toISOString(),
        };
        const msg = await this.o.nc.request(internalSubjects.register(this.o.nodeId), jc.encode(req), { timeout: 5000 });
        const env = jc.decode(msg.data) as Envelope<RegisterReply>;
        if (!env.ok) throw Object.assign(new Error(`register refused: ${env.error.code}: ${env.error.message}`), { refused: true });
        this.epoch = env.result.epoch;
        if (env.result.graceMs) this.schedulerGraceMs = env.result.graceMs;
        this.contact();
        const hbMs = env.result.heartbeatIntervalMs;
        if (hbMs && hbMs >= 100 && hbMs !== this.heartbeatMs) {
          this.heartbeatMs = hbMs;
          if (this.hbTimer) {
            clearInterval(this.hbTimer);
            this.hbTimer = setInterval(() => void this.heartbeat(), this.heartbeatMs);
          }
        }
        this.log.info({ epoch: this.epoch, kvm: inventory.kvm, hypervisors: inventory.hypervisors.map((h) => `${h.kind}/${h.accel}`) }, 'registered');
        this.kick();
        return this.epoch;
      } catch (err) {
        if (this.stopped) throw err;
        this.log.warn({ err: (err as Error).message }, 'register failed: retrying');
        await new Promise((r) => setTimeout(r, this.o.retryMs ?? 1000));
      }
    }
  }

  private async heartbeat(): Promise<void> {
    if (this.stopped) return;
    const reps = this.o.manager.replicas();
    const hb: Heartbeat = {
      nodeId: this.o.nodeId,
      epoch: this.epoch,
      at: new Date().toISOString(),
      sandboxes: this.o.manager.sandboxes().length,
      replicas: reps.size,
      running: [...reps.keys()],
    };
    const last = this.lastInventory;
    if (last) {
      for (const [key, now] of Object.entries(this.o.live?.() ?? {})) {
        if (JSON.stringify(now) !== JSON.stringify(last[key as keyof LiveInventory])) hb.inventory = { ...(hb.inventory ?? last), [key]: now };
      }
    }
    try {
      const msg = await this.o.nc.request(internalSubjects.heartbeat(this.o.nodeId), jc.encode(hb), { timeout: 2000 });
      if (hb.inventory) this.lastInventory = hb.inventory;
      this.o.metrics?.heartbeats.inc({ result: 'ok' });
      this.contact();
      const env = jc.decode(msg.data) as Envelope<HeartbeatReply>;
      // while fenced, unfence() registers
      if (env.ok && env.result.reregister && !this.fenced) {
        this.log.warn({ epoch: this.epoch, leaderEpoch: env.result.epoch }, 'the scheduler asks this node to register again');
        await this.register();
      }
    } catch (err) {
      // No responder (no scheduler yet) or timeout: the heartbeat was still published.
      this.o.metrics?.heartbeats.inc({ result: 'unanswered' });
      this.log.debug({ err: (err as Error).message }, 'heartbeat unanswered');
      // no scheduler answering is not a partition: NATS itself answering a round trip is contact
      if (await this.natsAnswers()) this.contact();
    }
  }

  private async natsAnswers(): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.o.nc.rtt().then(() => true),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 2000))),
      ]);
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  private contact(): void {
    this.lastContact = now();
    if (this.fenced) void this.unfence();
  }

  /** Fences the agent once NATS was out of reach past the grace; past `stopAfterMs`, removes `onPartition: stop` replicas. */
  private checkFence(): void {
    if (this.stopped) return;
    const silentMs = now() - this.lastContact;
    if (!this.fenced && silentMs > this.graceMs) {
      this.fenced = true;
      this.o.metrics?.fenced.set(1);
      this.log.warn({ silentMs: Math.round(silentMs), graceMs: this.graceMs, stopAfterMs: this.o.fencing?.stopAfterMs ?? 60_000 }, 'NATS out of reach for longer than the grace: fenced (no allocation change acted on until registered again)');
    }
    if (this.fenced && !this.unfencing && silentMs > (this.o.fencing?.stopAfterMs ?? 60_000)) {
      for (const [id, { sandbox, replica }] of this.o.manager.replicas()) {
        if (this.inFlight.has(id) || replica.alloc.onPartition === 'keep') continue;
        this.track(id, this.removeFenced(sandbox.tenantId, id, replica.alloc, silentMs));
      }
    }
  }

  private async removeFenced(tenantId: string, allocId: string, a: Allocation, silentMs: number): Promise<void> {
    const log = this.log.child({ tenantId, vnfId: a.vnfId, allocId });
    try {
      await this.o.manager.removeReplica(tenantId, allocId);
      this.o.metrics?.reconciles.inc({ action: 'fence-stop', result: 'ok' });
      log.warn({ silentMs: Math.round(silentMs) }, 'fenced past fencing.stopAfterMs: replica removed (onPartition: stop)');
    } catch (err) {
      this.o.metrics?.reconciles.inc({ action: 'fence-stop', result: 'error' });
      log.error({ err }, 'removing the replica of a fenced node failed');
    }
  }

  /** NATS answers again: register (the new epoch), re-read the allocations from a fresh watch, then act on them. */
  private unfence(): Promise<void> {
    this.unfencing ??= (async () => {
      this.log.info('NATS reachable again: registering and re-reading the allocations before acting');
      try {
        await this.register();
        await this.rewatch();
        this.fenced = false;
        this.o.metrics?.fenced.set(0);
        this.log.info({ epoch: this.epoch }, 'unfenced');
        this.kick();
      } catch (err) {
        if (!this.stopped) this.log.warn({ err }, 'unfencing failed: tried again at the next contact');
      }
    })().finally(() => (this.unfencing = undefined));
    return this.unfencing;
  }

  /**
   * The watch is the agent's only view of its allocations: one that went silent (seen in the chaos run on a real node
   * after a nats-server restart: a deleted allocation's VM ran on) is found by listing the keys, and reopened when
   * they differ from what the watch delivered at two checks in a row (one difference can be an update in flight).
   */
  private watchSuspect = false;
  private async checkWatch(): Promise<void> {
    if (this.stopped || this.fenced || this.unfencing || !this.allocs || !this.synced) return;
    try {
      const keys = new Set<string>();
      for await (const k of await this.allocs.keys(`${this.o.nodeId}.>`)) keys.add(k.slice(this.o.nodeId.length + 1));
      const same = keys.size === this.desired.size && [...keys].every((k) => this.desired.has(k));
      if (same) {
        this.watchSuspect = false;
        return;
      }
      if (!this.watchSuspect) {
        this.watchSuspect = true;
        return;
      }
      this.watchSuspect = false;
      this.log.warn({ listed: keys.size, watched: this.desired.size }, 'allocation watch out of date: reopened');
      await this.rewatch();
      this.o.metrics?.watchReopened.inc({ how: 'listing' });
      this.kick();
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'allocation listing failed');
    }
  }

  private async rewatch(): Promise<void> {
    this.watchStop?.();
    this.synced = false;
    this.desired.clear();
    await this.watch();
  }

  private async watch(): Promise<void> {
    // Reconcile only once the watch delivered the current allocations: a pass on a partial snapshot would stop
    // the replicas whose allocations had not arrived yet.
    let resolveSynced!: () => void;
    const synced = new Promise<void>((r) => (resolveSynced = r));
    const w = await this.allocs!.watch({
      key: `${this.o.nodeId}.>`,
      initializedFn: () => {
        this.synced = true;
        resolveSynced();
      },
    });
    let stopped = false;
    this.watchStop = () => {
      stopped = true;
      w.stop();
    };
    const gen = ++this.watchGen;
    void (async () => {
      for await (const e of w) if (gen === this.watchGen) this.onEntry(e);
    })()
      .catch((err: unknown) => err)
      .then((err) => {
        if (this.stopped || stopped || gen !== this.watchGen) return;
        // it ended on its own: nats.js could not recreate its consumer (seen on a slow node after a nats-server
        // restart: the recreate request was refused) — a fresh watch at once, not at the next key listing
        this.log.error({ err }, 'allocation watch ended: reopening it');
        void this.reopenWatch(gen);
      });
    await synced;
    this.kick();
  }

  private async reopenWatch(gen: number): Promise<void> {
    for (let delay = 250; !this.stopped && gen === this.watchGen; delay = Math.min(delay * 2, 10_000)) {
      if (this.fenced || this.unfencing) return; // unfencing opens a fresh watch itself
      try {
        await this.rewatch();
        this.o.metrics?.watchReopened.inc({ how: 'ended' });
        this.log.info('allocation watch reopened');
        return;
      } catch (err) {
        this.log.warn({ err: (err as Error).message, retryInMs: delay }, 'allocation watch not reopened yet');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private onEntry(e: KvEntry): void {
    const allocId = e.key.slice(this.o.nodeId.length + 1);
    if (e.operation === 'DEL' || e.operation === 'PURGE') {
      this.desired.delete(allocId);
    } else {
      try {
        const a = e.json<Allocation>();
        this.desired.set(allocId, a);
        this.failed.delete(allocId); // a rewritten allocation is tried again
        if (!this.seenAt.has(allocId)) this.seenAt.set(allocId, process.hrtime.bigint());
      } catch (err) {
        this.log.error({ err, key: e.key }, 'allocation is not JSON: ignored');
        return;
      }
    }
    this.kick();
  }

  /**
   * Guest liveness (sandbox/guest-liveness.ts): a replica whose guest agent restarted (its container gone with the
   * old agent) or stopped answering is removed from the node (its VM torn down when it was the VM's last) and
   * reported FAILED with contracts' `replicaLostError`, which the scheduler's engine heals; until its allocation
   * changes the node does not start it again. A replica something acts on is looked at next time.
   */
  private checkingGuests = false;
  private async checkGuests(): Promise<void> {
    if (this.stopped || this.fenced || this.checkingGuests) return;
    this.checkingGuests = true;
    try {
      for (const v of await this.o.manager.checkGuests()) {
        if (this.stopped || this.fenced || v.lost.some((r) => this.inFlight.has(r.allocId))) continue;
        const log = this.log.child({ tenantId: v.tenantId, sandboxId: v.sandboxId });
        log.warn({ reason: v.reason, allocIds: v.lost.map((r) => r.allocId) }, `replicas lost: ${v.message}`);
        this.o.metrics?.guestReplicasLost.inc({ reason: v.reason }, v.lost.length);
        for (const r of v.lost) this.failed.add(r.allocId);
        const done = (async () => {
          try {
            await this.o.manager.removeLost(v);
          } catch (err) {
            log.error({ err }, 'removing the lost replicas failed');
          }
          for (const r of v.lost) {
            const a = this.desired.get(r.allocId) ?? r.alloc;
            await this.writeStatus(a, 'FAILED', { sandboxId: v.sandboxId, error: replicaLostError(this.o.nodeId, v.message) });
          }
        })();
        for (const r of v.lost) this.track(r.allocId, done);
      }
    } catch (err) {
      this.log.warn({ err }, 'guest liveness check failed');
    } finally {
      this.checkingGuests = false;
    }
  }

  private rotateLogs(): void {
    try {
      const rotated = rotateGuestLogs(this.o.manager.sandboxes().map((s) => s.runDir), this.o.guestLogMaxBytes);
      if (rotated.length) this.log.info({ rotated }, 'guest logs rotated');
    } catch (err) {
      this.log.warn({ err }, 'guest log rotation failed');
    }
  }

  /** Schedules a reconcile pass (coalesced). */
  kick(): void {
    if (this.stopped || this.fenced || !this.allocs || !this.synced) return;
    if (this.reconciling) {
      this.reconcileQueued = true;
      return;
    }
    this.reconciling = this.reconcile()
      .catch((err) => this.log.error({ err }, 'reconcile failed'))
      .finally(() => {
        this.reconciling = undefined;
        if (this.reconcileQueued) {
          this.reconcileQueued = false;
          this.kick();
        }
      });
  }

  /** Waits until no reconcile is running and no action is in flight (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.reconciling || this.inFlight.size > 0) {
      await this.reconciling;
      await Promise.allSettled([...this.inFlight.values()]);
    }
  }

  private async reconcile(): Promise<void> {
    if (this.fenced) return;
    const actual = this.o.manager.replicas();
    const wanted = new Map<string, Allocation>();
    for (const [id, a] of this.desired) {
      if ((a.desired ?? 'running') !== 'running') continue;
      if (a.epoch < this.epoch) {
        this.log.warn({ allocId: id, allocEpoch: a.epoch, epoch: this.epoch }, 'allocation from an older epoch: fenced');
        continue;
      }
      wanted.set(id, a);
    }
    for (const [id, a] of wanted) {
      const cur = actual.get(id);
      const live = cur && cur.replica.state === 'running' && this.o.manager.alive(cur.sandbox.sandboxId);
      if (this.inFlight.has(id) || this.failed.has(id)) continue;
      if (!live) this.track(id, this.startReplica(a));
      else if ((a.operationalState === 'STOPPED') !== (cur.replica.containersStopped === true)) this.track(id, this.operateReplica(a));
    }
    for (const [id, { sandbox, replica }] of actual) {
      if (wanted.has(id) || this.inFlight.has(id)) continue;
      this.track(id, this.stopReplica(sandbox.tenantId, id, replica.alloc));
    }
    // Forget failures whose allocation is gone (a new allocation with the same id would be tried again).
    for (const id of this.failed) if (!this.desired.has(id)) this.failed.delete(id);
    // ... and when allocations that never started (or ended) were first seen: the map stays as small as the work.
    for (const id of this.seenAt.keys()) if (!this.desired.has(id) && !actual.has(id) && !this.inFlight.has(id)) this.seenAt.delete(id);
  }

  private track(id: string, p: Promise<void>): void {
    const t = p.finally(() => {
      this.inFlight.delete(id);
      this.kick();
    });
    this.inFlight.set(id, t);
  }

  private async writeStatus(a: Allocation, state: ReplicaRunState, extra: Partial<ReplicaStatus> = {}): Promise<void> {
    if (!this.status || this.stopped) return;
    const st: ReplicaStatus = {
      allocId: a.allocId,
      nodeId: this.o.nodeId,
      epoch: a.epoch,
      tenantId: a.tenantId,
      vnfId: a.vnfId,
      replica: a.replica,
      state,
      interfaces: [],
      updatedAt: new Date().toISOString(),
      ...extra,
    };
    try {
      await this.status.put(allocKey(this.o.nodeId, a.allocId), jc.encode(st));
    } catch (err) {
      this.log.warn({ err, allocId: a.allocId }, 'status write failed');
    }
  }

  private async startReplica(a: Allocation): Promise<void> {
    const log = this.log.child({ tenantId: a.tenantId, vnfId: a.vnfId, allocId: a.allocId });
    const inv = this.lastInventory ?? (await this.o.inventory());
    const held = [...this.o.manager.replicas().values()].map((r) => r.replica.alloc);
    const verdict = recheck(a, inv, held);
    if (!verdict.ok) {
      log.warn({ reason: verdict.reason }, 'allocation refused by the node re-check');
      this.failed.add(a.allocId);
      this.o.metrics?.reconciles.inc({ action: 'start', result: 'refused' });
      await this.writeStatus(a, 'FAILED', { error: { code: 'UNSCHEDULABLE', message: `node re-check: ${verdict.reason}` } });
      return;
    }
    const known = this.o.manager.replicas().get(a.allocId);
    if (a.migration && (!known || known.replica.state !== 'running')) return this.migrateIn(a);
    await this.writeStatus(a, 'STARTING');
    const t0 = this.seenAt.get(a.allocId) ?? process.hrtime.bigint();
    const progress = this.progressWriter(a);
    try {
      const r = await this.o.manager.ensureReplica(a, undefined, progress.report);
      await progress.settle();
      const startMs = Math.round(Number(process.hrtime.bigint() - t0) / 1e6);
      // The allocation may have been removed while booting: then the next pass stops it.
      const seen = { sandboxId: r.sandboxId, interfaces: r.interfaces, startMs, ...(r.imageDigest ? { imageDigest: r.imageDigest } : {}) };
      // a replica placed while its VNF is OPERATEd STOPPED has its VM and NICs, its container created, not started
      if (a.operationalState === 'STOPPED') await this.writeStatus(a, 'STOPPED', { ...seen, containersStopped: true });
      else await this.writeStatus(a, 'RUNNING', seen);
      this.o.metrics?.reconciles.inc({ action: 'start', result: 'ok' });
      log.info({ sandboxId: r.sandboxId, booted: r.booted, ...(r.warm ? { warm: true } : {}), startMs }, 'replica running');
    } catch (err) {
      const e = asAppError(err);
      this.failed.add(a.allocId);
      this.o.metrics?.reconciles.inc({ action: 'start', result: 'error' });
      log.warn({ err }, 'replica failed to start');
      await progress.settle();
      await this.writeStatus(a, 'FAILED', { error: e.toBody() });
    }
  }

  /**
   * Live migration destination (sandbox/migration.ts): the sandbox is made and QEMU waits with `-incoming`; the
   * status says `migration: {state: incoming, uri}` for the scheduler, then RUNNING once the VM has switched over.
   */
  private async migrateIn(a: Allocation): Promise<void> {
    const log = this.log.child({ tenantId: a.tenantId, vnfId: a.vnfId, allocId: a.allocId, from: a.migration!.fromNodeId });
    const t0 = this.seenAt.get(a.allocId) ?? process.hrtime.bigint();
    const incomingStatus = (uri: string, token?: string): Partial<ReplicaStatus> => ({
      progress: `incoming VM waits for the migration (${uri})`,
      migration: { state: 'incoming', uri, ...(token ? { token } : {}) },
    });
    // a member of a moving VM whose QEMU another member's call already started: it waits in that VM
    const waiting = this.o.manager.migration.incomingOf(a.allocId);
    await this.writeStatus(a, 'STARTING', waiting ? incomingStatus(waiting.uri, waiting.token) : { progress: `preparing an incoming VM (live migration from node ${a.migration!.fromNodeId})` });
    try {
      // the stream comes over TCP to the address this node reaches the control plane from (migration-relay.ts)
      const server = this.o.nc.getServer();
      const listenAddress = await sourceAddressTowards(server.replace(/^\[?([^\]]*?)\]?:\d+$/, '$1'));
      let incomingUri = waiting?.uri ?? '';
      const wanted = (id: string): boolean => (this.desired.get(id)?.desired ?? 'running') === 'running' && this.desired.has(id) && !this.stopped;
      const r = await this.o.manager.migration.incoming(
        a,
        {
          // reported on every member of the moving VM (the same URI and token)
          onIncoming: async (uri, token, allocIds) => {
            incomingUri = uri;
            for (const id of allocIds) {
              const m = id === a.allocId ? a : this.desired.get(id);
              if (m) await this.writeStatus(m, 'STARTING', incomingStatus(uri, token));
            }
          },
          stillWanted: () => wanted(a.allocId),
          allocation: (id) => (wanted(id) ? this.desired.get(id) : undefined),
        },
        listenAddress,
      );
      const startMs = Math.round(Number(process.hrtime.bigint() - t0) / 1e6);
      await this.writeStatus(a, 'RUNNING', { sandboxId: r.sandboxId, interfaces: r.interfaces, startMs, migration: { state: 'completed', uri: incomingUri } });
      this.o.metrics?.reconciles.inc({ action: 'migrate-in', result: 'ok' });
      log.info({ sandboxId: r.sandboxId, startMs }, 'replica running (migrated in)');
    } catch (err) {
      this.failed.add(a.allocId);
      this.o.metrics?.reconciles.inc({ action: 'migrate-in', result: 'error' });
      log.warn({ err }, 'incoming migration failed');
      await this.writeStatus(a, 'FAILED', { error: asAppError(err).toBody() });
    }
  }

  /** OPERATE: the replica's container stopped or started as its allocation says; VM, NICs and addresses kept. */
  private async operateReplica(a: Allocation): Promise<void> {
    const target = a.operationalState === 'STOPPED' ? 'STOPPED' : 'STARTED';
    const log = this.log.child({ tenantId: a.tenantId, vnfId: a.vnfId, allocId: a.allocId });
    try {
      const r = await this.o.manager.setOperationalState(a.tenantId, a.allocId, target);
      const extra = { sandboxId: r.sandboxId, interfaces: r.interfaces, ...(r.imageDigest ? { imageDigest: r.imageDigest } : {}) };
      if (target === 'STOPPED') await this.writeStatus(a, 'STOPPED', { ...extra, containersStopped: true });
      else await this.writeStatus(a, 'RUNNING', extra);
      this.o.metrics?.reconciles.inc({ action: 'operate', result: 'ok' });
      log.info({ target }, 'replica operated');
    } catch (err) {
      this.failed.add(a.allocId);
      this.o.metrics?.reconciles.inc({ action: 'operate', result: 'error' });
      log.warn({ err, target }, 'operating the replica failed');
      await this.writeStatus(a, 'FAILED', { error: asAppError(err).toBody() });
    }
  }

  /**
   * STARTING status updates carrying what the node does (image pull progress), at most one a second, except the
   * steps that must be seen (a layer verified, the image pulled): those are written as soon as the write before
   * them is done. `settle()` writes what is still pending and ends the reports, before the replica's next state is
   * written (so no STARTING overwrites RUNNING or FAILED).
   */
  private progressWriter(a: Allocation): { report: (message: string) => void; settle: () => Promise<void> } {
    const mustShow = (m: string): boolean => /^pulled |verified/.test(m);
    let last = 0;
    let pending: string | undefined;
    let inflight: Promise<void> | undefined;
    let settled = false;
    const flush = (): void => {
      if (inflight || pending === undefined) return;
      const progress = pending;
      pending = undefined;
      last = Date.now();
      inflight = this.writeStatus(a, 'STARTING', { progress }).finally(() => {
        inflight = undefined;
        if (!settled && pending !== undefined && mustShow(pending)) flush();
      });
    };
    return {
      report: (message) => {
        if (settled) return;
        pending = message;
        if (Date.now() - last >= 1000 || mustShow(message)) flush();
      },
      settle: async () => {
        settled = true;
        while (inflight) await inflight;
        if (pending !== undefined && mustShow(pending)) await this.writeStatus(a, 'STARTING', { progress: pending });
        pending = undefined;
      },
    };
  }

  private async stopReplica(tenantId: string, allocId: string, a: Allocation): Promise<void> {
    const log = this.log.child({ tenantId, vnfId: a.vnfId, allocId });
    await this.writeStatus(a, 'STOPPING');
    try {
      await this.o.manager.removeReplica(tenantId, allocId);
      await this.writeStatus(a, 'STOPPED');
      this.seenAt.delete(allocId);
      this.o.metrics?.reconciles.inc({ action: 'stop', result: 'ok' });
      log.info('replica stopped');
    } catch (err) {
      this.o.metrics?.reconciles.inc({ action: 'stop', result: 'error' });
      log.error({ err }, 'stopping the replica failed');
      await this.writeStatus(a, 'FAILED', { error: asAppError(err).toBody() });
    }
  }

  /** Stops watching and heartbeating; VMs keep running (a restarted agent re-adopts them). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    if (this.hbTimer) clearInterval(this.hbTimer);
    this.watchStop?.();
    await Promise.allSettled([...this.inFlight.values()]);
  }
}

