/**
 * Warm pools (docs/node-agent.md "Warm pools"): per flavour (vCPUs, memory, NUMA node) a configured number of idle,
 * tenant-less VMs, booted until their guest agent answers, with no NIC, disk or container of anyone. A tenant's first
 * replica on the node whose demand is exactly a flavour claims one (SandboxManager.ensureReplica): the VM becomes the
 * tenant's sandbox and never returns here. The pool refills in the background, one boot at a time, only while the
 * host's CPU use is below `warmPoolCpuBudgetPercent` and the node has room beside what its allocations book; its VMs
 * run niced until claimed.
 *
 * A pool VM is an ordinary sandbox record (state.ts) with `warm` set and no tenant: its uid (QEMU's `-run-with
 * user=`), network namespace and cgroup are its own from boot, as for any sandbox (one per VM, never per tenant), and
 * stay with it when it is claimed. Its folder stays under `<stateDir>/pool/` (QEMU made its sockets there at boot).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { setPriority } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Allocation, VmOverhead, WarmPoolInfo } from '@edgenfv/contracts';
import type { VmSpec } from '../hypervisor/types.js';
import type { WarmPoolFlavour } from '../config.js';
import type { NodeAgentMetrics } from '../metrics.js';
import type { GuestSync } from './guest-sync.js';
import { newSandboxRecord, type SandboxRecord } from './records.js';
import type { VmLifecycle } from './vm-lifecycle.js';
import type { SnapshotTemplates } from './snapshot-boot.js';
import { needsViommu } from './dataplane.js';

/** Niceness of a pool VM's QEMU until it is claimed (its boot and idling yield to tenants' VMs). */
export const POOL_NICE = 10;
/** The tenant id a pool VM's record carries until it is claimed (never a valid tenant id: tenants are DNS labels). */
export const POOL_TENANT = '';

/** What the pool needs of the sandbox manager. */
export interface WarmPoolHost {
  vm: VmLifecycle;
  guest: GuestSync;
  list(): SandboxRecord[];
  put(rec: SandboxRecord): void;
  teardown(rec: SandboxRecord): Promise<void>;
}

export interface WarmPoolOptions {
  flavours: readonly Readonly<WarmPoolFlavour>[];
  cpuBudgetPercent: number;
  stateDir: string;
  bootTimeoutMs: number;
  logger: Logger;
  metrics?: NodeAgentMetrics;
  /**
   * The node's memory, CPUs and shared vCPUs per unpinned CPU (the inventory's `cpuAllocationRatio`): a refill needs
   * room beside the allocations and other pool VMs, counted as the scheduler counts it.
   */
  capacity?: () => Promise<{ memoryMiB: number; cpuCount: number; cpuAllocationRatio: number }>;
  /** Per-VM overhead the node books (inventory.vmOverhead). */
  overhead?: VmOverhead;
  /** How often the refill loop looks (default 2000 ms); a claim wakes it at once. */
  intervalMs?: number;
  /** Snapshot boot (node config guest.snapshotBoot): refills are restored from a template (snapshot-boot.ts). */
  snapshots?: SnapshotTemplates;
  /**
   * A vfio-pci data plane in the guest may claim a pool VM: pool VMs boot with a virtual IOMMU (guest.viommu always)
   * or the operator allows vfio's no-IOMMU mode in guests (guest.vfioNoIommu). See claimMismatch.
   */
  vfioOk?: boolean;
}

/** Builtin images a pool VM runs once before it is ready (see WarmPool.prewarm). */
const PREWARM_IMAGES = ['builtin:vrouter', 'builtin:busybox'];

export function flavourKey(f: Pick<WarmPoolFlavour, 'vcpus' | 'memoryMiB' | 'numaNode'>): string {
  return `${f.vcpus}c-${f.memoryMiB}m-numa${f.numaNode ?? 'any'}`;
}

/**
 * Interfaces that can be hot-plugged into a running VM: macvtap cannot (its fd would go over QMP): those replicas
 * boot their own VM. A VF can: the node agent stages its vfio group in the chrooted QEMU's root and raises QEMU's
 * locked-memory limit before `device_add` (hypervisor/qemu.ts, vfio-root.ts), as for a later replica's VF.
 */
const HOTPLUGGABLE = new Set(['tap', 'vhostuser', 'sriov']);

