/**
 * Sandbox manager: one VM per tenant per node (the Kata sandbox). The first replica of a tenant boots the VM; later
 * replicas of that tenant run as further containers in the same VM, which grows by vCPU/memory hotplug (QEMU q35;
 * a driver without hotplug refuses, see docs/node-agent.md); the last replica gone stops the VM and releases all it
 * held. Every step is written to the sandbox's record before it is taken, so a restarted agent re-adopts live VMs
 * and cleans up what died meanwhile.
 */
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import {
  AGENT_PORT_NAME,
  AppError,
  InvalidArgumentError,
  UnavailableError,
  asAppError,
  parseMacAddress,
  parsePciAddress,
  type Allocation,
  type AttachmentResult,
  type ErrorBody,
  type HypervisorKind,
  type ReplicaInterfaceStatus,
  type VnfdRoute,
} from '@edgenfv/contracts';
import type { NodeAgentConfig } from '../config.js';
import type { HypervisorDriver, MemoryBackend, NetDevice, VmDevice, VmHandle, VmRecord, VmSpec } from '../hypervisor/types.js';
import { procRssBytes } from '../proc.js';
import { guestPciAddressOf } from '../hypervisor/qemu.js';
import type { Cgroups } from './cgroup.js';
import type { AttachmentPort, GuestNic, GuestPort, GuestSession } from './ports.js';
import { StateStore } from './state.js';
import type { NodeAgentMetrics } from '../metrics.js';

const run = promisify(execFile);

export type SandboxState = 'creating' | 'running' | 'stopping' | 'failed';
export type ReplicaState = 'starting' | 'running' | 'stopping' | 'failed';

export interface ReplicaRecord {
  allocId: string;
  alloc: Allocation;
  state: ReplicaState;
  attachments: AttachmentResult[];
  /** Interface name in the allocation -> host attachment name (= VM device id). */
  hostIfNames: Record<string, string>;
  /** Interface name in the allocation -> name inside the guest. */
  guestIfNames: Record<string, string>;
  containerId: string;
  /** true when this replica's devices were hotplugged (not part of the VM's boot spec). */
  hotplugged: boolean;
  error?: ErrorBody;
}

export interface SandboxRecord {
  version: 1;
  sandboxId: string;
  tenantId: string;
  hypervisor: HypervisorKind;
  state: SandboxState;
  uid: number;
  gid: number;
  tenantDir: string;
  runDir: string;
  netns: string;
  cgroupDir?: string;
  cgroupSkipped?: string[];
  spec?: VmSpec;
  vm?: VmRecord;
  replicas: Record<string, ReplicaRecord>;
  createdAt: string;
  updatedAt: string;
}

export interface ReplicaResult {
  sandboxId: string;
  interfaces: ReplicaInterfaceStatus[];
  /** The VM was booted for this replica (false: it joined a running VM). */
  booted: boolean;
}

export interface SandboxManagerDeps {
  cfg: Pick<NodeAgentConfig, 'stateDir' | 'qemu' | 'guest' | 'isolation' | 'vmBaseMemoryMiB'>;
  driver: HypervisorDriver;
  accel: 'kvm' | 'tcg';
  guest: GuestPort;
  attachments: AttachmentPort;
  cgroups: Cgroups;
  logger: Logger;
  metrics?: NodeAgentMetrics;
  hostCpuKHz?: number;
  /** Guest kernel/initrd (from the config, or built by buildGuestImage()). */
  image: { kernelPath?: string; initrdPath?: string };
  /** Extra kernel arguments (the guest image's). */
  kernelArgs?: string;
  /** Spare PCIe slots for NICs of later replicas. */
  hotplugSlots?: number;
  /** Timing hooks (bench): hypervisor exec'd, guest agent answered health. */
  events?: { onExec?: (sandboxId: string) => void; onGuestReady?: (sandboxId: string) => void };
  /** Grace for a guest power-down before quit/kill. */
  stopGraceMs?: number;
}

function hash(s: string, n: number): string {
  return createHash('sha256').update(s).digest('hex').slice(0, n);
}

