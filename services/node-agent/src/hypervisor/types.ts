/**
 * Hypervisor driver interface (after Kata runtime-rs): devices are tagged data, the interface is small,
 * and a driver states what it cannot do in `capabilities()` instead of throwing later.
 */
import type { HypervisorKind, MacAddress, MigrationVmLayout, PciAddress } from '@edgenfv/contracts';

export type Accel = 'kvm' | 'tcg';
export type MachineType = 'q35' | 'microvm';

export type VmDevice =
  | { kind: 'tap'; id: string; ifName: string; mac: MacAddress }
  /** macvtap: the agent opens `/dev/tapN` and hands the fd to the hypervisor. */
  | { kind: 'macvtap'; id: string; tapDevPath: string; mac: MacAddress }
  /**
   * `iommu`: the switch on the socket's other end translates the guest's addresses through the VM's virtual IOMMU
   * (vhost IOTLB messages: the node agent's OVS-DPDK, started with `vhost-iommu-support`); in a VM with one the NIC
   * then gets `iommu_platform` like a tap, and DPDK in the guest may drive it with vfio-pci.
   */
  | { kind: 'vhost-user-net'; id: string; socketPath: string; mac: MacAddress; queues: number; server?: boolean; iommu?: boolean }
  | { kind: 'vfio'; id: string; pci: PciAddress }
  /**
   * The guest agent's channel: a virtio-serial port named `name` on a unix socket the host connects to. With
   * `debugConsoleSocket` (operator-only, node config `guest.debugConsole`) a second port, DEBUG_CONSOLE_PORT_NAME,
   * on the same controller: the guest's /init runs a root shell on it (docs/security.md).
   */
  | { kind: 'agent-channel'; id: string; socketPath: string; name: string; debugConsoleSocket?: string }
  /** A read-only raw disk the guest finds by its serial (a VNF image: see src/images/). */
  | { kind: 'disk'; id: string; path: string; serial: string };

export type DiskDevice = Extract<VmDevice, { kind: 'disk' }>;

export type NetDevice = Extract<VmDevice, { kind: 'tap' | 'macvtap' | 'vhost-user-net' | 'vfio' }>;

export type MemoryBackend =
  | { kind: 'anonymous' }
  /** Shared guest memory for vhost-user without hugepages. */
  | { kind: 'memfd' }
  /** Hugepage-backed shared memory: memfd with hugetlb, or a file under a hugetlbfs mount when `path` is given. */
  | { kind: 'hugepages'; sizeKiB: number; path?: string };

export interface VmSpec {
  sandboxId: string;
  vcpus: number;
  maxVcpus: number;
  memoryMiB: number;
  maxMemoryMiB: number;
  memory: MemoryBackend;
  /** Host NUMA node the guest memory is bound to (hugepages / dedicated CPUs). */
  numaNode?: number;
  /** Guest kernel and initramfs; absent: the VM idles in its firmware (tests of the driver without a guest). */
  kernelPath?: string;
  initrdPath?: string;
  /**
   * The guest image's read-only system disk (Node.js, the agent...: see guest/image-builder.ts), a virtio-blk disk
   * the guest's /init finds by its serial; absent for an image that carries everything in its initramfs.
   */
  systemDisk?: { path: string; serial: string };
  kernelArgs: string;
  devices: VmDevice[];
  /** Folder for QMP socket, agent socket, pid file, console log (0700, owned by runAs). */
  runDir: string;
  /**
   * Unprivileged identity of the hypervisor process. `qemu` (default): QEMU starts as root, opens its devices
   * (taps in a netns, /dev/vfio, /dev/tapN) and drops to uid:gid itself (`-run-with user=`, formerly -runas);
   * `spawn`: exec'd as uid:gid from the start (every device must already belong to that uid).
   */
  runAs?: { uid: number; gid: number; method?: 'qemu' | 'spawn' };
  /**
   * QEMU's root once started (`-run-with chroot=`, hypervisor/vm-root.ts): the host's / is out of its reach; what it
   * opens after the start (hotplugged disks, vhost-user sockets, taps through dev/net/tun) must be inside.
   */
  chrootDir?: string;
  /** Network namespace (path, e.g. /var/run/netns/x) the hypervisor runs in: its taps live there. */
  netnsPath?: string;
  /** cgroup v2 folder the process is placed in before it executes the hypervisor. */
  cgroupDir?: string;
  machine: MachineType;
  accel: Accel;
  /** seccomp sandbox (`-sandbox on,...`). */
  sandbox: boolean;
  tcgTbSizeMiB?: number;
  /** Host TSC in kHz (microvm needs `tsc_early_khz` under TCG or it may hang calibrating against the PIT). */
  hostCpuKHz?: number;
  /** Spare hotplug slots (q35 PCIe root ports) for NICs of later replicas. */
  hotplugSlots?: number;
  /** Niceness the hypervisor starts with (a warm pool's idle VM: its threads yield to tenants' VMs until claimed). */
  nice?: number;
  /**
   * A virtual IOMMU (q35: QEMU's VT-d, qemu-args VIOMMU_DEVICE) so the guest can run vfio-pci safely: a DPDK data
   * plane on a VF or a virtio NIC in the guest (docs/sriov.md). Only at boot: it cannot be hot-plugged.
   */
  viommu?: boolean;
  /**
   * Live migration destination: QEMU waits for the VM's state at this URI (`-incoming`) instead of booting it;
   * `file:/path`: restored from a snapshot boot's template (sandbox/snapshot-boot.ts).
   */
  incoming?: string;
  /**
   * A migration's destination: the source VM's root ports, every PCI device at the bus and slot QEMU placed it on
   * there, its hot-plugged vCPUs and DIMMs (q35; `vcpus`/`memoryMiB` above are then the source's boot sizes).
   */
  layout?: MigrationVmLayout;
}

