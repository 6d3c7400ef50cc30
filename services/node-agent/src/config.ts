/**
 * Node agent configuration: parsed once at start from a file (JSON or YAML) and the environment,
 * closed schema (unknown keys rejected), every issue collected and reported together, then frozen.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { isAbsolute } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { InvalidArgumentError, isDnsLabel, isPciAddress, parsePciAddress, type FieldIssue } from '@edgenfv/contracts';
import type { DataplaneKind } from '@edgenfv/contracts';

export type MachineType = 'q35' | 'microvm';

export interface DataplaneConfig {
  kind: DataplaneKind;
  /** Folder where the data plane's vhost-user sockets live. */
  socketDir: string;
  /** A file whose presence proves the data plane runs (VPP cli.sock, OVS db.sock); default: socketDir itself. */
  probePath?: string;
  numaNode?: number;
}

export interface NodeAgentConfig {
  nodeId: string;
  labels: Readonly<Record<string, string>>;
  /** Sandbox records, sockets, tenant folders. */
  stateDir: string;
  /** Root of sysfs (tests point it at a fake tree). */
  sysfsRoot: string;
  /** Root of /dev (for /dev/kvm detection). */
  devRoot: string;
  /** PF (PCI address `0000:3b:00.0` or netdev name `ens1f0`) -> physnet. */
  physnets: Readonly<Record<string, string>>;
  dataplanes: readonly DataplaneConfig[];
  nats: Readonly<{ url: string; user?: string; pass?: string; token?: string; credsFile?: string }>;
  metrics: Readonly<{ host: string; port: number }>;
  heartbeatIntervalMs: number;
  qemu: Readonly<{
    binary?: string;
    machine: MachineType;
    /** Force an accelerator; default kvm when /dev/kvm is usable, else tcg. */
    accel?: 'kvm' | 'tcg';
    /** TCG translation cache (MiB), trims RSS under TCG. */
    tcgTbSizeMiB?: number;
    /** Largest a tenant's VM may grow by hotplug. */
    maxVcpus: number;
    maxMemoryMiB: number;
  }>;
  guest: Readonly<{ kernelPath?: string; initrdPath?: string; bootTimeoutMs: number; extraKernelArgs: string }>;
  isolation: Readonly<{
    /** First uid/gid handed to QEMU processes (one per sandbox). */
    uidBase: number;
    uidCount: number;
    /** cgroup v2 mount; the agent makes `<cgroupRoot>/<cgroupParent>/<sandbox>`. */
    cgroupRoot: string;
    cgroupParent: string;
    sandbox: boolean;
  }>;
  /** The guest's minimum RAM: a Node.js guest agent in an initramfs needs >= 384 MiB. */
  vmBaseMemoryMiB: number;
}

const KEYS: Record<string, readonly string[]> = {
  '': [
    'nodeId',
    'labels',
    'stateDir',
    'sysfsRoot',
    'devRoot',
    'physnets',
    'dataplanes',
    'nats',
    'metrics',
    'heartbeatIntervalMs',
    'qemu',
    'guest',
    'isolation',
    'vmBaseMemoryMiB',
  ],
  nats: ['url', 'user', 'pass', 'token', 'credsFile'],
  metrics: ['host', 'port'],
  qemu: ['binary', 'machine', 'accel', 'tcgTbSizeMiB', 'maxVcpus', 'maxMemoryMiB'],
  guest: ['kernelPath', 'initrdPath', 'bootTimeoutMs', 'extraKernelArgs'],
  isolation: ['uidBase', 'uidCount', 'cgroupRoot', 'cgroupParent', 'sandbox'],
  dataplane: ['kind', 'socketDir', 'probePath', 'numaNode'],
};

export const DEFAULTS = {
  stateDir: '/var/lib/edgenfv/node-agent',
  sysfsRoot: '/sys',
  devRoot: '/dev',
  natsUrl: 'nats://127.0.0.1:4222',
  metricsHost: '127.0.0.1',
  metricsPort: 9464,
  heartbeatIntervalMs: 5000,
  machine: 'q35' as MachineType,
  maxVcpus: 8,
  maxMemoryMiB: 8192,
  bootTimeoutMs: 120_000,
  uidBase: 420_000,
  uidCount: 1000,
  cgroupRoot: '/sys/fs/cgroup',
  cgroupParent: 'edgenfv',
  vmBaseMemoryMiB: 512,
};

