/**
 * Cloud Hypervisor and Firecracker drivers: they build their command line / API bodies from the same VmSpec and
 * state their capabilities. Both need KVM and their binary (neither is packaged in Debian); without them `start`
 * refuses with a clear UnavailableError, never half-starts.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { InvalidArgumentError, UnavailableError, type FieldIssue } from '@edgenfv/contracts';
import { findBinary, kvmUsable } from '../inventory.js';
import { killQuiet, procCmdline, processAlive, procStartTicks, waitGone } from '../proc.js';
import type { Capabilities, HypervisorDriver, NetDevice, StartOptions, VmHandle, VmRecord, VmSpec } from './types.js';

export interface OtherDriverOptions {
  binary?: string | null;
  devRoot?: string;
  logger: Logger;
}

function kernelCmdline(spec: VmSpec): string {
  return ['console=ttyS0', 'panic=-1', spec.kernelArgs].filter(Boolean).join(' ');
}

function unsupported(spec: VmSpec, caps: Capabilities, name: string): FieldIssue[] {
  const issues: FieldIssue[] = [];
  spec.devices.forEach((d, i) => {
    if (d.kind === 'vfio' && !caps.vfio) issues.push({ field: `devices[${i}]`, message: `${name} has no VFIO passthrough` });
    if (d.kind === 'vhost-user-net' && !caps.vhostUserNet) issues.push({ field: `devices[${i}]`, message: `${name} has no vhost-user-net` });
    if (d.kind === 'macvtap') issues.push({ field: `devices[${i}]`, message: `${name}: macvtap needs fd passing; use a tap` });
  });
  if (!spec.kernelPath) issues.push({ field: 'kernelPath', message: `${name} boots a kernel directly: required` });
  return issues;
}

/** Cloud Hypervisor argv (v40+ CLI). The guest agent channel is a serial port on a unix socket (no virtio-serial). */
export function buildCloudHypervisorArgs(spec: VmSpec): string[] {
  const issues = unsupported(spec, CLOUD_HYPERVISOR_CAPS, 'cloud-hypervisor');
  if (spec.memory.kind === 'anonymous' && spec.devices.some((d) => d.kind === 'vhost-user-net')) {
    issues.push({ field: 'memory', message: 'vhost-user needs shared memory' });
  }
  if (issues.length) throw new InvalidArgumentError(issues);
  const a = ['--api-socket', `path=${join(spec.runDir, 'api.sock')}`];
  a.push('--kernel', spec.kernelPath!);
  if (spec.initrdPath) a.push('--initramfs', spec.initrdPath);
  a.push('--cmdline', kernelCmdline(spec));
  a.push('--cpus', `boot=${spec.vcpus},max=${spec.maxVcpus}`);
  const mem = [`size=${spec.memoryMiB}M`];
  if (spec.memory.kind !== 'anonymous') mem.push('shared=on');
  if (spec.memory.kind === 'hugepages') mem.push('hugepages=on', `hugepage_size=${spec.memory.sizeKiB / 1024}M`);
  if (spec.maxMemoryMiB > spec.memoryMiB) mem.push(`hotplug_method=virtio-mem`, `hotplug_size=${spec.maxMemoryMiB - spec.memoryMiB}M`);
  a.push('--memory', mem.join(','));
  if (spec.numaNode !== undefined) a.push('--numa', `guest_numa_id=0,host_numa_node=${spec.numaNode}`);
  for (const d of spec.devices) {
    if (d.kind === 'tap') a.push('--net', `tap=${d.ifName},mac=${d.mac},id=${d.id}`);
    else if (d.kind === 'vhost-user-net')
      a.push('--net', `vhost_user=true,socket=${d.socketPath},mac=${d.mac},num_queues=${2 * d.queues},vhost_mode=${d.server ? 'server' : 'client'},id=${d.id}`);
    else if (d.kind === 'vfio') a.push('--device', `path=/sys/bus/pci/devices/${d.pci}/,id=${d.id}`);
    else if (d.kind === 'agent-channel') a.push('--serial', `socket=${d.socketPath}`);
  }
  if (!spec.devices.some((d) => d.kind === 'agent-channel')) a.push('--serial', `file=${join(spec.runDir, 'console.log')}`);
  a.push('--console', 'off');
  if (spec.sandbox) a.push('--seccomp', 'true');
  return a;
}

export interface FirecrackerApiCall {
  method: 'PUT';
  path: string;
  body: Record<string, unknown>;
}

