/**
 * Sandbox manager: one VM per tenant per node (the Kata sandbox). The first replica of a tenant boots the VM; later
 * replicas of that tenant run as further containers in the same VM, which grows by vCPU/memory hotplug (QEMU q35;
 * a driver without hotplug refuses, see docs/node-agent.md); the last replica gone stops the VM and releases all it
 * held. Every step is written to the sandbox's record before it is taken, so a restarted agent re-adopts live VMs
 * and cleans up what died meanwhile.
 *
 * The parts: vm-lifecycle.ts (the VM and its host side), replica-attachments.ts (netplugins, through the one
 * interface mapper in interfaces.ts), guest-sync.ts (the guest agent), records.ts (the record and its checks).
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { AppError, UnavailableError, UnschedulableError, asAppError, type Allocation } from '@edgenfv/contracts';
import type { HypervisorDriver, VmHandle } from '../hypervisor/types.js';
import { killQuiet, procRssBytes } from '../proc.js';
import type { NodeAgentMetrics } from '../metrics.js';
import type { Cgroups } from './cgroup.js';
import { GuestSync } from './guest-sync.js';
import { interfaceStatus, nameInterfaces } from './interfaces.js';
import type { AttachmentPort, GuestPort, GuestSession } from './ports.js';
import { ReplicaAttachments } from './replica-attachments.js';
import { KeyedMutex, Steps, hash, newSandboxRecord, upgradeRecord, validateAlloc, type ReplicaRecord, type ReplicaResult, type SandboxRecord } from './records.js';
import { StateStore } from './state.js';
import { VmLifecycle, type VmLifecycleDeps } from './vm-lifecycle.js';
import { SandboxMigration } from './migration.js';
import type { ImageStore, ProgressFn } from '../images/store.js';
import { replicaImage, stageImageDisk } from '../images/delivery.js';
import { VM_ROOT_DISKS } from '../hypervisor/vm-root.js';
import { SnapshotTemplates } from './snapshot-boot.js';
import { WarmPool, type WarmPoolOptions } from './warm-pool.js';
import { GuestLiveness, type GuestVerdict } from './guest-liveness.js';
import { needsViommu } from './dataplane.js';
import { withQmp } from '../hypervisor/qmp.js';

export type { ReplicaRecord, ReplicaResult, SandboxRecord } from './records.js';
export type { GuestVerdict } from './guest-liveness.js';

export interface SandboxManagerDeps extends VmLifecycleDeps {
  guest: GuestPort;
  attachments: AttachmentPort;
  cgroups: Cgroups;
  logger: Logger;
  metrics?: NodeAgentMetrics;
  /** Timing hooks (bench): hypervisor exec'd, guest agent answered health. */
  events?: { onExec?: (sandboxId: string) => void; onGuestReady?: (sandboxId: string) => void };
  /** Resolves image refs (registry pulls, OCI layouts) into disks; without it refs go to the guest unchanged. */
  images?: ImageStore;
  /** Warm pools (warm-pool.ts): idle VMs per flavour that a tenant's first replica claims; absent or empty: none. */
  warmPool?: Pick<WarmPoolOptions, 'flavours' | 'cpuBudgetPercent' | 'capacity' | 'overhead' | 'intervalMs'>;
}

export class SandboxManager {
  private readonly store: StateStore<SandboxRecord>;
  private readonly mutex = new KeyedMutex();
  private readonly log: Logger;
  private readonly vm: VmLifecycle;
  private readonly nets: ReplicaAttachments;
  private readonly guest: GuestSync;
  private readonly liveness: GuestLiveness;
  /** Sandboxes whose guest session a live migration dropped (the guest moves): the liveness watch leaves them be. */
  private readonly guestAway = new Set<string>();
  /** The node's warm pools, when configured. */
  readonly warm?: WarmPool;
  /** Snapshot boot's templates (QEMU): used by the warm pool when guest.snapshotBoot is on. */
  private readonly templates?: SnapshotTemplates;