/** Env vars read by loadConfig (they win over the file). */
export const ENV_VARS = {
  EDGENFV_NODE_ID: 'nodeId',
  EDGENFV_STATE_DIR: 'stateDir',
  EDGENFV_SYSFS_ROOT: 'sysfsRoot',
  EDGENFV_NATS_URL: 'nats.url',
  EDGENFV_NATS_USER: 'nats.user',
  EDGENFV_NATS_PASS: 'nats.pass',
  EDGENFV_NATS_TOKEN: 'nats.token',
  EDGENFV_NATS_CREDS: 'nats.credsFile',
  EDGENFV_METRICS_PORT: 'metrics.port',
  EDGENFV_GUEST_KERNEL: 'guest.kernelPath',
  EDGENFV_GUEST_INITRD: 'guest.initrdPath',
  EDGENFV_QEMU: 'qemu.binary',
} as const;

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function defaultNodeId(): string {
  const h = hostname().toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/^-+|-+$/g, '').slice(0, 63);
  return isDnsLabel(h) ? h : 'node';
}

/** Reads the file (JSON or YAML); the file is optional. Throws InvalidArgumentError listing every issue. */
export function loadConfig(env: NodeJS.ProcessEnv, file?: string): Readonly<NodeAgentConfig> {
  let raw: unknown = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new InvalidArgumentError([{ field: 'configFile', message: `cannot read ${file}: ${(err as Error).message}` }]);
    }
    try {
      raw = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
    } catch (err) {
      throw new InvalidArgumentError([{ field: 'configFile', message: `${file} is not valid JSON/YAML: ${(err as Error).message}` }]);
    }
    if (raw === null || raw === undefined) raw = {};
  }
  return parseConfig(raw, env);
}

function setPath(o: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split('.');
  let cur = o;
  for (const p of parts.slice(0, -1)) {
    if (!isObj(cur[p])) cur[p] = {};
    cur = cur[p] as Record<string, unknown>;
  }
  cur[parts[parts.length - 1]!] = value;
}