/**
 * Why an allocation cannot claim a VM of this flavour (undefined: it can). `vfioOk`: pool VMs boot with a virtual
 * IOMMU (guest.viommu always) or the node's operator allows vfio's no-IOMMU mode in guests (guest.vfioNoIommu);
 * otherwise a data plane that binds a NIC to vfio-pci in the guest needs a virtual IOMMU, which only a boot gives.
 */
export function claimMismatch(alloc: Allocation, f: Readonly<WarmPoolFlavour>, hotplugSlots: number, vfioOk = false): string | undefined {
  const r = alloc.resources;
  if (r.vcpus !== f.vcpus || r.memoryMiB !== f.memoryMiB) return 'vCPUs/memory differ from the flavour';
  if (r.hugepages && r.hugepages.count > 0) return 'hugepage-backed (pool VMs have ordinary memory)';
  if (f.numaNode !== undefined && r.numaNode !== undefined && r.numaNode !== f.numaNode) return `NUMA node ${r.numaNode}, the flavour's is ${f.numaNode}`;
  const cold = alloc.interfaces.filter((i) => !HOTPLUGGABLE.has(i.type));
  if (cold.length) return `${cold.map((i) => i.type).join(', ')} interfaces cannot be hot-plugged`;
  if (alloc.interfaces.length > hotplugSlots) return `more interfaces than the VM's ${hotplugSlots} hotplug slots`;
  if (needsViommu(alloc, vfioOk)) return 'a vfio-pci data plane in the guest needs a virtual IOMMU (given at boot only)';
  return undefined;
}

/** CPU time counters of the host (aggregate line of /proc/stat): busy and total jiffies. */
function cpuTimes(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = line.slice(0, 8).reduce((s, v) => s + v, 0);
  const idle = (line[3] ?? 0) + (line[4] ?? 0);
  return { busy: total - idle, total };
}

/** Sets every thread of a process to `nice` (a claimed VM runs at the tenants' priority again). */
export function reniceProcess(pid: number, nice: number): void {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return;
  }
  for (const t of tids) {
    try {
      setPriority(Number(t), nice);
    } catch {
      /* thread gone */
    }
  }
}

export class WarmPool {
  private readonly log: Logger;
  /** Pool VMs taken by a claim whose record is not yet the tenant's. */
  private readonly taken = new Set<string>();
  private timer?: NodeJS.Timeout;
  private running = false;
  private booting?: { key: string; abort: AbortController; done: Promise<void> };
  private lastCpu = cpuTimes();
  private lastCpuAt = Date.now();
  private lastBusyPercent = 0;
  private loopQueued = false;
  /** No refill starts before this (a cold boot that needed the pool's room has not written its record yet). */
  private quietUntil = 0;
  private loop?: Promise<void>;

  constructor(
    private readonly o: WarmPoolOptions,
    private readonly host: WarmPoolHost,
  ) {
    this.log = o.logger.child({ component: 'warm-pool' });
  }

  get configured(): boolean {
    return this.o.flavours.some((f) => f.count > 0);
  }

  private pool(): SandboxRecord[] {
    return this.host.list().filter((r) => r.warm && !this.taken.has(r.sandboxId));
  }

  /** Interrupted pool boots (the agent stopped while one came up) are torn down; then the refill loop starts. */
  async start(): Promise<void> {
    for (const rec of this.pool()) {
      const live = this.host.vm.alive(rec.sandboxId);
      const known = this.o.flavours.some((f) => flavourKey(f) === rec.warm!.flavour && f.count > 0);
      if (rec.state !== 'running' || !live || !known) {
        this.log.info({ sandboxId: rec.sandboxId, state: rec.state, live, known }, 'pool VM not kept (interrupted boot, gone, or flavour no longer configured): tearing down');
        await this.host.teardown(rec);
      }
    }
    // templates of no configured flavour's key now (image, QEMU or flavour changed): deleted
    this.o.snapshots?.prune(new Set(this.o.flavours.filter((f) => f.count > 0).map((f) => this.o.snapshots!.key(this.specOf(this.keyRecord(), f)))));
    this.running = true;
    this.timer = setInterval(() => this.kick(), this.o.intervalMs ?? 2000);
    this.kick();
  }

