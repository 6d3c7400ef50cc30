/**
 * `node services/dashboard/dist/src/main.js`: reads config, builds logger and registry, connects to NATS,
 * calls buildApp and listens. Config (env): EDGENFV_HOME (connect.json), EDGENFV_NATS_URL (overrides its servers),
 * EDGENFV_NATS_USER / EDGENFV_NATS_PASS / EDGENFV_NATS_TOKEN (override its credentials),
 * EDGENFV_DASHBOARD_HOST (127.0.0.1), EDGENFV_DASHBOARD_PORT (8080), EDGENFV_DASHBOARD_TOKEN or EDGENFV_DASHBOARD_TOKEN_FILE (the operator's
 * token; without it every /api request is refused), EDGENFV_DASHBOARD_ALLOWED_HOSTS (comma-separated names the page
 * may be reached by besides loopback), EDGENFV_DASHBOARD_RATE_LIMIT (requests/s per client, default 20),
 * EDGENFV_METRICS_URLS (comma-separated /metrics of the services, for the histograms).
 */
import { readFileSync } from 'node:fs';
import { connect } from 'nats';
import { loadConnectInfo, natsOptions } from '@edgenfv/api-client';
import { createLogger, createRegistry } from '@edgenfv/telemetry';
import { buildApp } from './app.js';

export interface DashboardConfig {
  host: string;
  port: number;
  operatorToken?: string;
  allowedHosts: string[];
  rateLimitPerSec: number;
  metricsUrls: string[];
}

const list = (v: string | undefined): string[] => (v ?? '').split(',').map((s) => s.trim()).filter(Boolean);

export function loadDashboardConfig(env: NodeJS.ProcessEnv): Readonly<DashboardConfig> {
  const port = Number(env.EDGENFV_DASHBOARD_PORT ?? 8080);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`EDGENFV_DASHBOARD_PORT must be a port number 0-65535 (got ${JSON.stringify(env.EDGENFV_DASHBOARD_PORT)})`);
  }
  const rate = Number(env.EDGENFV_DASHBOARD_RATE_LIMIT ?? 20);
  if (!Number.isFinite(rate) || rate <= 0) {
    throw new Error(`EDGENFV_DASHBOARD_RATE_LIMIT must be a positive number of requests per second (got ${JSON.stringify(env.EDGENFV_DASHBOARD_RATE_LIMIT)})`);
  }
  const host = env.EDGENFV_DASHBOARD_HOST ?? '127.0.0.1';
  // the appliance names a 0600 file instead of putting the token in the environment (docs/security.md)
  const token = env.EDGENFV_DASHBOARD_TOKEN ?? (env.EDGENFV_DASHBOARD_TOKEN_FILE ? readFileSync(env.EDGENFV_DASHBOARD_TOKEN_FILE, 'utf8').trim() : undefined);
  return Object.freeze({
    host,
    port,
    ...(token ? { operatorToken: token } : {}),
    allowedHosts: [...list(env.EDGENFV_DASHBOARD_ALLOWED_HOSTS), ...(host === '0.0.0.0' || host === '::' ? [] : [host])],
    rateLimitPerSec: rate,
    metricsUrls: list(env.EDGENFV_METRICS_URLS),
  });
}

async function main(): Promise<void> {
  const logger = createLogger({ service: 'dashboard' });
  const cfg = loadDashboardConfig(process.env);
  const env = process.env;
  const info = loadConnectInfo({
    ...(env.EDGENFV_NATS_URL ? { server: env.EDGENFV_NATS_URL } : {}),
    ...(env.EDGENFV_NATS_USER !== undefined ? { user: env.EDGENFV_NATS_USER } : {}),
    ...(env.EDGENFV_NATS_PASS !== undefined ? { pass: env.EDGENFV_NATS_PASS } : {}),
    ...(env.EDGENFV_NATS_TOKEN !== undefined ? { token: env.EDGENFV_NATS_TOKEN } : {}),
  });
  const nc = await connect(natsOptions(info, { name: 'edgenfv-dashboard', reconnect: true }));
  const registry = createRegistry('dashboard');
  const app = await buildApp({
    nc,
    logger,
    registry,
    allowedHosts: cfg.allowedHosts,
    rateLimitPerSec: cfg.rateLimitPerSec,
    metricsUrls: cfg.metricsUrls,
    ...(cfg.operatorToken ? { operatorToken: cfg.operatorToken } : {}),
  });
  try {
    await app.listen({ host: cfg.host, port: cfg.port });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      logger.error(`port ${cfg.port} on ${cfg.host} is taken: set EDGENFV_DASHBOARD_PORT to a free one`);
    } else {
      logger.error({ err }, 'dashboard failed to listen');
    }
    await nc.close();
    process.exit(1);
  }
  if (!cfg.operatorToken) logger.warn('no EDGENFV_DASHBOARD_TOKEN: every /api request is refused');
  const stop = async (): Promise<void> => {
    await app.close();
    await nc.drain();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
