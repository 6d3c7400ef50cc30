/**
 * A node (what a host has: NUMA nodes, their CPUs and free hugepages, its DPDK NICs) and a workload (what one data
 * plane wants: worker count, memory, NICs by name) give a data plane plan: the workload is placed on the first
 * NUMA node that has its CPUs and hugepages (the NUMA node of its PCI NICs first). Pure. Every issue names its
 * field as `node.…` or `workload.…` and all issues are reported together (one InvalidArgumentError).
 * The same shapes describe a guest (its vCPUs and hugepages) and a DPDK VNF in it: see the node agent.
 */
import { InvalidArgumentError, isPciAddress, type FieldIssue } from '@edgenfv/contracts';
import {
  HUGEPAGE_SIZES_KIB,
  parseDataplanePlan,
  type DataplanePlan,
  type DataplanePlanInput,
  type IovaMode,
  type NicInput,
  type NumaMode,
  type PlanMemory,
} from './plan.js';

export interface NodeNumaSpec {
  id: number;
  cpus: number[];
  /** Free hugepages of each size on this NUMA node. */
  hugepages?: Array<{ sizeKiB: number; free: number }>;
}

export interface NodeNicSpec {
  name: string;
  pciAddress: string;
  numaNode?: number;
}

export interface NodeSpec {
  name: string;
  numaNodes: NodeNumaSpec[];
  /** Housekeeping CPUs never given to a data plane (the kernel, the agents). */
  reservedCpus?: number[];
  nics?: NodeNicSpec[];
  /** hugetlbfs mount the data planes use (EAL `--huge-dir`). */
  hugeDir?: string;
}

export type WorkloadNicSpec =
  | {
      kind: 'pci';
      /** A NIC of the node by name (its PCI address and NUMA node come from the node file). */
      name: string;
      rxQueues?: number;
      txQueues?: number;
      rxDescriptors?: number;
      txDescriptors?: number;
    }
  | { kind: 'vhost-user'; name: string; socketPath: string; queues?: number; client?: boolean };

export type WorkloadMemory = { hugepagesMiB: number; pageSizeKiB?: number } | { noHugeMiB: number };

export interface TestpmdSpec {
  /** testpmd `--forward-mode` (default io). */
  forwardMode?: string;
  /** `--total-num-mbufs` (default 8192: DPDK's default pool does not fit small memory). */
  mbufs?: number;
  /** `--burst`. */
  burst?: number;
}

export interface WorkloadSpec {
  /** DPDK `--file-prefix` / VPP api-segment prefix. */
  name: string;
  numa?: NumaMode;
  /** Place on this NUMA node (default: the first that fits). */
  numaNode?: number;
  /** Worker lcores besides the main lcore. */
  workers: number;
  memory: WorkloadMemory;
  nics: WorkloadNicSpec[];
  iovaMode?: IovaMode;
  inMemory?: boolean;
  testpmd?: TestpmdSpec;
  vpp?: { buffersPerNuma?: number; uioDriver?: 'vfio-pci' | 'uio_pci_generic' | 'auto' };
  ovs?: { bridge?: string };
}

export interface PlacementOptions {
  /** Ignore the hugepages: the plan runs on `--no-huge` with the same amount of ordinary memory. */
  noHuge?: boolean;
  /** Leave the PCI NICs out of the plan (the caller may stand in for them, e.g. with net_null ports). */
  noPci?: boolean;
}

export interface Placement {
  plan: DataplanePlan;
  /** The PCI NICs left out under `noPci`, in workload order. */
  droppedPciNics: string[];
}

