/**
 * Wires the scheduler from injected parts: the state store, the message API server (every replica serves), and
 * the operations engine (the leader only). A test builds the same app with its own NATS connection and parts.
 */
import { randomBytes } from 'node:crypto';
import type { NatsConnection } from 'nats';
import type { Registry } from 'prom-client';
import type { NetworkConfig } from '@edgenfv/contracts';
import type { Logger } from '@edgenfv/telemetry';
import { Ipam } from '@edgenfv/netplugins/internal/ipam';
import { ApiServer } from './api/server.js';
import type { ApiContext } from './api/context.js';
import { Store } from './state/store.js';
import { Notifier } from './ops/notifier.js';
import { OperationsEngine, type EngineOptions } from './ops/engine.js';
import { KvPlacement } from './ops/kv-placement.js';
import type { PlacementPort } from './ops/placement-port.js';
import { drainNode } from './ops/drain.js';

export interface SchedulerDeps {
  nc: NatsConnection;
  logger: Logger;
  registry: Registry;
  networks?: readonly NetworkConfig[];
  kvReplicas?: number;
  engine?: EngineOptions;
  /** Replaces the placement over KV (tests). */
  placement?: PlacementPort;
  /** false: this replica never runs the operations engine (a read/API-only replica). Default true. */
  runEngine?: boolean;
}

export interface SchedulerApp {
  readonly store: Store;
  readonly api: ApiServer;
  readonly engine: OperationsEngine;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function newId(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

export async function buildApp(deps: SchedulerDeps): Promise<SchedulerApp> {
  const logger = deps.logger.child({ component: 'scheduler' });
  const store = await Store.open(deps.nc, { replicas: deps.kvReplicas ?? 1 });
  const notifier = new Notifier(store.js, logger);
  const networks = deps.networks ?? [];
  const ipam = networks.length ? await Ipam.open(deps.nc, networks, { replicas: deps.kvReplicas ?? 1 }) : null;
  const placement = deps.placement ?? new KvPlacement(store, ipam, logger);
  const engine = new OperationsEngine({ store, notifier, logger, placement, ...(deps.engine ? { options: deps.engine } : {}) });
  const ctx: ApiContext = {
    store,
    logger,
    notifier,
    networks: new Map(networks.map((n) => [n.name, n])),
    now: () => new Date(),
    newId,
    onOpOccCreated: (op) => engine.enqueue(op),
  };
  const api = new ApiServer(deps.nc, ctx, { drain: (nodeId) => drainNode(ctx, nodeId) }, deps.registry);
  return {
    store,
    api,
    engine,
    async start() {
      api.start();
      if (deps.runEngine ?? true) await engine.start();
    },
    async stop() {
      await api.stop();
      await engine.stop();
    },
  };
}