/** Serializes work per key (one tenant's sandbox is changed by one operation at a time). */
class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }
}

export class SandboxManager {
  private readonly store: StateStore<SandboxRecord>;
  private readonly vms = new Map<string, VmHandle>();
  private readonly sessions = new Map<string, GuestSession>();
  private readonly mutex = new KeyedMutex();
  private readonly log: Logger;

  constructor(private readonly deps: SandboxManagerDeps) {
    this.store = new StateStore<SandboxRecord>(deps.cfg.stateDir, deps.logger);
    this.log = deps.logger.child({ component: 'sandbox' });
  }

  /** Re-adopts every live VM of the state folder and cleans up what died meanwhile. */
  async init(): Promise<{ adopted: string[]; cleaned: string[] }> {
    this.deps.cgroups.init();
    const adopted: string[] = [];
    const cleaned: string[] = [];
    for (const rec of this.store.list()) {
      const log = this.log.child({ sandboxId: rec.sandboxId, tenantId: rec.tenantId });
      const vm = rec.vm && rec.state !== 'stopping' ? await this.deps.driver.adopt(rec.vm) : null;
      if (vm) {
        this.vms.set(rec.sandboxId, vm);
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
    return { adopted, cleaned };
  }

  sandboxes(): SandboxRecord[] {
    return this.store.list();
  }

  /** allocId -> its sandbox and replica record. */
  replicas(): Map<string, { sandbox: SandboxRecord; replica: ReplicaRecord }> {
    const out = new Map<string, { sandbox: SandboxRecord; replica: ReplicaRecord }>();
    for (const s of this.store.list()) for (const r of Object.values(s.replicas)) out.set(r.allocId, { sandbox: s, replica: r });
    return out;
  }

  vmOf(sandboxId: string): VmHandle | undefined {
    return this.vms.get(sandboxId);
  }

  /** true while the sandbox's hypervisor process lives. */
  alive(sandboxId: string): boolean {
    const vm = this.vms.get(sandboxId);
    return vm !== undefined && this.deps.driver.alive(vm);
  }

  /** Idempotent: runs the allocation's replica in its tenant's VM (booting it when it is the first). */
  ensureReplica(alloc: Allocation, signal: AbortSignal = new AbortController().signal): Promise<ReplicaResult> {
    try {
      validateAlloc(alloc);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.mutex.run(alloc.tenantId, async () => {
      const existing = this.findTenant(alloc.tenantId);
      const r = existing?.replicas[alloc.allocId];
      if (existing && r && r.state === 'running' && this.alive(existing.sandboxId)) {
        return { sandboxId: existing.sandboxId, interfaces: interfaceStatus(r), booted: false };
      }
      if (existing && !this.alive(existing.sandboxId) && existing.state !== 'creating') {
        // The VM died under us: release everything, then boot again for this replica.
        this.log.warn({ sandboxId: existing.sandboxId, tenantId: alloc.tenantId }, 'tenant VM is gone: rebuilding');
        await this.teardown(existing);
        return this.boot(alloc, signal);
      }
      if (!existing) return this.boot(alloc, signal);
      if (r) await this.removeReplicaLocked(existing, alloc.allocId); // half-done earlier: start it over
      return this.grow(this.store.get(existing.sandboxId)!, alloc, signal);
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

  /** Stops every sandbox (operator shutdown of the node; a normal agent stop leaves VMs running). */
  async stopAll(): Promise<void> {
    for (const rec of this.store.list()) await this.mutex.run(rec.tenantId, () => this.teardown(rec));
  }

  /** Closes guest sessions; VMs keep running (a restarted agent re-adopts them). */
  async close(): Promise<void> {
    for (const s of this.sessions.values()) await s.close().catch(() => undefined);
    this.sessions.clear();
  }

  private findTenant(tenantId: string): SandboxRecord | undefined {
    return this.store.list().find((s) => s.tenantId === tenantId);
  }

  private put(rec: SandboxRecord): void {
    rec.updatedAt = new Date().toISOString();
    this.store.put(rec);
    this.refreshGauges();
  }

  private allocUid(): number {
    const used = new Set(this.store.list().map((s) => s.uid));
    const { uidBase, uidCount } = this.deps.cfg.isolation;
    for (let u = uidBase; u < uidBase + uidCount; u++) if (!used.has(u)) return u;
    throw new UnavailableError(`no free uid in ${uidBase}..${uidBase + uidCount - 1} for another sandbox`);
  }

  private memoryBackend(alloc: Allocation): MemoryBackend {
    const hp = alloc.resources.hugepages;
    if (hp && hp.count > 0) return { kind: 'hugepages', sizeKiB: hp.sizeKiB };
    // Shared memory always: a later replica may bring a vhost-user NIC, and memfd costs nothing more here.
    return { kind: 'memfd' };
  }

  private roundMemory(mib: number, mem: MemoryBackend): number {
    const unit = mem.kind === 'hugepages' ? mem.sizeKiB / 1024 : 2;
    return Math.ceil(mib / unit) * unit;
  }

  private logFor(alloc: Allocation, sandboxId: string): Logger {
    return this.log.child({ tenantId: alloc.tenantId, vnfId: alloc.vnfId, sandboxId });
  }

  private async boot(alloc: Allocation, signal: AbortSignal): Promise<ReplicaResult> {
    const t0 = process.hrtime.bigint();
    const sandboxId = `sb-${alloc.tenantId}-${randomBytes(3).toString('hex')}`;
    const log = this.logFor(alloc, sandboxId);
    const uid = this.allocUid();
    const tenantDir = join(this.deps.cfg.stateDir, 'tenants', alloc.tenantId);
    const runDir = join(tenantDir, sandboxId);
    const rec: SandboxRecord = {
      version: 1,
      sandboxId,
      tenantId: alloc.tenantId,
      hypervisor: this.deps.driver.kind,
      state: 'creating',
      uid,
      gid: uid,
      tenantDir,
      runDir,
      netns: `enfv-${hash(sandboxId, 10)}`,
      replicas: {},
      createdAt: new Date().toISOString(),
      updatedAt: new Date().toISOString(),
    };
    const replica = this.newReplica(alloc, rec, false);
    rec.replicas[alloc.allocId] = replica;
    this.put(rec); // written before acting: a crash from here on is cleaned up by init()
    let result = 'ok';
    try {
      mkdirSync(tenantDir, { recursive: true, mode: 0o700 });
      chmodSync(tenantDir, 0o700);
      mkdirSync(runDir, { recursive: true, mode: 0o700 });
      chownSync(runDir, uid, uid);
      await run('ip', ['netns', 'add', rec.netns]);
      const vcpus = alloc.resources.vcpus;
      const memory = this.memoryBackend(alloc);
      const memoryMiB = this.roundMemory(this.deps.cfg.vmBaseMemoryMiB + alloc.resources.memoryMiB, memory);
      const maxMemoryMiB = Math.max(memoryMiB, this.roundMemory(this.deps.cfg.qemu.maxMemoryMiB, memory));
      if (vcpus > this.deps.cfg.qemu.maxVcpus) throw new InvalidArgumentError([{ field: 'resources.vcpus', message: `at most ${this.deps.cfg.qemu.maxVcpus} vCPUs per VM on this node` }]);
      const placement = this.deps.cgroups.place(sandboxId, {
        vcpus: this.deps.cfg.qemu.maxVcpus,
        memoryMiB: maxMemoryMiB,
        ...(alloc.resources.cpus ? { cpus: alloc.resources.cpus } : {}),
        ...(alloc.resources.numaNode !== undefined ? { numaNode: alloc.resources.numaNode } : {}),
      });
      if (placement) {
        rec.cgroupDir = placement.dir;
        rec.cgroupSkipped = placement.skipped;
        if (placement.skipped.length) log.info({ skipped: placement.skipped }, 'cgroup limits not available here');
      }
      this.put(rec);
      const nics = await this.attach(rec, replica);
      const agentSocket = join(runDir, 'agent.sock');
      const spec: VmSpec = {
        sandboxId,
        vcpus,
        maxVcpus: Math.max(vcpus, this.deps.cfg.qemu.maxVcpus),
        memoryMiB,
        maxMemoryMiB,
        memory,
        ...(this.deps.image.kernelPath ? { kernelPath: this.deps.image.kernelPath } : {}),
        ...(this.deps.image.initrdPath ? { initrdPath: this.deps.image.initrdPath } : {}),
        kernelArgs: [this.deps.kernelArgs ?? '', this.deps.cfg.guest.extraKernelArgs].filter(Boolean).join(' '),
        devices: [{ kind: 'agent-channel', id: 'agent', socketPath: agentSocket, name: AGENT_PORT_NAME }, ...nics],
        runDir,
        runAs: { uid, gid: uid },
        netnsPath: `/var/run/netns/${rec.netns}`,
        machine: this.deps.cfg.qemu.machine,
        accel: this.deps.accel,
        sandbox: this.deps.cfg.isolation.sandbox,
        hotplugSlots: this.deps.hotplugSlots ?? 4,
      };
      if (alloc.resources.numaNode !== undefined && memory.kind === 'hugepages') spec.numaNode = alloc.resources.numaNode;
      if (this.deps.cfg.qemu.tcgTbSizeMiB) spec.tcgTbSizeMiB = this.deps.cfg.qemu.tcgTbSizeMiB;
      if (this.deps.hostCpuKHz) spec.hostCpuKHz = this.deps.hostCpuKHz;
      if (rec.cgroupDir) spec.cgroupDir = rec.cgroupDir;
      rec.spec = spec;
      this.put(rec);
      const vm = await this.deps.driver.start(spec, signal, {
        onSpawned: (h) => {
          this.deps.events?.onExec?.(sandboxId);
          this.deps.metrics?.execLatency.observe(Number(process.hrtime.bigint() - t0) / 1e9);
          rec.vm = this.deps.driver.record(h);
          this.put(rec);
        },
        waitReady: async (h, sig) => {
          const session = await this.deps.guest.connect(h.agentSocket!, { timeoutMs: this.deps.cfg.guest.bootTimeoutMs, signal: sig });
          this.sessions.set(sandboxId, session);
          this.deps.events?.onGuestReady?.(sandboxId);
        },
      });
      this.vms.set(sandboxId, vm);
      rec.vm = this.deps.driver.record(vm);
      rec.state = 'running';
      this.put(rec);
      const bootSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
      log.info({ pid: vm.pid, accel: vm.accel, machine: vm.machine, bootSeconds }, `VM booted (${this.deps.driver.kind}, accel ${vm.accel})`);
      await this.startInGuest(rec, replica);
      return { sandboxId, interfaces: interfaceStatus(replica), booted: true };
    } catch (err) {
      result = 'error';
      let consoleTail = '';
      try {
        consoleTail = readFileSync(join(runDir, 'console.log'), 'utf8').split('\n').slice(-25).join('\n');
      } catch {
        /* no console */
      }
      log.warn({ err, consoleTail }, 'boot failed: releasing everything the sandbox held');
      await this.teardown(rec);
      if (err instanceof AppError && consoleTail) {
        throw new AppError(err.code, `${err.message}\n--- guest console (last lines) ---\n${consoleTail}`, { cause: err, retryable: err.retryable });
      }
      throw err;
    } finally {
      this.deps.metrics?.bootDuration.observe(
        { hypervisor: this.deps.driver.kind, accel: this.deps.accel, result },
        Number(process.hrtime.bigint() - t0) / 1e9,
      );
    }
  }

  private newReplica(alloc: Allocation, rec: SandboxRecord, hotplugged: boolean): ReplicaRecord {
    const taken = new Set(Object.values(rec.replicas).flatMap((r) => Object.values(r.guestIfNames)));
    const guestIfNames: Record<string, string> = {};
    const hostIfNames: Record<string, string> = {};
    for (const i of alloc.interfaces) {
      let name = i.name;
      for (let n = 1; taken.has(name); n++) name = `${i.name.slice(0, 13)}${n}`;
      taken.add(name);
      guestIfNames[i.name] = name;
      hostIfNames[i.name] = `n${hash(`${alloc.allocId}/${i.name}`, 10)}`;
    }
    return {
      allocId: alloc.allocId,
      alloc,
      state: 'starting',
      attachments: [],
      hostIfNames,
      guestIfNames,
      containerId: `r-${hash(alloc.allocId, 12)}`,
      hotplugged,
    };
  }

  /** Creates the replica's attachments (recorded one by one) and returns its VM devices. */
  private async attach(rec: SandboxRecord, replica: ReplicaRecord): Promise<NetDevice[]> {
    const devices: NetDevice[] = [];
    for (const iface of replica.alloc.interfaces) {
      const hostIfName = replica.hostIfNames[iface.name]!;
      const res = await this.deps.attachments.add({ sandboxId: rec.sandboxId, hostIfName, netns: rec.netns, iface, owner: { uid: rec.uid, gid: rec.gid } });
      replica.attachments.push(res);
      this.put(rec);
      devices.push(toVmDevice(hostIfName, res));
    }
    return devices;
  }

  private async grow(rec: SandboxRecord, alloc: Allocation, signal: AbortSignal): Promise<ReplicaResult> {
    const log = this.logFor(alloc, rec.sandboxId);
    const vm = this.vms.get(rec.sandboxId);
    if (!vm || !rec.spec) throw new UnavailableError(`sandbox ${rec.sandboxId} is not running`);
    const replica = this.newReplica(alloc, rec, true);
    rec.replicas[alloc.allocId] = replica;
    this.put(rec);
    try {
      const vcpus = vm.vcpus + alloc.resources.vcpus;
      const memoryMiB = vm.memoryMiB + this.roundMemory(alloc.resources.memoryMiB, rec.spec.memory);
      if (vcpus > rec.spec.maxVcpus || memoryMiB > rec.spec.maxMemoryMiB) {
        throw new UnavailableError(
          `tenant VM ${rec.sandboxId} cannot grow to ${vcpus} vCPUs / ${memoryMiB} MiB (max ${rec.spec.maxVcpus} / ${rec.spec.maxMemoryMiB})`,
        );
      }
      await this.deps.driver.resize(vm, { vcpus, memoryMiB }, rec.spec);
      rec.vm = this.deps.driver.record(vm);
      this.put(rec);
      if (signal.aborted) throw new UnavailableError('aborted');
      const nics = await this.attach(rec, replica);
      for (const d of nics) {
        await this.deps.driver.addNic(vm, d, rec.spec);
        rec.vm = this.deps.driver.record(vm);
        this.put(rec);
      }
      log.info({ vcpus, memoryMiB }, 'replica joins the tenant VM (hotplug)');
      await this.startInGuest(rec, replica);
      return { sandboxId: rec.sandboxId, interfaces: interfaceStatus(replica), booted: false };
    } catch (err) {
      log.warn({ err }, 'adding the replica failed: undoing');
      replica.state = 'failed';
      replica.error = asAppError(err).toBody();
      await this.removeReplicaLocked(rec, alloc.allocId);
      throw err;
    }
  }

  /** The guest agent session of a running sandbox (connected on demand, e.g. after re-adoption). */
  async guestSession(sandboxId: string): Promise<GuestSession> {
    const rec = this.store.get(sandboxId);
    if (!rec) throw new UnavailableError(`no sandbox ${sandboxId}`);
    return this.session(rec);
  }

  private async session(rec: SandboxRecord): Promise<GuestSession> {
    let s = this.sessions.get(rec.sandboxId);
    if (!s) {
      const vm = this.vms.get(rec.sandboxId);
      if (!vm?.agentSocket) throw new UnavailableError(`sandbox ${rec.sandboxId} has no guest agent channel`);
      s = await this.deps.guest.connect(vm.agentSocket, { timeoutMs: 30_000 });
      this.sessions.set(rec.sandboxId, s);
    }
    return s;
  }

  private guestNics(rec: SandboxRecord): GuestNic[] {
    return Object.values(rec.replicas)
      .filter((r) => r.state !== 'stopping')
      .flatMap((r) =>
        r.attachments.map((a) => {
          const name = Object.entries(r.hostIfNames).find(([, h]) => a.id.endsWith(`/${h}`))?.[0] ?? a.ifName;
          // VFs are found by their guest PCI address (a VF may come up with a random MAC); virtio NICs by MAC.
          const vm = this.vms.get(rec.sandboxId);
          const pci = a.kind === 'sriov' && vm ? guestPciAddressOf(vm, r.hostIfNames[name] ?? '') ?? '' : '';
          const nic: GuestNic = { mac: a.mac, pciAddress: pci, name: r.guestIfNames[name] ?? name, addresses: a.ips.map((i) => i.address) };
          if (a.mtuBytes) nic.mtuBytes = a.mtuBytes;
          return nic;
        }),
      );
  }

  private guestRoutes(rec: SandboxRecord): VnfdRoute[] {
    return Object.values(rec.replicas)
      .filter((r) => r.state !== 'stopping')
      .flatMap((r) =>
        (r.alloc.routes ?? []).map((rt) => {
          const out: VnfdRoute = { dst: rt.dst };
          if (rt.via) out.via = rt.via;
          if (rt.dev) out.dev = r.guestIfNames[rt.dev] ?? rt.dev;
          return out;
        }),
      );
  }

  /** Tells the guest agent the NICs (MAC + addresses) and routes, then runs the replica's container. */
  private async startInGuest(rec: SandboxRecord, replica: ReplicaRecord): Promise<void> {
    const s = await this.session(rec);
    await s.updateInterfaces(this.guestNics(rec), replica.hotplugged ? 30_000 : 10_000);
    await s.updateRoutes(this.guestRoutes(rec));
    const a = replica.alloc;
    await s.runContainer({
      id: replica.containerId,
      image: a.image.ref,
      command: [...(a.command ?? []), ...(a.args ?? [])],
      env: Object.entries(a.env ?? {}).map(([k, v]) => `${k}=${v}`),
      memoryLimitMiB: a.resources.memoryMiB,
    });
    replica.state = 'running';
    this.put(rec);
  }

  private async removeReplicaLocked(rec: SandboxRecord, allocId: string): Promise<void> {
    const replica = rec.replicas[allocId];
    if (!replica) return;
    const others = Object.values(rec.replicas).filter((r) => r.allocId !== allocId);
    if (others.length === 0) {
      await this.teardown(rec);
      return;
    }
    const log = this.log.child({ sandboxId: rec.sandboxId, tenantId: rec.tenantId, vnfId: replica.alloc.vnfId });
    replica.state = 'stopping';
    this.put(rec);
    const vm = this.vms.get(rec.sandboxId);
    const errors: unknown[] = [];
    const step = async (what: string, fn: () => Promise<void>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
        log.warn({ err, step: what }, 'replica removal step failed');
      }
    };
    if (vm && this.alive(rec.sandboxId)) {
      await step('remove container', async () => (await this.session(rec)).removeContainer(replica.containerId));
      for (const hostIfName of Object.values(replica.hostIfNames)) {
        if (vm.hotplugged.includes(`nic:${hostIfName}`) || replica.hotplugged) await step('unplug nic', () => this.deps.driver.removeNic(vm, hostIfName));
      }
      await step('update guest', async () => {
        const s = await this.session(rec);
        await s.updateRoutes(this.guestRoutes(rec));
      });
      if (rec.spec && this.deps.driver.capabilities().hotplug) {
        const vcpus = Math.max(1, vm.vcpus - replica.alloc.resources.vcpus);
        const memoryMiB = Math.max(rec.spec.memoryMiB, vm.memoryMiB - this.roundMemory(replica.alloc.resources.memoryMiB, rec.spec.memory));
        await step('shrink', () => this.deps.driver.resize(vm, { vcpus, memoryMiB }, rec.spec!));
        rec.vm = this.deps.driver.record(vm);
      }
    }
    for (const [name, hostIfName] of Object.entries(replica.hostIfNames)) {
      const type = replica.alloc.interfaces.find((i) => i.name === name)!.type;
      await step('detach', () => this.deps.attachments.del({ sandboxId: rec.sandboxId, hostIfName, netns: rec.netns, type }));
    }
    delete rec.replicas[allocId];
    this.put(rec);
    log.info({ allocId, problems: errors.length }, 'replica removed from the tenant VM');
  }

  /**
   * Stops the VM and releases everything the sandbox held: process, attachments (taps, VF bindings), netns,
   * cgroup, sockets and folders, record. Safe to repeat; keeps the record when a step failed, for the next try.
   */
  private async teardown(rec: SandboxRecord): Promise<void> {
    const log = this.log.child({ sandboxId: rec.sandboxId, tenantId: rec.tenantId });
    rec.state = 'stopping';
    this.put(rec);
    const errors: unknown[] = [];
    const step = async (what: string, fn: () => Promise<void> | void): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
        log.error({ err, step: what }, 'teardown step failed');
      }
    };
    const s = this.sessions.get(rec.sandboxId);
    this.sessions.delete(rec.sandboxId);
    if (s) await step('close guest session', () => s.close());
    const vm = this.vms.get(rec.sandboxId) ?? (rec.vm ? await this.deps.driver.adopt(rec.vm) : null);
    if (vm) await step('stop vm', () => this.deps.driver.stop(vm, { graceMs: this.deps.stopGraceMs ?? 0 }));
    this.vms.delete(rec.sandboxId);
    await step('cgroup', () => this.deps.cgroups.destroy(rec.sandboxId));
    for (const r of Object.values(rec.replicas)) {
      for (const [name, hostIfName] of Object.entries(r.hostIfNames)) {
        const type = r.alloc.interfaces.find((i) => i.name === name)!.type;
        await step('detach', () => this.deps.attachments.del({ sandboxId: rec.sandboxId, hostIfName, netns: rec.netns, type }));
      }
    }
    await step('netns', async () => {
      if (existsSync(`/var/run/netns/${rec.netns}`)) await run('ip', ['netns', 'del', rec.netns]);
    });
    await step('folders', () => {
      rmSync(rec.runDir, { recursive: true, force: true });
      if (existsSync(rec.tenantDir) && readdirSync(rec.tenantDir).length === 0) rmdirSync(rec.tenantDir);
    });
    if (errors.length === 0) {
      this.store.delete(rec.sandboxId);
      log.info('sandbox torn down: nothing left');
    } else {
      rec.state = 'failed';
      this.put(rec);
    }
    this.refreshGauges();
  }

  refreshGauges(): void {
    const m = this.deps.metrics;
    if (!m) return;
    const recs = this.store.list();
    m.sandboxes.reset();
    for (const st of ['creating', 'running', 'stopping', 'failed'] as const) m.sandboxes.set({ state: st }, recs.filter((r) => r.state === st).length);
    m.replicas.reset();
    const reps = recs.flatMap((r) => Object.values(r.replicas));
    for (const st of ['starting', 'running', 'stopping', 'failed'] as const) m.replicas.set({ state: st }, reps.filter((r) => r.state === st).length);
  }

  /** The guest agent's RSS in each running sandbox, by tenant (asked over the channel; failures skipped). */
  async guestAgentRssByTenant(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const rec of this.store.list()) {
      if (rec.state !== 'running' || !this.alive(rec.sandboxId)) continue;
      try {
        const s = await this.session(rec);
        out.set(rec.tenantId, (await s.metrics()).agentRssBytes);
      } catch (err) {
        this.log.debug({ err, sandboxId: rec.sandboxId }, 'guest metrics unavailable');
      }
    }
    return out;
  }

  /** RSS of each live sandbox's hypervisor, by tenant. */
  rssByTenant(): Map<string, number> {
    const out = new Map<string, number>();
    for (const rec of this.store.list()) {
      const vm = this.vms.get(rec.sandboxId);
      const rss = vm ? procRssBytes(vm.pid) : null;
      if (rss !== null) out.set(rec.tenantId, rss);
    }
    return out;
  }
}

export function toVmDevice(id: string, a: AttachmentResult): NetDevice {
  const mac = parseMacAddress(a.mac);
  switch (a.kind) {
    case 'tap':
      return { kind: 'tap', id, ifName: a.tapName, mac };
    case 'macvtap':
      return { kind: 'macvtap', id, tapDevPath: a.tapDevice, mac };
    case 'vhostuser':
      return { kind: 'vhost-user-net', id, socketPath: a.socketPath, mac, queues: a.queues, server: a.vmMode === 'server' };
    case 'sriov':
      return { kind: 'vfio', id, pci: parsePciAddress(a.pciAddress) };
  }
}

export function interfaceStatus(r: ReplicaRecord): ReplicaInterfaceStatus[] {
  return r.alloc.interfaces.map((i) => {
    const a = r.attachments.find((x) => x.id.endsWith(`/${r.hostIfNames[i.name]}`));
    const st: ReplicaInterfaceStatus = { name: i.name, mac: a?.mac ?? i.mac, ips: (a?.ips ?? []).map((x) => x.address) };
    if (a?.kind === 'sriov') st.pciAddress = a.pciAddress;
    if (a?.kind === 'vhostuser') st.socketPath = a.socketPath;
    return st;
  });
}

const TENANT_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Rejects a malformed allocation before anything is touched; names every bad field. */
export function validateAlloc(a: Allocation): void {
  const issues: { field: string; message: string }[] = [];
  if (typeof a !== 'object' || a === null) throw new InvalidArgumentError('allocation must be an object');
  if (typeof a.allocId !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(a.allocId)) issues.push({ field: 'allocId', message: 'must be 1..64 of [A-Za-z0-9_-]' });
  if (typeof a.tenantId !== 'string' || !TENANT_RE.test(a.tenantId)) issues.push({ field: 'tenantId', message: 'must be a DNS label' });
  if (typeof a.vnfId !== 'string' || a.vnfId === '') issues.push({ field: 'vnfId', message: 'required' });
  const r = a.resources as Allocation['resources'] | undefined;
  if (!r || !Number.isInteger(r.vcpus) || r.vcpus < 1) issues.push({ field: 'resources.vcpus', message: 'must be an integer >= 1' });
  if (!r || !Number.isInteger(r.memoryMiB) || r.memoryMiB < 16) issues.push({ field: 'resources.memoryMiB', message: 'must be an integer >= 16' });
  if (r?.hugepages && r.hugepages.sizeKiB !== 2048 && r.hugepages.sizeKiB !== 1048576) issues.push({ field: 'resources.hugepages.sizeKiB', message: 'must be 2048 or 1048576' });
  if (!a.image || typeof a.image.ref !== 'string' || a.image.ref === '') issues.push({ field: 'image.ref', message: 'required' });
  if (!Array.isArray(a.interfaces)) issues.push({ field: 'interfaces', message: 'must be a list' });
  else {
    const names = new Set<string>();
    a.interfaces.forEach((i, n) => {
      const f = `interfaces[${n}]`;
      if (typeof i.name !== 'string' || !/^[A-Za-z0-9_.-]{1,15}$/.test(i.name)) issues.push({ field: `${f}.name`, message: 'must be a Linux interface name' });
      if (names.has(i.name)) issues.push({ field: `${f}.name`, message: 'duplicate' });
      names.add(i.name);
      try {
        parseMacAddress(i.mac);
      } catch {
        issues.push({ field: `${f}.mac`, message: 'must be a MAC address' });
      }
      if (!['tap', 'macvtap', 'sriov', 'vhostuser'].includes(i.type)) issues.push({ field: `${f}.type`, message: 'must be tap, macvtap, sriov or vhostuser' });
      if (i.type === 'sriov' && !i.sriov) issues.push({ field: `${f}.sriov`, message: 'the reserved VF is required' });
      if (i.type === 'vhostuser' && !i.vhostuser) issues.push({ field: `${f}.vhostuser`, message: 'socket and queues are required' });
    });
  }
  if (issues.length) throw new InvalidArgumentError(issues);
}

export type { VmDevice };