const isInt = (n: unknown, min: number): n is number => typeof n === 'number' && Number.isInteger(n) && n >= min;
const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Checks a node file's content; returns the issues (fields `node.…`). */
export function checkNodeSpec(node: unknown): FieldIssue[] {
  const issues: FieldIssue[] = [];
  const bad = (field: string, message: string): void => void issues.push({ field: `node.${field}`, message });
  if (!isObj(node)) return [{ field: 'node', message: 'must be an object {name, numaNodes, reservedCpus?, nics?, hugeDir?}' }];
  if (typeof node.name !== 'string' || node.name.length === 0) bad('name', 'must be a non-empty string');
  const cpusSeen = new Map<number, string>();
  if (!Array.isArray(node.numaNodes) || node.numaNodes.length === 0) bad('numaNodes', 'must be a non-empty array of {id, cpus, hugepages?}');
  const ids = new Set<number>();
  (Array.isArray(node.numaNodes) ? node.numaNodes : []).forEach((n: unknown, i: number) => {
    const f = `numaNodes[${i}]`;
    if (!isObj(n)) return bad(f, 'must be {id, cpus, hugepages?}');
    if (!isInt(n.id, 0)) bad(`${f}.id`, 'must be an integer >= 0');
    else if (ids.has(n.id)) bad(`${f}.id`, `NUMA node ${n.id} is listed twice`);
    else ids.add(n.id);
    if (!Array.isArray(n.cpus)) bad(`${f}.cpus`, 'must be an array of CPU ids');
    (Array.isArray(n.cpus) ? n.cpus : []).forEach((c: unknown, j: number) => {
      if (!isInt(c, 0)) bad(`${f}.cpus[${j}]`, 'must be an integer >= 0');
      else if (cpusSeen.has(c)) bad(`${f}.cpus[${j}]`, `CPU ${c} is already ${cpusSeen.get(c)}`);
      else cpusSeen.set(c, `${f}.cpus[${j}]`);
    });
    if (n.hugepages !== undefined && !Array.isArray(n.hugepages)) bad(`${f}.hugepages`, 'must be an array of {sizeKiB, free}');
    (Array.isArray(n.hugepages) ? n.hugepages : []).forEach((h: unknown, j: number) => {
      const g = `${f}.hugepages[${j}]`;
      if (!isObj(h)) return bad(g, 'must be {sizeKiB, free}');
      if (!(HUGEPAGE_SIZES_KIB as readonly unknown[]).includes(h.sizeKiB)) bad(`${g}.sizeKiB`, 'must be 2048 or 1048576');
      if (!isInt(h.free, 0)) bad(`${g}.free`, 'must be an integer >= 0');
    });
  });
  if (node.reservedCpus !== undefined && !Array.isArray(node.reservedCpus)) bad('reservedCpus', 'must be an array of CPU ids');
  (Array.isArray(node.reservedCpus) ? node.reservedCpus : []).forEach((c: unknown, j: number) => {
    if (!isInt(c, 0) || !cpusSeen.has(c)) bad(`reservedCpus[${j}]`, `must be a CPU of one of the node's NUMA nodes (got ${JSON.stringify(c)})`);
  });
  const names = new Set<string>();
  if (node.nics !== undefined && !Array.isArray(node.nics)) bad('nics', 'must be an array of {name, pciAddress, numaNode?}');
  (Array.isArray(node.nics) ? node.nics : []).forEach((n: unknown, i: number) => {
    const f = `nics[${i}]`;
    if (!isObj(n)) return bad(f, 'must be {name, pciAddress, numaNode?}');
    if (typeof n.name !== 'string' || n.name.length === 0) bad(`${f}.name`, 'must be a non-empty string');
    else if (names.has(n.name)) bad(`${f}.name`, `"${n.name}" is listed twice`);
    else names.add(n.name);
    if (!isPciAddress(n.pciAddress)) bad(`${f}.pciAddress`, `not a PCI address: ${JSON.stringify(n.pciAddress)} (expected dddd:bb:dd.f)`);
    if (n.numaNode !== undefined && !(isInt(n.numaNode, -1))) bad(`${f}.numaNode`, 'must be an integer >= 0, or -1 when unknown');
  });
  if (node.hugeDir !== undefined && (typeof node.hugeDir !== 'string' || !node.hugeDir.startsWith('/'))) bad('hugeDir', 'must be an absolute path');
  return issues;
}

