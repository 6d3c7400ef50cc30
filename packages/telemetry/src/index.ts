/**
 * Logger and metrics registry factories. Loggers are passed in, never imported as globals;
 * each service builds its own prom-client Registry (no global default registry).
 */
import { pino, type Logger, type LoggerOptions, type DestinationStream } from 'pino';
import { Registry, collectDefaultMetrics } from 'prom-client';

export type { Logger } from 'pino';

export interface LoggerConfig {
  service: string;
  level?: string;
  /** Where log lines go; default stdout. Tests pass a stream to assert on parsed lines. */
  destination?: DestinationStream;
}

export const REDACT_PATHS = ['pass', 'password', 'token', '*.pass', '*.password', '*.token', 'creds'];

export function createLogger(cfg: LoggerConfig): Logger {
  const opts: LoggerOptions = {
    level: cfg.level ?? process.env.EDGENFV_LOG_LEVEL ?? 'info',
    base: { service: cfg.service, pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return cfg.destination ? pino(opts, cfg.destination) : pino(opts);
}

/** A logger that writes nothing (tests that do not look at logs). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/**
 * prom-client's default metrics include gauges named `..._total` (active handles/requests/resources), which
 * `promtool check metrics` rejects ("non-counter metrics should not have _total suffix"). Their un-suffixed
 * siblings (`nodejs_active_handles{type}` ...) carry the same information, so these three are dropped.
 */
export const PROMTOOL_REJECTED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];
const DEFAULT_PREFIX = 'edgenfv_';

export function createRegistry(service: string, opts: { defaultMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  if (opts.defaultMetrics ?? true) {
    collectDefaultMetrics({ register: registry, prefix: DEFAULT_PREFIX });
    for (const name of PROMTOOL_REJECTED_DEFAULTS) registry.removeSingleMetric(`${DEFAULT_PREFIX}${name}`);
  }
  return registry;
}

export { Registry };

import { createServer, type Server } from 'node:http';

/** Serves `GET /metrics` (Prometheus text format) from a registry; resolves once listening. */
export async function serveMetrics(
  registry: Registry,
  opts: { host?: string; port: number },
): Promise<{ server: Server; url: string; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
      registry
        .metrics()
        .then((text) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(text);
        })
        .catch((err: unknown) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(String(err));
        });
      return;
    }
    res.writeHead(req.url === '/healthz' ? 200 : 404, { 'content-type': 'text/plain' });
    res.end(req.url === '/healthz' ? 'ok\n' : 'not found\n');
  });
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port;
  return {
    server,
    url: `http://${host}:${port}/metrics`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