export interface VmHandle {
  readonly kind: HypervisorKind;
  readonly sandboxId: string;
  readonly pid: number;
  /** /proc/<pid>/stat start time: guards re-adoption against pid reuse. */
  readonly procStartTicks: number;
  readonly apiSocket: string; // QMP (qemu) or API socket (cloud-hypervisor, firecracker)
  readonly agentSocket?: string;
  readonly consoleLog: string;
  readonly accel: Accel;
  readonly machine: MachineType;
  readonly startedAt: string;
  vcpus: number;
  memoryMiB: number;
  /** Hotplugged objects by id (cpus, dimms, nics) so that a re-adopted VM can still unplug them. */
  hotplugged: string[];
}

/** What is persisted for a VM; a restarted agent re-adopts from it. */
export type VmRecord = Omit<VmHandle, never>;

export interface Capabilities {
  vfio: boolean;
  vhostUserNet: boolean;
  hotplug: boolean;
  /** What hotplug covers (when `hotplug`): vCPUs, memory, NICs. */
  cpuHotplug: boolean;
  memoryHotplug: boolean;
  nicHotplug: boolean;
  machines: readonly MachineType[];
}

export interface StartOptions {
  /** Resolves once the guest is ready (the guest agent answers health). Default: the hypervisor's API answers. */
  waitReady?: (vm: VmHandle, signal: AbortSignal) => Promise<void>;
  /** Called right after exec, before waiting for readiness (bench: command -> exec). */
  onSpawned?: (vm: VmHandle) => void;
}

export interface HypervisorDriver {
  readonly kind: HypervisorKind;
  capabilities(): Readonly<Capabilities>;
  /** Boots; resolves when ready (see StartOptions.waitReady). On failure nothing is left running. */
  start(spec: VmSpec, signal: AbortSignal, opts?: StartOptions): Promise<VmHandle>;
  /** Graceful power-down, then quit, then SIGKILL after graceMs; no-op when already stopped. */
  stop(vm: VmHandle, opts: { graceMs: number }): Promise<void>;
  record(vm: VmHandle): VmRecord;
  /** Re-adopts a recorded VM: null when its process is gone (or the pid was reused). */
  adopt(rec: VmRecord): Promise<VmHandle | null>;
  /** true while the process lives. */
  alive(vm: VmHandle): boolean;
  /** Host thread id of each vCPU, by vCPU index (QMP `query-cpus-fast`); absent: the driver cannot say. */
  vcpuThreads?(vm: VmHandle): Promise<number[]>;
  /** Grows/shrinks vCPUs and memory by hotplug; throws UnavailableError when the driver cannot. */
  resize(vm: VmHandle, target: { vcpus: number; memoryMiB: number }, spec: Pick<VmSpec, 'memory' | 'numaNode'>): Promise<void>;
  /** Hot-adds / removes a NIC. */
  addNic(vm: VmHandle, dev: NetDevice, spec: Pick<VmSpec, 'machine'> & Partial<Pick<VmSpec, 'maxMemoryMiB' | 'runAs' | 'viommu'>>): Promise<void>;
  removeNic(vm: VmHandle, id: string): Promise<void>;
  /** Hot-adds a read-only disk (a later replica's image); the file must be readable by the hypervisor's uid. */
  addDisk(vm: VmHandle, dev: DiskDevice, spec: Pick<VmSpec, 'machine'>): Promise<void>;
}
