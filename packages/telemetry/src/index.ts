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

export function createRegistry(service: string, opts: { defaultMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'edgenfv_process_' });
  return registry;
}

export { Registry };