/** Firecracker API calls, in order (PUT each on the API socket, then InstanceStart). */
export function buildFirecrackerCalls(spec: VmSpec): FirecrackerApiCall[] {
  const issues = unsupported(spec, FIRECRACKER_CAPS, 'firecracker');
  if (spec.memory.kind === 'memfd') issues.push({ field: 'memory', message: 'firecracker: shared memfd memory is not supported' });
  if (issues.length) throw new InvalidArgumentError(issues);
  const calls: FirecrackerApiCall[] = [];
  const boot: Record<string, unknown> = { kernel_image_path: spec.kernelPath, boot_args: kernelCmdline(spec) };
  if (spec.initrdPath) boot.initrd_path = spec.initrdPath;
  calls.push({ method: 'PUT', path: '/boot-source', body: boot });
  const machine: Record<string, unknown> = { vcpu_count: spec.vcpus, mem_size_mib: spec.memoryMiB, smt: false };
  if (spec.memory.kind === 'hugepages') machine.huge_pages = spec.memory.sizeKiB === 2048 ? '2M' : '1G';
  calls.push({ method: 'PUT', path: '/machine-config', body: machine });
  for (const d of spec.devices) {
    if (d.kind === 'tap') calls.push({ method: 'PUT', path: `/network-interfaces/${d.id}`, body: { iface_id: d.id, host_dev_name: d.ifName, guest_mac: d.mac } });
    else if (d.kind === 'agent-channel')
      calls.push({ method: 'PUT', path: '/vsock', body: { guest_cid: 3, uds_path: d.socketPath } });
  }
  calls.push({ method: 'PUT', path: '/actions', body: { action_type: 'InstanceStart' } });
  return calls;
}

export const CLOUD_HYPERVISOR_CAPS: Capabilities = Object.freeze({
  vfio: true,
  vhostUserNet: true,
  hotplug: true,
  cpuHotplug: true,
  memoryHotplug: true,
  nicHotplug: true,
  machines: ['q35'] as const,
});
export const FIRECRACKER_CAPS: Capabilities = Object.freeze({
  vfio: false,
  vhostUserNet: false,
  hotplug: false,
  cpuHotplug: false,
  memoryHotplug: false,
  nicHotplug: false,
  machines: ['microvm'] as const,
});

function apiPut(socketPath: string, path: string, body: unknown): Promise<void> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = request({ socketPath, path, method: 'PUT', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => ((res.statusCode ?? 500) < 300 ? resolve() : reject(new UnavailableError(`PUT ${path}: ${res.statusCode} ${text}`))));
    });
    req.on('error', reject);
    req.end(data);
  });
}

abstract class ProcessDriver implements HypervisorDriver {
  abstract readonly kind: 'cloud-hypervisor' | 'firecracker';
  protected readonly binary: string | null;
  protected readonly devRoot: string;
  protected readonly log: Logger;
  constructor(binName: string, opts: OtherDriverOptions) {
    this.binary = opts.binary !== undefined ? opts.binary : findBinary(binName);
    this.devRoot = opts.devRoot ?? '/dev';
    this.log = opts.logger.child({ component: binName });
  }
  abstract capabilities(): Readonly<Capabilities>;
  protected abstract argv(spec: VmSpec): string[];
  protected abstract configure(spec: VmSpec, apiSocket: string): Promise<void>;

  /** Throws a clear error when this node cannot run the hypervisor at all. */
  protected preflight(): string {
    if (!this.binary) throw new UnavailableError(`${this.kind} binary not found on PATH: install it (it is not packaged in Debian) or use the qemu driver`);
    if (!kvmUsable(this.devRoot)) throw new UnavailableError(`${this.kind} needs KVM and ${this.devRoot}/kvm is not usable on this node: use the qemu driver (TCG)`);
    return this.binary;
  }