/** Checks a workload file's content; returns the issues (fields `workload.…`). */
export function checkWorkloadSpec(w: unknown): FieldIssue[] {
  const issues: FieldIssue[] = [];
  const bad = (field: string, message: string): void => void issues.push({ field: `workload.${field}`, message });
  if (!isObj(w)) return [{ field: 'workload', message: 'must be an object {name, workers, memory, nics, ...}' }];
  if (typeof w.name !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(w.name)) {
    bad('name', 'must be 1-64 characters of letters, digits, "_" or "-" (it is the DPDK --file-prefix)');
  }
  if (!isInt(w.workers, 0)) bad('workers', 'must be an integer >= 0 (worker lcores besides the main lcore)');
  if (w.numaNode !== undefined && !isInt(w.numaNode, 0)) bad('numaNode', 'must be an integer >= 0');
  const m = w.memory;
  if (!isObj(m) || (m.hugepagesMiB === undefined) === (m.noHugeMiB === undefined)) {
    bad('memory', 'must be {hugepagesMiB, pageSizeKiB?} or {noHugeMiB}');
  } else if (m.hugepagesMiB !== undefined) {
    if (!isInt(m.hugepagesMiB, 1)) bad('memory.hugepagesMiB', 'must be an integer >= 1');
    if (m.pageSizeKiB !== undefined && !(HUGEPAGE_SIZES_KIB as readonly unknown[]).includes(m.pageSizeKiB)) bad('memory.pageSizeKiB', 'must be 2048 or 1048576');
  } else if (!isInt(m.noHugeMiB, 1)) {
    bad('memory.noHugeMiB', 'must be an integer >= 1');
  }
  if (!Array.isArray(w.nics)) bad('nics', 'must be an array (may be empty)');
  (Array.isArray(w.nics) ? w.nics : []).forEach((n: unknown, i: number) => {
    const f = `nics[${i}]`;
    if (!isObj(n)) return bad(f, 'must be {kind: "pci", name, ...} or {kind: "vhost-user", name, socketPath, ...}');
    if (n.kind !== 'pci' && n.kind !== 'vhost-user') bad(`${f}.kind`, `must be "pci" or "vhost-user" (got ${JSON.stringify(n.kind)})`);
    for (const k of ['rxQueues', 'txQueues', 'queues'] as const) {
      if (n[k] !== undefined && !isInt(n[k], 1)) bad(`${f}.${k}`, 'must be an integer >= 1');
    }
  });
  const t = w.testpmd;
  if (t !== undefined) {
    if (!isObj(t)) bad('testpmd', 'must be {forwardMode?, mbufs?, burst?}');
    else {
      if (t.forwardMode !== undefined && (typeof t.forwardMode !== 'string' || !/^[a-z0-9-]{1,32}$/.test(t.forwardMode))) bad('testpmd.forwardMode', 'must be a testpmd forward mode (io, mac, macswap, 5tswap, ...)');
      if (t.mbufs !== undefined && !isInt(t.mbufs, 1024)) bad('testpmd.mbufs', 'must be an integer >= 1024');
      if (t.burst !== undefined && !(isInt(t.burst, 1) && t.burst <= 512)) bad('testpmd.burst', 'must be an integer from 1 to 512');
    }
  }
  return issues;
}

const PLAN_FIELD: Array<[RegExp, string]> = [
  [/^filePrefix/, 'workload.name'],
  [/^memory/, 'workload.memory'],
  [/^(mainCpu|workerCpus)/, 'workload.workers'],
];

/** The plan's field names in the words of the files: `nics[1].socketPath` -> `workload.nics[1].socketPath`. */
function workloadField(planField: string): string {
  for (const [re, f] of PLAN_FIELD) if (re.test(planField)) return f;
  return `workload.${planField}`;
}

