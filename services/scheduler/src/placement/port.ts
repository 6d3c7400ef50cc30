/**
 * The operations engine's PlacementPort over ClusterState (ledger CAS commits, per-node coalescing, node views kept
 * by KV watches). Interface MACs are derived from the allocation id, addresses
 * come from the IPAM (owner `<allocId>.<ifName>`, with the node and epoch). Releasing an allocation on a lost node
 * fences it: its VFs, CPUs, hugepages and IP leases stay held until the node confirms the sandbox is gone (the
 * registry's `onFencedFreed` then releases the leases here).
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import {
  InternalError,
  UnschedulableError,
  allocKey,
  localMac,
  type AllocInterface,
  type Allocation,
  type MigrationGroupMember,
  type MigrationVmLayout,
  type NetworkConfig,
  type SriovReservation,
  type Vnf,
  type VnfdInterface,
} from '@edgenfv/contracts';
import type { Ipam } from '@edgenfv/netplugins/internal/ipam';
import type { PlacementPort, PlaceReplicaInput } from '../ops/placement-port.js';
import type { ClusterState, Decision } from './cluster.js';
import { allocationResources, sriovOf } from './cluster.js';
import { getJson } from './kv.js';
import { buildPlacementRequest } from './request.js';
import type { PlacementRequest, Reservation } from './types.js';

export interface LedgerPlacementOptions {
  ipam?: Ipam | null;
  logger?: Logger;
  /** Frees the IP leases of fenced reservations when their node confirms the teardown (the node registry). */
  registry?: { onFencedFreed(hook: (nodeId: string, freed: Reservation[]) => void | Promise<void>): void };
}

export class LedgerPlacement implements PlacementPort {
  private readonly ipam: Ipam | null;
  private readonly log: Logger | undefined;

  constructor(
    private readonly cluster: ClusterState,
    opts: LedgerPlacementOptions = {},
  ) {
    this.ipam = opts.ipam ?? null;
    this.log = opts.logger?.child({ component: 'placement' });
    opts.registry?.onFencedFreed(async (nodeId, freed) => {
      const ids = new Set(freed.map((r) => r.allocId));
      for (const r of freed) {
        for (const owner of r.ipOwners ?? []) {
          // leases follow their owner: one another reservation holds (a migrated replica's) is not freed here
          if (this.cluster.leaseHeld(owner, ids)) this.log?.info({ nodeId, owner }, 'lease kept: another allocation holds it');
          else await this.ipam?.release(owner);
        }
      }
      this.log?.info({ nodeId, allocIds: freed.map((r) => r.allocId) }, 'fenced reservations and their IP leases freed');
    });
  }

  async placeReplica(input: PlaceReplicaInput): Promise<Allocation> {
    const { vnf, replica, allocId } = input;
    const others = vnf.replicas.filter((r) => r.index !== replica && r.nodeId).map((r) => r.nodeId!);
    const req = buildPlacementRequest({
      tenantId: vnf.tenantId,
      vnfId: vnf.id,
      replica,
      descriptor: vnf.descriptor,
      otherReplicaNodeIds: others,
      excludeNodeIds: input.avoidNodeIds ?? [],
      ...(input.onlyNodeId !== undefined ? { onlyNodeId: input.onlyNodeId } : {}),
    });
    const from = input.migrateFrom;
    const r = await this.cluster.schedule(req, allocId, (d, q) => (from ? migrationTarget(from, allocId, d, q, input.migrationGroup, input.migrationVm) : this.allocationFor(vnf, allocId, d, q)));
    if (!r.ok) throw new UnschedulableError(r.explanation.message, r.explanation);
    this.log?.info(
      { tenantId: vnf.tenantId, vnfId: vnf.id, nodeId: r.decision.nodeId, allocId, numaAligned: r.decision.assignment.numaAligned, attempts: r.attempts },
      r.alreadyCommitted ? 'allocation found committed' : 'allocation committed',
    );
    return r.allocation;
  }

  async findAllocation(allocId: string): Promise<Allocation | null> {
    const found = this.cluster.findReservation(allocId);
    if (!found) return null;
    return (await getJson<Allocation>(this.cluster.buckets.allocs, allocKey(found.nodeId, allocId)))?.value ?? null;
  }

  async releaseAllocation(alloc: Allocation, opts: { confirmed?: boolean; keepLeases?: boolean } = {}): Promise<void> {
    const res = this.cluster.findReservation(alloc.allocId)?.reservation;
    // keepLeases: a live migration's other end holds the addresses (they moved with the guest, or stay with it)
    const r = await this.cluster.release(alloc.allocId, { nodeId: alloc.nodeId, ...(opts.confirmed === false ? { fence: true } : {}), ...(opts.keepLeases ? { leasesMoved: true } : {}) });
    if (r.fenced || opts.keepLeases) return; // leases stay held until the node confirms (onFencedFreed)
    if (this.ipam) {
      const owners = new Set([...(res?.ipOwners ?? []), ...(alloc.leaseOwners ?? []), ...alloc.interfaces.filter((i) => i.network).map((i) => `${alloc.allocId}.${i.name}`)]);
      for (const o of owners) {
        const freed = await this.ipam.release(o);
        this.log?.debug({ owner: o, freed: freed.map((l) => l.cidr) }, 'addresses released');
      }
    }
  }

  async nodeReady(nodeId: string): Promise<boolean> {
    return this.cluster.node(nodeId)?.health === 'Ready';
  }