/** Validates an already-parsed object (plus env overrides). */
export function parseConfig(raw: unknown, env: NodeJS.ProcessEnv = {}): Readonly<NodeAgentConfig> {
  const issues: FieldIssue[] = [];
  if (!isObj(raw)) throw new InvalidArgumentError([{ field: '', message: 'config must be an object' }]);
  const src: Record<string, unknown> = structuredClone(raw);
  for (const [name, path] of Object.entries(ENV_VARS)) {
    const v = env[name];
    if (v === undefined || v === '') continue;
    setPath(src, path, path === 'metrics.port' ? (/^\d+$/.test(v) ? Number(v) : v) : v);
  }

  const closed = (o: unknown, field: string, keys: readonly string[]): Record<string, unknown> => {
    if (o === undefined) return {};
    if (!isObj(o)) {
      issues.push({ field, message: 'must be an object' });
      return {};
    }
    for (const k of Object.keys(o)) {
      if (!keys.includes(k)) issues.push({ field: field ? `${field}.${k}` : k, message: 'unknown key' });
    }
    return o;
  };
  const str = (o: Record<string, unknown>, k: string, field: string, def?: string): string | undefined => {
    const v = o[k];
    if (v === undefined) return def;
    if (typeof v !== 'string' || v === '') {
      issues.push({ field, message: 'must be a non-empty string' });
      return def;
    }
    return v;
  };
  const absPath = (o: Record<string, unknown>, k: string, field: string, def?: string): string | undefined => {
    const v = str(o, k, field, def);
    if (v !== undefined && !isAbsolute(v)) {
      issues.push({ field, message: `must be an absolute path (got ${JSON.stringify(v)})` });
    }
    return v;
  };
  const int = (o: Record<string, unknown>, k: string, field: string, def: number, min: number, max: number): number => {
    const v = o[k];
    if (v === undefined) return def;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      issues.push({ field, message: `must be an integer in ${min}..${max} (got ${JSON.stringify(v)})` });
      return def;
    }
    return v;
  };

  const top = closed(src, '', KEYS['']!);
  const nodeId = str(top, 'nodeId', 'nodeId', defaultNodeId())!;
  if (!isDnsLabel(nodeId)) issues.push({ field: 'nodeId', message: `must be a DNS label (got ${JSON.stringify(nodeId)})` });

  const labels: Record<string, string> = {};
  if (top.labels !== undefined) {
    if (!isObj(top.labels)) issues.push({ field: 'labels', message: 'must be an object of strings' });
    else
      for (const [k, v] of Object.entries(top.labels)) {
        if (typeof v !== 'string') issues.push({ field: `labels.${k}`, message: 'must be a string' });
        else if (!/^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/.test(k)) issues.push({ field: `labels.${k}`, message: 'bad label key' });
        else labels[k] = v;
      }
  }

  const stateDir = absPath(top, 'stateDir', 'stateDir', DEFAULTS.stateDir)!;
  const sysfsRoot = absPath(top, 'sysfsRoot', 'sysfsRoot', DEFAULTS.sysfsRoot)!;
  const devRoot = absPath(top, 'devRoot', 'devRoot', DEFAULTS.devRoot)!;

  const physnets: Record<string, string> = {};
  if (top.physnets !== undefined) {
    if (!isObj(top.physnets)) issues.push({ field: 'physnets', message: 'must map a PF (PCI address or netdev) to a physnet' });
    else
      for (const [pf, net] of Object.entries(top.physnets)) {
        const field = `physnets.${pf}`;
        if (typeof net !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(net)) {
          issues.push({ field, message: 'physnet must be a name like physnet1' });
          continue;
        }
        if (isPciAddress(pf)) physnets[parsePciAddress(pf)] = net;
        else if (/^[A-Za-z0-9_.-]{1,15}$/.test(pf)) physnets[pf] = net;
        else issues.push({ field, message: 'key must be a PCI address (0000:3b:00.0) or an interface name' });
      }
  }

  const dataplanes: DataplaneConfig[] = [];
  if (top.dataplanes !== undefined) {
    if (!Array.isArray(top.dataplanes)) issues.push({ field: 'dataplanes', message: 'must be a list' });
    else
      top.dataplanes.forEach((d, i) => {
        const f = `dataplanes[${i}]`;
        const o = closed(d, f, KEYS.dataplane!);
        const kind = o.kind;
        if (kind !== 'vpp' && kind !== 'ovs-dpdk' && kind !== 'testpmd') {
          issues.push({ field: `${f}.kind`, message: 'must be vpp, ovs-dpdk or testpmd' });
        }
        const socketDir = absPath(o, 'socketDir', `${f}.socketDir`);
        if (socketDir === undefined) issues.push({ field: `${f}.socketDir`, message: 'required' });
        const probePath = absPath(o, 'probePath', `${f}.probePath`);
        const dp: DataplaneConfig = { kind: kind as DataplaneKind, socketDir: socketDir ?? '' };
        if (probePath !== undefined) dp.probePath = probePath;
        if (o.numaNode !== undefined) dp.numaNode = int(o, 'numaNode', `${f}.numaNode`, 0, 0, 63);
        dataplanes.push(dp);
      });
  }

  const n = closed(top.nats, 'nats', KEYS.nats!);
  const url = str(n, 'url', 'nats.url', DEFAULTS.natsUrl)!;
  if (!/^(nats|tls|ws|wss):\/\/[^\s]+$/.test(url)) issues.push({ field: 'nats.url', message: `not a NATS url: ${JSON.stringify(url)}` });
  const nats: NodeAgentConfig['nats'] = { url };
  const user = str(n, 'user', 'nats.user');
  const pass = str(n, 'pass', 'nats.pass');
  const token = str(n, 'token', 'nats.token');
  const credsFile = absPath(n, 'credsFile', 'nats.credsFile');
  if (user !== undefined) Object.assign(nats, { user });
  if (pass !== undefined) Object.assign(nats, { pass });
  if (token !== undefined) Object.assign(nats, { token });
  if (credsFile !== undefined) Object.assign(nats, { credsFile });
  if ((user === undefined) !== (pass === undefined)) issues.push({ field: 'nats.pass', message: 'nats.user and nats.pass go together' });
  if (token !== undefined && user !== undefined) issues.push({ field: 'nats.token', message: 'use either a token or user/pass' });

  const m = closed(top.metrics, 'metrics', KEYS.metrics!);
  const metrics = { host: str(m, 'host', 'metrics.host', DEFAULTS.metricsHost)!, port: int(m, 'port', 'metrics.port', DEFAULTS.metricsPort, 0, 65535) };

  const heartbeatIntervalMs = int(top, 'heartbeatIntervalMs', 'heartbeatIntervalMs', DEFAULTS.heartbeatIntervalMs, 100, 600_000);

  const q = closed(top.qemu, 'qemu', KEYS.qemu!);
  const machine = q.machine ?? DEFAULTS.machine;
  if (machine !== 'q35' && machine !== 'microvm') issues.push({ field: 'qemu.machine', message: 'must be q35 or microvm' });
  const accel = q.accel;
  if (accel !== undefined && accel !== 'kvm' && accel !== 'tcg') issues.push({ field: 'qemu.accel', message: 'must be kvm or tcg' });
  const qemu: NodeAgentConfig['qemu'] = {
    machine: machine as MachineType,
    maxVcpus: int(q, 'maxVcpus', 'qemu.maxVcpus', DEFAULTS.maxVcpus, 1, 288),
    maxMemoryMiB: int(q, 'maxMemoryMiB', 'qemu.maxMemoryMiB', DEFAULTS.maxMemoryMiB, 128, 4 * 1024 * 1024),
  };
  const binary = absPath(q, 'binary', 'qemu.binary');
  if (binary !== undefined) Object.assign(qemu, { binary });
  if (accel === 'kvm' || accel === 'tcg') Object.assign(qemu, { accel });
  if (q.tcgTbSizeMiB !== undefined) Object.assign(qemu, { tcgTbSizeMiB: int(q, 'tcgTbSizeMiB', 'qemu.tcgTbSizeMiB', 32, 1, 4096) });

  const g = closed(top.guest, 'guest', KEYS.guest!);
  const guest: NodeAgentConfig['guest'] = {
    bootTimeoutMs: int(g, 'bootTimeoutMs', 'guest.bootTimeoutMs', DEFAULTS.bootTimeoutMs, 1000, 3_600_000),
    extraKernelArgs: typeof g.extraKernelArgs === 'string' ? g.extraKernelArgs : '',
  };
  if (g.extraKernelArgs !== undefined && typeof g.extraKernelArgs !== 'string') issues.push({ field: 'guest.extraKernelArgs', message: 'must be a string' });
  const kernelPath = absPath(g, 'kernelPath', 'guest.kernelPath');
  const initrdPath = absPath(g, 'initrdPath', 'guest.initrdPath');
  if (kernelPath !== undefined) Object.assign(guest, { kernelPath });
  if (initrdPath !== undefined) Object.assign(guest, { initrdPath });
  if ((kernelPath === undefined) !== (initrdPath === undefined)) {
    issues.push({ field: 'guest.initrdPath', message: 'guest.kernelPath and guest.initrdPath go together' });
  }

  const iso = closed(top.isolation, 'isolation', KEYS.isolation!);
  const sandboxFlag = iso.sandbox ?? true;
  if (typeof sandboxFlag !== 'boolean') issues.push({ field: 'isolation.sandbox', message: 'must be a boolean' });
  const isolation: NodeAgentConfig['isolation'] = {
    uidBase: int(iso, 'uidBase', 'isolation.uidBase', DEFAULTS.uidBase, 1000, 2 ** 31 - 2),
    uidCount: int(iso, 'uidCount', 'isolation.uidCount', DEFAULTS.uidCount, 1, 1_000_000),
    cgroupRoot: absPath(iso, 'cgroupRoot', 'isolation.cgroupRoot', DEFAULTS.cgroupRoot)!,
    cgroupParent: str(iso, 'cgroupParent', 'isolation.cgroupParent', DEFAULTS.cgroupParent)!,
    sandbox: sandboxFlag === true,
  };
  if (!/^[A-Za-z0-9_.-]+$/.test(isolation.cgroupParent)) issues.push({ field: 'isolation.cgroupParent', message: 'must be one folder name' });

  if (qemu.tcgTbSizeMiB !== undefined && qemu.maxVcpus > 1) {
    issues.push({ field: 'qemu.tcgTbSizeMiB', message: 'incompatible with vCPU hotplug (qemu.maxVcpus > 1): QEMU aborts when a vCPU is added to a running TCG guest' });
  }
  const vmBaseMemoryMiB = int(top, 'vmBaseMemoryMiB', 'vmBaseMemoryMiB', DEFAULTS.vmBaseMemoryMiB, 64, 65536);
  if (vmBaseMemoryMiB > qemu.maxMemoryMiB) issues.push({ field: 'vmBaseMemoryMiB', message: 'must not exceed qemu.maxMemoryMiB' });

  if (issues.length > 0) throw new InvalidArgumentError(issues);
  const cfg: NodeAgentConfig = {
    nodeId,
    labels: Object.freeze(labels),
    stateDir,
    sysfsRoot,
    devRoot,
    physnets: Object.freeze(physnets),
    dataplanes: Object.freeze(dataplanes.map((d) => Object.freeze(d))),
    nats: Object.freeze(nats),
    metrics: Object.freeze(metrics),
    heartbeatIntervalMs,
    qemu: Object.freeze(qemu),
    guest: Object.freeze(guest),
    isolation: Object.freeze(isolation),
    vmBaseMemoryMiB,
  };
  return Object.freeze(cfg);
}
