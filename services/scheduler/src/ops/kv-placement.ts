/**
 * PlacementPort over the state in KV: node views are built from node records and the allocations committed on
 * them; the placement pipeline picks a node; the allocation is committed with a CAS create, and the node's
 * allocations are re-read afterwards so that a concurrent commit that over-booked the node is detected and the
 * later one withdrawn. MACs are derived from the allocation id; addresses come from the IPAM.
 */
import { createHash } from 'node:crypto';
import {
  localMac,
  UnschedulableError,
  type AllocInterface,
  type Allocation,
  type NodeRecord,
  type Vnf,
} from '@edgenfv/contracts';
import type { Ipam } from '@edgenfv/netplugins/internal/ipam';
import type { Logger } from '@edgenfv/telemetry';
import {
  buildNodeView,
  buildPlacementRequest,
  checkReservation,
  place,
  reservationFor,
  reservationOfAllocation,
  type NodeView,
} from '../placement/index.js';
import type { Store } from '../state/store.js';
import type { PlacementPort, PlaceReplicaInput } from './placement-port.js';

export class KvPlacement implements PlacementPort {
  private seed = 1;
  constructor(
    private readonly store: Store,
    private readonly ipam: Ipam | null,
    private readonly logger: Logger,
  ) {}

  private async views(): Promise<Map<string, NodeView>> {
    const [nodes, allocs] = await Promise.all([this.store.nodes.list(), this.store.allocs.list()]);
    const byNode = new Map<string, Allocation[]>();
    for (const { value: a } of allocs) {
      const l = byNode.get(a.nodeId) ?? [];
      l.push(a);
      byNode.set(a.nodeId, l);
    }
    const out = new Map<string, NodeView>();
    for (const { value: n } of nodes) out.set(n.id, this.viewOf(n, byNode.get(n.id) ?? []));
    return out;
  }

  private viewOf(n: NodeRecord, allocs: Allocation[]): NodeView {
    return buildNodeView(
      { nodeId: n.id, epoch: n.epoch, health: n.health, cordoned: n.cordoned, inventory: n.inventory },
      allocs.map((a) => reservationOfAllocation(a)),
    );
  }

  async placeReplica(input: PlaceReplicaInput): Promise<Allocation> {
    const { vnf, replica, allocId } = input;
    for (let attempt = 0; attempt < 20; attempt++) {
      const views = await this.views();
      const others = vnf.replicas.filter((r) => r.index !== replica && r.nodeId).map((r) => r.nodeId!);
      const req = buildPlacementRequest({
        tenantId: vnf.tenantId,
        vnfId: vnf.id,
        replica,
        descriptor: vnf.descriptor,
        otherReplicaNodeIds: [...others, ...(input.avoidNodeIds ?? [])],
      });
      const candidates = [...views.values()].filter((v) => !(input.avoidNodeIds ?? []).includes(v.nodeId));
      const res = place(req, candidates, { seed: this.seed++ });
      if (!res.ok) throw new UnschedulableError(res.explanation.message, res.explanation);
      const alloc = await this.allocationFor(vnf, replica, allocId, res.node, res.assignment);
      const reservation = reservationOfAllocation(alloc);
      const key = `${alloc.nodeId}.${allocId}`;
      if ((await this.store.allocs.create(key, alloc)) === null) {
        const existing = await this.store.allocs.get(key);
        if (existing) return existing.value; // committed by us before (a resumed operation)
        continue;
      }
      // Re-check the node with every allocation committed on it except ours: a concurrent commit may have taken
      // what we chose. The later writer (ours, if the check fails) withdraws.
      const node = (await this.store.nodes.get(alloc.nodeId))?.value;
      const onNode = (await this.store.allocs.list(`${alloc.nodeId}.>`)).map((a) => a.value).filter((a) => a.allocId !== allocId);
      const verdict = node ? checkReservation(this.viewOf(node, onNode), reservation) : { ok: false as const, reason: 'node vanished' };
      if (verdict.ok) {
        this.logger.info({ tenantId: vnf.tenantId, vnfId: vnf.id, nodeId: alloc.nodeId, allocId }, 'allocation committed');
        return alloc;
      }
      await this.releaseAllocation(alloc);
      this.logger.info({ allocId, nodeId: alloc.nodeId, reason: verdict.reason }, 'allocation lost a race; placing again');
    }
    throw new UnschedulableError('placement kept losing races with concurrent commits; retry');
  }

