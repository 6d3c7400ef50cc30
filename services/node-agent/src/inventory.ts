/**
 * Node inventory from systeminformation and sysfs. Every sysfs read goes through `sysfsRoot`, so a test
 * points it at a fake tree in a temporary folder (same code as on a real node).
 */
import { accessSync, constants, existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { hostname } from 'node:os';
import { basename, delimiter, join } from 'node:path';
import si from 'systeminformation';
import type {
  DataplaneInfo,
  HugepagePool,
  HypervisorInfo,
  HypervisorKind,
  NodeInventory,
  NumaNodeInfo,
  SriovPfInfo,
  SriovVfInfo,
} from '@edgenfv/contracts';
import { parsePciAddress } from '@edgenfv/contracts';
import type { NodeAgentConfig } from './config.js';

export const AGENT_VERSION = '0.1.0';

/** Parses a kernel cpulist (`0-3,8,10-11`) into sorted CPU ids. Empty string -> []. */
export function parseCpuList(s: string): number[] {
  const out = new Set<number>();
  const t = s.trim();
  if (t === '') return [];
  for (const part of t.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new TypeError(`bad cpulist element ${JSON.stringify(part)} in ${JSON.stringify(s)}`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new TypeError(`bad cpulist range ${JSON.stringify(part)}`);
    for (let i = a; i <= b; i++) out.add(i);
  }
  return [...out].sort((x, y) => x - y);
}

/** Formats CPU ids as a kernel cpulist (`0-3,8`). */
export function formatCpuList(cpus: readonly number[]): string {
  const s = [...new Set(cpus)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < s.length; ) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j]! + 1) j++;
    parts.push(i === j ? `${s[i]}` : `${s[i]}-${s[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

function readText(p: string): string | undefined {
  try {
    return readFileSync(p, 'utf8').trim();
  } catch {
    return undefined;
  }
}
function readInt(p: string): number | undefined {
  const t = readText(p);
  if (t === undefined || !/^-?\d+$/.test(t)) return undefined;
  return Number(t);
}
function linkBase(p: string): string | undefined {
  try {
    return basename(readlinkSync(p));
  } catch {
    return undefined;
  }
}
function listDir(p: string): string[] {
  try {
    return readdirSync(p);
  } catch {
    return [];
  }
}

function hugepagePools(dir: string): HugepagePool[] {
  const pools: HugepagePool[] = [];
  for (const name of listDir(dir)) {
    const m = /^hugepages-(\d+)kB$/.exec(name);
    if (!m) continue;
    const total = readInt(join(dir, name, 'nr_hugepages')) ?? 0;
    const free = readInt(join(dir, name, 'free_hugepages')) ?? 0;
    pools.push({ sizeKiB: Number(m[1]), total, free });
  }
  return pools.sort((a, b) => a.sizeKiB - b.sizeKiB);
}

/** NUMA nodes from `<sysfs>/devices/system/node/node<N>`; null when the kernel exposes none. */
export function readNumaNodes(sysfsRoot: string): NumaNodeInfo[] | null {
  const base = join(sysfsRoot, 'devices/system/node');
  const ids = listDir(base)
    .map((n) => /^node(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  if (ids.length === 0) return null;
  return ids.map((id) => {
    const dir = join(base, `node${id}`);
    const cpus = parseCpuList(readText(join(dir, 'cpulist')) ?? '');
    const meminfo = readText(join(dir, 'meminfo')) ?? '';
    const mt = /MemTotal:\s+(\d+)\s*kB/.exec(meminfo);
    return { id, cpus, memoryMiB: mt ? Math.floor(Number(mt[1]) / 1024) : 0, hugepages: hugepagePools(join(dir, 'hugepages')) };
  });
}

/** SR-IOV PFs: every PCI function with `sriov_totalvfs` > 0. */
export function readSriovPfs(sysfsRoot: string, physnets: Readonly<Record<string, string>>): SriovPfInfo[] {
  const base = join(sysfsRoot, 'bus/pci/devices');
  const pfs: SriovPfInfo[] = [];
  for (const addr of listDir(base).sort()) {
    const dir = join(base, addr);
    const totalVfs = readInt(join(dir, 'sriov_totalvfs'));
    if (totalVfs === undefined || totalVfs <= 0) continue;
    let pci: string;
    try {
      pci = parsePciAddress(addr);
    } catch {
      continue;
    }
    const ifName = listDir(join(dir, 'net'))[0];
    const vfs: SriovVfInfo[] = [];
    for (const name of listDir(dir)) {
      const m = /^virtfn(\d+)$/.exec(name);
      if (!m) continue;
      const vfAddr = linkBase(join(dir, name));
      if (!vfAddr) continue;
      const vf: SriovVfInfo = { index: Number(m[1]), pciAddress: parsePciAddress(vfAddr) };
      const vfDir = join(base, vfAddr);
      const driver = linkBase(join(vfDir, 'driver'));
      if (driver) vf.driver = driver;
      const group = linkBase(join(vfDir, 'iommu_group'));
      if (group && /^\d+$/.test(group)) vf.iommuGroup = Number(group);
      vfs.push(vf);
    }
    vfs.sort((a, b) => a.index - b.index);
    const pf: SriovPfInfo = {
      pciAddress: pci,
      numaNode: readInt(join(dir, 'numa_node')) ?? -1,
      totalVfs,
      numVfs: readInt(join(dir, 'sriov_numvfs')) ?? vfs.length,
      vfs,
    };
    if (ifName) pf.ifName = ifName;
    const physnet = physnets[pci] ?? (ifName ? physnets[ifName] : undefined);
    if (physnet) pf.physnet = physnet;
    const vendor = readText(join(dir, 'vendor'));
    const device = readText(join(dir, 'device'));
    if (vendor) pf.vendorId = vendor.replace(/^0x/, '');
    if (device) pf.deviceId = device.replace(/^0x/, '');
    const driver = linkBase(join(dir, 'driver'));
    if (driver) pf.driver = driver;
    pfs.push(pf);
  }
  return pfs;
}

export function findBinary(name: string, env: NodeJS.ProcessEnv = process.env): string | null {
  const dirs = [...(env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/bin', '/usr/local/bin'];
  for (const d of dirs) {
    if (!d) continue;
    const p = join(d, name);
    try {
      accessSync(p, constants.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      /* next */
    }
  }
  return null;
}

/** /dev/kvm present and openable read-write. */
export function kvmUsable(devRoot: string): boolean {
  try {
    accessSync(join(devRoot, 'kvm'), constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function binaryVersion(path: string): string | undefined {
  try {
    const out = execFileSync(path, ['--version'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
    const m = /(\d+\.\d+(?:\.\d+)?)/.exec(out);
    return m ? m[1] : undefined;
  } catch {
    return undefined;
  }
}

export interface HypervisorBinaries {
  qemu?: string | null;
}

/** The hypervisors this agent runs (QEMU) whose binaries are present, and the accelerator each would use. */
export function detectHypervisors(devRoot: string, binaries: HypervisorBinaries = {}, kvmOverride?: boolean): HypervisorInfo[] {
  const kvm = kvmOverride ?? kvmUsable(devRoot);
  const out: HypervisorInfo[] = [];
  const candidates: [HypervisorKind, string | null][] = [['qemu', binaries.qemu !== undefined ? binaries.qemu : findBinary('qemu-system-x86_64')]];
  for (const [kind, path] of candidates) {
    if (!path) continue;
    const accel = kvm ? 'kvm' : 'tcg'; // QEMU falls back to TCG
    const info: HypervisorInfo = { kind, path, accel };
    const version = binaryVersion(path);
    if (version) info.version = version;
    out.push(info);
  }
  return out;
}

/** Data planes the node finds (by their probe path) and the switches the agent runs itself (with their state). */
export function detectDataplanes(cfg: Pick<NodeAgentConfig, 'dataplanes'>, switches: readonly { info(): DataplaneInfo }[] = []): DataplaneInfo[] {
  const out: DataplaneInfo[] = switches.map((s) => s.info());
  for (const d of cfg.dataplanes) {
    if (d.ovs) continue; // the agent's own switch: reported above
    if (!existsSync(d.probePath ?? d.socketDir)) continue;
    const info: DataplaneInfo = { kind: d.kind, socketDir: d.socketDir };
    if (d.numaNode !== undefined) info.numaNode = d.numaNode;
    out.push(info);
  }
  return out;
}

export interface InventoryDeps {
  binaries?: HypervisorBinaries;
  /** KVM as probed (probeKvm): overrides the mere presence of /dev/kvm. */
  kvm?: boolean;
  /** systeminformation; a test may pass its own figures. */
  system?: () => Promise<{ cpuCount: number; memoryMiB: number; hostname: string }>;
  /** The data planes the agent runs (its OVS-DPDK switch): reported with their state. */
  switches?: readonly { info(): DataplaneInfo }[];
}

async function systemFigures(): Promise<{ cpuCount: number; memoryMiB: number; hostname: string }> {
  const [cpu, mem] = await Promise.all([si.cpu(), si.mem()]);
  return { cpuCount: cpu.cores, memoryMiB: Math.floor(mem.total / (1024 * 1024)), hostname: hostname() };
}

export async function collectInventory(
  cfg: Pick<NodeAgentConfig, 'nodeId' | 'labels' | 'sysfsRoot' | 'devRoot' | 'physnets' | 'dataplanes'>,
  deps: InventoryDeps = {},
): Promise<NodeInventory> {
  const sys = await (deps.system ?? systemFigures)();
  let numaNodes = readNumaNodes(cfg.sysfsRoot);
  const isolatedCpus = parseCpuList(readText(join(cfg.sysfsRoot, 'devices/system/cpu/isolated')) ?? '');
  if (numaNodes === null) {
    // No NUMA in sysfs (some VMs/containers): one node with everything, hugepages from the global pools.
    numaNodes = [
      {
        id: 0,
        cpus: Array.from({ length: sys.cpuCount }, (_, i) => i),
        memoryMiB: sys.memoryMiB,
        hugepages: hugepagePools(join(cfg.sysfsRoot, 'kernel/mm/hugepages')),
      },
    ];
  }
  const cpuCount = Math.max(sys.cpuCount, numaNodes.reduce((n, x) => n + x.cpus.length, 0));
  const hypervisors = detectHypervisors(cfg.devRoot, deps.binaries, deps.kvm);
  return {
    nodeId: cfg.nodeId,
    hostname: sys.hostname,
    labels: { ...cfg.labels },
    cpuCount,
    isolatedCpus,
    memoryMiB: sys.memoryMiB,
    numaNodes,
    sriovPfs: readSriovPfs(cfg.sysfsRoot, cfg.physnets),
    dataplanes: detectDataplanes(cfg, deps.switches),
    hypervisors,
    kvm: deps.kvm ?? kvmUsable(cfg.devRoot),
    agentVersion: AGENT_VERSION,
  };
}
