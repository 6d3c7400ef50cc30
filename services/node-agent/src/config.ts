/**
 * Node agent configuration: parsed once at start from a file (JSON or YAML) and the environment,
 * closed schema (unknown keys rejected), every issue collected and reported together, then frozen.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { isAbsolute } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { InvalidArgumentError, isDnsLabel, isPciAddress, parsePciAddress, type FieldIssue } from '@edgenfv/contracts';
import type { DataplaneKind, NetworkConfig } from '@edgenfv/contracts';
import { parseNetworks } from '@edgenfv/netplugins';

export type MachineType = 'q35' | 'microvm';

export interface DataplaneConfig {
  kind: DataplaneKind;
  /** Folder where the data plane's vhost-user sockets live (ovs-dpdk: default `<stateDir>/vhost-user`). */
  socketDir: string;
  /** A file whose presence proves the data plane runs (VPP cli.sock); default: socketDir itself. Not for ovs-dpdk. */
  probePath?: string;
  numaNode?: number;
  /** kind ovs-dpdk: the switch the node agent runs itself (always set for that kind). */
  ovs?: OvsSwitchConfig;
}

/** An uplink of one network's bridge: a host NIC, or a veth whose other end lives in a namespace (a stand-in provider network). */
export type UplinkConfig = { kind: 'nic'; nic: string } | { kind: 'veth'; netns: string; peerName: string };

/** The node agent's OVS-DPDK (`dataplanes: [{kind: ovs-dpdk, ovs: {...}}]`); docs/node-agent.md. */
export interface OvsSwitchConfig {
  /** DPDK memory on the switch's NUMA node (`dpdk-socket-mem`); the node reserves these 2 MiB hugepages. */
  socketMemMiB: number;
  /** The switch's main lcore (`dpdk-lcore-mask`); default: the first CPU of its NUMA node. */
  lcoreCpu?: number;
  /** PMD (poll-mode) threads' CPUs (`pmd-cpu-mask`); default: the last CPU of its NUMA node. */
  pmdCpus?: readonly number[];
  /** Longest a PMD thread sleeps when it finds no packets (`pmd-maxsleep`): spares CPU on an idle switch. */
  pmdMaxSleepUs: number;
  /** Run the switch in this network namespace (created if missing, removed when the agent stops). */
  netns?: string;
  /** More EAL arguments (`dpdk-extra`), after `--no-pci`. */
  ealArgs: readonly string[];
  /** Network name -> its uplink (the network must have `dataplane: ovs-dpdk`). */
  uplinks: Readonly<Record<string, UplinkConfig>>;
  /** The DPDK build of ovs-vswitchd. */
  vswitchdBinary: string;
  /** How long one start may take before it counts as failed. */
  startTimeoutMs: number;
}

export const OVS_VSWITCHD_DPDK = '/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk';

