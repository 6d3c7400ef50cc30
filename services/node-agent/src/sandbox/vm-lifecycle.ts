/**
 * The tenant VM's lifecycle: the host side it needs (uid, folders, netns, cgroup), its boot spec, start, growing
 * and shrinking by hotplug, NIC hotplug, stop and the release of the host side. Holds the live VM handles.
 */
import { execFile } from 'node:child_process';
import { guestFileTail } from '../hypervisor/guest-file.js';
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { AGENT_PORT_NAME, InvalidArgumentError, UnavailableError, type Allocation, type MigrationVmLayout } from '@edgenfv/contracts';
import type { NodeAgentConfig } from '../config.js';
import type { HypervisorDriver, MemoryBackend, NetDevice, DiskDevice, VmHandle, VmSpec } from '../hypervisor/types.js';
import type { Cgroups } from './cgroup.js';
import { applyPinPlan, pinPlan, processThreads, vmCores } from './pinning.js';
import type { ReplicaRecord, SandboxRecord, Steps } from './records.js';
import { imageDiskDir } from '../images/delivery.js';
import { prepareVmRoot } from '../hypervisor/vm-root.js';
import { needsViommu } from './dataplane.js';
import { hash } from './records.js';

const run = promisify(execFile);

/** The debug console's socket in a VM's run folder (node config `guest.debugConsole`; operator-only). */
export const DEBUG_CONSOLE_SOCKET = 'debug.sock';

export interface VmLifecycleDeps {
  cfg: Pick<NodeAgentConfig, 'stateDir' | 'qemu' | 'guest' | 'isolation' | 'vmBaseMemoryMiB'>;
  driver: HypervisorDriver;
  accel: 'kvm' | 'tcg';
  cgroups: Cgroups;
  hostCpuKHz?: number;
  /** Guest kernel/initrd (from the config, or built by buildGuestImage()). */
  image: { kernelPath?: string; initrdPath?: string; systemDisk?: { path: string; serial: string } };
  /** Extra kernel arguments (the guest image's). */
  kernelArgs?: string;
  /** Spare PCIe slots for NICs of later replicas. */
  hotplugSlots?: number;
  /** Grace for a guest power-down before quit/kill. */
  stopGraceMs?: number;
}

export class VmLifecycle {
  private readonly vms = new Map<string, VmHandle>();

  constructor(private readonly deps: VmLifecycleDeps) {}

  get driver(): HypervisorDriver {
    return this.deps.driver;
  }

  vmOf(sandboxId: string): VmHandle | undefined {
    return this.vms.get(sandboxId);
  }

  /** true while the sandbox's hypervisor process lives. */
  alive(sandboxId: string): boolean {
    const vm = this.vms.get(sandboxId);
    return vm !== undefined && this.deps.driver.alive(vm);
  }

  /** Re-adopts the VM of a record (after an agent restart); null when it is gone. */
  async adopt(rec: SandboxRecord): Promise<VmHandle | null> {
    const vm = rec.vm && rec.state !== 'stopping' ? await this.deps.driver.adopt(rec.vm) : null;
    if (vm) this.vms.set(rec.sandboxId, vm);
    return vm;
  }

  /** The first uid of the configured range no other sandbox holds. */
  allocUid(used: Iterable<number>): number {
    const taken = new Set(used);
    const { uidBase, uidCount } = this.deps.cfg.isolation;
    for (let u = uidBase; u < uidBase + uidCount; u++) if (!taken.has(u)) return u;
    throw new UnavailableError(`no free uid in ${uidBase}..${uidBase + uidCount - 1} for another sandbox`);
  }

  memoryBackend(alloc: Pick<Allocation, 'resources'>): MemoryBackend {
    const hp = alloc.resources.hugepages;
    if (hp && hp.count > 0) return { kind: 'hugepages', sizeKiB: hp.sizeKiB };
    // Shared memory always: a later replica may bring a vhost-user NIC, and memfd costs nothing more here.
    return { kind: 'memfd' };
  }

