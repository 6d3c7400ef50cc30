/** Scheduler process: reads config, builds logger and metrics registry, connects to NATS, builds the app, serves. */
import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator } from 'nats';
import { createLogger, createRegistry, serveMetrics } from '@edgenfv/telemetry';
import { loadConfig } from './config.js';
import type { IssuerConfig } from '@edgenfv/nats-launcher/internal/auth';
import { buildApp } from './app.js';

async function main(): Promise<void> {
  const cfg = loadConfig();
  const logger = createLogger({ service: 'scheduler', level: cfg.logLevel });
  const registry = createRegistry('scheduler');
  const nc = await connect({
    servers: cfg.nats.servers,
    name: cfg.instanceId,
    maxReconnectAttempts: -1,
    noAsyncTraces: true,
    ...(cfg.nats.user !== undefined ? { user: cfg.nats.user, pass: cfg.nats.pass ?? '' } : {}),
    ...(cfg.nats.token !== undefined ? { token: cfg.nats.token } : {}),
    ...(cfg.nats.credsFile !== undefined ? { authenticator: credsAuthenticator(readFileSync(cfg.nats.credsFile)) } : {}),
    ...(cfg.nats.inboxPrefix !== undefined ? { inboxPrefix: cfg.nats.inboxPrefix } : {}),
  });
  const app = await buildApp({
    nc,
    logger,
    registry,
    instanceId: cfg.instanceId,
    networks: cfg.networks,
    kvReplicas: cfg.kvReplicas,
    heartbeatGraceMs: cfg.heartbeatGraceMs,
    leaderLeaseTtlMs: cfg.leaderLeaseTtlMs,
    engine: { startTimeoutMs: cfg.startTimeoutMs, stopTimeoutMs: cfg.stopTimeoutMs, retentionMs: cfg.retentionMs },
    limits: { bucketMaxBytes: cfg.bucketMaxBytes, eventsMaxBytes: cfg.eventsMaxBytes },
    ...(cfg.credentials ? { issuer: { config: JSON.parse(readFileSync(cfg.credentials.issuerFile, 'utf8')) as IssuerConfig, servers: cfg.nats.servers } } : {}),
  });
  await app.start();
  const metrics = cfg.metrics ? await serveMetrics(registry, cfg.metrics) : null;
  logger.info({ servers: cfg.nats.servers, metrics: metrics?.url }, 'scheduler serving');
  const shutdown = async (signal: string): Promise<void> => {
    logger.info({ signal }, 'scheduler stopping');
    await app.stop();
    await metrics?.close();
    await nc.drain();
    process.exit(0);
  };
  process.once('SIGINT', () => void shutdown('SIGINT'));
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
}

main().catch((err: unknown) => {
  const e = err as { issues?: { field: string; message: string }[]; message?: string };
  if (e.issues) for (const i of e.issues) console.error(`scheduler config: ${i.field}: ${i.message}`);
  else console.error('scheduler failed:', err);
  process.exit(1);
});