  async allocationLive(nodeId: string, allocId: string): Promise<boolean> {
    const view = this.cluster.node(nodeId);
    if (view?.health !== 'Ready') return false;
    const found = this.cluster.findReservation(allocId);
    if (found) return found.nodeId === nodeId && found.reservation.epoch >= view.epoch;
    // no reservation: freed when its node came back at a newer epoch (the record may still be there), or never made
    const rec = await getJson<Allocation>(this.cluster.buckets.allocs, allocKey(nodeId, allocId));
    return rec !== null && rec.value.epoch >= view.epoch;
  }

  private async allocationFor(vnf: Vnf, allocId: string, d: Decision, req: PlacementRequest): Promise<Allocation> {
    const desc = vnf.descriptor;
    const interfaces: AllocInterface[] = [];
    const leased: string[] = [];
    try {
      for (const i of desc.interfaces ?? []) {
        const mac = i.mac ? i.mac.toLowerCase() : localMac(createHash('sha256').update(`${allocId}/${i.name}`).digest());
        // where the network lives on the node: its bridge (tap), its parent link (macvtap), its MTU
        const net = i.network ? this.ipam?.networks().find((n) => n.config.name === i.network)?.config : undefined;
        const base: { name: string; mac: string; network?: string; ips?: string[]; gateway?: string; mtuBytes?: number } = { name: i.name, mac };
        if (i.network) {
          base.network = i.network;
          if (this.ipam) {
            const owner = `${allocId}.${i.name}`;
            const lease = await this.ipam.allocate(i.network, owner, { nodeId: d.nodeId, epoch: d.epoch });
            leased.push(owner);
            this.log?.debug({ owner, address: lease.cidr, nodeId: d.nodeId }, 'address leased');
            base.ips = [lease.cidr];
            if (lease.gateway) base.gateway = lease.gateway;
          }
        }
        const mtuBytes = i.mtuBytes ?? net?.mtuBytes;
        if (mtuBytes) base.mtuBytes = mtuBytes;
        interfaces.push(allocInterface(i, base, net, d));
      }
    } catch (err) {
      for (const o of leased) await this.ipam?.release(o).catch((e: unknown) => this.log?.warn({ err: e, owner: o }, 'lease rollback failed'));
      throw err;
    }
    return {
      allocId,
      nodeId: d.nodeId,
      epoch: d.epoch,
      tenantId: vnf.tenantId,
      vnfId: vnf.id,
      vnfName: vnf.name,
      replica: req.replica,
      resources: allocationResources(req, d),
      image: desc.image,
      ...(desc.command ? { command: desc.command } : {}),
      ...(desc.args ? { args: desc.args } : {}),
      ...(desc.env ? { env: desc.env } : {}),
      interfaces,
      ...(desc.routes ? { routes: desc.routes } : {}),
      ...(desc.onPartition ? { onPartition: desc.onPartition } : {}),
      desired: 'running',
      // a replica placed while the VNF is OPERATEd STOPPED (scale-out, heal) gets its VM and NICs, not a running container
      ...(vnf.operationalState === 'STOPPED' ? { operationalState: 'STOPPED' as const } : {}),
      createdAt: new Date().toISOString(),
    };
  }
}

/**
 * The destination allocation of a live migration: the source's interfaces (MACs, addresses, bridges: the guest keeps
 * them), image and command, on the new node's resources; the leases stay with the source's owners.
 */
function migrationTarget(
  from: Allocation,
  allocId: string,
  d: Decision,
  req: PlacementRequest,
  group?: MigrationGroupMember[],
  vm?: MigrationVmLayout,
): Allocation {
  if (from.interfaces.some((i) => i.type === 'sriov' || i.type === 'macvtap')) throw new InternalError(`allocation ${from.allocId} has VFIO/macvtap NICs: it cannot migrate`);
  const owners = from.leaseOwners ?? from.interfaces.filter((i) => i.network && (i.ips?.length ?? 0) > 0).map((i) => `${from.allocId}.${i.name}`);
  const { migration: _m, leaseOwners: _l, ...rest } = from;
  return {
    ...rest,
    allocId,
    nodeId: d.nodeId,
    epoch: d.epoch,
    resources: allocationResources(req, d),
    desired: 'running',
    migration: { fromNodeId: from.nodeId, fromAllocId: from.allocId, ...(group && group.length > 1 ? { group } : {}), ...(vm ? { vm } : {}) },
    ...(owners.length ? { leaseOwners: owners } : {}),
    createdAt: new Date().toISOString(),
  };
}

/** The type-specific part of one allocation interface (the node decides sockets, bridges and VLANs of vhost-user). */
function allocInterface(
  i: VnfdInterface,
  base: { name: string; mac: string; network?: string; ips?: string[]; gateway?: string; mtuBytes?: number },
  net: NetworkConfig | undefined,
  d: Decision,
): AllocInterface {
  switch (i.type) {
    case 'tap':
      return { ...base, type: 'tap', ...(net?.bridge ? { bridge: net.bridge } : {}) };
    case 'macvtap': {
      const parent = i.parent ?? net?.parent;
      return { ...base, type: 'macvtap', ...(parent ? { parent } : {}) };
    }
    case 'sriov': {
      const vf = d.assignment.vfs.find((v) => v.interface === i.name);
      if (!vf) throw new InternalError(`placement assigned no VF to SR-IOV interface ${i.name}`);
      const sriov: SriovReservation = sriovOf(vf);
      if (i.vlan !== undefined) sriov.vlan = i.vlan;
      if (i.vlanQos !== undefined) sriov.vlanQos = i.vlanQos;
      if (i.spoofchk !== undefined) sriov.spoofchk = i.spoofchk;
      if (i.trust !== undefined) sriov.trust = i.trust;
      return { ...base, type: 'sriov', sriov };
    }
    case 'vhostuser':
      return { ...base, type: 'vhostuser', queues: i.queues ?? 1, ...(i.dataplane ? { dataplane: i.dataplane } : {}) };
  }
}