  private async allocationFor(
    vnf: Vnf,
    replica: number,
    allocId: string,
    node: NodeView,
    a: import('../placement/index.js').Assignment,
  ): Promise<Allocation> {
    const d = vnf.descriptor;
    const interfaces: AllocInterface[] = [];
    for (const i of d.interfaces ?? []) {
      const mac = i.mac ? i.mac.toLowerCase() : localMac(createHash('sha256').update(`${allocId}/${i.name}`).digest());
      const ai: AllocInterface = { name: i.name, type: i.type, mac };
      if (i.network) {
        ai.network = i.network;
        if (this.ipam) {
          const lease = await this.ipam.allocate(i.network, `${allocId}.${i.name}`, { nodeId: node.nodeId, epoch: node.epoch });
          ai.ips = [lease.cidr];
          if (lease.gateway) ai.gateway = lease.gateway;
        }
      }
      if (i.mtuBytes) ai.mtuBytes = i.mtuBytes;
      if (i.type === 'macvtap' && i.parent) ai.parent = i.parent;
      if (i.type === 'sriov') {
        const vf = a.vfs.find((v) => v.interface === i.name);
        if (vf) {
          ai.sriov = {
            pfPciAddress: vf.pfPciAddress,
            vfPciAddress: vf.vfPciAddress,
            vfIndex: vf.vfIndex,
            physnet: vf.physnet,
            ...(i.vlan !== undefined ? { vlan: i.vlan } : {}),
            ...(i.vlanQos !== undefined ? { vlanQos: i.vlanQos } : {}),
            ...(i.spoofchk !== undefined ? { spoofchk: i.spoofchk } : {}),
            ...(i.trust !== undefined ? { trust: i.trust } : {}),
          };
        }
      }
      if (i.type === 'vhostuser') {
        // relative to the node agent's vhost-user socket folder for the tenant
        ai.vhostuser = { dataplane: i.dataplane, socketPath: `${allocId}-${i.name}.sock`, queues: i.queues ?? 1 };
      }
      interfaces.push(ai);
    }
    const r = reservationFor(buildPlacementRequest({ tenantId: vnf.tenantId, vnfId: vnf.id, replica, descriptor: d }), allocId, node.epoch, a);
    return {
      allocId,
      nodeId: node.nodeId,
      epoch: node.epoch,
      tenantId: vnf.tenantId,
      vnfId: vnf.id,
      vnfName: vnf.name,
      replica,
      resources: {
        vcpus: d.resources.vcpus,
        memoryMiB: d.resources.memoryMiB,
        cpuPolicy: d.resources.cpuPolicy ?? 'shared',
        ...(r.cpus ? { cpus: r.cpus } : {}),
        ...(r.numaNode !== undefined ? { numaNode: r.numaNode } : {}),
        ...(r.hugepages ? { hugepages: r.hugepages } : {}),
      },
      image: d.image,
      ...(d.command ? { command: d.command } : {}),
      ...(d.args ? { args: d.args } : {}),
      ...(d.env ? { env: d.env } : {}),
      interfaces,
      ...(d.routes ? { routes: d.routes } : {}),
      desired: 'running',
      createdAt: new Date().toISOString(),
    };
  }

  async findAllocation(allocId: string): Promise<Allocation | null> {
    const keys = await this.store.allocs.keys(`*.${allocId}`);
    for (const k of keys) {
      const a = await this.store.allocs.get(k);
      if (a) return a.value;
    }
    return null;
  }

  async releaseAllocation(alloc: Allocation): Promise<void> {
    if (this.ipam) {
      for (const i of alloc.interfaces) if (i.network) await this.ipam.release(`${alloc.allocId}.${i.name}`);
    }
    await this.store.allocs.delete(`${alloc.nodeId}.${alloc.allocId}`);
  }

  async nodeReady(nodeId: string): Promise<boolean> {
    const n = await this.store.nodes.get(nodeId);
    return n?.value.health === 'Ready';
  }
}
