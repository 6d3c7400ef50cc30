/**
 * The seam between the operations engine and placement: choose a node for one replica and commit the allocation
 * (CAS), or say why nothing fits. Implemented by the placement module over the node registry's views.
 */
import type { Allocation, MigrationGroupMember, MigrationVmLayout, Vnf } from '@edgenfv/contracts';

export interface PlaceReplicaInput {
  tenantId: string;
  vnf: Vnf;
  replica: number;
  allocId: string;
  /** Nodes not to use (drain: the node being drained; heal: the node that failed). */
  avoidNodeIds?: readonly string[];
  /**
   * Live migration: the allocation the replica runs as now. The new one is its destination: same MACs and addresses
   * (the guest keeps them; the leases stay under the source's owners, carried as `leaseOwners`), `migration` set.
   */
  migrateFrom?: Allocation;
  /** Live migration of a tenant VM holding several replicas: every member (source -> destination allocation). */
  migrationGroup?: MigrationGroupMember[];
  /** Live migration: the source VM as its node agent reported it at `check`, copied unread into `migration.vm`. */
  migrationVm?: MigrationVmLayout;
  /** The only node the replica may go to (the other members of its migrating tenant VM are placed there). */
  onlyNodeId?: string;
}

export interface PlacementPort {
  /** Commits and returns the allocation; throws UnschedulableError (details: the explanation) when nothing fits. */
  placeReplica(input: PlaceReplicaInput): Promise<Allocation>;
  /** Looks up an allocation by id on any node (resuming an operation a previous leader began). */
  findAllocation(allocId: string): Promise<Allocation | null>;
  /**
   * Gives back what the allocation held (ledger entry, IP leases); idempotent. Unless the node `confirmed` the
   * sandbox is gone (it reported the replica STOPPED), the reservation is fenced instead: its CPUs, VFs and IP
   * leases stay booked until the node's heartbeat or register shows it no longer runs it.
   */
  releaseAllocation(alloc: Allocation, opts?: { confirmed?: boolean; keepLeases?: boolean }): Promise<void>;
  /** Whether the node is Ready (a NotReady node's allocations are released without waiting for it). */
  nodeReady(nodeId: string): Promise<boolean>;
  /**
   * Whether the node can still run this allocation: Ready, and in the epoch the allocation was made in. A node
   * declared lost since then is fenced: back already or not, it never runs an allocation of an older epoch.
   */
  allocationLive(nodeId: string, allocId: string): Promise<boolean>;
}