/** Places a workload on a node and returns the checked plan; throws one InvalidArgumentError naming every field. */
export function placeWorkload(nodeIn: unknown, workloadIn: unknown, opts: PlacementOptions = {}): Placement {
  const issues = [...checkNodeSpec(nodeIn), ...checkWorkloadSpec(workloadIn)];
  if (issues.length > 0) throw new InvalidArgumentError(issues);
  const node = nodeIn as NodeSpec;
  const w = workloadIn as WorkloadSpec;
  const bad = (field: string, message: string): void => void issues.push({ field, message });

  // NICs: PCI ones come from the node by name
  const nodeNics = new Map((node.nics ?? []).map((n) => [n.name, n]));
  const nics: NicInput[] = [];
  const droppedPciNics: string[] = [];
  const nicNuma: number[] = [];
  w.nics.forEach((n, i) => {
    if (n.kind === 'pci') {
      const hw = nodeNics.get(n.name);
      if (!hw) return bad(`workload.nics[${i}].name`, `node ${node.name} has no NIC "${n.name}" (it has: ${[...nodeNics.keys()].join(', ') || 'none'})`);
      if ((hw.numaNode ?? -1) >= 0) nicNuma.push(hw.numaNode!);
      if (opts.noPci) return void droppedPciNics.push(n.name);
      nics.push({
        kind: 'pci',
        name: n.name,
        pciAddress: hw.pciAddress,
        numaNode: hw.numaNode ?? -1,
        rxQueues: n.rxQueues ?? 1,
        ...(n.txQueues !== undefined ? { txQueues: n.txQueues } : {}),
        ...(n.rxDescriptors !== undefined ? { rxDescriptors: n.rxDescriptors } : {}),
        ...(n.txDescriptors !== undefined ? { txDescriptors: n.txDescriptors } : {}),
      });
    } else {
      nics.push({ kind: 'vhost-user', name: n.name, socketPath: n.socketPath, queues: n.queues ?? 1, client: n.client ?? false });
    }
  });

  // Memory wanted
  const m = w.memory;
  const hugeMiB = 'hugepagesMiB' in m ? m.hugepagesMiB : undefined;
  const pageKiB = 'hugepagesMiB' in m ? (m.pageSizeKiB ?? 2048) : 0;
  const pagesWanted = hugeMiB !== undefined && !opts.noHuge ? Math.ceil((hugeMiB * 1024) / pageKiB) : 0;

  // NUMA node: the one asked for, else the PCI NICs' node first, then by id
  const reserved = new Set(node.reservedCpus ?? []);
  const candidates =
    w.numaNode !== undefined
      ? node.numaNodes.filter((n) => n.id === w.numaNode)
      : [...node.numaNodes].sort((a, b) => Number(!nicNuma.includes(a.id)) - Number(!nicNuma.includes(b.id)) || a.id - b.id);
  if (w.numaNode !== undefined && candidates.length === 0) {
    bad('workload.numaNode', `node ${node.name} has no NUMA node ${w.numaNode} (it has ${node.numaNodes.map((n) => n.id).join(', ')})`);
  }
  const free = (n: NodeNumaSpec): number[] => n.cpus.filter((c) => !reserved.has(c)).sort((a, b) => a - b);
  const freePages = (n: NodeNumaSpec): number => (n.hugepages ?? []).filter((h) => h.sizeKiB === pageKiB).reduce((s, h) => s + h.free, 0);
  const home = candidates.find((n) => free(n).length >= 1 + w.workers && freePages(n) >= pagesWanted);
  if (!home && candidates.length > 0) {
    const cpuFit = candidates.filter((n) => free(n).length >= 1 + w.workers);
    if (cpuFit.length === 0) {
      bad('workload.workers', `needs ${1 + w.workers} CPUs (main + ${w.workers} workers) on one NUMA node; node ${node.name} has at most ${Math.max(...candidates.map((n) => free(n).length))} unreserved${w.numaNode !== undefined ? ` on NUMA node ${w.numaNode}` : ''}`);
    } else {
      bad('workload.memory.hugepagesMiB', `needs ${pagesWanted} free ${pageKiB} KiB hugepages on one NUMA node with the CPUs; node ${node.name} has at most ${Math.max(...cpuFit.map(freePages))} there`);
    }
  }
  if (issues.length > 0) throw new InvalidArgumentError(issues);

  const cpus = free(home!);
  const memory: PlanMemory =
    hugeMiB !== undefined && !opts.noHuge
      ? { kind: 'hugepages', pages: [{ numaNode: home!.id, sizeKiB: pageKiB, count: pagesWanted }], ...(node.hugeDir ? { hugeDir: node.hugeDir } : {}) }
      : { kind: 'no-huge', memoryMiB: hugeMiB ?? (m as { noHugeMiB: number }).noHugeMiB };
  const input: DataplanePlanInput = {
    filePrefix: w.name,
    ...(w.numa !== undefined ? { numa: w.numa } : {}),
    mainCpu: { cpu: cpus[0]!, numaNode: home!.id },
    workerCpus: cpus.slice(1, 1 + w.workers).map((cpu) => ({ cpu, numaNode: home!.id })),
    memory,
    // DPDK refuses --in-memory with --no-huge: a test run on no-huge drops it
    ...(w.inMemory !== undefined && memory.kind === 'hugepages' ? { inMemory: w.inMemory } : {}),
    ...(w.iovaMode !== undefined ? { iovaMode: w.iovaMode } : {}),
    nics,
  };
  try {
    return { plan: parseDataplanePlan(input), droppedPciNics };
  } catch (err) {
    if (err instanceof InvalidArgumentError) {
      throw new InvalidArgumentError(err.issues.map((i) => ({ field: workloadField(i.field), message: i.message })));
    }
    throw err;
  }
}