  roundMemory(mib: number, mem: MemoryBackend): number {
    const unit = mem.kind === 'hugepages' ? mem.sizeKiB / 1024 : 2;
    return Math.ceil(mib / unit) * unit;
  }

  /**
   * Folders (0700, root's: QEMU makes its sockets, pid file and console log while still root, before -run-with
   * drops to the VM's uid, and the uid has nothing to write here afterwards), netns and cgroup of a new sandbox;
   * recorded in `rec`. The taps QEMU opens after dropping belong to its uid (interfaces.ts).
   */
  async prepareHost(rec: SandboxRecord, alloc: Pick<Allocation, 'resources'>, log: Logger): Promise<void> {
    mkdirSync(rec.tenantDir, { recursive: true, mode: 0o700 });
    chmodSync(rec.tenantDir, 0o700);
    mkdirSync(rec.runDir, { recursive: true, mode: 0o700 });
    chmodSync(rec.runDir, 0o700);
    await run('ip', ['netns', 'add', rec.netns]);
    if (this.deps.driver.kind === 'qemu') {
      rec.vmRoot = join(this.deps.cfg.stateDir, 'vm', hash(rec.sandboxId, 10));
      await prepareVmRoot(rec.vmRoot, rec.gid);
    }
    const { qemu } = this.deps.cfg;
    if (alloc.resources.vcpus > qemu.maxVcpus) throw new InvalidArgumentError([{ field: 'resources.vcpus', message: `at most ${qemu.maxVcpus} vCPUs per VM on this node` }]);
    const memory = this.memoryBackend(alloc);
    const placement = this.deps.cgroups.place(rec.sandboxId, {
      vcpus: qemu.maxVcpus,
      memoryMiB: Math.max(this.bootMemoryMiB(alloc, memory), this.roundMemory(qemu.maxMemoryMiB, memory)),
      ...(alloc.resources.cpus ? { cpus: alloc.resources.cpus } : {}),
      ...(alloc.resources.numaNode !== undefined ? { numaNode: alloc.resources.numaNode } : {}),
    });
    if (placement) {
      rec.cgroupDir = placement.dir;
      rec.cgroupSkipped = placement.skipped;
      if (placement.skipped.length) log.info({ skipped: placement.skipped }, 'cgroup limits not available here');
    }
  }

  private bootMemoryMiB(alloc: Pick<Allocation, 'resources'>, memory: MemoryBackend): number {
    return this.roundMemory(this.deps.cfg.vmBaseMemoryMiB + alloc.resources.memoryMiB, memory);
  }

