/**
 * Pure QEMU command-line builder: a VmSpec in, argv out (plus the file descriptors the caller must pass).
 * No I/O here, so table tests cover every device and machine combination.
 */
import { join } from 'node:path';
import { InvalidArgumentError, type FieldIssue } from '@edgenfv/contracts';
import type { MemoryBackend, NetDevice, VmDevice, VmSpec } from './types.js';

export interface QemuCommand {
  args: string[];
  /** fd number in the child -> path the parent opens (read-write) and passes (macvtap /dev/tapN). */
  fds: { fd: number; path: string }[];
  qmpSocket: string;
  agentSocket?: string;
  consoleLog: string;
  pidFile: string;
}

export const SECCOMP = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';
export const MEM_ID = 'mem0';
/** The virtio-serial port of the operator-only debug console (deploy/guest-image/init runs a shell on it). */
export const DEBUG_CONSOLE_PORT_NAME = 'edgenfv.debug.0';

export function runFiles(runDir: string): { qmpSocket: string; consoleLog: string; pidFile: string } {
  return { qmpSocket: join(runDir, 'qmp.sock'), consoleLog: join(runDir, 'console.log'), pidFile: join(runDir, 'qemu.pid') };
}

const ID_RE = /^[A-Za-z][A-Za-z0-9_-]{0,30}$/;

/** The memory backend object for `size` MiB under id `id` (also used for hotplugged DIMMs). */
export function memoryObject(mem: MemoryBackend, id: string, sizeMiB: number, numaNode?: number): string {
  const bind = numaNode !== undefined ? `,host-nodes=${numaNode},policy=bind` : '';
  switch (mem.kind) {
    case 'anonymous':
      return `memory-backend-ram,id=${id},size=${sizeMiB}M${bind}`;
    case 'memfd':
      return `memory-backend-memfd,id=${id},size=${sizeMiB}M,share=on${bind}`;
    case 'hugepages': {
      const hp = mem.sizeKiB >= 1048576 ? `${mem.sizeKiB / 1048576}G` : `${mem.sizeKiB / 1024}M`;
      return mem.path
        ? `memory-backend-file,id=${id},size=${sizeMiB}M,mem-path=${mem.path},share=on,prealloc=on${bind}`
        : `memory-backend-memfd,id=${id},size=${sizeMiB}M,hugetlb=on,hugetlbsize=${hp},share=on,prealloc=on${bind}`;
    }
  }
}

/**
 * The virtual IOMMU of a VM whose guest runs vfio-pci (a DPDK data plane on a VF or a virtio NIC: docs/sriov.md):
 * QEMU's emulated VT-d with interrupt remapping (the guest's vfio refuses MSI without it, unless
 * allow_unsafe_interrupts) and caching mode (QEMU must see the guest's map/unmap to shadow them into the host IOMMU
 * for an assigned VF: QEMU refuses vfio-pci behind a VT-d without it). Under KVM interrupt remapping needs the split
 * irqchip (VIOMMU_MACHINE_KVM); TCG's irqchip is QEMU's own. It must come before the PCI devices it translates.
 */
export const VIOMMU_DEVICE = 'intel-iommu,intremap=on,caching-mode=on';
export const VIOMMU_MACHINE_KVM = 'kernel-irqchip=split';
/**
 * The guest turns the VT-d on (the Debian kernels leave it off by default); devices its own kernel drives keep an
 * identity mapping (no cost for them). no_timer_check: under TCG the kernel's check of the timer through the
 * interrupt-remapped IO-APIC fails and it panics ("timer doesn't work through Interrupt-remapped IO-APIC", seen
 * with QEMU 10 and the 6.1 cloud kernel); the timer works, the check is too early for an emulated CPU.
 */
export const VIOMMU_KERNEL_ARGS = 'intel_iommu=on iommu=pt no_timer_check';
/**
 * A virtio NIC behind the vIOMMU: its DMA goes through the guest's IOMMU mappings (VIRTIO_F_ACCESS_PLATFORM), as
 * vfio in the guest requires. Without it QEMU's virtio would read guest-physical addresses while DPDK hands it
 * IOVAs. Modern virtio only (a transitional device cannot offer the feature: QEMU refuses to start; on a root port
 * it is modern-only anyway). A vhost-user NIC gets it only when its switch takes vhost IOTLB messages (`iommu`: the
 * node agent's OVS-DPDK, started with vhost-iommu-support); others keep it off (docs/sriov.md).
 */