  async start(spec: VmSpec, signal: AbortSignal, opts: StartOptions = {}): Promise<VmHandle> {
    const argv = this.argv(spec); // validates first: bad input is reported even where the binary is missing
    const bin = this.preflight();
    const apiSocket = join(spec.runDir, 'api.sock');
    rmSync(apiSocket, { force: true });
    const out = openSync(join(spec.runDir, `${this.kind}.log`), 'a');
    const child = spawn(bin, argv, { detached: true, stdio: ['ignore', out, out] });
    closeSync(out);
    if (child.pid === undefined) throw new UnavailableError(`cannot exec ${bin}`);
    child.unref();
    const vm: VmHandle = {
      kind: this.kind,
      sandboxId: spec.sandboxId,
      pid: child.pid,
      procStartTicks: procStartTicks(child.pid) ?? 0,
      apiSocket,
      consoleLog: join(spec.runDir, 'console.log'),
      accel: 'kvm',
      machine: spec.machine,
      startedAt: new Date().toISOString(),
      vcpus: spec.vcpus,
      memoryMiB: spec.memoryMiB,
      hotplugged: [],
    };
    opts.onSpawned?.(vm);
    try {
      for (let i = 0; !existsSync(apiSocket); i++) {
        if (i > 500 || signal.aborted || !this.alive(vm)) throw new UnavailableError(`${this.kind} API socket did not appear`);
        await sleep(20);
      }
      await this.configure(spec, apiSocket);
      if (opts.waitReady) await opts.waitReady(vm, signal);
      return vm;
    } catch (err) {
      killQuiet(vm.pid, 'SIGKILL');
      await waitGone(vm.pid, vm.procStartTicks, 5000);
      throw err;
    }
  }
  alive(vm: VmHandle): boolean {
    return processAlive(vm.pid, vm.procStartTicks);
  }
  async stop(vm: VmHandle, opts: { graceMs: number }): Promise<void> {
    if (!this.alive(vm)) return;
    killQuiet(vm.pid, 'SIGTERM');
    if (await waitGone(vm.pid, vm.procStartTicks, opts.graceMs)) return;
    killQuiet(vm.pid, 'SIGKILL');
    await waitGone(vm.pid, vm.procStartTicks, 5000);
  }
  record(vm: VmHandle): VmRecord {
    return JSON.parse(JSON.stringify(vm)) as VmRecord;
  }
  async adopt(rec: VmRecord): Promise<VmHandle | null> {
    if (!processAlive(rec.pid, rec.procStartTicks)) return null;
    if (!procCmdline(rec.pid).some((a) => a.includes(rec.apiSocket))) return null;
    return JSON.parse(JSON.stringify(rec)) as VmHandle;
  }
  async resize(vm: VmHandle, target: { vcpus: number; memoryMiB: number }): Promise<void> {
    if (!this.capabilities().hotplug) throw new UnavailableError(`${this.kind} cannot hotplug vCPUs/memory: restart the VM`);
    await apiPut(vm.apiSocket, '/api/v1/vm.resize', { desired_vcpus: target.vcpus, desired_ram: target.memoryMiB * 1024 * 1024 });
    vm.vcpus = target.vcpus;
    vm.memoryMiB = target.memoryMiB;
  }
  async addNic(vm: VmHandle, dev: NetDevice): Promise<void> {
    if (!this.capabilities().nicHotplug) throw new UnavailableError(`${this.kind} cannot hotplug NICs: restart the VM`);
    if (dev.kind === 'vfio') await apiPut(vm.apiSocket, '/api/v1/vm.add-device', { path: `/sys/bus/pci/devices/${dev.pci}/`, id: dev.id });
    else if (dev.kind === 'tap') await apiPut(vm.apiSocket, '/api/v1/vm.add-net', { tap: dev.ifName, mac: dev.mac, id: dev.id });
    else if (dev.kind === 'vhost-user-net')
      await apiPut(vm.apiSocket, '/api/v1/vm.add-net', { vhost_user: true, vhost_socket: dev.socketPath, mac: dev.mac, num_queues: 2 * dev.queues, id: dev.id });
    else throw new UnavailableError(`${this.kind}: ${dev.kind} cannot be hotplugged`);
    vm.hotplugged.push(`nic:${dev.id}`);
  }
  async removeNic(vm: VmHandle, id: string): Promise<void> {
    if (!this.capabilities().nicHotplug) throw new UnavailableError(`${this.kind} cannot unplug NICs: restart the VM`);
    await apiPut(vm.apiSocket, '/api/v1/vm.remove-device', { id });
    vm.hotplugged = vm.hotplugged.filter((h) => h !== `nic:${id}`);
  }
}

export class CloudHypervisorDriver extends ProcessDriver {
  readonly kind = 'cloud-hypervisor' as const;
  constructor(opts: OtherDriverOptions) {
    super('cloud-hypervisor', opts);
  }
  capabilities(): Readonly<Capabilities> {
    return CLOUD_HYPERVISOR_CAPS;
  }
  protected argv(spec: VmSpec): string[] {
    return buildCloudHypervisorArgs(spec);
  }
  protected async configure(): Promise<void> {
    /* configured by its command line */
  }
}

export class FirecrackerDriver extends ProcessDriver {
  readonly kind = 'firecracker' as const;
  constructor(opts: OtherDriverOptions) {
    super('firecracker', opts);
  }
  capabilities(): Readonly<Capabilities> {
    return FIRECRACKER_CAPS;
  }
  protected argv(spec: VmSpec): string[] {
    buildFirecrackerCalls(spec); // validate
    return ['--api-sock', join(spec.runDir, 'api.sock'), '--id', spec.sandboxId];
  }
  protected async configure(spec: VmSpec, apiSocket: string): Promise<void> {
    for (const c of buildFirecrackerCalls(spec)) await apiPut(apiSocket, c.path, c.body);
  }
}
