/**
 * The scheduler's HA core, wired for the API's app: every replica runs the node registry (answers registers,
 * follows heartbeats) and a ClusterState (serves reads); the replica holding the leader lease also declares lost
 * nodes and places. `onElected` fires after the registry is active and the cluster state is loaded, so the API's
 * work loop can resume in-flight operations at once (placement is idempotent per allocId: nothing is booked twice).
 */
import type { NatsConnection } from 'nats';
import type { Logger } from 'pino';
import { ClusterState, type ClusterStateOptions } from '../placement/cluster.js';
import { openSchedulerBuckets, type SchedulerBuckets } from '../placement/kv.js';
import { NodeRegistry, type NodeLostHook, type NodeRegistryOptions } from '../nodes/registry.js';
import { LeaderLease, openLeaderBucket } from './lease.js';

export interface SchedulerCoreOptions {
  nc: NatsConnection;
  candidateId: string;
  logger?: Logger;
  /** Lease TTL (default 5,000 ms): a dead leader is replaced within about this long. */
  leaseTtlMs?: number;
  registry?: Omit<NodeRegistryOptions, 'logger'>;
  cluster?: Omit<ClusterStateOptions, 'logger'>;
  replicas?: number;
  /** max_bytes of the node, ledger and allocation buckets. */
  bucketMaxBytes?: number;
  onElected?: (term: number) => void | Promise<void>;
  onDeposed?: (reason: string) => void | Promise<void>;
  onNodeLost?: NodeLostHook;
}

export class SchedulerCore {
  readonly buckets: SchedulerBuckets;
  readonly registry: NodeRegistry;
  readonly cluster: ClusterState;
  readonly lease: LeaderLease;

  private constructor(b: SchedulerBuckets, registry: NodeRegistry, cluster: ClusterState, lease: LeaderLease) {
    this.buckets = b;
    this.registry = registry;
    this.cluster = cluster;
    this.lease = lease;
  }

  static async create(o: SchedulerCoreOptions): Promise<SchedulerCore> {
    const js = o.nc.jetstream();
    const b = await openSchedulerBuckets(js, {
      ...(o.replicas === undefined ? {} : { replicas: o.replicas }),
      ...(o.bucketMaxBytes === undefined ? {} : { maxBytes: o.bucketMaxBytes }),
    });
    const leaderKv = await openLeaderBucket(js, { ttlMs: o.leaseTtlMs ?? 5000, replicas: o.replicas ?? 1 });
    const registry = new NodeRegistry(o.nc, b, { ...o.registry, ...(o.logger ? { logger: o.logger } : {}) });
    let core!: SchedulerCore;
    const cluster = new ClusterState(b, {
      nc: o.nc,
      canCommit: () => core?.lease.isLeader() ?? false,
      ...o.cluster,
      ...(o.logger ? { logger: o.logger } : {}),
    });
    if (o.onNodeLost) registry.onNodeLost(o.onNodeLost);
    const lease = new LeaderLease(leaderKv, {
      candidateId: o.candidateId,
      ttlMs: o.leaseTtlMs ?? 5000,
      ...(o.logger ? { logger: o.logger } : {}),
      onElected: async (term) => {
        await core.cluster.setActive(true);
        core.registry.setActive(true);
        await o.onElected?.(term);
      },
      onDeposed: async (reason) => {
        core.registry.setActive(false);
        await core.cluster.setActive(false);
        await o.onDeposed?.(reason);
      },
    });
    core = new SchedulerCore(b, registry, cluster, lease);
    return core;
  }

  /** Loads the cluster state, starts the registry, then campaigns for the lease. */
  async start(): Promise<void> {
    await this.cluster.setActive(false); // a follower until elected
    await this.cluster.start();
    await this.registry.start();
    await this.lease.start();
  }

  /** Steps down (if leader) and stops everything. */
  async stop(): Promise<void> {
    await this.lease.stop();
    await this.registry.stop();
    await this.cluster.stop();
  }

  isLeader(): boolean {
    return this.lease.isLeader();
  }
}
