/**
 * QEMU driver: KVM when /dev/kvm is usable, TCG otherwise; q35 (hotplug, vfio) or microvm; QMP for control.
 * QEMU runs detached from the agent (own session, stdio to its log), so a killed agent leaves the VM running and a
 * restarted agent re-adopts it by pid + start time + QMP.
 */
import { execFile, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { InternalError, InvalidArgumentError, UnavailableError } from '@edgenfv/contracts';
import { findBinary } from '../inventory.js';
import { killQuiet, procCmdline, processAlive, procStartTicks, waitGone } from '../proc.js';
import { ROOT_PORT_SLOT0, buildQemuArgs, diskDevice, memoryObject, nicDevice } from './qemu-args.js';
import { guestFileTail } from './guest-file.js';
import { QmpClient, withQmp, type HotpluggableCpu } from './qmp.js';
import { pathInVmRoot } from './vm-root.js';
import { stageVfioInVmRoot, unstageVfioInVmRoot } from './vfio-root.js';
import type { Capabilities, DiskDevice, HypervisorDriver, NetDevice, StartOptions, VmHandle, VmRecord, VmSpec } from './types.js';

export interface QemuDriverOptions {
  binary?: string;
  logger: Logger;
}

function tail(path: string, lines = 15): string {
  return guestFileTail(path, lines);
}

/** QEMU's whole environment: nothing of the agent's (no credential or token of any kind reaches the VMM). */
export const VMM_ENV: Readonly<Record<string, string>> = Object.freeze({ PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' });

/** QEMU handle with the PCIe root ports (q35) and what sits in each. */
export interface QemuVmHandle extends VmHandle {
  /** root port id -> device id (null: free). */
  slots: Record<string, string | null>;
  /** id of each hotplugged DIMM -> MiB. */
  dimms: Record<string, number>;
  /** QEMU's root (`-run-with chroot=`): paths given over QMP are paths in it. */
  chrootDir?: string;
  /** VFs hot-plugged into the chrooted QEMU: device id -> the VF and its IOMMU group staged in the root (vfio-root.ts). */
  vfioStaged?: Record<string, { pci: string; group: number }>;
}

/**
 * PCI path of the device on a q35 root port (`<port slot>.0/00.0`): root port rpN sits at 00:<ROOT_PORT_SLOT0+N>.0
 * (qemu-args), the device at 00.0 behind it. The bus number behind the port is the guest's choice, so the guest
 * agent resolves the path and reports the address it found. Used where the MAC cannot be trusted (a passed-through
 * VF may come up with a random MAC).
 */
export function pciPathOf(vm: VmHandle, deviceId: string): string | undefined {
  const slots = (vm as Partial<QemuVmHandle>).slots;
  if (vm.machine !== 'q35' || !slots) return undefined;
  const port = Object.entries(slots).find(([, d]) => d === deviceId)?.[0];
  const m = port ? /^rp(\d+)$/.exec(port) : null;
  return m ? `${(ROOT_PORT_SLOT0 + Number(m[1])).toString(16).padStart(2, '0')}.0/00.0` : undefined;
}

/** Device properties of type OnOffAuto: QMP's device_add wants them as the string "on", not a boolean. */
const QDEV_ON_OFF_AUTO = new Set(['disable-legacy']);

/**
 * QMP `device_add` arguments of a `-device` string (qemu-args.ts renders both, so boot and hot-plug agree): QMP takes
 * typed values, booleans for bool properties ("on"), numbers for `vectors`, strings for the rest (QDEV_ON_OFF_AUTO).
 */
function deviceAddArgs(device: string): Record<string, unknown> {
  const [driver, ...kv] = device.split(',');
  const args: Record<string, unknown> = { driver };
  for (const p of kv) {
    const [k, v] = p.split('=') as [string, string];
    args[k] = v === 'on' && !QDEV_ON_OFF_AUTO.has(k) ? true : k === 'vectors' ? Number(v) : v;
  }
  return args;
}

export class QemuDriver implements HypervisorDriver {
  readonly kind = 'qemu' as const;
  readonly binary: string;
  private readonly log: Logger;

  constructor(opts: QemuDriverOptions) {
    const bin = opts.binary ?? findBinary('qemu-system-x86_64');
    if (!bin) throw new UnavailableError('qemu-system-x86_64 not found: install qemu-system-x86 (npm run setup) or set qemu.binary');
    this.binary = bin;
    this.log = opts.logger.child({ component: 'qemu' });
  }

  capabilities(): Readonly<Capabilities> {
    return { vfio: true, vhostUserNet: true, hotplug: true, cpuHotplug: true, memoryHotplug: true, nicHotplug: true, machines: ['q35', 'microvm'] };
  }

  async start(spec: VmSpec, signal: AbortSignal, opts: StartOptions = {}): Promise<QemuVmHandle> {
    const cmd = buildQemuArgs(spec);
    if (signal.aborted) throw new UnavailableError('start aborted');
    for (const p of [cmd.qmpSocket, cmd.pidFile, cmd.agentSocket]) if (p) rmSync(p, { force: true });
    const out = openSync(join(spec.runDir, 'qemu.log'), 'a');
    const passed: number[] = [];
    let pid: number;
    try {
      for (const f of cmd.fds) passed.push(openSync(f.path, 'r+'));
      // Wrapper (as root): join the cgroup before exec (memory charged from the first page), enter the netns,
      // then exec QEMU (which drops to its uid), or setpriv to the uid first.
      const pre: string[] = [];
      if (spec.nice) pre.push('nice', '-n', String(spec.nice));
      if (spec.devices.some((d) => d.kind === 'vfio')) {
        const b = vfioMemlockBytes(spec.maxMemoryMiB);
        pre.push('prlimit', `--memlock=${b}:${b}`, '--');
      }
      if (spec.netnsPath) pre.push('nsenter', `--net=${spec.netnsPath}`, '--');
      if (spec.runAs && spec.runAs.method === 'spawn') {
        pre.push('setpriv', `--reuid=${spec.runAs.uid}`, `--regid=${spec.runAs.gid}`, '--clear-groups', '--no-new-privs', '--');
      }
      const argv = [...pre, this.binary, ...cmd.args];
      const file = spec.cgroupDir ? '/bin/sh' : argv[0]!;
      const args = spec.cgroupDir
        ? ['-c', 'echo $$ > "$0/cgroup.procs" || exit 97; exec "$@"', spec.cgroupDir, ...argv]
        : argv.slice(1);
      const child = spawn(file, args, { detached: true, env: { ...VMM_ENV }, stdio: ['ignore', out, out, ...passed] });
      if (child.pid === undefined) {
        const err = await new Promise<Error>((resolve) => child.once('error', resolve));
        throw new UnavailableError(`cannot exec ${file}: ${err.message}`, { cause: err });
      }
      child.unref();
      pid = child.pid;
    } finally {
      closeSync(out);
      for (const fd of passed) closeSync(fd);
    }
    const ticks = procStartTicks(pid) ?? 0;
    const vm: QemuVmHandle = {
      kind: 'qemu',
      sandboxId: spec.sandboxId,
      pid,
      procStartTicks: ticks,
      apiSocket: cmd.qmpSocket,
      consoleLog: cmd.consoleLog,
      accel: spec.accel,
      machine: spec.machine,
      startedAt: new Date().toISOString(),
      vcpus: spec.vcpus,
      memoryMiB: spec.memoryMiB,
      hotplugged: [],
      slots: {},
      dimms: {},
    };
    if (cmd.agentSocket) Object.assign(vm, { agentSocket: cmd.agentSocket });
    if (spec.chrootDir) vm.chrootDir = spec.chrootDir;
    const layout = spec.machine === 'q35' ? spec.layout : undefined;
    if (layout) {
      // a migration's destination: the source's ports and what sits in each, its DIMMs, size and hot-plugged ids
      for (let i = 0; i < layout.rootPorts; i++) vm.slots[`rp${i}`] = null;
      for (const [qdevId, at] of Object.entries(layout.pci)) if (at.bus in vm.slots) vm.slots[at.bus] = qdevId.replace(/-(nic|blk)$/, '');
      for (const d of layout.dimms) vm.dimms[d.id] = d.sizeMiB;
      vm.vcpus = layout.vcpus;
      vm.memoryMiB = layout.memoryMiB;
      vm.hotplugged = [...layout.hotplugged];
    } else {
      // Root ports: the boot NICs occupy the first ones in device order.
      let port = 0;
      for (const d of spec.devices) if (d.kind !== 'agent-channel' && d.kind !== 'disk' && spec.machine === 'q35') vm.slots[`rp${port++}`] = d.id;
      for (let i = 0; spec.machine === 'q35' && i < (spec.hotplugSlots ?? 0); i++) vm.slots[`rp${port++}`] = null;
    }
    opts.onSpawned?.(vm);
    this.log.info({ sandboxId: spec.sandboxId, pid, accel: spec.accel, machine: spec.machine }, `qemu started (accel ${spec.accel})`);
    try {
      await this.waitQmp(vm, signal, qmpWaitMs(spec));
      if (opts.waitReady) await this.whileAlive(vm, signal, (s) => opts.waitReady!(vm, s));
      if (!processAlive(pid, ticks)) throw new InternalError('qemu exited during boot');
      return vm;
    } catch (err) {
      killQuiet(pid, 'SIGKILL');
      await waitGone(pid, ticks, 5000);
      const log = tail(join(spec.runDir, 'qemu.log'));
      this.log.warn({ sandboxId: spec.sandboxId, err, qemuLog: log }, 'qemu boot failed; killed');
      if (err instanceof InvalidArgumentError) throw err;
      throw new UnavailableError(`qemu boot of ${spec.sandboxId} failed: ${(err as Error).message}${log ? `\nqemu: ${log}` : ''}`, { cause: err });
    }
  }

  /**
   * Runs `fn` (the wait for the guest agent) but fails as soon as QEMU exits: a guest that powers off during its
   * boot (its /init found no system disk, a kernel panic with panic=-1) ends the start at once, not after the
   * whole boot timeout (50 min on a nested node).
   */
  private async whileAlive<T>(vm: VmHandle, signal: AbortSignal, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const ac = new AbortController();
    const onAbort = (): void => ac.abort(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    let timer: NodeJS.Timeout | undefined;
    const exited = new Promise<never>((_, reject) => {
      timer = setInterval(() => {
        if (processAlive(vm.pid, vm.procStartTicks)) return;
        const err = new InternalError('qemu exited during boot');
        reject(err); // first: the race settles with this, not with the wait's own abort error
        ac.abort(err);
      }, 500);
    });
    try {
      return await Promise.race([fn(ac.signal), exited]);
    } finally {
      clearInterval(timer);
      signal.removeEventListener('abort', onAbort);
    }
  }

  private async waitQmp(vm: VmHandle, signal: AbortSignal, timeoutMs: number): Promise<void> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      if (signal.aborted) throw new UnavailableError('start aborted');
      if (!processAlive(vm.pid, vm.procStartTicks)) throw new InternalError('qemu exited before its QMP socket answered');
      if (existsSync(vm.apiSocket)) {
        try {
          const st = await withQmp(vm.apiSocket, (q) => q.queryStatus(), 2000);
          if (st.status === 'running' || st.status === 'prelaunch' || st.status === 'paused' || st.status === 'inmigrate') return;
        } catch {
          /* not yet */
        }
      }
      if (Date.now() > end) throw new UnavailableError(`QMP did not answer within ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  alive(vm: VmHandle): boolean {
    return processAlive(vm.pid, vm.procStartTicks);
  }

  async stop(vm: VmHandle, opts: { graceMs: number }): Promise<void> {
    if (!this.alive(vm)) return;
    const log = this.log.child({ sandboxId: vm.sandboxId, pid: vm.pid });
    if (opts.graceMs > 0) {
      try {
        await withQmp(vm.apiSocket, (q) => q.systemPowerdown(), 2000);
        if (await waitGone(vm.pid, vm.procStartTicks, opts.graceMs)) return;
      } catch (err) {
        log.debug({ err }, 'system_powerdown failed');
      }
    }
    try {
      await withQmp(vm.apiSocket, (q) => q.quit(), 2000);
      if (await waitGone(vm.pid, vm.procStartTicks, 3000)) return;
    } catch (err) {
      log.debug({ err }, 'quit failed');
    }
    log.warn('qemu did not quit: SIGKILL');
    killQuiet(vm.pid, 'SIGKILL');
    if (!(await waitGone(vm.pid, vm.procStartTicks, 5000))) throw new InternalError(`qemu pid ${vm.pid} survived SIGKILL`);
  }

  record(vm: VmHandle): VmRecord {
    return JSON.parse(JSON.stringify(vm)) as VmRecord;
  }

  async adopt(rec: VmRecord): Promise<QemuVmHandle | null> {
    if (!processAlive(rec.pid, rec.procStartTicks)) return null;
    const cmd = procCmdline(rec.pid);
    if (!cmd.includes(`guest=${rec.sandboxId},debug-threads=on`)) return null; // pid reused by something else
    const vm = JSON.parse(JSON.stringify(rec)) as QemuVmHandle;
    vm.slots ??= {};
    vm.dimms ??= {};
    try {
      await withQmp(vm.apiSocket, (q) => q.queryStatus(), 5000);
    } catch (err) {
      this.log.warn({ sandboxId: rec.sandboxId, err }, 'adopted qemu does not answer QMP');
    }
    return vm;
  }

  async vcpuThreads(vm: VmHandle): Promise<number[]> {
    const cpus = await withQmp(vm.apiSocket, (qmp) => qmp.execute<{ 'cpu-index': number; 'thread-id': number }[]>('query-cpus-fast'));
    return [...cpus].sort((a, b) => a['cpu-index'] - b['cpu-index']).map((c) => c['thread-id']);
  }

  async resize(vm: VmHandle, target: { vcpus: number; memoryMiB: number }, spec: Pick<VmSpec, 'memory' | 'numaNode'>): Promise<void> {
    const q = vm as QemuVmHandle;
    if (vm.machine !== 'q35') throw new UnavailableError('vCPU/memory hotplug needs machine q35 (microvm has none): restart the VM');
    await withQmp(vm.apiSocket, async (qmp) => {
      if (target.vcpus !== vm.vcpus) await this.resizeCpus(q, qmp, target.vcpus);
      if (target.memoryMiB > vm.memoryMiB) {
        const delta = target.memoryMiB - vm.memoryMiB;
        // a fresh id: an unplugged DIMM's backend (or a DIMM the guest has not released yet) keeps its name
        const objects = new Set((await qmp.execute<{ name: string }[]>('qom-list', { path: '/objects' })).map((o) => o.name));
        let n = 0;
        while (q.dimms[`dimm${n}`] !== undefined || objects.has(`dimm${n}m`)) n++;
        const id = `dimm${n}`;
        const obj = memoryObject(spec.memory, `${id}m`, delta, spec.numaNode);
        const [type, ...kv] = obj.split(',');
        const props: Record<string, unknown> = {};
        for (const p of kv) {
          const [k, v] = p.split('=') as [string, string];
          if (k === 'id') continue;
          props[k] = k === 'mem-path' ? pathInVmRoot(q.chrootDir, v, 'the hugepage folder') : k === 'size' ? delta * 1024 * 1024 : k === 'hugetlbsize' ? (v.endsWith('G') ? parseInt(v) * 1024 ** 3 : parseInt(v) * 1024 ** 2) : k === 'host-nodes' ? [Number(v)] : v === 'on' ? true : v;
        }
        await qmp.objectAdd(type!, `${id}m`, props);
        try {
          await qmp.deviceAdd('pc-dimm', id, { memdev: `${id}m` });
        } catch (err) {
          await qmp.objectDel(`${id}m`).catch(() => undefined);
          throw err;
        }
        q.dimms[id] = delta;
        vm.memoryMiB = target.memoryMiB;
      } else if (target.memoryMiB < vm.memoryMiB) {
        // Unplug whole DIMMs, newest first, while they fit; the guest must offline them (it may refuse).
        for (const [id, mib] of Object.entries(q.dimms).reverse()) {
          if (vm.memoryMiB - mib < target.memoryMiB) continue;
          await qmp.deviceDel(id).catch((err: unknown) => this.log.debug({ err, id }, 'device_del of the DIMM (already pending?)'));
          // the DIMM is gone once the guest has offlined and ejected it; only then its backend can go
          if (!(await this.waitDeviceGone(qmp, 'query-memory-devices', id, 30_000))) {
            this.log.warn({ sandboxId: vm.sandboxId, id }, 'the guest did not release the DIMM: the VM keeps that memory');
            continue;
          }
          await qmp.objectDel(`${id}m`).catch((err: unknown) => this.log.warn({ err, id }, 'object-del of the DIMM backend failed'));
          delete q.dimms[id];
          vm.memoryMiB -= mib;
        }
      }
    });
  }

  private async resizeCpus(vm: QemuVmHandle, qmp: QmpClient, target: number): Promise<void> {
    const slots = await qmp.queryHotpluggableCpus();
    const plugged = slots.filter((s) => s['qom-path']);
    if (target > slots.length) throw new InvalidArgumentError([{ field: 'vcpus', message: `at most ${slots.length} vCPUs (maxcpus)` }]);
    const cpuId = (s: HotpluggableCpu): string => `cpu-s${s.props['socket-id'] ?? 0}-c${s.props['core-id'] ?? 0}-t${s.props['thread-id'] ?? 0}`;
    if (target > plugged.length) {
      const free = slots.filter((s) => !s['qom-path']).reverse(); // query lists the highest ids first
      for (const s of free.slice(0, target - plugged.length)) {
        const id = cpuId(s);
        await qmp.deviceAdd(s.type, id, { ...s.props });
        vm.hotplugged.push(id);
      }
    } else if (target < plugged.length && vm.accel !== 'tcg') {
      // Under TCG an unplugged vCPU is never plugged again: each vCPU thread QEMU starts takes one of maxcpus TCG
      // contexts for good (QEMU 10 aborts in tcg_register_thread, `n < tcg_max_ctxs`, when a grow after a shrink
      // starts one more). So a TCG VM keeps its vCPUs plugged when it shrinks and the next grow reuses them.
      const hot = vm.hotplugged.filter((h) => h.startsWith('cpu-'));
      for (const id of hot.slice(-(plugged.length - target))) {
        await qmp.deviceDel(id);
        vm.hotplugged = vm.hotplugged.filter((h) => h !== id);
      }
    }
    vm.vcpus = target;
  }

  async addNic(vm: VmHandle, dev: NetDevice, spec: Pick<VmSpec, 'machine'> & Partial<Pick<VmSpec, 'maxMemoryMiB' | 'runAs' | 'viommu'>>): Promise<void> {
    const q = vm as QemuVmHandle;
    if (spec.machine !== 'q35') throw new UnavailableError('NIC hotplug needs machine q35: restart the VM');
    if (dev.kind === 'macvtap') throw new UnavailableError('macvtap NICs cannot be hotplugged (the fd would have to go over QMP): restart the VM');
    const socketPath = dev.kind === 'vhost-user-net' ? pathInVmRoot(q.chrootDir, dev.socketPath, 'the vhost-user socket') : '';
    const port = Object.entries(q.slots).find(([, v]) => v === null)?.[0];
    if (!port) throw new UnavailableError('no free PCIe root port for NIC hotplug: restart the VM with more hotplugSlots');
    if (dev.kind === 'vfio') await raiseMemlock(q.pid, vfioMemlockBytes(spec.maxMemoryMiB ?? q.memoryMiB));
    // a chrooted QEMU opens the VF's vfio group (and sysfs link) in its own root: the agent puts them there first
    if (dev.kind === 'vfio' && q.chrootDir) {
      const group = await stageVfioInVmRoot(q.chrootDir, dev.pci, { uid: spec.runAs?.uid ?? 0, gid: spec.runAs?.gid ?? 0 });
      q.vfioStaged = { ...q.vfioStaged, [dev.id]: { pci: dev.pci, group } };
    }
    try {
      await this.deviceAddNic(q, dev, port, socketPath, spec.viommu ?? false);
    } catch (err) {
      if (dev.kind === 'vfio') this.unstageVfio(q, dev.id);
      throw err;
    }
    q.slots[port] = dev.id;
    vm.hotplugged.push(`nic:${dev.id}`);
  }

  /** Removes what stageVfioInVmRoot made for device `id` (nothing when it was cold-plugged or QEMU has no root). */
  private unstageVfio(q: QemuVmHandle, id: string): void {
    const staged = q.vfioStaged?.[id];
    if (!staged || !q.chrootDir) return;
    const { [id]: _gone, ...rest } = q.vfioStaged!;
    q.vfioStaged = rest;
    unstageVfioInVmRoot(q.chrootDir, staged.pci, staged.group, Object.values(rest).map((s) => s.group));
  }

  private async deviceAddNic(q: QemuVmHandle, dev: NetDevice, port: string, socketPath: string, viommu: boolean): Promise<void> {
    await withQmp(q.apiSocket, async (qmp) => {
      if (dev.kind === 'tap') {
        await qmp.netdevAdd('tap', dev.id, { ifname: dev.ifName, script: 'no', downscript: 'no' });
      } else if (dev.kind === 'vhost-user-net') {
        await qmp.chardevAdd(`${dev.id}-chr`, {
          type: 'socket',
          data: dev.server
            ? { addr: { type: 'unix', data: { path: socketPath } }, server: true, wait: false }
            : { addr: { type: 'unix', data: { path: socketPath } }, server: false, 'reconnect-ms': 1000 },
        });
        await qmp.netdevAdd('vhost-user', dev.id, { chardev: `${dev.id}-chr`, ...(dev.queues > 1 ? { queues: dev.queues } : {}) });
      }
      // a VF's realize maps all guest RAM for DMA (pinning it): seconds on a loaded or nested node
      await qmp.execute('device_add', deviceAddArgs(nicDevice(dev, 'q35', { bus: port }, viommu)), dev.kind === 'vfio' ? 120_000 : 10_000);
    });
  }

  async addDisk(vm: VmHandle, dev: DiskDevice, spec: Pick<VmSpec, 'machine'>): Promise<void> {
    const q = vm as QemuVmHandle;
    if (spec.machine !== 'q35') throw new UnavailableError('disk hotplug needs machine q35: restart the VM');
    const port = Object.entries(q.slots).find(([, v]) => v === null)?.[0];
    if (!port) throw new UnavailableError('no free PCIe root port for the image disk: restart the VM with more hotplugSlots');
    const filename = pathInVmRoot(q.chrootDir, dev.path, 'the image disk');
    await withQmp(vm.apiSocket, async (qmp) => {
      await qmp.execute('blockdev-add', { driver: 'raw', 'node-name': dev.id, 'read-only': true, file: { driver: 'file', filename, 'read-only': true } });
      await qmp.execute('device_add', deviceAddArgs(diskDevice(dev, 'q35', { bus: port })));
    });
    q.slots[port] = dev.id;
    vm.hotplugged.push(`disk:${dev.id}`);
  }

  /** Waits until `id` no longer appears in a query-memory-devices answer; false when it is still there at the end. */
  private async waitDeviceGone(qmp: QmpClient, query: 'query-memory-devices', id: string, timeoutMs: number): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const list = await qmp.execute<{ data?: { id?: string } }[]>(query);
      if (!list.some((d) => d.data?.id === id)) return true;
      if (Date.now() > end) return false;
      await sleep(200);
    }
  }

  async removeNic(vm: VmHandle, id: string): Promise<void> {
    const q = vm as QemuVmHandle;
    const port = Object.entries(q.slots).find(([, v]) => v === id)?.[0];
    await withQmp(vm.apiSocket, async (qmp) => {
      for (const devId of [`${id}-nic`, id]) {
        try {
          await qmp.deviceDel(devId);
          break;
        } catch {
          /* try the other name (vfio devices carry the bare id) */
        }
      }
      // The guest acknowledges the unplug (pciehp); wait for the device to disappear, then drop the backends.
      const end = Date.now() + 15_000;
      while (Date.now() < end) {
        const list = await qmp.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' });
        if (!list.some((p) => p.name === id || p.name === `${id}-nic`)) break;
        await sleep(100);
      }
      await qmp.netdevDel(id).catch(() => undefined);
      await qmp.chardevRemove(`${id}-chr`).catch(() => undefined);
    });
    if (port) q.slots[port] = null;
    this.unstageVfio(q, id);
    vm.hotplugged = vm.hotplugged.filter((h) => h !== `nic:${id}`);
  }
}

/**
 * vfio pins all of a guest's RAM (hotpluggable memory included) in the host, so QEMU's RLIMIT_MEMLOCK must cover
 * the VM's maximum memory, plus room for the IOMMU's own mappings (libvirt's rule: maximum memory + 1 GiB). Without
 * it a QEMU that dropped root dies at the first DMA mapping ("vfio: DMA mapping failed, unable to continue": seen in
 * the emulated edge node, docs/sriov.md). Only VMs with a VF get the raised limit.
 */
export function vfioMemlockBytes(maxMemoryMiB: number): number {
  return (maxMemoryMiB + 1024) * 1024 * 1024;
}

/** How long a starting QEMU may take to answer QMP: 30 s, and with a VF more (qmpWaitMs). */
const QMP_WAIT_MS = 30_000;
/** Per GiB of guest memory a VM with a VF may take more (QEMU pins it all for vfio before it serves QMP). */
const QMP_WAIT_VFIO_PER_GIB_MS = 120_000;
const QMP_WAIT_VFIO_MAX_MS = 15 * 60_000;

/**
 * How long a starting QEMU may take to answer QMP. With a VF, QEMU maps (pins) all guest RAM for vfio while it
 * realizes the device, before its main loop serves QMP: that grows with the memory and the host's load (a 896 MiB VM
 * in the emulated edge node, under a CI run's load, took more than 30 s). A QEMU that dies meanwhile fails the
 * wait at once (the process is watched), so a long bound costs nothing when it does.
 */
export function qmpWaitMs(spec: Pick<VmSpec, 'devices' | 'memoryMiB' | 'maxMemoryMiB'>): number {
  if (!spec.devices.some((d) => d.kind === 'vfio')) return QMP_WAIT_MS;
  const gib = Math.max(spec.memoryMiB, spec.maxMemoryMiB ?? 0) / 1024;
  return Math.min(QMP_WAIT_VFIO_MAX_MS, QMP_WAIT_MS + Math.ceil(gib * QMP_WAIT_VFIO_PER_GIB_MS));
}

/** prlimit(2) on a running QEMU (as root) before a VF is hotplugged into it. */
async function raiseMemlock(pid: number, bytes: number): Promise<void> {
  await new Promise<void>((resolve, reject) =>
    execFile('prlimit', ['--pid', String(pid), `--memlock=${bytes}:${bytes}`], (err, _out, stderr) =>
      err ? reject(new UnavailableError(`cannot raise the locked-memory limit of QEMU ${pid} for vfio: ${(stderr || err.message).trim()}`)) : resolve(),
    ),
  );
}