/** An OCI distribution registry the node pulls VNF images from (docs/node-agent.md, "Images"). */
export interface RegistryConfig {
  /** `host[:port]` exactly as in image refs. */
  host: string;
  /** Plain HTTP (only for hosts listed here with plainHttp: true); default HTTPS. */
  plainHttp: boolean;
  /** Credentials for basic auth or the bearer-token service the registry names. */
  username?: string;
  password?: string;
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
  /** The deployment's networks (the appliance passes its list): which ask for the DPDK switch, their VLANs. */
  networks: readonly NetworkConfig[];
  nats: Readonly<{ url: string; user?: string; pass?: string; token?: string; credsFile?: string; inboxPrefix?: string }>;
  metrics: Readonly<{ host: string; port: number }>;
  heartbeatIntervalMs: number;
  /**
   * A node that cannot reach NATS for longer than `graceMs` (default: the scheduler's grace, told at register) fences
   * itself: it acts on no allocation change until it is back and registered again. `stopAfterMs` after its last
   * contact it removes the replicas of VNFs with `onPartition: stop` (the default; `keep` ones stay).
   */
  fencing: Readonly<{ graceMs?: number; stopAfterMs: number }>;
  qemu: Readonly<{
    binary?: string;
    machine: MachineType;
    /** Force an accelerator; default kvm when /dev/kvm is usable, else tcg. */
    accel?: 'kvm' | 'tcg';
    /** TCG translation cache (MiB), trims RSS under TCG. */
    tcgTbSizeMiB?: number;
    /** QEMU's own memory per VM beyond guest RAM, booked with each tenant VM; default by accelerator (see vmOverhead). */
    overheadMiB?: number;
    /** Largest a tenant's VM may grow by hotplug. */
    maxVcpus: number;
    maxMemoryMiB: number;
  }>;
  /** systemDiskPath: the image's read-only system disk (`system.erofs` beside the initrd of a built image). */
  guest: Readonly<{
    kernelPath?: string;
    initrdPath?: string;
    systemDiskPath?: string;
    bootTimeoutMs: number;
    extraKernelArgs: string;
    /** Guest liveness (sandbox/guest-liveness.ts): each running VM's guest agent asked this often; 0: never. */
    livenessIntervalMs: number;
    /** A guest agent that has not answered for this long has lost its VM's replicas. */
    livenessFailAfterMs: number;
    /**
     * gRPC keepalive to the guest agent: a ping unanswered this long drops the connection. The default suits a KVM
     * or one-level TCG guest; a guest nested in an emulated node (TCG inside TCG) answers in tens of seconds.
     */
    keepaliveTimeoutMs: number;
    /** Every guest agent call's deadline is multiplied by this (1: as built; a nested TCG node needs 10-20). */
    rpcTimeoutScale: number;
    /**
     * Snapshot boot (sandbox/snapshot-boot.ts, docs/node-agent.md): warm pool VMs are restored from a template snapshot
     * of a booted tenant-less VM (one per image and VM shape, made at the first refill) instead of booting. Default true.
     */
    snapshotBoot: boolean;
    /**
     * Operator-only debugging (docs/security.md): every VM gets a root shell on a virtio-serial port whose host side
     * is `<run folder>/debug.sock` (root only). Off by default; nothing a tenant sends reaches it.
     */
    debugConsole: boolean;
    /**
     * The operator lets a guest run vfio-pci in vfio's no-IOMMU mode (no DMA isolation inside the VM; the host's
     * IOMMU still confines the VM) instead of giving a VM with a vfio-pci data plane a virtual IOMMU
     * (docs/sriov.md); default false. Never the tenant's choice.
     */
    vfioNoIommu: boolean;
    /**
     * When a tenant VM gets a virtual IOMMU (q35 only; docs/sriov.md): `on-demand` (default) when the replica that
     * boots it has a vfio-pci data plane in the guest; `always` for every VM, so that a later replica with one can
     * join it (a vIOMMU cannot be added to a running VM) and warm pool VMs can serve it (Kata's `enable_iommu`).
     */
    viommu: 'on-demand' | 'always';
  }>;
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
  registries: readonly Readonly<RegistryConfig>[];
  images: Readonly<{
    /** Blobs by digest (shared by every tenant), image layouts and packed image disks. Default `<stateDir>/images`. */
    cacheDir: string;
    /** Largest image (config + layers, compressed) a pull may fetch. */
    maxImageBytes: number;
    /**
     * What the pulled images' cache may hold (blobs and packed disks); past it, images no replica on the node uses
     * are removed, least recently used first. Default 10 GiB.
     */
    cacheMaxBytes: number;
    /** Folders whose OCI layouts `oci:` refs may name (none by default: `oci:` refs are refused). */
    ociLayoutRoots: readonly string[];
  }>;
  /** Warm pools: idle tenant-less VMs kept booted per flavour (docs/node-agent.md "Warm pools"); [] = none. */
  warmPool: readonly Readonly<WarmPoolFlavour>[];
  /** Refills boot only while the host's CPU use is below this percentage (100: always); pool VMs run niced. */
  warmPoolCpuBudgetPercent: number;
  /**
   * Shared vCPUs per unpinned host CPU (Nova's cpu_allocation_ratio; may be fractional, e.g. 1.5): reported as
   * `inventory.cpuAllocationRatio`, so the scheduler books up to (cpuCount - pinned) x this many shared vCPUs here,
   * and the warm pool's refill counts its room the same way. Pinned (dedicated) CPUs never overcommit. Default 1.
   */
  cpuAllocationRatio: number;
}