  /**
   * The boot spec of the sandbox's VM for its first replica and that replica's NICs. `layout`: a migration's
   * destination, the source VM's sizes and every device where QEMU placed it there (`nics`, `disks`: all of it).
   */
  spec(rec: SandboxRecord, alloc: Pick<Allocation, 'resources'> & Partial<Pick<Allocation, 'interfaces'>>, nics: NetDevice[], disks: DiskDevice[] = [], layout?: MigrationVmLayout): VmSpec {
    const { cfg } = this.deps;
    const vcpus = layout?.boot.vcpus ?? alloc.resources.vcpus;
    const memory = this.memoryBackend(alloc);
    const memoryMiB = layout?.boot.memoryMiB ?? this.bootMemoryMiB(alloc, memory);
    const spec: VmSpec = {
      sandboxId: rec.sandboxId,
      vcpus,
      maxVcpus: layout?.boot.maxVcpus ?? Math.max(vcpus, cfg.qemu.maxVcpus),
      memoryMiB,
      maxMemoryMiB: layout?.boot.maxMemoryMiB ?? Math.max(memoryMiB, this.roundMemory(cfg.qemu.maxMemoryMiB, memory)),
      memory,
      ...(this.deps.image.kernelPath ? { kernelPath: this.deps.image.kernelPath } : {}),
      ...(this.deps.image.initrdPath ? { initrdPath: this.deps.image.initrdPath } : {}),
      ...(this.deps.image.systemDisk ? { systemDisk: this.deps.image.systemDisk } : {}),
      kernelArgs: [this.deps.kernelArgs ?? '', cfg.guest.extraKernelArgs].filter(Boolean).join(' '),
      devices: [
        {
          kind: 'agent-channel',
          id: 'agent',
          socketPath: join(rec.runDir, 'agent.sock'),
          name: AGENT_PORT_NAME,
          // operator-only (docs/security.md): opened by QEMU before it chroots, root-only like the run folder
          ...(cfg.guest.debugConsole ? { debugConsoleSocket: join(rec.runDir, DEBUG_CONSOLE_SOCKET) } : {}),
        },
        ...nics,
        ...disks,
      ],
      runDir: rec.runDir,
      runAs: { uid: rec.uid, gid: rec.gid },
      netnsPath: `/var/run/netns/${rec.netns}`,
      machine: cfg.qemu.machine,
      accel: this.deps.accel,
      sandbox: cfg.isolation.sandbox,
      hotplugSlots: this.deps.hotplugSlots ?? 4,
    };
    if (alloc.resources.numaNode !== undefined && memory.kind === 'hugepages') spec.numaNode = alloc.resources.numaNode;
    if (cfg.qemu.tcgTbSizeMiB) spec.tcgTbSizeMiB = cfg.qemu.tcgTbSizeMiB;
    if (this.deps.hostCpuKHz) spec.hostCpuKHz = this.deps.hostCpuKHz;
    if (rec.cgroupDir) spec.cgroupDir = rec.cgroupDir;
    if (rec.vmRoot) spec.chrootDir = rec.vmRoot;
    if (layout) {
      // the source VM's: its virtual IOMMU (a device with state of its own) included or not, whatever these replicas need
      spec.layout = layout;
      if (layout.boot.viommu) spec.viommu = true;
    } else if (cfg.qemu.machine === 'q35' && (cfg.guest.viommu === 'always' || (alloc.interfaces && needsViommu({ resources: alloc.resources, interfaces: alloc.interfaces }, cfg.guest.vfioNoIommu)))) spec.viommu = true;
    return spec;
  }

  /** Starts the VM; `waitReady` decides when the boot is done (the guest agent answers). */
  async start(
    rec: SandboxRecord,
    spec: VmSpec,
    signal: AbortSignal,
    hooks: { onSpawned: (vm: VmHandle) => void; waitReady: (vm: VmHandle, signal: AbortSignal) => Promise<void> },
  ): Promise<VmHandle> {
    const vm = await this.deps.driver.start(spec, signal, hooks);
    this.vms.set(rec.sandboxId, vm);
    rec.vm = this.deps.driver.record(vm);
    return vm;
  }

  /**
   * Pins the VM's vCPU threads 1:1 to its replicas' dedicated cores and its other threads to all of them
   * (`pinning.ts`); `except`: a replica on its way out. Returns the cores ([] when the VM has none: left alone).
   */
  async pin(rec: SandboxRecord, except?: ReplicaRecord): Promise<number[]> {
    const vm = this.vms.get(rec.sandboxId);
    const cores = vmCores(Object.values(rec.replicas).filter((r) => r !== except));
    const driver = this.deps.driver;
    if (!vm || cores.length === 0 || !driver.vcpuThreads) return [];
    this.deps.cgroups.setCpus(rec.sandboxId, cores); // a cpuset (where the host has one) must hold the cores first
    await applyPinPlan(pinPlan(await driver.vcpuThreads(vm), processThreads(vm.pid), cores));
    return cores;
  }

  /** Grows the running VM by the replica's vCPUs and memory (hotplug), within the boot spec's maxima. */
  async grow(rec: SandboxRecord, alloc: Allocation): Promise<{ vcpus: number; memoryMiB: number }> {
    const vm = this.vms.get(rec.sandboxId);
    if (!vm || !rec.spec) throw new UnavailableError(`sandbox ${rec.sandboxId} is not running`);
    const vcpus = vm.vcpus + alloc.resources.vcpus;
    const memoryMiB = vm.memoryMiB + this.roundMemory(alloc.resources.memoryMiB, rec.spec.memory);
    if (vcpus > rec.spec.maxVcpus || memoryMiB > rec.spec.maxMemoryMiB) {
      throw new UnavailableError(`tenant VM ${rec.sandboxId} cannot grow to ${vcpus} vCPUs / ${memoryMiB} MiB (max ${rec.spec.maxVcpus} / ${rec.spec.maxMemoryMiB})`);
    }
    await this.deps.driver.resize(vm, { vcpus, memoryMiB }, rec.spec);
    rec.vm = this.deps.driver.record(vm);
    return { vcpus, memoryMiB };
  }