  constructor(private readonly deps: SandboxManagerDeps) {
    this.store = new StateStore<SandboxRecord>(deps.cfg.stateDir, deps.logger);
    this.log = deps.logger.child({ component: 'sandbox' });
    this.vm = new VmLifecycle(deps);
    this.nets = new ReplicaAttachments(deps.attachments);
    this.guest = new GuestSync(deps.guest, (id) => this.vm.vmOf(id), this.log, deps.cfg.guest.vfioNoIommu);
    this.liveness = new GuestLiveness({ callTimeoutMs: 10_000, failAfterMs: deps.cfg.guest.livenessFailAfterMs ?? 120_000 });
    // snapshot boot's templates (snapshot-boot.ts): QEMU only
    const qemuBinary = deps.driver.kind === 'qemu' ? (deps.driver as { binary?: string }).binary : undefined;
    this.templates = qemuBinary ? new SnapshotTemplates({ stateDir: deps.cfg.stateDir, qemuBinary, logger: deps.logger }) : undefined;
    if (deps.warmPool?.flavours.some((f) => f.count > 0)) {
      const host = { vm: this.vm, guest: this.guest, list: () => this.list(), put: (r: SandboxRecord) => this.put(r), teardown: (r: SandboxRecord) => this.teardown(r) };
      const snapshots = deps.cfg.guest.snapshotBoot ? this.templates : undefined;
      this.warm = new WarmPool({ ...deps.warmPool, stateDir: deps.cfg.stateDir, bootTimeoutMs: deps.cfg.guest.bootTimeoutMs, vfioOk: deps.cfg.guest.vfioNoIommu || (deps.cfg.guest.viommu === 'always' && deps.cfg.qemu.machine === 'q35'), logger: deps.logger, ...(deps.metrics ? { metrics: deps.metrics } : {}), ...(snapshots ? { snapshots } : {}) }, host);
    }
  }

  private get driver(): HypervisorDriver {
    return this.deps.driver;
  }

  /** Re-adopts every live VM of the state folder and cleans up what died meanwhile. */
  async init(): Promise<{ adopted: string[]; cleaned: string[] }> {
    this.deps.cgroups.init();
    const adopted: string[] = [];
    const cleaned: string[] = [];
    for (const rec of this.list()) {
      const log = this.log.child({ sandboxId: rec.sandboxId, tenantId: rec.tenantId });
      const vm = await this.vm.adopt(rec);
      if (vm) {
        // Replicas caught half-way are finished by the reconcile loop (their allocation is still there) or removed.
        adopted.push(rec.sandboxId);
        log.info({ pid: vm.pid, replicas: Object.keys(rec.replicas).length }, 're-adopted sandbox');
      } else {
        log.warn({ state: rec.state }, 'sandbox VM gone while the agent was away: cleaning up');
        await this.teardown(rec);
        cleaned.push(rec.sandboxId);
      }
    }
    this.refreshGauges();
    // no warm pool restoring from templates: no template is kept (the pool prunes to its flavours' own keys)
    if (!this.warm || !this.deps.cfg.guest.snapshotBoot) this.templates?.prune(new Set());
    await this.warm?.start();
    return { adopted, cleaned };
  }

  sandboxes(): SandboxRecord[] {
    return this.list();
  }

  /**
   * Tenants whose VM here cannot take a vfio-pci data plane in the guest: booted without a virtual IOMMU (which is given
   * at boot only), on a node whose operator does not allow no-IOMMU mode (inventory `noViommuTenants`).
   */
  noViommuTenants(): string[] {
    if (this.deps.cfg.guest.vfioNoIommu) return [];
    return [...new Set(this.list().filter((r) => !r.warm && r.tenantId && r.spec && !r.spec.viommu).map((r) => r.tenantId))].sort();
  }

  /** allocId -> its sandbox and replica record. */
  replicas(): Map<string, { sandbox: SandboxRecord; replica: ReplicaRecord }> {
    const out = new Map<string, { sandbox: SandboxRecord; replica: ReplicaRecord }>();
    for (const s of this.list()) for (const r of Object.values(s.replicas)) out.set(r.allocId, { sandbox: s, replica: r });
    return out;
  }