export interface WarmPoolFlavour {
  vcpus: number;
  memoryMiB: number;
  numaNode?: number;
  count: number;
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
    'networks',
    'nats',
    'metrics',
    'heartbeatIntervalMs',
    'fencing',
    'qemu',
    'guest',
    'isolation',
    'vmBaseMemoryMiB',
    'registries',
    'images',
    'warmPool',
    'warmPoolCpuBudgetPercent',
    'cpuAllocationRatio',
  ],
  warmPool: ['vcpus', 'memoryMiB', 'numaNode', 'count'],
  nats: ['url', 'user', 'pass', 'token', 'credsFile', 'inboxPrefix'],
  fencing: ['graceMs', 'stopAfterMs'],
  registry: ['host', 'plainHttp', 'username', 'password', 'passwordFile'],
  images: ['cacheDir', 'maxImageBytes', 'cacheMaxBytes', 'ociLayoutRoots'],
  metrics: ['host', 'port'],
  qemu: ['binary', 'machine', 'accel', 'tcgTbSizeMiB', 'overheadMiB', 'maxVcpus', 'maxMemoryMiB'],
  guest: ['kernelPath', 'initrdPath', 'systemDiskPath', 'bootTimeoutMs', 'extraKernelArgs', 'livenessIntervalMs', 'livenessFailAfterMs', 'keepaliveTimeoutMs', 'rpcTimeoutScale', 'snapshotBoot', 'debugConsole', 'vfioNoIommu', 'viommu'],
  isolation: ['uidBase', 'uidCount', 'cgroupRoot', 'cgroupParent', 'sandbox'],
  dataplane: ['kind', 'socketDir', 'probePath', 'numaNode', 'ovs'],
  ovs: ['socketMemMiB', 'lcoreCpu', 'pmdCpus', 'pmdMaxSleepUs', 'netns', 'ealArgs', 'uplinks', 'vswitchdBinary', 'startTimeoutMs'],
};