export const VIOMMU_NIC_PROPS = 'disable-legacy=on,iommu_platform=on';

/** Where a PCI device goes: `bus` (a q35 root port, or `pcie.0`) and, when given, its slot there. */
export interface PciPlace {
  bus: string;
  addr?: number;
}

function onBus(at?: PciPlace): string {
  return at ? `,bus=${at.bus}${at.addr !== undefined ? `,addr=0x${at.addr.toString(16)}` : ''}` : '';
}

/** QEMU's id of a NIC's PCI device (what `query-pci` reports it as). */
function nicQdevId(dev: NetDevice): string {
  return dev.kind === 'vfio' ? dev.id : `${dev.id}-nic`;
}

/**
 * `-device` string of a NIC on machine `machine`; `at`: the q35 root port for hot-unpluggable devices (and its slot
 * on a migration's destination); `viommu`: the VM has the virtual IOMMU (a virtio NIC on a tap then translates
 * through it).
 */
export function nicDevice(dev: NetDevice, machine: VmSpec['machine'], at?: PciPlace, viommu = false): string {
  if (dev.kind === 'vfio') return `vfio-pci,host=${dev.pci},id=${dev.id}${onBus(at)}`;
  const model = machine === 'microvm' ? 'virtio-net-device' : 'virtio-net-pci';
  // romfile= (no option ROM): the guest boots its kernel directly, and a NIC hotplugged into a chrooted QEMU could
  // not load efi-virtio.rom from /usr/share/qemu (boot and hotplug alike, so a migrated VM has the same devices)
  let extra = machine === 'microvm' ? '' : ',romfile=';
  if (viommu && (dev.kind === 'tap' || dev.kind === 'macvtap' || (dev.kind === 'vhost-user-net' && dev.iommu))) extra += `,${VIOMMU_NIC_PROPS}`;
  if (dev.kind === 'vhost-user-net' && dev.queues > 1) {
    extra += `,mq=on${machine === 'microvm' ? '' : `,vectors=${2 * dev.queues + 2}`}`;
  }
  return `${model},netdev=${dev.id},mac=${dev.mac},id=${nicQdevId(dev)}${machine === 'microvm' ? '' : onBus(at)}${extra}`;
}

/** `-device` string of a read-only image disk (found in the guest by its serial). */
export function diskDevice(d: Extract<VmDevice, { kind: 'disk' }>, machine: VmSpec['machine'], at?: PciPlace): string {
  return `${machine === 'microvm' ? 'virtio-blk-device' : 'virtio-blk-pci'},drive=${d.id},serial=${d.serial},id=${d.id}-blk${onBus(at)}`;
}

const BUS_RE = /^(pcie\.0|rp\d{1,2})$/;
const PROP_RE = /^[a-z][a-z-]{0,20}$/;

/** A migration destination's layout (it came from another node through the scheduler): nothing reaches QEMU's command line unchecked. */
function validateLayout(spec: VmSpec, issues: FieldIssue[]): void {
  const l = spec.layout;
  if (!l) return;
  const int = (v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): boolean => Number.isInteger(v) && (v as number) >= min && (v as number) <= max;
  if (spec.machine !== 'q35') issues.push({ field: 'layout', message: 'a device layout needs machine q35' });
  if (!int(l.rootPorts, 0, MAX_ROOT_PORTS)) issues.push({ field: 'layout.rootPorts', message: `must be 0..${MAX_ROOT_PORTS}` });
  for (const [id, p] of Object.entries(l.pci ?? {})) {
    if (!ID_RE.test(id) || !BUS_RE.test(String(p?.bus)) || !int(p?.addr, 0, 31)) issues.push({ field: `layout.pci.${id}`, message: 'must be a device id on bus pcie.0 or rpN, slot 0..31' });
  }
  (l.cpus ?? []).forEach((c, i) => {
    const ok = ID_RE.test(c.id) && /^[A-Za-z0-9_.-]{1,40}$/.test(c.type) && Object.entries(c.props ?? {}).every(([k, v]) => PROP_RE.test(k) && int(v, 0));
    if (!ok) issues.push({ field: `layout.cpus[${i}]`, message: 'must be {id, type, props: {<topology>: integer}}' });
  });
  (l.dimms ?? []).forEach((d, i) => {
    if (!ID_RE.test(d.id) || !int(d.sizeMiB, 1) || !int(d.addr, 0) || !int(d.slot, 0, 255)) issues.push({ field: `layout.dimms[${i}]`, message: 'must be {id, sizeMiB, addr, slot} (integers)' });
  });
}

