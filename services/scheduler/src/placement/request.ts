import { dataplaneInterfaces, guestDataplaneUsesVfio, type Vnfd } from '@edgenfv/contracts';
import type { PlacementRequest, VfDemand } from './types.js';

export interface PlacementRequestInput {
  tenantId: string;
  vnfId: string;
  replica: number;
  descriptor: Vnfd;
  /** Nodes of the VNF's other replicas (used when the VNFD asks for anti-affinity). */
  otherReplicaNodeIds?: Iterable<string>;
  /** Nodes to keep away from whatever the VNFD says (heal: the failed node; drain: the drained one). */
  excludeNodeIds?: Iterable<string>;
  /** The only node allowed (a tenant VM's replicas migrating as one go to one node). */
  onlyNodeId?: string;
  quotaRemaining?: { vcpus?: number; memoryMiB?: number; vfs?: number };
}

/** Builds the placement request of one replica of a VNFD (precomputes what each filter needs). */
export function buildPlacementRequest(input: PlacementRequestInput): PlacementRequest {
  const d = input.descriptor;
  const vfs: VfDemand[] = [];
  const vfsByPhysnet = new Map<string, number>();
  const dataplanes = new Set<PlacementRequest['dataplanes'][number]>();
  const switchNetworks = new Set<string>();
  for (const i of d.interfaces ?? []) {
    if (i.type === 'sriov') {
      vfs.push({ interface: i.name, physnet: i.physnet });
      vfsByPhysnet.set(i.physnet, (vfsByPhysnet.get(i.physnet) ?? 0) + 1);
    } else if (i.type === 'vhostuser') {
      if (i.network !== undefined) switchNetworks.add(i.network);
      else if (i.dataplane !== undefined) dataplanes.add(i.dataplane);
    }
  }
  const antiAffinity = d.placement?.antiAffinity ?? 'none';
  const req: PlacementRequest = {
    tenantId: input.tenantId,
    vnfId: input.vnfId,
    replica: input.replica,
    vcpus: d.resources.vcpus,
    memoryMiB: d.resources.memoryMiB,
    cpuPolicy: d.resources.cpuPolicy ?? 'shared',
    numa: d.resources.numa ?? 'none',
    vfs,
    vfsByPhysnet,
    dataplanes: [...dataplanes],
    switchNetworks: [...switchNetworks],
    nodeSelector: d.placement?.nodeSelector ?? {},
    antiAffinity,
    avoidNodeIds: new Set(antiAffinity === 'node' ? (input.otherReplicaNodeIds ?? []) : []),
  };
  if (d.resources.hugepages) {
    // A hugepage-backed guest holds all of its memory in hugepages (the node agent backs the VM's RAM with them),
    // whatever part of it the VNFD asked to be hugepages: book the pages it really takes.
    const { sizeKiB, count } = d.resources.hugepages;
    req.hugepages = { sizeKiB, count: Math.max(count, Math.ceil((d.resources.memoryMiB * 1024) / sizeKiB)) };
  }
  if (d.resources.dataplane) req.guestDataplane = { ...d.resources.dataplane, interfaces: dataplaneInterfaces(d) };
  if (guestDataplaneUsesVfio(d)) req.guestVfio = true;
  if (input.quotaRemaining) req.quotaRemaining = input.quotaRemaining;
  if (input.onlyNodeId !== undefined) req.onlyNodeId = input.onlyNodeId;
  if (input.excludeNodeIds) {
    const ex = new Set(input.excludeNodeIds);
    if (ex.size > 0) req.excludeNodeIds = ex;
  }
  return req;
}

/** MiB of hugepages a request (or reservation) holds. */
export function hugepagesMiB(h: { sizeKiB: number; count: number } | undefined): number {
  return h ? (h.sizeKiB * h.count) / 1024 : 0;
}