export const DEFAULTS = {
  stateDir: '/var/lib/edgenfv/node-agent',
  sysfsRoot: '/sys',
  devRoot: '/dev',
  natsUrl: 'nats://127.0.0.1:4222',
  metricsHost: '127.0.0.1',
  metricsPort: 9464,
  heartbeatIntervalMs: 5000,
  fenceStopAfterMs: 60_000,
  machine: 'q35' as MachineType,
  maxVcpus: 8,
  maxMemoryMiB: 8192,
  bootTimeoutMs: 120_000,
  guestLivenessIntervalMs: 10_000,
  // generous: a guest agent in an emulated (TCG) VM on a loaded host can be slow to answer for a while
  guestLivenessFailAfterMs: 120_000,
  guestKeepaliveTimeoutMs: 10_000,
  uidBase: 420_000,
  uidCount: 1000,
  cgroupRoot: '/sys/fs/cgroup',
  cgroupParent: 'edgenfv',
  vmBaseMemoryMiB: 512,
  ovsSocketMemMiB: 512,
  ovsPmdMaxSleepUs: 1000,
  ovsStartTimeoutMs: 60_000,
  maxImageBytes: 2 * 1024 ** 3,
  imageCacheMaxBytes: 10 * 1024 ** 3,
  warmPoolCpuBudgetPercent: 50,
  cpuAllocationRatio: 1,
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
  EDGENFV_NATS_INBOX_PREFIX: 'nats.inboxPrefix',
  EDGENFV_METRICS_PORT: 'metrics.port',
  EDGENFV_GUEST_KERNEL: 'guest.kernelPath',
  EDGENFV_GUEST_INITRD: 'guest.initrdPath',
  EDGENFV_GUEST_SYSTEM_DISK: 'guest.systemDiskPath',
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
  /** A number in min..max (an integer unless `fractional`); a bad value is an issue naming the field. */
  const num = (o: Record<string, unknown>, k: string, field: string, def: number, min: number, max: number, fractional = true): number => {
    const v = o[k];
    if (v === undefined) return def;
    if (typeof v !== 'number' || !(fractional ? Number.isFinite(v) : Number.isInteger(v)) || v < min || v > max) {
      issues.push({ field, message: `must be ${fractional ? 'a number' : 'an integer'} in ${min}..${max} (got ${JSON.stringify(v)})` });
      return def;
    }
    return v;
  };
  const int = (o: Record<string, unknown>, k: string, field: string, def: number, min: number, max: number): number => num(o, k, field, def, min, max, false);

  const ifName = (v: unknown, field: string): string | undefined => {
    if (typeof v !== 'string' || !/^[A-Za-z0-9_.-]{1,15}$/.test(v)) {
      issues.push({ field, message: 'must be an interface name (1-15 letters, digits, "_", "." or "-")' });
      return undefined;
    }
    return v;
  };
  const netnsName = (v: unknown, field: string): string | undefined => {
    if (typeof v !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(v)) {
      issues.push({ field, message: 'must be a network namespace name (letters, digits, "_", "." or "-")' });
      return undefined;
    }
    return v;
  };
  const parseOvs = (raw: unknown, f: string): OvsSwitchConfig => {
    const o = closed(raw, f, KEYS.ovs!);
    const ovs: OvsSwitchConfig = {
      socketMemMiB: int(o, 'socketMemMiB', `${f}.socketMemMiB`, DEFAULTS.ovsSocketMemMiB, 64, 1024 * 1024),
      pmdMaxSleepUs: int(o, 'pmdMaxSleepUs', `${f}.pmdMaxSleepUs`, DEFAULTS.ovsPmdMaxSleepUs, 0, 10_000),
      ealArgs: [],
      uplinks: {},
      vswitchdBinary: absPath(o, 'vswitchdBinary', `${f}.vswitchdBinary`, OVS_VSWITCHD_DPDK)!,
      startTimeoutMs: int(o, 'startTimeoutMs', `${f}.startTimeoutMs`, DEFAULTS.ovsStartTimeoutMs, 1000, 3_600_000),
    };
    if (o.lcoreCpu !== undefined) ovs.lcoreCpu = int(o, 'lcoreCpu', `${f}.lcoreCpu`, 0, 0, 4095);
    if (o.pmdCpus !== undefined) {
      const cpus = o.pmdCpus;
      if (!Array.isArray(cpus) || cpus.length === 0 || !cpus.every((c) => Number.isInteger(c) && c >= 0 && c <= 4095)) {
        issues.push({ field: `${f}.pmdCpus`, message: 'must be a non-empty list of CPU ids' });
      } else {
        ovs.pmdCpus = [...new Set(cpus as number[])];
        if (ovs.lcoreCpu !== undefined && ovs.pmdCpus.includes(ovs.lcoreCpu)) {
          issues.push({ field: `${f}.pmdCpus`, message: `CPU ${ovs.lcoreCpu} is the lcoreCpu; a PMD thread needs a CPU of its own` });
        }
      }
    }
    if (o.netns !== undefined) {
      const ns = netnsName(o.netns, `${f}.netns`);
      if (ns) ovs.netns = ns;
    }
    if (o.ealArgs !== undefined) {
      if (!Array.isArray(o.ealArgs) || !o.ealArgs.every((a) => typeof a === 'string' && /^[^\s"]+$/.test(a))) {
        issues.push({ field: `${f}.ealArgs`, message: 'must be a list of EAL arguments without spaces or quotes' });
      } else ovs.ealArgs = [...(o.ealArgs as string[])];
    }
    const uplinks: Record<string, UplinkConfig> = {};
    if (o.uplinks !== undefined) {
      if (!isObj(o.uplinks)) issues.push({ field: `${f}.uplinks`, message: 'must map a network name to {nic} or {veth: {netns, name}}' });
      else
        for (const [net, u] of Object.entries(o.uplinks)) {
          const uf = `${f}.uplinks.${net}`;
          const uo = closed(u, uf, ['nic', 'veth']);
          if ((uo.nic === undefined) === (uo.veth === undefined)) {
            issues.push({ field: uf, message: 'must be exactly one of {nic: <interface>} or {veth: {netns, name}}' });
          } else if (uo.nic !== undefined) {
            const nic = ifName(uo.nic, `${uf}.nic`);
            if (nic) uplinks[net] = { kind: 'nic', nic };
          } else {
            const v = closed(uo.veth, `${uf}.veth`, ['netns', 'name']);
            const ns = netnsName(v.netns, `${uf}.veth.netns`);
            const peer = ifName(v.name, `${uf}.veth.name`);
            if (ns && peer) uplinks[net] = { kind: 'veth', netns: ns, peerName: peer };
          }
        }
    }
    ovs.uplinks = Object.freeze(uplinks);
    return ovs;
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

  let networks: NetworkConfig[] = [];
  if (top.networks !== undefined) {
    try {
      networks = parseNetworks(top.networks, 'networks').map((n) => ({ ...n.config }));
    } catch (err) {
      const list = (err as { issues?: FieldIssue[] }).issues;
      if (list) issues.push(...list);
      else issues.push({ field: 'networks', message: (err as Error).message });
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
        const stateDirNow = typeof top.stateDir === 'string' ? top.stateDir : DEFAULTS.stateDir;
        const socketDir = absPath(o, 'socketDir', `${f}.socketDir`, kind === 'ovs-dpdk' ? `${stateDirNow}/vhost-user` : undefined);
        if (socketDir === undefined) issues.push({ field: `${f}.socketDir`, message: 'required' });
        const probePath = absPath(o, 'probePath', `${f}.probePath`);
        const dp: DataplaneConfig = { kind: kind as DataplaneKind, socketDir: socketDir ?? '' };
        if (probePath !== undefined) dp.probePath = probePath;
        if (o.numaNode !== undefined) dp.numaNode = int(o, 'numaNode', `${f}.numaNode`, 0, 0, 63);
        if (kind === 'ovs-dpdk') {
          if (probePath !== undefined) issues.push({ field: `${f}.probePath`, message: 'not for ovs-dpdk: the node agent runs that switch and knows its state' });
          if (dataplanes.some((x) => x.kind === 'ovs-dpdk')) issues.push({ field: `${f}.kind`, message: 'only one ovs-dpdk data plane per node' });
          dp.ovs = parseOvs(o.ovs, `${f}.ovs`);
        } else if (o.ovs !== undefined) {
          issues.push({ field: `${f}.ovs`, message: 'only for kind ovs-dpdk' });
        }
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
  const inboxPrefix = str(n, 'inboxPrefix', 'nats.inboxPrefix');
  if (inboxPrefix !== undefined) {
    if (!/^_INBOX[A-Za-z0-9_-]*$/.test(inboxPrefix)) issues.push({ field: 'nats.inboxPrefix', message: 'must be _INBOX followed by letters, digits, _ or -' });
    else Object.assign(nats, { inboxPrefix });
  }
  if ((user === undefined) !== (pass === undefined)) issues.push({ field: 'nats.pass', message: 'nats.user and nats.pass go together' });
  if (token !== undefined && user !== undefined) issues.push({ field: 'nats.token', message: 'use either a token or user/pass' });

  const m = closed(top.metrics, 'metrics', KEYS.metrics!);
  const metrics = { host: str(m, 'host', 'metrics.host', DEFAULTS.metricsHost)!, port: int(m, 'port', 'metrics.port', DEFAULTS.metricsPort, 0, 65535) };

  const heartbeatIntervalMs = int(top, 'heartbeatIntervalMs', 'heartbeatIntervalMs', DEFAULTS.heartbeatIntervalMs, 100, 600_000);
  const fc = closed(top.fencing, 'fencing', KEYS.fencing!);
  const fencing: NodeAgentConfig['fencing'] = { stopAfterMs: int(fc, 'stopAfterMs', 'fencing.stopAfterMs', DEFAULTS.fenceStopAfterMs, 100, 86_400_000) };
  if (fc.graceMs !== undefined) Object.assign(fencing, { graceMs: int(fc, 'graceMs', 'fencing.graceMs', 0, 100, 3_600_000) });

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
  if (q.overheadMiB !== undefined) Object.assign(qemu, { overheadMiB: int(q, 'overheadMiB', 'qemu.overheadMiB', 0, 0, 65536) });

  const g = closed(top.guest, 'guest', KEYS.guest!);
  const guest: NodeAgentConfig['guest'] = {
    bootTimeoutMs: int(g, 'bootTimeoutMs', 'guest.bootTimeoutMs', DEFAULTS.bootTimeoutMs, 1000, 21_600_000),
    extraKernelArgs: typeof g.extraKernelArgs === 'string' ? g.extraKernelArgs : '',
    livenessIntervalMs: int(g, 'livenessIntervalMs', 'guest.livenessIntervalMs', DEFAULTS.guestLivenessIntervalMs, 0, 3_600_000),
    livenessFailAfterMs: int(g, 'livenessFailAfterMs', 'guest.livenessFailAfterMs', DEFAULTS.guestLivenessFailAfterMs, 1000, 3_600_000),
    keepaliveTimeoutMs: int(g, 'keepaliveTimeoutMs', 'guest.keepaliveTimeoutMs', DEFAULTS.guestKeepaliveTimeoutMs, 1000, 3_600_000),
    rpcTimeoutScale: int(g, 'rpcTimeoutScale', 'guest.rpcTimeoutScale', 1, 1, 100),
    snapshotBoot: g.snapshotBoot !== false,
    debugConsole: g.debugConsole === true,
    vfioNoIommu: g.vfioNoIommu === true,
    viommu: g.viommu === 'always' ? 'always' : 'on-demand',
  };
  if (g.viommu !== undefined && g.viommu !== 'always' && g.viommu !== 'on-demand') issues.push({ field: 'guest.viommu', message: 'must be "on-demand" or "always"' });
  else if (g.viommu === 'always' && qemu.machine !== 'q35') issues.push({ field: 'guest.viommu', message: '"always" needs qemu.machine q35 (a virtual IOMMU is a q35 device)' });
  if (g.snapshotBoot !== undefined && typeof g.snapshotBoot !== 'boolean') issues.push({ field: 'guest.snapshotBoot', message: 'must be true or false' });
  if (g.debugConsole !== undefined && typeof g.debugConsole !== 'boolean') issues.push({ field: 'guest.debugConsole', message: 'must be a boolean' });
  if (g.extraKernelArgs !== undefined && typeof g.extraKernelArgs !== 'string') issues.push({ field: 'guest.extraKernelArgs', message: 'must be a string' });
  if (g.vfioNoIommu !== undefined && typeof g.vfioNoIommu !== 'boolean') issues.push({ field: 'guest.vfioNoIommu', message: 'must be true or false' });
  const kernelPath = absPath(g, 'kernelPath', 'guest.kernelPath');
  const initrdPath = absPath(g, 'initrdPath', 'guest.initrdPath');
  if (kernelPath !== undefined) Object.assign(guest, { kernelPath });
  if (initrdPath !== undefined) Object.assign(guest, { initrdPath });
  const systemDiskPath = absPath(g, 'systemDiskPath', 'guest.systemDiskPath');
  if (systemDiskPath !== undefined) Object.assign(guest, { systemDiskPath });
  if (systemDiskPath !== undefined && initrdPath === undefined) issues.push({ field: 'guest.systemDiskPath', message: 'goes with guest.kernelPath and guest.initrdPath' });
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

  dataplanes.forEach((d, i) => {
    for (const net of Object.keys(d.ovs?.uplinks ?? {})) {
      const n = networks.find((x) => x.name === net);
      if (!n) issues.push({ field: `dataplanes[${i}].ovs.uplinks.${net}`, message: `no network ${JSON.stringify(net)} in networks` });
      else if (n.dataplane !== 'ovs-dpdk') issues.push({ field: `dataplanes[${i}].ovs.uplinks.${net}`, message: `network ${net} does not ask for the switch (dataplane: ovs-dpdk)` });
    }
  });

  const registries: RegistryConfig[] = [];
  if (top.registries !== undefined) {
    if (!Array.isArray(top.registries)) issues.push({ field: 'registries', message: 'must be a list' });
    else
      top.registries.forEach((r, i) => {
        const f = `registries[${i}]`;
        const o = closed(r, f, KEYS.registry!);
        const host = str(o, 'host', `${f}.host`);
        if (host === undefined) issues.push({ field: `${f}.host`, message: 'required' });
        else if (!/^[A-Za-z0-9.-]+(:\d{1,5})?$/.test(host)) issues.push({ field: `${f}.host`, message: `must be host[:port] (got ${JSON.stringify(host)})` });
        else if (registries.some((x) => x.host === host)) issues.push({ field: `${f}.host`, message: `${host} is listed twice` });
        if (o.plainHttp !== undefined && typeof o.plainHttp !== 'boolean') issues.push({ field: `${f}.plainHttp`, message: 'must be a boolean' });
        const reg: RegistryConfig = { host: host ?? '', plainHttp: o.plainHttp === true };
        const username = str(o, 'username', `${f}.username`);
        let password = str(o, 'password', `${f}.password`);
        const passwordFile = absPath(o, 'passwordFile', `${f}.passwordFile`);
        if (passwordFile !== undefined) {
          if (password !== undefined) issues.push({ field: `${f}.passwordFile`, message: 'use either password or passwordFile' });
          try {
            password = readFileSync(passwordFile, 'utf8').trim();
          } catch (err) {
            issues.push({ field: `${f}.passwordFile`, message: `cannot read: ${(err as Error).message}` });
          }
        }
        if ((username === undefined) !== (password === undefined)) issues.push({ field: `${f}.password`, message: 'username and password go together' });
        if (username !== undefined && password !== undefined) Object.assign(reg, { username, password });
        registries.push(Object.freeze(reg));
      });
  }
  const im = closed(top.images, 'images', KEYS.images!);
  const ociLayoutRoots: string[] = [];
  if (im.ociLayoutRoots !== undefined) {
    if (!Array.isArray(im.ociLayoutRoots)) issues.push({ field: 'images.ociLayoutRoots', message: 'must be a list of absolute paths' });
    else
      im.ociLayoutRoots.forEach((p, i) => {
        if (typeof p !== 'string' || !isAbsolute(p)) issues.push({ field: `images.ociLayoutRoots[${i}]`, message: 'must be an absolute path' });
        else ociLayoutRoots.push(p);
      });
  }
  const images: NodeAgentConfig['images'] = Object.freeze({
    cacheDir: absPath(im, 'cacheDir', 'images.cacheDir', `${stateDir}/images`)!,
    maxImageBytes: int(im, 'maxImageBytes', 'images.maxImageBytes', DEFAULTS.maxImageBytes, 1024, Number.MAX_SAFE_INTEGER),
    cacheMaxBytes: int(im, 'cacheMaxBytes', 'images.cacheMaxBytes', DEFAULTS.imageCacheMaxBytes, 0, Number.MAX_SAFE_INTEGER),
    ociLayoutRoots: Object.freeze(ociLayoutRoots),
  });

  const warmPool: WarmPoolFlavour[] = [];
  if (top.warmPool !== undefined) {
    if (!Array.isArray(top.warmPool)) issues.push({ field: 'warmPool', message: 'must be a list of {vcpus, memoryMiB, numaNode?, count}' });
    else
      top.warmPool.forEach((w, i) => {
        const f = `warmPool[${i}]`;
        const o = closed(w, f, KEYS.warmPool!);
        const fl: WarmPoolFlavour = {
          vcpus: int(o, 'vcpus', `${f}.vcpus`, 1, 1, qemu.maxVcpus),
          memoryMiB: int(o, 'memoryMiB', `${f}.memoryMiB`, 0, 16, Math.max(16, qemu.maxMemoryMiB - vmBaseMemoryMiB)),
          count: int(o, 'count', `${f}.count`, 1, 0, 64),
        };
        if (o.memoryMiB === undefined) issues.push({ field: `${f}.memoryMiB`, message: 'required' });
        if (o.numaNode !== undefined) fl.numaNode = int(o, 'numaNode', `${f}.numaNode`, 0, 0, 1023);
        if (warmPool.some((x) => x.vcpus === fl.vcpus && x.memoryMiB === fl.memoryMiB && x.numaNode === fl.numaNode)) {
          issues.push({ field: f, message: 'the same flavour (vcpus, memoryMiB, numaNode) is listed twice' });
        }
        warmPool.push(Object.freeze(fl));
      });
  }
  const warmPoolCpuBudgetPercent = int(top, 'warmPoolCpuBudgetPercent', 'warmPoolCpuBudgetPercent', DEFAULTS.warmPoolCpuBudgetPercent, 1, 100);
  const cpuAllocationRatio = num(top, 'cpuAllocationRatio', 'cpuAllocationRatio', DEFAULTS.cpuAllocationRatio, 1, 16);

  if (issues.length > 0) throw new InvalidArgumentError(issues);
  const cfg: NodeAgentConfig = {
    nodeId,
    labels: Object.freeze(labels),
    stateDir,
    sysfsRoot,
    devRoot,
    physnets: Object.freeze(physnets),
    dataplanes: Object.freeze(dataplanes.map((d) => Object.freeze(d))),
    networks: Object.freeze(networks.map((n) => Object.freeze(n))),
    nats: Object.freeze(nats),
    metrics: Object.freeze(metrics),
    heartbeatIntervalMs,
    fencing: Object.freeze(fencing),
    qemu: Object.freeze(qemu),
    guest: Object.freeze(guest),
    isolation: Object.freeze(isolation),
    vmBaseMemoryMiB,
    registries: Object.freeze(registries),
    images,
    warmPool: Object.freeze(warmPool),
    warmPoolCpuBudgetPercent,
    cpuAllocationRatio,
  };
  return Object.freeze(cfg);
}