export function validateSpec(spec: VmSpec): FieldIssue[] {
  const issues: FieldIssue[] = [];
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1) issues.push({ field: 'vcpus', message: 'must be an integer >= 1' });
  if (!Number.isInteger(spec.maxVcpus) || spec.maxVcpus < spec.vcpus) issues.push({ field: 'maxVcpus', message: 'must be >= vcpus' });
  if (!Number.isInteger(spec.memoryMiB) || spec.memoryMiB < 64) issues.push({ field: 'memoryMiB', message: 'must be an integer >= 64' });
  if (!Number.isInteger(spec.maxMemoryMiB) || spec.maxMemoryMiB < spec.memoryMiB) issues.push({ field: 'maxMemoryMiB', message: 'must be >= memoryMiB' });
  if (spec.memory.kind === 'hugepages') {
    const mib = spec.memory.sizeKiB / 1024;
    if (spec.memory.sizeKiB !== 2048 && spec.memory.sizeKiB !== 1048576) issues.push({ field: 'memory.sizeKiB', message: 'must be 2048 or 1048576' });
    else if (spec.memoryMiB % mib !== 0) issues.push({ field: 'memoryMiB', message: `must be a multiple of the hugepage size (${mib} MiB)` });
  }
  const ports = spec.devices.filter((d) => d.kind !== 'agent-channel').length + (spec.hotplugSlots ?? 0);
  validateLayout(spec, issues);
  if (spec.machine === 'q35' && !spec.layout && ports > MAX_ROOT_PORTS)
    issues.push({ field: 'hotplugSlots', message: `NICs + hotplugSlots need ${ports} PCIe root ports; the root bus has room for ${MAX_ROOT_PORTS}` });
  const ids = new Set<string>();
  spec.devices.forEach((d, i) => {
    const f = `devices[${i}]`;
    if (!ID_RE.test(d.id)) issues.push({ field: `${f}.id`, message: 'must match [A-Za-z][A-Za-z0-9_-]{0,30}' });
    if (ids.has(d.id)) issues.push({ field: `${f}.id`, message: `duplicate device id ${d.id}` });
    ids.add(d.id);
    if (d.kind === 'vhost-user-net' && spec.memory.kind === 'anonymous') {
      issues.push({ field: `${f}`, message: 'vhost-user needs shared guest memory (memory.kind memfd or hugepages)' });
    }
    if (d.kind === 'vhost-user-net' && (!Number.isInteger(d.queues) || d.queues < 1 || d.queues > 16)) {
      issues.push({ field: `${f}.queues`, message: 'must be 1..16' });
    }
    if (d.kind === 'vfio' && spec.machine === 'microvm') {
      issues.push({ field: `${f}`, message: 'vfio-pci passthrough needs machine q35 (microvm has no PCI bus here)' });
    }
    if (d.kind === 'tap' && !/^[A-Za-z0-9_.-]{1,15}$/.test(d.ifName)) issues.push({ field: `${f}.ifName`, message: 'bad interface name' });
    if (d.kind === 'disk' && (/,/.test(d.path) || !/^[A-Za-z0-9_-]{1,20}$/.test(d.serial))) {
      issues.push({ field: `${f}`, message: 'a disk path must not contain a comma; its serial is 1..20 of [A-Za-z0-9_-]' });
    }
    if ((d.kind === 'agent-channel' || d.kind === 'vhost-user-net') && /,/.test(d.socketPath)) {
      issues.push({ field: `${f}.socketPath`, message: 'must not contain a comma' });
    }
    if (d.kind === 'agent-channel' && d.debugConsoleSocket !== undefined && (/,/.test(d.debugConsoleSocket) || !d.debugConsoleSocket.startsWith('/'))) {
      issues.push({ field: `${f}.debugConsoleSocket`, message: 'must be an absolute path without a comma' });
    }
  });
  if (spec.devices.filter((d) => d.kind === 'agent-channel').length > 1) issues.push({ field: 'devices', message: 'at most one agent-channel' });
  if (spec.accel === 'tcg' && spec.tcgTbSizeMiB && spec.maxVcpus > spec.vcpus) {
    // Seen with QEMU 10: a hotplugged vCPU of a running guest aborts QEMU in tcg_region_initial_alloc.
    issues.push({ field: 'tcgTbSizeMiB', message: 'a fixed TCG translation cache cannot take hotplugged vCPUs (QEMU aborts): leave it unset, or maxVcpus = vcpus' });
  }
  if (/,/.test(spec.runDir)) issues.push({ field: 'runDir', message: 'must not contain a comma' });
  if (spec.chrootDir !== undefined) {
    if (!spec.chrootDir.startsWith('/') || /,/.test(spec.chrootDir)) issues.push({ field: 'chrootDir', message: 'must be an absolute path without a comma' });
    if (spec.runAs?.method === 'spawn') issues.push({ field: 'chrootDir', message: 'QEMU started as the uid (runAs.method spawn) cannot chroot: use method qemu' });
  }
  if (spec.systemDisk && (/,/.test(spec.systemDisk.path) || !/^[A-Za-z0-9_-]{1,20}$/.test(spec.systemDisk.serial))) {
    issues.push({ field: 'systemDisk', message: 'its path must not contain a comma; its serial is 1..20 of [A-Za-z0-9_-]' });
  }
  if (spec.viommu && spec.machine !== 'q35') issues.push({ field: 'viommu', message: 'a virtual IOMMU needs machine q35' });
  if (spec.machine === 'microvm' && spec.accel === 'tcg' && !spec.hostCpuKHz) {
    issues.push({ field: 'hostCpuKHz', message: 'microvm under TCG needs the host TSC frequency (tsc_early_khz)' });
  }
  return issues;
}

