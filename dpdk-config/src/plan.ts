/**
 * The data plane plan every renderer takes: pinned CPUs with their NUMA node, hugepages per NUMA node,
 * NICs (PCI devices and vhost-user sockets) with their queues. `parseDataplanePlan` checks it once and
 * reports every issue together (one InvalidArgumentError naming each field); renderers take the parsed plan.
 */
import { InvalidArgumentError, parsePciAddress, type FieldIssue, type PciAddress } from '@edgenfv/contracts';

export type NumaMode = 'strict' | 'preferred' | 'none';
export type IovaMode = 'pa' | 'va';

export interface CpuPin {
  cpu: number; // logical CPU id on the host
  numaNode: number;
}

export interface HugepageGrant {
  numaNode: number;
  sizeKiB: number; // 2048 or 1048576
  count: number;
}

export type PlanMemory =
  | { kind: 'hugepages'; pages: HugepageGrant[]; hugeDir?: string }
  | { kind: 'no-huge'; memoryMiB: number };

export interface PciNicInput {
  kind: 'pci';
  name: string; // interface name in the data plane (VPP `name`, OVS port name)
  pciAddress: string;
  numaNode?: number; // -1 or absent: the platform does not say
  rxQueues: number;
  txQueues?: number; // default rxQueues
  rxDescriptors?: number;
  txDescriptors?: number;
}

export interface VhostUserNicInput {
  kind: 'vhost-user';
  name: string;
  socketPath: string;
  queues: number;
  /** true: the data plane connects to a socket QEMU serves (DPDK `client=1`, OVS `dpdkvhostuserclient`). */
  client?: boolean;
}

export type NicInput = PciNicInput | VhostUserNicInput;

export interface DataplanePlanInput {
  /** DPDK `--file-prefix` (and VPP api-segment prefix): one per data plane instance on a host. */
  filePrefix: string;
  /** strict: every CPU, hugepage and known-NUMA NIC on the main core's NUMA node. Default preferred. */
  numa?: NumaMode;
  mainCpu: CpuPin;
  workerCpus: CpuPin[];
  memory: PlanMemory;
  /** DPDK `--in-memory` (no shared files under /var/run/dpdk); refused together with no-huge. */
  inMemory?: boolean;
  iovaMode?: IovaMode;
  nics: NicInput[];
}

export interface PciNic extends Omit<PciNicInput, 'pciAddress' | 'txQueues' | 'numaNode'> {
  pciAddress: PciAddress;
  numaNode: number; // -1 when unknown
  txQueues: number;
}
export interface VhostUserNic extends Omit<VhostUserNicInput, 'client'> {
  client: boolean;
}
export type Nic = PciNic | VhostUserNic;

export interface DataplanePlan {
  readonly filePrefix: string;
  readonly numa: NumaMode;
  /** The NUMA node the data plane lives on: the main core's. */
  readonly homeNumaNode: number;
  readonly mainCpu: Readonly<CpuPin>;
  readonly workerCpus: readonly Readonly<CpuPin>[];
  readonly memory: Readonly<PlanMemory>;
  readonly inMemory: boolean;
  readonly iovaMode?: IovaMode;
  readonly nics: readonly Readonly<Nic>[];
  /** Things allowed under `preferred`/`none` that cost performance (a NIC on another NUMA node...). */
  readonly warnings: readonly string[];
}

export const HUGEPAGE_SIZES_KIB = [2048, 1048576] as const;
const PREFIX_RE = /^[A-Za-z0-9_-]{1,64}$/;
const NIC_NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
/** sun_path is 108 bytes with its NUL. */
const MAX_SOCKET_PATH_BYTES = 107;