  /** Stops refilling; a boot in flight is aborted (its VM torn down). Ready VMs stay (re-adopted at the next start). */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearInterval(this.timer);
    this.booting?.abort.abort();
    await this.booting?.done;
    await this.loop;
  }

  /** What nodes.get, the heartbeat and the dashboard show. */
  info(): WarmPoolInfo[] {
    const recs = this.pool();
    return this.o.flavours.map((f) => {
      const key = flavourKey(f);
      const mine = recs.filter((r) => r.warm!.flavour === key);
      const ready = mine.filter((r) => r.state === 'running');
      return {
        vcpus: f.vcpus,
        memoryMiB: f.memoryMiB,
        ...(f.numaNode !== undefined ? { numaNode: f.numaNode } : {}),
        count: f.count,
        ready: ready.length,
        booting: mine.length - ready.length,
        readyVms: ready.map((r) => r.sandboxId).sort(),
      };
    });
  }

  /**
   * Takes a ready VM for the allocation when one fits (synchronous: two claims never get the same VM); undefined
   * when none does. The caller makes it the tenant's sandbox; it never comes back.
   */
  take(alloc: Allocation, hotplugSlots: number): SandboxRecord | undefined {
    for (const f of this.o.flavours) {
      if (claimMismatch(alloc, f, hotplugSlots, this.o.vfioOk)) continue;
      const key = flavourKey(f);
      const rec = this.pool().find((r) => r.warm!.flavour === key && r.state === 'running' && this.host.vm.alive(r.sandboxId));
      if (!rec) continue;
      this.taken.add(rec.sandboxId);
      reniceProcess(this.host.vm.vmOf(rec.sandboxId)!.pid, 0);
      this.log.info({ sandboxId: rec.sandboxId, flavour: key, tenantId: alloc.tenantId, allocId: alloc.allocId }, 'warm VM claimed');
      this.o.metrics?.warmClaims.inc({ result: 'claimed' });
      return rec;
    }
    if (this.configured) this.o.metrics?.warmClaims.inc({ result: 'none' });
    return undefined;
  }

  /** The claimed VM's record is the tenant's now: forget it and refill. */
  claimed(sandboxId: string): void {
    this.taken.delete(sandboxId);
    this.refreshGauges();
    this.kick();
  }

  /** Wakes the refill loop (coalesced). */
  kick(): void {
    if (!this.running) return;
    if (this.loop) {
      this.loopQueued = true;
      return;
    }
    this.loop = this.refill()
      .catch((err) => this.log.error({ err }, 'warm pool refill failed'))
      .finally(() => {
        this.loop = undefined;
        if (this.loopQueued) {
          this.loopQueued = false;
          this.kick();
        }
      });
  }

  /** Host CPU use (%) since the last look. */
  private busyPercent(): number {
    const now = cpuTimes();
    const dt = now.total - this.lastCpu.total;
    if (dt > 0 && Date.now() - this.lastCpuAt >= 500) {
      this.lastBusyPercent = ((now.busy - this.lastCpu.busy) / dt) * 100;
      this.lastCpu = now;
      this.lastCpuAt = Date.now();
    }
    return this.lastBusyPercent;
  }

  /** One boot at a time: the first flavour below its count, when the CPU budget and the node's room allow. */
  private async refill(): Promise<void> {
    this.refreshGauges();
    // a claim in progress first: its VM needs the CPU more than a refill
    if (this.booting || !this.running || this.taken.size > 0 || Date.now() < this.quietUntil) return;
    const recs = this.pool();
    const f = this.o.flavours.find((fl) => recs.filter((r) => r.warm!.flavour === flavourKey(fl)).length < fl.count);
    if (!f) return;
    if (this.o.cpuBudgetPercent < 100) {
      const busy = this.busyPercent();
      if (busy >= this.o.cpuBudgetPercent) {
        this.log.debug({ busyPercent: Math.round(busy), budget: this.o.cpuBudgetPercent }, 'refill waits: host CPU above the budget');
        return;
      }
    }
    const noRoom = await this.noRoom(f);
    if (noRoom) {
      this.log.debug({ flavour: flavourKey(f), reason: noRoom }, 'refill waits: no room on the node');
      return;
    }
    const abort = new AbortController();
    const key = flavourKey(f);
    const done = this.bootOne(f, abort.signal).finally(() => {
      this.booting = undefined;
      this.kick();
    });
    this.booting = { key, abort, done };
  }

  /**
   * A cold boot the scheduler placed into room a refill has taken meanwhile (the scheduler learns of pool VMs by
   * heartbeat): idle pool VMs are torn down (a booting one first) until the new tenant VM fits beside them.
   */
  async makeRoom(alloc: Allocation): Promise<void> {
    const r = alloc.resources;
    const demand = { memoryMiB: r.memoryMiB, vcpus: r.cpus?.length ? 0 : r.vcpus, pinned: r.cpus?.length ?? 0 };
    for (;;) {
      const why = await this.noRoom(demand);
      if (!why) return;
      this.quietUntil = Date.now() + 5000;
      if (this.booting) {
        this.log.info({ reason: why, allocId: alloc.allocId }, 'a placed replica needs the room of the pool VM booting: aborting its boot');
        this.booting.abort.abort();
        await this.booting.done;
        continue;
      }
      const victim = this.pool().find((x) => x.state === 'running');
      if (!victim) return; // nothing of the pool's left to give: the boot goes ahead as placed
      this.taken.add(victim.sandboxId);
      this.log.info({ reason: why, sandboxId: victim.sandboxId, allocId: alloc.allocId }, 'a placed replica needs the room of an idle pool VM: tearing it down');
      try {
        await this.host.teardown(victim);
      } finally {
        this.taken.delete(victim.sandboxId);
        this.refreshGauges();
      }
    }
  }

  /** Why the node has no room for one more VM of the given size beside everything it runs (undefined: it has). */
  private async noRoom(f: { memoryMiB: number; vcpus: number; pinned?: number }): Promise<string | undefined> {
    if (!this.o.capacity) return undefined;
    const cap = await this.o.capacity();
    const perVm = (this.o.overhead?.guestBaseMiB ?? 0) + (this.o.overhead?.hypervisorMiB ?? 0);
    const recs = this.host.list().filter((x) => !this.taken.has(x.sandboxId));
    let memory = f.memoryMiB + perVm;
    let shared = f.vcpus;
    let pinned = f.pinned ?? 0;
    for (const rec of recs) {
      if (rec.warm) {
        const fl = this.o.flavours.find((x) => flavourKey(x) === rec.warm!.flavour);
        memory += (fl?.memoryMiB ?? 0) + perVm;
        shared += fl?.vcpus ?? 0;
        continue;
      }
      memory += perVm;
      for (const r of Object.values(rec.replicas)) {
        memory += r.alloc.resources.memoryMiB;
        if (r.alloc.resources.cpus?.length) pinned += r.alloc.resources.cpus.length;
        else shared += r.alloc.resources.vcpus;
      }
    }
    if (memory > cap.memoryMiB) return `memory: ${memory} MiB with it, the node has ${cap.memoryMiB} MiB`;
    const sharedCap = (cap.cpuCount - pinned) * cap.cpuAllocationRatio;
    if (shared > sharedCap) return `vCPUs: ${shared} shared with it, room for ${sharedCap} on ${cap.cpuCount - pinned} unpinned CPUs`;
    return undefined;
  }

  private async bootOne(f: Readonly<WarmPoolFlavour>, signal: AbortSignal): Promise<void> {
    const t0 = process.hrtime.bigint();
    const rec = this.newPoolRecord(f);
    const sandboxId = rec.sandboxId;
    const log = this.log.child({ sandboxId, flavour: flavourKey(f) });
    const resources = { vcpus: f.vcpus, memoryMiB: f.memoryMiB, ...(f.numaNode !== undefined ? { numaNode: f.numaNode } : {}) };
    this.host.put(rec); // written before acting: a crash from here on is cleaned up at the next start
    this.refreshGauges();
    try {
      await this.host.vm.prepareHost(rec, { resources }, log);
      rec.spec = this.specOf(rec, f);
      this.host.put(rec);
      const snap = this.o.snapshots;
      const key = snap?.key(rec.spec);
      let restored = false;
      if (snap && key && snap.usable(key)) {
        await this.restore(rec, key, signal, log);
        restored = true;
      } else {
        await this.host.vm.start(rec, rec.spec, signal, {
          onSpawned: (h) => {
            rec.vm = this.host.vm.driver.record(h);
            this.host.put(rec);
          },
          waitReady: (h, sig) => this.host.guest.connectAtBoot(sandboxId, h.agentSocket!, { timeoutMs: this.o.bootTimeoutMs, signal: sig }),
        });
        if (snap && key && snap.makeable(key)) {
          // the first VM of this image and shape: pre-warmed, saved as the template, then restored from it
          await this.prewarm(sandboxId, rec, log);
          await this.makeTemplate(rec, key, signal, log);
          await this.restore(rec, key, signal, log);
          restored = true;
        }
      }
      if (!this.running) throw new Error('pool stopped');
      await this.prewarm(sandboxId, rec, log);
      rec.state = 'running';
      this.host.put(rec);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      this.o.metrics?.warmBootDuration.observe(seconds);
      log.info({ bootSeconds: seconds, restored }, 'warm VM ready');
    } catch (err) {
      log.warn({ err }, 'warm VM boot failed or aborted: tearing it down');
      await this.host.teardown(rec);
    } finally {
      this.refreshGauges();
    }
  }

  /** A new pool VM's record (its own uid, its folder under `<stateDir>/pool/`), not yet written. */
  private newPoolRecord(f: Readonly<WarmPoolFlavour>): SandboxRecord {
    const sandboxId = `sb-warm-${randomBytes(3).toString('hex')}`;
    return {
      ...newSandboxRecord({ sandboxId, tenantId: POOL_TENANT, hypervisor: this.host.vm.driver.kind, uid: this.host.vm.allocUid(this.host.list().map((s) => s.uid)), parentDir: join(this.o.stateDir, 'pool') }),
      warm: { flavour: flavourKey(f) },
    };
  }

  /**
   * Snapshot boot for a replica that fits a flavour but finds no ready pool VM (all claimed, the refill not done yet):
   * when the flavour's template exists, a VM is restored for it now (a second under TCG instead of a cold boot),
   * reidentified, and taken like a pool VM (the caller claims it). Not pre-warmed (the template was) and not niced.
   * Undefined when no template fits or the restore failed (torn down; the caller boots cold).
   */
  async restoreForClaim(alloc: Allocation, hotplugSlots: number, signal: AbortSignal): Promise<SandboxRecord | undefined> {
    const snap = this.o.snapshots;
    if (!snap || !this.running) return undefined;
    for (const f of this.o.flavours) {
      if (f.count <= 0 || claimMismatch(alloc, f, hotplugSlots, this.o.vfioOk)) continue;
      const key = snap.key(this.specOf(this.keyRecord(), f));
      if (!snap.usable(key)) continue;
      const rec = this.newPoolRecord(f);
      const log = this.log.child({ sandboxId: rec.sandboxId, flavour: flavourKey(f), allocId: alloc.allocId });
      this.taken.add(rec.sandboxId); // never the pool's: the claim takes it (and the refill waits meanwhile)
      this.host.put(rec);
      try {
        const resources = { vcpus: f.vcpus, memoryMiB: f.memoryMiB, ...(f.numaNode !== undefined ? { numaNode: f.numaNode } : {}) };
        await this.host.vm.prepareHost(rec, { resources }, log);
        const { nice: _pool, ...spec } = this.specOf(rec, f);
        rec.spec = spec;
        this.host.put(rec);
        await this.restore(rec, key, signal, log);
        rec.state = 'running';
        this.host.put(rec);
        log.info({ tenantId: alloc.tenantId }, 'no ready pool VM: one restored from the template for this claim');
        return rec;
      } catch (err) {
        log.warn({ err }, 'restoring a VM for the claim failed: tearing it down (the replica boots cold)');
        await this.host.teardown(rec);
        this.taken.delete(rec.sandboxId);
        return undefined;
      }
    }
    return undefined;
  }

  /** A pool VM's boot spec (niced until claimed). */
  private specOf(rec: SandboxRecord, f: Readonly<WarmPoolFlavour>): VmSpec {
    const resources = { vcpus: f.vcpus, memoryMiB: f.memoryMiB, ...(f.numaNode !== undefined ? { numaNode: f.numaNode } : {}) };
    return { ...this.host.vm.spec(rec, { resources }, []), nice: POOL_NICE };
  }

  /** A record to compute a flavour's template key with (the key leaves out the sandbox's own paths and ids). */
  private keyRecord(): SandboxRecord {
    return newSandboxRecord({ sandboxId: 'sb-warm-key', tenantId: POOL_TENANT, hypervisor: this.host.vm.driver.kind, uid: 0, parentDir: join(this.o.stateDir, 'pool') });
  }

  /**
   * Saves the sandbox's running VM (booted cold, pre-warmed) as the key's template and stops it; the sandbox's
   * folders, uid, netns and cgroup stay for the restore that follows.
   */
  private async makeTemplate(rec: SandboxRecord, key: string, signal: AbortSignal, log: Logger): Promise<void> {
    const snap = this.o.snapshots!;
    const vm = this.host.vm.vmOf(rec.sandboxId);
    if (!vm) throw new Error(`pool VM ${rec.sandboxId} is not running`);
    if (signal.aborted) throw new Error('pool boot aborted');
    await this.host.guest.drop(rec.sandboxId);
    try {
      await snap.save(rec, vm, key, () => this.host.vm.driver.alive(vm));
    } catch (err) {
      snap.failed(key, err);
      throw err;
    } finally {
      await this.host.vm.driver.stop(vm, { graceMs: 0 });
    }
    log.info({ key }, 'template snapshot made from this pool VM: restoring it from there');
  }

  /**
   * Restores the pool VM from the key's template (QEMU `-incoming file:` in the sandbox's own root, uid, netns and
   * cgroup), connects its guest agent and gives the guest its own identity (snapshot-boot.ts). A failure deletes the
   * template (the next refill boots cold) and fails this boot (the caller tears the sandbox down).
   */
  private async restore(rec: SandboxRecord, key: string, signal: AbortSignal, log: Logger): Promise<void> {
    const snap = this.o.snapshots!;
    const t0 = process.hrtime.bigint();
    // where a restore's time goes (ms from the start): QEMU spawned, its state loaded and running, the agent ready
    const at: Record<string, number> = {};
    const mark = (k: string): void => void (at[k] = Math.round(Number(process.hrtime.bigint() - t0) / 1e6));
    try {
      const vm = await this.host.vm.start(rec, snap.restoreSpec(rec.spec!, key), signal, {
        onSpawned: (h) => {
          mark('spawnedMs');
          rec.vm = this.host.vm.driver.record(h);
          this.host.put(rec);
        },
        waitReady: async (h, sig) => {
          await snap.resume(h, () => this.host.vm.driver.alive(h), sig, this.o.bootTimeoutMs);
          mark('runningMs');
          await this.host.guest.connectAtBoot(rec.sandboxId, h.agentSocket!, { timeoutMs: this.o.bootTimeoutMs, signal: sig });
          mark('agentReadyMs');
        },
      });
      const id = await snap.reidentify(key, await this.host.guest.session(rec));
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      this.o.metrics?.warmRestoreDuration.observe(seconds);
      log.info({ key, pid: vm.pid, restoreSeconds: seconds, ...at, instanceId: id.instanceId, templateInstanceId: id.previousInstanceId }, 'pool VM restored from the template snapshot (RNG reseeded, clock set, new agent instance)');
    } catch (err) {
      if (!signal.aborted) snap.failed(key, err);
      throw err;
    }
  }

  /**
   * Runs what a claim will run once, with nothing of anyone's: a throwaway container of each builtin image (command
   * `true`: the image's own program does not run) and the NIC/route listing, then removes the container. Under TCG
   * the first run of guest code is translated (QEMU's translation cache) and a builtin image's rootfs is made on its
   * first use; both are then done before a claim instead of during it. What stays in the guest is the node's own
   * builtin rootfs, the same in every VM.
   */
  private async prewarm(sandboxId: string, rec: SandboxRecord, log: Logger): Promise<void> {
    const t0 = Date.now();
    try {
      const s = await this.host.guest.session(rec);
      await s.updateInterfaces([], 0);
      await s.updateRoutes([]);
      for (const image of PREWARM_IMAGES) {
        const id = `warmup-${image.slice('builtin:'.length)}`;
        await s.runContainer({ id, image, command: ['true'], env: [], memoryLimitMiB: 16 });
        await s.removeContainer(id, 0);
      }
      log.debug({ sandboxId, ms: Date.now() - t0 }, 'warm VM pre-warmed');
    } catch (err) {
      log.warn({ err, sandboxId }, 'pre-warming the warm VM failed (a claim will do that work itself)');
    }
  }

  refreshGauges(): void {
    const g = this.o.metrics?.warmPoolVms;
    if (!g) return;
    g.reset();
    for (const p of this.info()) {
      const flavour = flavourKey(p);
      g.set({ flavour, state: 'ready' }, p.ready);
      g.set({ flavour, state: 'booting' }, p.booting);
      g.set({ flavour, state: 'target' }, p.count);
    }
  }
}