/** The first root bus slot of the PCIe root ports; 00:1f is the ICH9's, so at most MAX_ROOT_PORTS ports. */
export const ROOT_PORT_SLOT0 = 0x10;
export const MAX_ROOT_PORTS = 0x1f - ROOT_PORT_SLOT0;

export function buildQemuArgs(spec: VmSpec): QemuCommand {
  const issues = validateSpec(spec);
  if (issues.length > 0) throw new InvalidArgumentError(issues);
  const files = runFiles(spec.runDir);
  const q35 = spec.machine === 'q35';
  const a: string[] = [];
  a.push('-name', `guest=${spec.sandboxId},debug-threads=on`);
  a.push('-machine', q35 ? (spec.viommu && spec.accel === 'kvm' ? `q35,${VIOMMU_MACHINE_KVM}` : 'q35') : 'microvm');
  a.push('-accel', spec.accel === 'tcg' && spec.tcgTbSizeMiB ? `tcg,tb-size=${spec.tcgTbSizeMiB}` : spec.accel);
  a.push('-cpu', spec.accel === 'kvm' ? 'host' : 'max');
  a.push('-smp', q35 && spec.maxVcpus > spec.vcpus ? `${spec.vcpus},maxcpus=${spec.maxVcpus}` : `${spec.vcpus}`);
  const hotMem = q35 && spec.maxMemoryMiB > spec.memoryMiB;
  a.push('-m', hotMem ? `${spec.memoryMiB}M,slots=8,maxmem=${spec.maxMemoryMiB}M` : `${spec.memoryMiB}M`);
  a.push('-object', memoryObject(spec.memory, MEM_ID, spec.memoryMiB, spec.numaNode));
  a.push('-numa', `node,nodeid=0,memdev=${MEM_ID}`);
  a.push('-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot');
  if (spec.sandbox) {
    // Dropping privileges inside QEMU needs set*id after seccomp is installed: `elevateprivileges=allow` then
    // (the process is unprivileged afterwards, so it cannot regain them); spawned as the uid: deny.
    const dropsItself = spec.runAs !== undefined && (spec.runAs.method ?? 'qemu') === 'qemu';
    a.push('-sandbox', dropsItself ? SECCOMP.replace('elevateprivileges=deny', 'elevateprivileges=allow') : SECCOMP);
  }
  // -run-with: after opening everything on this command line, QEMU chroots (the host's / out of its reach) and
  // drops to the sandbox's uid; what it opens later is named by its path in the root (vm-root.ts)
  const runWith: string[] = [];
  if (spec.chrootDir) runWith.push(`chroot=${spec.chrootDir}`);
  if (spec.runAs && (spec.runAs.method ?? 'qemu') === 'qemu') runWith.push(`user=${spec.runAs.uid}:${spec.runAs.gid}`);
  if (runWith.length) a.push('-run-with', runWith.join(','));
  a.push('-chardev', `socket,id=qmp,path=${files.qmpSocket},server=on,wait=off`, '-mon', 'chardev=qmp,mode=control');
  // append=on (O_APPEND): the node agent rotates the log by copying and truncating it (console-log.ts)
  a.push('-chardev', `file,id=console,path=${files.consoleLog},append=on`, '-serial', 'chardev:console');
  a.push('-pidfile', files.pidFile);
  if (spec.incoming !== undefined) {
    if (!/^unix:\/[^,\s]+$|^tcp:[^,\s]+:\d+$|^file:\/[^,\s]+$/.test(spec.incoming)) throw new InvalidArgumentError([{ field: 'incoming', message: 'must be unix:/abs/path, tcp:host:port or file:/abs/path' }]);
    // file: a snapshot boot's template (migration.ts saveToFile writes it with mapped-ram; the capability must match).
    // QEMU opens it here, as root before -run-with chroot/user: the file stays root's, outside the VM's root.
    if (spec.incoming.startsWith('file:')) a.push('-global', 'migration.mapped-ram=on');
    a.push('-incoming', spec.incoming);
  }
  const kernelArgs = ['console=ttyS0', 'panic=-1'];
  if (spec.machine === 'microvm' && spec.hostCpuKHz) kernelArgs.push(`tsc_early_khz=${spec.hostCpuKHz}`);
  // online_movable: hotplugged memory goes to ZONE_MOVABLE, so the guest can offline it again when the VM shrinks
  // (onlined as normal memory the kernel places its own pages there and refuses the unplug)
  if (hotMem) kernelArgs.push('memhp_default_state=online_movable');
  if (spec.viommu) kernelArgs.push(VIOMMU_KERNEL_ARGS);
  if (spec.kernelArgs) kernelArgs.push(spec.kernelArgs);
  if (spec.kernelPath) {
    a.push('-kernel', spec.kernelPath);
    if (spec.initrdPath) a.push('-initrd', spec.initrdPath);
    a.push('-append', kernelArgs.join(' '));
  }

  // q35: every NIC on its own PCIe root port, so that it can be unplugged later; spare ports for hotplug. Root port
  // rpN sits at a fixed address on the root bus (00:<ROOT_PORT_SLOT0+N>.0): the guest finds a device by that PCI
  // path whatever bus number it gives the port's secondary bus (pciPathOf in qemu.ts).
  if (spec.viommu) a.push('-device', VIOMMU_DEVICE); // before the devices it translates
  let port = 0;
  const addPort = (): string => {
    const id = `rp${port}`;
    a.push('-device', `pcie-root-port,id=${id},chassis=${port + 1},slot=${port + 1},addr=0x${(ROOT_PORT_SLOT0 + port).toString(16)}`);
    port++;
    return id;
  };
  // A migration's destination (spec.layout): the source's root ports, and every device where QEMU placed it there
  // (a replica that joined the VM got its devices hot-plugged onto whichever port was free).
  const layout = q35 ? spec.layout : undefined;
  const placed = new Set<string>();
  const placeOf = (qdevId: string): PciPlace => {
    const p = layout!.pci[qdevId];
    if (!p) throw new InvalidArgumentError([{ field: `layout.pci.${qdevId}`, message: 'the source VM has no such device: the state would not load into this VM' }]);
    placed.add(qdevId);
    return p;
  };
  if (layout) for (let i = 0; i < layout.rootPorts; i++) addPort();
  const nextPort = (qdevId: string): PciPlace | undefined => (layout ? placeOf(qdevId) : q35 ? { bus: addPort() } : undefined);

  const fds: QemuCommand['fds'] = [];
  let agentSocket: string | undefined;
  for (const d of spec.devices) {
    switch (d.kind) {
      case 'agent-channel':
        agentSocket = d.socketPath;
        a.push('-device', q35 ? `virtio-serial-pci,id=vser0${layout ? onBus(placeOf('vser0')) : ''}` : 'virtio-serial-device,id=vser0');
        a.push('-chardev', `socket,id=${d.id},path=${d.socketPath},server=on,wait=off`);
        a.push('-device', `virtserialport,chardev=${d.id},name=${d.name}`);
        if (d.debugConsoleSocket) {
          // operator-only (node config guest.debugConsole): the guest's /init runs a root shell on this port
          a.push('-chardev', `socket,id=${d.id}-debug,path=${d.debugConsoleSocket},server=on,wait=off`);
          a.push('-device', `virtserialport,chardev=${d.id}-debug,name=${DEBUG_CONSOLE_PORT_NAME}`);
        }
        break;
      case 'tap':
        // Never vhost=on: hosts without /dev/vhost-net abort with it (and it is only a speed-up).
        a.push('-netdev', `tap,id=${d.id},ifname=${d.ifName},script=no,downscript=no`);
        a.push('-device', nicDevice(d, spec.machine, nextPort(nicQdevId(d)), spec.viommu));
        break;
      case 'macvtap': {
        const fd = 3 + fds.length;
        fds.push({ fd, path: d.tapDevPath });
        a.push('-netdev', `tap,id=${d.id},fd=${fd}`);
        a.push('-device', nicDevice(d, spec.machine, nextPort(nicQdevId(d)), spec.viommu));
        break;
      }
      case 'vhost-user-net':
        a.push('-chardev', d.server ? `socket,id=${d.id}-chr,path=${d.socketPath},server=on,wait=off` : `socket,id=${d.id}-chr,path=${d.socketPath},reconnect-ms=1000`);
        a.push('-netdev', `vhost-user,id=${d.id},chardev=${d.id}-chr${d.queues > 1 ? `,queues=${d.queues}` : ''}`);
        a.push('-device', nicDevice(d, spec.machine, nextPort(nicQdevId(d)), spec.viommu));
        break;
      case 'vfio':
        a.push('-device', nicDevice(d, spec.machine, nextPort(nicQdevId(d)), spec.viommu));
        break;
      case 'disk':
        break; // after the root ports, below: they keep their slots (guestPciAddressOf)
    }
  }
  for (let i = 0; q35 && !layout && i < (spec.hotplugSlots ?? 0); i++) addPort();
  for (const d of spec.devices) {
    if (d.kind !== 'disk') continue;
    a.push('-drive', `file=${d.path},format=raw,if=none,readonly=on,id=${d.id}`);
    a.push('-device', diskDevice(d, spec.machine, layout ? placeOf(`${d.id}-blk`) : undefined));
  }
  // last, so that it moves no other device's address (q35: on the root bus, not on a hot-pluggable root port)
  if (spec.systemDisk) {
    a.push('-drive', `file=${spec.systemDisk.path},format=raw,if=none,readonly=on,id=sysdisk`);
    a.push('-device', diskDevice({ kind: 'disk', id: 'sysdisk', ...spec.systemDisk }, spec.machine, layout ? placeOf('sysdisk-blk') : undefined));
  }
  if (layout) {
    const missing = Object.keys(layout.pci).filter((id) => !placed.has(id));
    if (missing.length) throw new InvalidArgumentError([{ field: 'layout.pci', message: `the source VM has devices this VM would not have: ${missing.join(', ')}` }]);
    // hot-plugged vCPUs and DIMMs, cold-plugged here with the source's ids, topology, addresses
    for (const c of layout.cpus) a.push('-device', [c.type, `id=${c.id}`, ...Object.entries(c.props).map(([k, v]) => `${k}=${v}`)].join(','));
    for (const d of layout.dimms) {
      a.push('-object', memoryObject(spec.memory, `${d.id}m`, d.sizeMiB, spec.numaNode));
      a.push('-device', `pc-dimm,id=${d.id},memdev=${d.id}m,addr=${d.addr},slot=${d.slot}`);
    }
  }
  const cmd: QemuCommand = { args: a, fds, ...files };
  if (agentSocket) cmd.agentSocket = agentSocket;
  return cmd;
}

export type { VmDevice };
