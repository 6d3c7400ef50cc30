/** Generated node inventories (tests and the benchmark): same shape as a node agent reports, nothing booted. */
import type { DataplaneInfo, DataplaneKind, NodeInventory, VmOverhead } from '@edgenfv/contracts';

export interface SimPf {
  physnet: string;
  numaNode: number;
  vfs: number;
}

export interface SimNodeSpec {
  nodeId: string;
  numaNodes?: number; // default 2
  cpusPerNuma?: number; // default 8
  /** Isolated (pinnable) CPUs per NUMA node, taken from the top of each node's range; default all but one. */
  isolatedPerNuma?: number;
  memoryMiBPerNuma?: number; // default 16384
  /** 2048 KiB hugepages per NUMA node; default 1024. */
  hugepages2MPerNuma?: number;
  pfs?: SimPf[];
  /** A kind alone, or what the node reports of its switch (networks served, health). */
  dataplanes?: (DataplaneKind | DataplaneInfo)[];
  labels?: Record<string, string>;
  /** What the node reports each tenant VM costs beyond its replicas; default none. */
  vmOverhead?: VmOverhead;
  /** Shared vCPUs per unpinned CPU the node reports (node agent `cpuAllocationRatio`); default none (1). */
  cpuAllocationRatio?: number;
}

function pci(bus: number, dev: number, fn: number): string {
  return `0000:${bus.toString(16).padStart(2, '0')}:${dev.toString(16).padStart(2, '0')}.${fn}`;
}

export function simulatedInventory(spec: SimNodeSpec): NodeInventory {
  const numaCount = spec.numaNodes ?? 2;
  const per = spec.cpusPerNuma ?? 8;
  const isoPer = spec.isolatedPerNuma ?? per - 1;
  const memPer = spec.memoryMiBPerNuma ?? 16384;
  const hp = spec.hugepages2MPerNuma ?? 1024;
  const numaNodes = Array.from({ length: numaCount }, (_, id) => ({
    id,
    cpus: Array.from({ length: per }, (_, i) => id * per + i),
    memoryMiB: memPer,
    hugepages: hp > 0 ? [{ sizeKiB: 2048, total: hp, free: hp }] : [],
  }));
  const isolatedCpus = numaNodes.flatMap((n) => n.cpus.slice(per - isoPer));
  const sriovPfs = (spec.pfs ?? []).map((p, i) => {
    const bus = 0x10 + i;
    return {
      pciAddress: pci(bus, 0, 0),
      ifName: `ens${i + 1}f0`,
      physnet: p.physnet,
      numaNode: p.numaNode,
      totalVfs: p.vfs,
      numVfs: p.vfs,
      driver: 'ice',
      vfs: Array.from({ length: p.vfs }, (_, v) => ({ index: v, pciAddress: pci(bus, 1 + Math.floor(v / 8), v % 8), driver: 'vfio-pci' })),
    };
  });
  return {
    nodeId: spec.nodeId,
    hostname: spec.nodeId,
    labels: spec.labels ?? {},
    cpuCount: numaCount * per,
    isolatedCpus,
    memoryMiB: numaCount * memPer,
    numaNodes,
    sriovPfs,
    dataplanes: (spec.dataplanes ?? []).map((d) => (typeof d === 'string' ? { kind: d } : d)),
    hypervisors: [{ kind: 'qemu', path: '/usr/bin/qemu-system-x86_64', accel: 'kvm' }],
    kvm: true,
    agentVersion: 'sim',
    ...(spec.vmOverhead ? { vmOverhead: { ...spec.vmOverhead } } : {}),
    ...(spec.cpuAllocationRatio !== undefined ? { cpuAllocationRatio: spec.cpuAllocationRatio } : {}),
  };
}
