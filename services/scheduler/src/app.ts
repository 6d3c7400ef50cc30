/**
 * Wires the scheduler from injected parts: the state store, the message API server (every replica serves), the
 * HA core (node registry and cluster state on every replica, a leader lease), and the operations engine, which
 * runs on the leader only: it starts when this replica is elected and stops when it is deposed. A test builds
 * the same app with its own NATS connection and parts.
 */
import { randomBytes } from 'node:crypto';
import type { NatsConnection } from 'nats';
import type { Registry } from 'prom-client';
import type { NetworkConfig } from '@edgenfv/contracts';
import type { Logger } from '@edgenfv/telemetry';
import { Ipam } from '@edgenfv/netplugins/internal/ipam';
import { ApiServer } from './api/server.js';
import type { ApiContext } from './api/context.js';
import { Store, type StoreLimits } from './state/store.js';
import { Notifier } from './ops/notifier.js';
import { OperationsEngine, type EngineOptions } from './ops/engine.js';
import { siteMetrics } from './site-metrics.js';
import type { PlacementPort } from './ops/placement-port.js';
import { healIfIdle, healLostNode } from './ops/heal.js';
import { natsNodeRequest } from './ops/migrate.js';
import { SchedulerCore } from './leader/core.js';
import { LedgerPlacement } from './placement/port.js';
import { ledgerMetrics, placementMetrics } from './placement/metrics.js';
import { nodeMetrics } from './nodes/metrics.js';
import { watchMetrics } from './state/follow.js';
import { CredentialIssuer } from './api/credentials.js';
import type { IssuerConfig } from '@edgenfv/nats-launcher/internal/auth';

export interface SchedulerDeps {
  nc: NatsConnection;
  logger: Logger;
  registry: Registry;
  /** This replica's name in the leader election. */
  instanceId?: string;
  networks?: readonly NetworkConfig[];
  kvReplicas?: number;
  engine?: EngineOptions;
  /** Disk bounds of the state buckets and the notifications stream. */
  limits?: StoreLimits;
  heartbeatGraceMs?: number;
  leaderLeaseTtlMs?: number;
  /** Issues tenants' NATS credentials (JWT auth; api/credentials.ts): the issuer keys and the servers to hand out. */
  issuer?: { config: IssuerConfig; servers: string[] };
  /** Replaces the placement over the cluster state (tests). */
  placement?: PlacementPort;
}

export interface SchedulerApp {
  readonly store: Store;
  readonly api: ApiServer;
  readonly engine: OperationsEngine;
  readonly core: SchedulerCore;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function newId(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

export async function buildApp(deps: SchedulerDeps): Promise<SchedulerApp> {
  const logger = deps.logger.child({ component: 'scheduler' });
  const replicas = deps.kvReplicas ?? 1;
  const store = await Store.open(deps.nc, { replicas, ...(deps.limits ? { limits: deps.limits } : {}) });
  const notifier = new Notifier(store.js, logger);
  const networks = deps.networks ?? [];
  const ipam = networks.length ? await Ipam.open(deps.nc, networks, { replicas }) : null;
  const decisions = placementMetrics(deps.registry);
  const watchReport = watchMetrics(deps.registry);

  // The engine is created before the core so that the core's election hooks can start and stop it.
  let engine!: OperationsEngine;
  let ctx!: ApiContext;
  const core = await SchedulerCore.create({
    nc: deps.nc,
    candidateId: deps.instanceId ?? newId('scheduler'),
    logger,
    replicas,
    ...(deps.limits?.bucketMaxBytes !== undefined ? { bucketMaxBytes: deps.limits.bucketMaxBytes } : {}),
    ...(deps.leaderLeaseTtlMs !== undefined ? { leaseTtlMs: deps.leaderLeaseTtlMs } : {}),
    registry: { watchReport, ...(deps.heartbeatGraceMs !== undefined ? { graceMs: deps.heartbeatGraceMs } : {}) },
    cluster: { onDecision: decisions.onDecision, watchReport },
    onElected: async (term) => {
      logger.info({ term }, 'elected leader: operations engine starting');
      await engine.start();
    },
    onDeposed: async (reason) => {
      logger.warn({ reason }, 'no longer leader: operations engine stopping');
      await engine.stop();
      await credentials?.stop();
    },
    onNodeLost: (ev) => healLostNode(ctx, ev),
  });
  nodeMetrics(deps.registry, core.registry);
  ledgerMetrics(deps.registry, () => core.cluster);
  const site = siteMetrics(deps.registry, { nc: deps.nc, openOps: () => engine.openOps(), cluster: () => core.cluster, nodes: core.registry });
  const placement = deps.placement ?? new LedgerPlacement(core.cluster, { ipam, registry: core.registry, logger });
  engine = new OperationsEngine({
    store,
    notifier,
    logger,
    placement,
    ...(deps.engine ? { options: deps.engine } : {}),
    onIdleVnf: (vnf) => healIfIdle(ctx, vnf, 'replicas lost (with their node, or their guest agent restarted)'),
    watchReport,
    onOpEnded: site.opEnded,
    nodeRequest: natsNodeRequest(deps.nc),
  });
  const credentials = deps.issuer ? new CredentialIssuer(deps.issuer.config, deps.issuer.servers, store.credentials, logger) : undefined;
  ctx = {
    store,
    logger,
    notifier,
    networks: new Map(networks.map((n) => [n.name, n])),
    now: () => new Date(),
    newId,
    onOpOccCreated: (op) => engine.enqueue(op),
    nodes: core,
    ...(credentials ? { credentials } : {}),
    nc: deps.nc,
  };
  const api = new ApiServer(deps.nc, ctx, deps.registry);
  return {
    store,
    api,
    engine,
    core,
    async start() {
      await credentials?.start();
      api.start();
      await core.start();
    },
    async stop() {
      await api.stop();
      await core.stop();
      await engine.stop();
      await credentials?.stop();
    },
  };
}