  vmOf(sandboxId: string): VmHandle | undefined {
    return this.vm.vmOf(sandboxId);
  }

  /** true while the sandbox's hypervisor process lives. */
  alive(sandboxId: string): boolean {
    return this.vm.alive(sandboxId);
  }

  /** Idempotent: runs the allocation's replica in its tenant's VM (booting it when it is the first). */
  ensureReplica(alloc: Allocation, signal: AbortSignal = new AbortController().signal, progress?: ProgressFn): Promise<ReplicaResult> {
    try {
      validateAlloc(alloc);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.mutex.run(alloc.tenantId, async () => {
      const existing = this.findTenant(alloc.tenantId);
      const r = existing?.replicas[alloc.allocId];
      if (existing && r && r.state === 'running' && this.alive(existing.sandboxId)) {
        return { sandboxId: existing.sandboxId, interfaces: interfaceStatus(r), booted: false, ...digestOf(r) };
      }
      if (existing && !this.alive(existing.sandboxId) && existing.state !== 'creating') {
        // The VM died under us: release everything, then boot again for this replica.
        this.log.warn({ sandboxId: existing.sandboxId, tenantId: alloc.tenantId }, 'tenant VM is gone: rebuilding');
        await this.teardown(existing);
        return this.claimOrBoot(alloc, signal, progress);
      }
      if (!existing) return this.claimOrBoot(alloc, signal, progress);
      if (existing.state === 'creating' || (r && Object.keys(existing.replicas).length === 1)) {
        // A boot interrupted (the agent restarted while the VM came up) or the VM's only replica half-done: the
        // whole sandbox goes and the replica boots again in a fresh one (growing the torn-down record would fail).
        this.log.warn({ sandboxId: existing.sandboxId, tenantId: alloc.tenantId, state: existing.state }, 'interrupted boot: booting again');
        await this.teardown(existing);
        if (this.store.get(existing.sandboxId)) throw new UnavailableError(`sandbox ${existing.sandboxId} could not be torn down yet; retry`);
        return this.claimOrBoot(alloc, signal, progress);
      }
      if (r) await this.removeReplicaLocked(existing, alloc.allocId); // half-done earlier: start it over
      const cur = this.store.get(existing.sandboxId);
      if (!cur) return this.claimOrBoot(alloc, signal, progress);
      return this.grow(upgradeRecord(cur), alloc, signal, progress);
    });
  }

  /** Idempotent: stops the replica; the last replica of a VM stops the VM and releases everything. */
  removeReplica(tenantId: string, allocId: string): Promise<void> {
    return this.mutex.run(tenantId, async () => {
      const rec = this.findTenant(tenantId);
      if (!rec || !rec.replicas[allocId]) return;
      await this.removeReplicaLocked(rec, allocId);
    });
  }

  /** OPERATE: stops or starts the replica's container; the VM, its NICs and addresses stay. Recorded on the replica. */
  setOperationalState(tenantId: string, allocId: string, target: 'STARTED' | 'STOPPED', graceMs = 10_000): Promise<ReplicaResult> {
    return this.mutex.run(tenantId, async () => {
      const rec = this.findTenant(tenantId);
      const r = rec?.replicas[allocId];
      if (!rec || !r || r.state !== 'running') throw new UnavailableError(`replica ${allocId} does not run on this node`);
      const s = await this.guest.session(rec);
      if (target === 'STOPPED') await s.stopContainer(r.containerId, graceMs);
      else await s.startContainer(r.containerId);
      if (target === 'STOPPED') r.containersStopped = true;
      else delete r.containersStopped;
      this.put(rec);
      return { sandboxId: rec.sandboxId, interfaces: interfaceStatus(r), booted: false, ...digestOf(r) };
    });
  }

  /**
   * Guest liveness (guest-liveness.ts): one look at the guest agent of every running tenant VM that nothing acts on
   * now (a busy tenant is looked at next time). Changes nothing: the verdicts name the replicas lost and why; the
   * caller reports them and calls removeLost.
   */
  async checkGuests(): Promise<GuestVerdict[]> {
    const out: GuestVerdict[] = [];
    const recs = this.list().filter((r) => !r.warm && r.state === 'running');
    const live = new Set(recs.map((r) => r.sandboxId));
    this.liveness.prune(live);
    for (const id of this.guestAway) if (!live.has(id)) this.guestAway.delete(id);
    for (const rec of recs) {
      if (this.mutex.busy(rec.tenantId) || !this.alive(rec.sandboxId)) continue;
      // a migration dropped its session: watched again once something connected it again (a cancelled migration)
      if (this.guestAway.has(rec.sandboxId)) {
        if (!this.guest.connected(rec.sandboxId)) continue;
        this.guestAway.delete(rec.sandboxId);
      }
      const v = await this.mutex.run(rec.tenantId, async () => {
        const cur = this.store.get(rec.sandboxId);
        // a dead VM is the resync's (ensureReplica boots it again); one that moved away (live migration) runs elsewhere
        if (!cur || cur.state !== 'running' || cur.movedAway !== undefined || !this.alive(cur.sandboxId)) return undefined;
        const fresh = upgradeRecord(cur);
        return this.liveness.check(fresh, () => this.guest.session(fresh), () => this.vmRunning(fresh.sandboxId));
      });
      if (v) out.push(v);
    }
    return out;
  }

  /** QEMU says the VM runs (not paused for a migration's switchover, not stopped); false when QMP does not answer. */
  private async vmRunning(sandboxId: string): Promise<boolean> {
    const vm = this.vm.vmOf(sandboxId);
    if (!vm) return false;
    try {
      return (await withQmp(vm.apiSocket, (q) => q.queryStatus(), 3000)).status === 'running';
    } catch {
      return false;
    }
  }

  /**
   * Removes the replicas a guest liveness verdict found lost: the whole sandbox when they are all its replicas (a
   * restarted guest agent: the VM's containers run on out of reach, so the VM goes), else each replica.
   */
  removeLost(v: GuestVerdict): Promise<void> {
    return this.mutex.run(v.tenantId, async () => {
      const ids = v.lost.map((r) => r.allocId);
      const cur = this.store.get(v.sandboxId);
      if (!cur) return;
      const rec = upgradeRecord(cur);
      if (Object.keys(rec.replicas).every((id) => ids.includes(id))) {
        await this.teardown(rec);
        this.liveness.forget(v.sandboxId);
        return;
      }
      for (const id of ids) {
        const now = this.store.get(v.sandboxId);
        if (now?.replicas[id]) await this.removeReplicaLocked(upgradeRecord(now), id);
      }
    });
  }

  /** Stops every sandbox (operator shutdown of the node; a normal agent stop leaves VMs running). */
  async stopAll(): Promise<void> {
    await this.warm?.stop();
    for (const rec of this.list()) await this.mutex.run(rec.tenantId, () => this.teardown(rec));
  }

  /** Live migration (migration.ts): the destination's incoming VM and the source's QMP actions. */
  get migration(): SandboxMigration {
    this.migrationParts ??= new SandboxMigration({
      stateDir: this.deps.cfg.stateDir,
      driver: this.driver,
      vm: this.vm,
      log: this.log,
      findTenant: (t) => this.findTenant(t),
      replicas: () => this.replicas(),
      put: (rec) => this.put(rec),
      allocUid: () => this.vm.allocUid(this.list().map((s) => s.uid)),
      attach: (rec, replica) => this.nets.attach(rec, replica, () => this.put(rec)),
      prepareImage: (rec, replica) => this.prepareImage(rec, replica),
      teardown: (rec) => this.teardown(rec),
      dropGuest: (id) => {
        this.guestAway.add(id);
        return this.guest.drop(id);
      },
      reconnectGuest: async (rec) => {
        this.guestAway.delete(rec.sandboxId);
        await this.guest.session(rec);
      },
      tenantLock: (t, fn) => this.mutex.run(t, fn),
    });
    return this.migrationParts;
  }
  private migrationParts?: SandboxMigration;

  /** Closes guest sessions; VMs keep running (a restarted agent re-adopts them). */
  async close(): Promise<void> {
    await this.warm?.stop();
    await this.guest.closeAll();
  }

  /** The guest agent session of a running sandbox (connected on demand, e.g. after re-adoption). */
  async guestSession(sandboxId: string): Promise<GuestSession> {
    const rec = this.store.get(sandboxId);
    if (!rec) throw new UnavailableError(`no sandbox ${sandboxId}`);
    return this.guest.session(upgradeRecord(rec));
  }

  private list(): SandboxRecord[] {
    return this.store.list().map(upgradeRecord);
  }

  private findTenant(tenantId: string): SandboxRecord | undefined {
    return this.list().find((s) => s.tenantId === tenantId);
  }

  private put(rec: SandboxRecord): void {
    rec.updatedAt = new Date().toISOString();
    this.store.put(rec);
    this.refreshGauges();
  }

  /**
   * A record write on the way down (teardown, replica removal): when it fails (disk full) the stop carries on —
   * QEMU is stopped and what can be freed is freed; the record left behind is finished by the next pass or init().
   */
  private putOnTheWayDown(rec: SandboxRecord, log: Logger): void {
    try {
      this.put(rec);
    } catch (err) {
      log.error({ err, sandboxId: rec.sandboxId }, 'sandbox record not written (disk full?): stopping anyway');
    }
  }

  private logFor(alloc: Allocation, sandboxId: string): Logger {
    return this.log.child({ tenantId: alloc.tenantId, vnfId: alloc.vnfId, sandboxId });
  }

  private newReplica(alloc: Allocation, rec: SandboxRecord, hotplugged: boolean): ReplicaRecord {
    const taken = Object.values(rec.replicas).flatMap((r) => Object.values(r.guestIfNames));
    return {
      allocId: alloc.allocId,
      alloc,
      state: 'starting',
      attachments: {},
      ...nameInterfaces(alloc, taken),
      containerId: `r-${hash(alloc.allocId, 12)}`,
      hotplugged,
    };
  }

  /** Resolves the replica's image (pull, pack) and stages its disk in the sandbox; recorded on the replica. */
  private async prepareImage(rec: SandboxRecord, replica: ReplicaRecord, progress?: ProgressFn) {
    if (!this.deps.images) return null;
    const resolved = await this.deps.images.resolve(replica.alloc.image.ref, progress);
    replica.image = replicaImage(resolved);
    const hotplug = rec.state === 'running' && !(resolved.disk && (rec.disks ?? []).includes(resolved.disk.serial));
    const disk = await stageImageDisk(resolved, rec.runDir, { uid: rec.uid, gid: rec.gid }, { hotplug, ...(rec.vmRoot ? { dir: join(rec.vmRoot, VM_ROOT_DISKS) } : {}) });
    this.put(rec);
    return disk;
  }

  private async boot(alloc: Allocation, signal: AbortSignal, progress?: ProgressFn): Promise<ReplicaResult> {
    const t0 = process.hrtime.bigint();
    const sandboxId = `sb-${alloc.tenantId}-${randomBytes(3).toString('hex')}`;
    const log = this.logFor(alloc, sandboxId);
    const uid = this.vm.allocUid(this.list().map((s) => s.uid));
    const rec = newSandboxRecord({ sandboxId, tenantId: alloc.tenantId, hypervisor: this.driver.kind, uid, parentDir: join(this.deps.cfg.stateDir, 'tenants', alloc.tenantId) });
    const replica = this.newReplica(alloc, rec, false);
    rec.replicas[alloc.allocId] = replica;
    this.put(rec); // written before acting: a crash from here on is cleaned up by init()
    let result = 'ok';
    try {
      await this.vm.prepareHost(rec, alloc, log);
      this.put(rec);
      const disk = await this.prepareImage(rec, replica, progress);
      if (disk) rec.disks = [disk.serial];
      const nics = await this.nets.attach(rec, replica, () => this.put(rec));
      rec.spec = this.vm.spec(rec, alloc, nics, disk ? [disk] : []);
      this.put(rec);
      const vm = await this.vm.start(rec, rec.spec, signal, {
        onSpawned: (h) => {
          this.deps.events?.onExec?.(sandboxId);
          this.deps.metrics?.execLatency.observe(Number(process.hrtime.bigint() - t0) / 1e9);
          rec.vm = this.driver.record(h);
          try {
            this.put(rec);
          } catch (err) {
            // a VM no record knows of would outlive this agent: it goes at once
            log.error({ err, pid: h.pid }, 'cannot record the spawned VM (disk full?): killing it');
            killQuiet(h.pid, 'SIGKILL');
            throw err;
          }
        },
        waitReady: async (h, sig) => {
          await this.guest.connectAtBoot(sandboxId, h.agentSocket!, { timeoutMs: this.deps.cfg.guest.bootTimeoutMs, signal: sig });
          this.deps.events?.onGuestReady?.(sandboxId);
        },
      });
      rec.state = 'running';
      this.put(rec);
      const bootSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const pinned = await this.vm.pin(rec);
      log.info({ pid: vm.pid, accel: vm.accel, machine: vm.machine, bootSeconds, pinned }, `VM booted (${this.driver.kind}, accel ${vm.accel})`);
      await this.startInGuest(rec, replica);
      return { sandboxId, interfaces: interfaceStatus(replica), booted: true, ...digestOf(replica) };
    } catch (err) {
      result = 'error';
      const consoleTail = this.vm.consoleTail(rec);
      log.warn({ err, consoleTail }, 'boot failed: releasing everything the sandbox held');
      await this.teardown(rec);
      if (err instanceof AppError && consoleTail) {
        throw new AppError(err.code, `${err.message}\n--- guest console (last lines) ---\n${consoleTail}`, { cause: err, retryable: err.retryable });
      }
      throw err;
    } finally {
      this.deps.metrics?.bootDuration.observe({ hypervisor: this.driver.kind, accel: this.deps.accel, result }, Number(process.hrtime.bigint() - t0) / 1e9);
    }
  }

  /** A tenant's first replica on the node: claims a warm VM that fits, else boots one. */
  private async claimOrBoot(alloc: Allocation, signal: AbortSignal, progress?: ProgressFn): Promise<ReplicaResult> {
    const rec = this.warm?.take(alloc, this.deps.hotplugSlots ?? 4);
    if (rec) return this.claim(upgradeRecord(rec), alloc, signal, progress);
    await this.warm?.makeRoom(alloc);
    // snapshot boot: no ready pool VM, but the flavour's template restores one for this replica (warm-pool.ts)
    const restored = await this.warm?.restoreForClaim(alloc, this.deps.hotplugSlots ?? 4, signal);
    if (restored) return this.claim(upgradeRecord(restored), alloc, signal, progress);
    return this.boot(alloc, signal, progress);
  }

  /**
   * Gives a warm pool VM to the tenant: recorded as the tenant's first (its uid, netns and cgroup are the VM's own
   * since boot), pinned, the replica's image disk and NICs hot-plugged, its container started. From the first
   * record write on it is the tenant's sandbox: a failure tears it down, it never returns to the pool.
   */
  private async claim(rec: SandboxRecord, alloc: Allocation, signal: AbortSignal, progress?: ProgressFn): Promise<ReplicaResult> {
    const t0 = process.hrtime.bigint();
    const log = this.logFor(alloc, rec.sandboxId);
    rec.tenantId = alloc.tenantId;
    delete rec.warm;
    rec.claimedAt = new Date().toISOString();
    const replica = this.newReplica(alloc, rec, true);
    rec.replicas[alloc.allocId] = replica;
    this.put(rec);
    try {
      const ms = (): number => Math.round(Number(process.hrtime.bigint() - t0) / 1e6);
      const disk = await this.prepareImage(rec, replica, progress);
      const pinned = await this.vm.pin(rec);
      if (signal.aborted) throw new UnavailableError('aborted');
      if (disk) {
        await this.vm.addDisk(rec, disk);
        rec.disks = [disk.serial];
        this.put(rec);
      }
      log.debug({ ms: ms() }, 'claim: image and pinning done');
      const nics = await this.nets.attach(rec, replica, () => this.put(rec));
      log.debug({ ms: ms() }, 'claim: attachments made');
      for (const d of nics) {
        await this.vm.addNic(rec, d);
        this.put(rec);
      }
      log.debug({ ms: ms() }, 'claim: NICs hot-plugged');
      await this.startInGuest(rec, replica);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      this.deps.metrics?.warmClaimDuration.observe(seconds);
      log.info({ claimSeconds: seconds, pinned }, 'warm VM claimed: replica running');
      return { sandboxId: rec.sandboxId, interfaces: interfaceStatus(replica), booted: false, warm: true, ...digestOf(replica) };
    } catch (err) {
      log.warn({ err }, 'claiming the warm VM failed: tearing it down (it never returns to the pool)');
      await this.teardown(rec);
      throw err;
    } finally {
      this.warm!.claimed(rec.sandboxId); // the refill boots after the claim: it does not take the claim's CPU
    }
  }

  private async grow(rec: SandboxRecord, alloc: Allocation, signal: AbortSignal, progress?: ProgressFn): Promise<ReplicaResult> {
    const log = this.logFor(alloc, rec.sandboxId);
    if (!this.vm.vmOf(rec.sandboxId) || !rec.spec) throw new UnavailableError(`sandbox ${rec.sandboxId} is not running`);
    // before anything changes: a vIOMMU is given at boot only
    if (!rec.spec.viommu && needsViommu(alloc, this.deps.cfg.guest.vfioNoIommu)) {
      throw new UnschedulableError(
        `resources.dataplane: a vfio-pci data plane in the guest needs a virtual IOMMU, and tenant ${alloc.tenantId}'s VM on this node (${rec.sandboxId}) was booted without one (one cannot be added to a running VM); the node's operator can give every VM one (guest.viommu: always) or allow no-IOMMU mode (guest.vfioNoIommu)`,
      );
    }
    const replica = this.newReplica(alloc, rec, true);
    rec.replicas[alloc.allocId] = replica;
    this.put(rec);
    try {
      // the image first: a pull that fails leaves the running VM untouched
      const disk = await this.prepareImage(rec, replica, progress);
      const size = await this.vm.grow(rec, alloc);
      this.put(rec);
      const pinned = await this.vm.pin(rec); // the new vCPUs run where the ledger says too
      if (pinned.length) log.info({ pinned }, 'VM re-pinned after growing');
      if (signal.aborted) throw new UnavailableError('aborted');
      if (disk && !(rec.disks ?? []).includes(disk.serial)) {
        await this.vm.addDisk(rec, disk);
        rec.disks = [...(rec.disks ?? []), disk.serial];
        this.put(rec);
      }
      const nics = await this.nets.attach(rec, replica, () => this.put(rec));
      for (const d of nics) {
        await this.vm.addNic(rec, d);
        this.put(rec);
      }
      log.info(size, 'replica joins the tenant VM (hotplug)');
      await this.startInGuest(rec, replica);
      return { sandboxId: rec.sandboxId, interfaces: interfaceStatus(replica), booted: false, ...digestOf(replica) };
    } catch (err) {
      log.warn({ err }, 'adding the replica failed: undoing');
      replica.state = 'failed';
      replica.error = asAppError(err).toBody();
      await this.removeReplicaLocked(rec, alloc.allocId);
      throw err;
    }
  }

  private async startInGuest(rec: SandboxRecord, replica: ReplicaRecord): Promise<void> {
    await this.guest.startReplica(rec, replica);
    replica.state = 'running';
    // placed while its VNF is OPERATEd STOPPED: the container was created, not started
    if (replica.alloc.operationalState === 'STOPPED') replica.containersStopped = true;
    this.put(rec);
  }

  private async removeReplicaLocked(rec: SandboxRecord, allocId: string): Promise<void> {
    const replica = rec.replicas[allocId];
    if (!replica) return;
    if (Object.values(rec.replicas).every((r) => r.allocId === allocId)) {
      await this.teardown(rec);
      return;
    }
    const log = this.log.child({ sandboxId: rec.sandboxId, tenantId: rec.tenantId, vnfId: replica.alloc.vnfId });
    replica.state = 'stopping';
    this.putOnTheWayDown(rec, log);
    const steps = new Steps((err, step) => log.warn({ err, step }, 'replica removal step failed'));
    // a VM that switched over to another node (live migration) stays paused here: its guest runs there
    if (this.alive(rec.sandboxId) && !rec.movedAway) {
      await steps.run('remove container', () => this.guest.removeContainer(rec, replica));
      await this.vm.shrink(rec, replica, steps);
      await steps.run('update guest', () => this.guest.syncRoutes(rec));
    }
    await this.nets.detach(rec, replica, steps);
    delete rec.replicas[allocId];
    this.putOnTheWayDown(rec, log);
    log.info({ allocId, problems: steps.errors.length }, 'replica removed from the tenant VM');
  }

  /**
   * Stops the VM and releases everything the sandbox held: process, attachments (taps, VF bindings, switch ports),
   * cgroup, netns, sockets and folders, record. Safe to repeat; keeps the record when a step failed, for the next try.
   */
  private async teardown(rec: SandboxRecord): Promise<void> {
    const log = this.log.child({ sandboxId: rec.sandboxId, tenantId: rec.tenantId });
    rec.state = 'stopping';
    this.putOnTheWayDown(rec, log);
    const steps = new Steps((err, step) => log.error({ err, step }, 'teardown step failed'));
    await steps.run('close guest session', () => this.guest.drop(rec.sandboxId));
    await this.vm.stop(rec, steps);
    for (const r of Object.values(rec.replicas)) await this.nets.detach(rec, r, steps);
    await this.vm.releaseHost(rec, steps);
    if (steps.errors.length === 0) {
      this.store.delete(rec.sandboxId);
      log.info('sandbox torn down: nothing left');
    } else {
      rec.state = 'failed';
      this.putOnTheWayDown(rec, log);
    }
    this.refreshGauges();
  }

  refreshGauges(): void {
    const m = this.deps.metrics;
    if (!m) return;
    const recs = this.store.list().filter((r) => !r.warm);
    m.sandboxes.reset();
    for (const st of ['creating', 'running', 'stopping', 'failed'] as const) m.sandboxes.set({ state: st }, recs.filter((r) => r.state === st).length);
    m.replicas.reset();
    const reps = recs.flatMap((r) => Object.values(r.replicas));
    for (const st of ['starting', 'running', 'stopping', 'failed'] as const) m.replicas.set({ state: st }, reps.filter((r) => r.state === st).length);
  }

  /** The guest agent's RSS in each running sandbox, by tenant (asked over the channel; failures skipped). */
  async guestAgentRssByTenant(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const rec of this.list()) {
      if (rec.warm || rec.state !== 'running' || !this.alive(rec.sandboxId)) continue;
      const rss = await this.guest.agentRss(rec);
      if (rss !== undefined) out.set(rec.tenantId, rss);
    }
    return out;
  }

  /** RSS of each live sandbox's hypervisor, by tenant. */
  rssByTenant(): Map<string, number> {
    const out = new Map<string, number>();
    for (const rec of this.list()) {
      if (rec.warm) continue;
      const vm = this.vm.vmOf(rec.sandboxId);
      const rss = vm ? procRssBytes(vm.pid) : null;
      if (rss !== null) out.set(rec.tenantId, rss);
    }
    return out;
  }
}

function digestOf(r: ReplicaRecord): { imageDigest?: string } {
  return r.image?.digest ? { imageDigest: r.image.digest } : {};
}