  async addNic(rec: SandboxRecord, d: NetDevice): Promise<void> {
    const vm = this.vms.get(rec.sandboxId);
    if (!vm || !rec.spec) throw new UnavailableError(`sandbox ${rec.sandboxId} is not running`);
    await this.deps.driver.addNic(vm, d, rec.spec);
    rec.vm = this.deps.driver.record(vm);
  }

  /** Hot-adds a read-only image disk (a later replica's image). */
  async addDisk(rec: SandboxRecord, d: DiskDevice): Promise<void> {
    const vm = this.vms.get(rec.sandboxId);
    if (!vm || !rec.spec) throw new UnavailableError(`sandbox ${rec.sandboxId} is not running`);
    await this.deps.driver.addDisk(vm, d, rec.spec);
    rec.vm = this.deps.driver.record(vm);
  }

  /** Unplugs the replica's NICs and gives back its vCPUs and memory (each step recorded in `steps`). */
  async shrink(rec: SandboxRecord, replica: ReplicaRecord, steps: Steps): Promise<void> {
    const vm = this.vms.get(rec.sandboxId);
    if (!vm || !this.alive(rec.sandboxId)) return;
    for (const hostIfName of Object.values(replica.hostIfNames)) {
      if (vm.hotplugged.includes(`nic:${hostIfName}`) || replica.hotplugged) await steps.run('unplug nic', () => this.deps.driver.removeNic(vm, hostIfName));
    }
    const spec = rec.spec;
    if (spec && this.deps.driver.capabilities().hotplug) {
      const vcpus = Math.max(1, vm.vcpus - replica.alloc.resources.vcpus);
      const memoryMiB = Math.max(spec.memoryMiB, vm.memoryMiB - this.roundMemory(replica.alloc.resources.memoryMiB, spec.memory));
      await steps.run('shrink', () => this.deps.driver.resize(vm, { vcpus, memoryMiB }, spec));
      rec.vm = this.deps.driver.record(vm);
      await steps.run('re-pin', async () => void (await this.pin(rec, replica)));
    }
  }

  /** Stops the VM (live or only recorded) and forgets it. */
  async stop(rec: SandboxRecord, steps: Steps): Promise<void> {
    const vm = this.vms.get(rec.sandboxId) ?? (rec.vm ? await this.deps.driver.adopt(rec.vm) : null);
    if (vm) await steps.run('stop vm', () => this.deps.driver.stop(vm, { graceMs: this.deps.stopGraceMs ?? 0 }));
    this.vms.delete(rec.sandboxId);
  }

  /** Releases cgroup, netns and folders of a stopped sandbox. */
  async releaseHost(rec: SandboxRecord, steps: Steps): Promise<void> {
    await steps.run('cgroup', () => this.deps.cgroups.destroy(rec.sandboxId));
    await steps.run('netns', async () => {
      if (existsSync(`/var/run/netns/${rec.netns}`)) await run('ip', ['netns', 'del', rec.netns]);
    });
    await steps.run('folders', () => {
      rmSync(rec.runDir, { recursive: true, force: true });
      rmSync(imageDiskDir(rec.runDir), { recursive: true, force: true });
      if (rec.vmRoot) rmSync(rec.vmRoot, { recursive: true, force: true });
      if (existsSync(rec.tenantDir) && readdirSync(rec.tenantDir).length === 0) rmdirSync(rec.tenantDir);
    });
  }

  /** The last lines of the VM's console (for a boot failure's message). */
  consoleTail(rec: SandboxRecord, lines = 25): string {
    return guestFileTail(join(rec.runDir, 'console.log'), lines);
  }
}