function isNonNegInt(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0;
}
function isPosInt(n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 1;
}
function isPow2(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** Checks a plan and returns it normalized and frozen; throws one InvalidArgumentError listing every issue. */
export function parseDataplanePlan(input: DataplanePlanInput): DataplanePlan {
  const issues: FieldIssue[] = [];
  const bad = (field: string, message: string): void => {
    issues.push({ field, message });
  };
  const numa: NumaMode = input.numa ?? 'preferred';
  const warnings: string[] = [];

  if (!['strict', 'preferred', 'none'].includes(numa)) bad('numa', `must be strict, preferred or none (got ${JSON.stringify(numa)})`);
  if (typeof input.filePrefix !== 'string' || !PREFIX_RE.test(input.filePrefix)) {
    bad('filePrefix', 'must be 1-64 characters of letters, digits, "_" or "-" (it names files under /var/run/dpdk)');
  }

  // CPUs
  const checkPin = (field: string, pin: CpuPin | undefined): boolean => {
    if (pin === null || typeof pin !== 'object') {
      bad(field, 'must be {cpu, numaNode}');
      return false;
    }
    let ok = true;
    if (!isNonNegInt(pin.cpu)) {
      bad(`${field}.cpu`, 'must be an integer >= 0');
      ok = false;
    }
    if (!isNonNegInt(pin.numaNode)) {
      bad(`${field}.numaNode`, 'must be an integer >= 0');
      ok = false;
    }
    return ok;
  };
  const mainOk = checkPin('mainCpu', input.mainCpu);
  const home = mainOk ? input.mainCpu.numaNode : -1;
  const workers = Array.isArray(input.workerCpus) ? input.workerCpus : [];
  if (!Array.isArray(input.workerCpus)) bad('workerCpus', 'must be an array (may be empty)');
  const seenCpu = new Map<number, string>();
  if (mainOk) seenCpu.set(input.mainCpu.cpu, 'mainCpu');
  workers.forEach((w, i) => {
    const f = `workerCpus[${i}]`;
    if (!checkPin(f, w)) return;
    if (mainOk && w.cpu === input.mainCpu.cpu) {
      bad(`${f}.cpu`, `CPU ${w.cpu} is the main core; a main core cannot also be a worker`);
    } else if (seenCpu.has(w.cpu)) {
      bad(`${f}.cpu`, `CPU ${w.cpu} is listed twice (also ${seenCpu.get(w.cpu)})`);
    } else {
      seenCpu.set(w.cpu, f);
    }
    if (mainOk && w.numaNode !== home) {
      const msg = `CPU ${w.cpu} is on NUMA node ${w.numaNode} but the main core (CPU ${input.mainCpu.cpu}) is on NUMA node ${home}`;
      if (numa === 'strict') bad(`${f}.numaNode`, `${msg}; numa is strict: pin every CPU on one NUMA node`);
      else if (numa === 'preferred') warnings.push(`${f}: ${msg}`);
    }
  });

  // Memory
  const mem = input.memory;
  if (mem === null || typeof mem !== 'object') {
    bad('memory', 'must be {kind: "hugepages", pages} or {kind: "no-huge", memoryMiB}');
  } else if (mem.kind === 'hugepages') {
    if (!Array.isArray(mem.pages)) bad('memory.pages', 'must be an array');
    const pages = Array.isArray(mem.pages) ? mem.pages : [];
    const seen = new Set<number>();
    let size: number | undefined;
    let totalKiB = 0;
    let homeKiB = 0;
    pages.forEach((p, i) => {
      const f = `memory.pages[${i}]`;
      if (!isNonNegInt(p.numaNode)) bad(`${f}.numaNode`, 'must be an integer >= 0');
      if (!(HUGEPAGE_SIZES_KIB as readonly number[]).includes(p.sizeKiB)) {
        bad(`${f}.sizeKiB`, `must be 2048 or 1048576 (got ${JSON.stringify(p.sizeKiB)})`);
      } else if (size === undefined) {
        size = p.sizeKiB;
      } else if (p.sizeKiB !== size) {
        bad(`${f}.sizeKiB`, `all hugepages of one plan must have one size (memory.pages[0] has ${size} KiB)`);
      }
      if (!isNonNegInt(p.count)) bad(`${f}.count`, 'must be an integer >= 0');
      if (isNonNegInt(p.numaNode)) {
        if (seen.has(p.numaNode)) bad(`${f}.numaNode`, `NUMA node ${p.numaNode} is listed twice`);
        seen.add(p.numaNode);
        if (isNonNegInt(p.count) && typeof p.sizeKiB === 'number') {
          totalKiB += p.count * p.sizeKiB;
          if (p.numaNode === home) homeKiB += p.count * p.sizeKiB;
          if (mainOk && p.numaNode !== home && p.count > 0) {
            const msg = `hugepages on NUMA node ${p.numaNode} but the data plane's CPUs are on NUMA node ${home}`;
            if (numa === 'strict') bad(`${f}.numaNode`, `${msg}; numa is strict`);
            else if (numa === 'preferred') warnings.push(`${f}: ${msg}`);
          }
        }
      }
    });
    if (Array.isArray(mem.pages) && totalKiB === 0) {
      bad('memory.pages', 'no hugepages requested: give at least one NUMA node a count > 0, or use {kind: "no-huge"}');
    } else if (mainOk && homeKiB === 0 && numa !== 'none') {
      bad('memory.pages', `no hugepages on NUMA node ${home}, where the main core is`);
    }
    if (mem.hugeDir !== undefined && (typeof mem.hugeDir !== 'string' || !mem.hugeDir.startsWith('/'))) {
      bad('memory.hugeDir', 'must be an absolute path');
    }
  } else if (mem.kind === 'no-huge') {
    if (!isPosInt(mem.memoryMiB)) bad('memory.memoryMiB', 'must be an integer >= 1');
    if (input.inMemory === true) bad('inMemory', 'DPDK refuses --in-memory together with --no-huge: drop one of them');
  } else {
    bad('memory.kind', `must be "hugepages" or "no-huge" (got ${JSON.stringify((mem as { kind?: unknown }).kind)})`);
  }

  if (input.iovaMode !== undefined && input.iovaMode !== 'pa' && input.iovaMode !== 'va') {
    bad('iovaMode', `must be "pa" or "va" (got ${JSON.stringify(input.iovaMode)})`);
  }

  // NICs
  const nics: Nic[] = [];
  const nicList = Array.isArray(input.nics) ? input.nics : [];
  if (!Array.isArray(input.nics)) bad('nics', 'must be an array (may be empty)');
  const names = new Map<string, number>();
  const pcis = new Map<string, number>();
  const sockets = new Map<string, number>();
  nicList.forEach((n, i) => {
    const f = `nics[${i}]`;
    if (typeof n.name !== 'string' || !NIC_NAME_RE.test(n.name)) {
      bad(`${f}.name`, 'must be 1-32 characters of letters, digits, "_", "." or "-"');
    } else if (names.has(n.name)) {
      bad(`${f}.name`, `"${n.name}" is already the name of nics[${names.get(n.name)}]`);
    } else {
      names.set(n.name, i);
    }
    if (n.kind === 'pci') {
      let pci: PciAddress | undefined;
      try {
        pci = parsePciAddress(n.pciAddress);
      } catch {
        bad(`${f}.pciAddress`, `not a PCI address: ${JSON.stringify(n.pciAddress)} (expected dddd:bb:dd.f)`);
      }
      if (pci !== undefined) {
        if (pcis.has(pci)) bad(`${f}.pciAddress`, `${pci} is already nics[${pcis.get(pci)}]`);
        pcis.set(pci, i);
      }
      if (!isPosInt(n.rxQueues)) bad(`${f}.rxQueues`, 'must be an integer >= 1');
      if (n.txQueues !== undefined && !isPosInt(n.txQueues)) bad(`${f}.txQueues`, 'must be an integer >= 1');
      for (const k of ['rxDescriptors', 'txDescriptors'] as const) {
        const v = n[k];
        if (v !== undefined && !(isPosInt(v) && isPow2(v) && v >= 64 && v <= 32768)) {
          bad(`${f}.${k}`, 'must be a power of two from 64 to 32768');
        }
      }
      const nicNuma = n.numaNode ?? -1;
      if (!Number.isInteger(nicNuma) || nicNuma < -1) bad(`${f}.numaNode`, 'must be an integer >= 0, or -1 when unknown');
      else if (mainOk && nicNuma >= 0 && nicNuma !== home) {
        const msg = `PCI device ${pci ?? n.pciAddress} is on NUMA node ${nicNuma} but the data plane's CPUs are on NUMA node ${home}`;
        if (numa === 'strict') bad(`${f}.numaNode`, `${msg}; numa is strict`);
        else if (numa === 'preferred') warnings.push(`${f}: ${msg}`);
      }
      if (pci !== undefined) {
        nics.push({
          kind: 'pci',
          name: n.name,
          pciAddress: pci,
          numaNode: nicNuma,
          rxQueues: n.rxQueues,
          txQueues: n.txQueues ?? n.rxQueues,
          ...(n.rxDescriptors !== undefined ? { rxDescriptors: n.rxDescriptors } : {}),
          ...(n.txDescriptors !== undefined ? { txDescriptors: n.txDescriptors } : {}),
        });
      }
    } else if (n.kind === 'vhost-user') {
      const p = n.socketPath;
      if (typeof p !== 'string' || !p.startsWith('/')) bad(`${f}.socketPath`, 'must be an absolute path');
      else if (p.includes(',') || /\s/.test(p)) bad(`${f}.socketPath`, 'must not contain "," or spaces (DPDK devargs use them as separators)');
      else if (Buffer.byteLength(p) > MAX_SOCKET_PATH_BYTES) bad(`${f}.socketPath`, `is longer than ${MAX_SOCKET_PATH_BYTES} bytes (a unix socket path limit)`);
      else if (sockets.has(p)) bad(`${f}.socketPath`, `${p} is already nics[${sockets.get(p)}]`);
      else sockets.set(p, i);
      if (!isPosInt(n.queues)) bad(`${f}.queues`, 'must be an integer >= 1');
      nics.push({ kind: 'vhost-user', name: n.name, socketPath: p, queues: n.queues, client: n.client ?? false });
    } else {
      bad(`${f}.kind`, `must be "pci" or "vhost-user" (got ${JSON.stringify((n as { kind?: unknown }).kind)})`);
    }
  });

  if (issues.length > 0) throw new InvalidArgumentError(issues);
  const plan: DataplanePlan = {
    filePrefix: input.filePrefix,
    numa,
    homeNumaNode: home,
    mainCpu: Object.freeze({ ...input.mainCpu }),
    workerCpus: Object.freeze(workers.map((w) => Object.freeze({ ...w }))),
    memory: Object.freeze(
      mem.kind === 'hugepages'
        ? { kind: 'hugepages' as const, pages: mem.pages.map((p) => ({ ...p })), ...(mem.hugeDir ? { hugeDir: mem.hugeDir } : {}) }
        : { kind: 'no-huge' as const, memoryMiB: mem.memoryMiB },
    ),
    inMemory: input.inMemory ?? false,
    ...(input.iovaMode ? { iovaMode: input.iovaMode } : {}),
    nics: Object.freeze(nics.map((n) => Object.freeze(n))),
    warnings: Object.freeze(warnings),
  };
  return Object.freeze(plan);
}

/** Hugepage MiB per NUMA node, indexed by node id up to the highest node the plan touches: `[1024, 0]`. */
export function socketMemMiB(plan: DataplanePlan): number[] {
  if (plan.memory.kind !== 'hugepages') return [];
  const pages = plan.memory.pages;
  const maxNode = Math.max(plan.homeNumaNode, ...pages.map((p) => p.numaNode));
  const out = new Array<number>(maxNode + 1).fill(0);
  for (const p of pages) out[p.numaNode] = (out[p.numaNode] ?? 0) + Math.floor((p.count * p.sizeKiB) / 1024);
  return out;
}

export function allCpus(plan: DataplanePlan): number[] {
  return [plan.mainCpu.cpu, ...plan.workerCpus.map((w) => w.cpu)];
}
