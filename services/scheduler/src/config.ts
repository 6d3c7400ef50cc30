/**
 * Scheduler configuration: parsed once at start from the environment and an optional YAML/JSON file
 * (`EDGENFV_CONFIG`), closed schema, every issue reported together, then frozen.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { InvalidArgumentError, type FieldIssue, type NetworkConfig } from '@edgenfv/contracts';

export interface SchedulerConfig {
  instanceId: string;
  nats: { servers: string[]; user?: string; pass?: string; token?: string; credsFile?: string; inboxPrefix?: string };
  /** Issues tenants' NATS credentials (docs/security.md): a JSON file (0600) with the issuer keys; absent: no issuing. */
  credentials?: { issuerFile: string };
  /** JetStream replicas of the state buckets: 1 on one machine, 3 or 5 in a NATS cluster. */
  kvReplicas: number;
  networks: NetworkConfig[];
  heartbeatGraceMs: number;
  leaderLeaseTtlMs: number;
  startTimeoutMs: number;
  stopTimeoutMs: number;
  /** Terminated VNFs and ended op occurrences are kept this long, then purged. */
  retentionMs: number;
  /** Bound of each state bucket on disk (bytes); a write past it fails instead of filling the disk. */
  bucketMaxBytes: number;
  /** Bound of the notifications stream on disk (bytes; the oldest go first). */
  eventsMaxBytes: number;
  /** null: no /metrics endpoint. */
  metrics: { host: string; port: number } | null;
  logLevel: string;
}

const KEYS = new Set([
  'instanceId',
  'nats',
  'kvReplicas',
  'networks',
  'heartbeatGraceMs',
  'leaderLeaseTtlMs',
  'startTimeoutMs',
  'stopTimeoutMs',
  'retentionMs',
  'bucketMaxBytes',
  'eventsMaxBytes',
  'metrics',
  'logLevel',
  'credentials',
]);

export const DEFAULTS = {
  kvReplicas: 1,
  heartbeatGraceMs: 10_000,
  leaderLeaseTtlMs: 5_000,
  startTimeoutMs: 300_000,
  stopTimeoutMs: 60_000,
  retentionMs: 7 * 24 * 3600 * 1000,
  bucketMaxBytes: 256 * 1024 * 1024,
  eventsMaxBytes: 1024 * 1024 * 1024,
  metricsPort: 9464,
} as const;

function int(v: unknown, field: string, min: number, max: number, issues: FieldIssue[]): number | undefined {
  if (v === undefined) return undefined;
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    issues.push({ field, message: `must be an integer in ${min}..${max}` });
    return undefined;
  }
  return n;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, file = env.EDGENFV_CONFIG): Readonly<SchedulerConfig> {
  const issues: FieldIssue[] = [];
  let raw: Record<string, unknown> = {};
  if (file) {
    try {
      const parsed: unknown = parseYaml(readFileSync(file, 'utf8'));
      if (parsed !== null && parsed !== undefined) {
        if (typeof parsed !== 'object' || Array.isArray(parsed)) issues.push({ field: file, message: 'must be a mapping' });
        else raw = (parsed as Record<string, unknown>).scheduler !== undefined ? ((parsed as Record<string, unknown>).scheduler as Record<string, unknown>) : (parsed as Record<string, unknown>);
      }
    } catch (err) {
      issues.push({ field: file, message: `cannot be read: ${(err as Error).message}` });
    }
  }
  for (const k of Object.keys(raw)) if (!KEYS.has(k)) issues.push({ field: k, message: 'is not a known setting' });

  const natsRaw = (raw.nats ?? {}) as Record<string, unknown>;
  const servers = (env.EDGENFV_NATS_URL ?? (Array.isArray(natsRaw.servers) ? natsRaw.servers.join(',') : natsRaw.servers) ?? 'nats://127.0.0.1:4222') as string;
  const nats: SchedulerConfig['nats'] = { servers: String(servers).split(',').map((s) => s.trim()).filter(Boolean) };
  const user = env.EDGENFV_NATS_USER ?? (natsRaw.user as string | undefined);
  const pass = env.EDGENFV_NATS_PASS ?? (natsRaw.pass as string | undefined);
  const token = env.EDGENFV_NATS_TOKEN ?? (natsRaw.token as string | undefined);
  if (user !== undefined) nats.user = user;
  if (pass !== undefined) nats.pass = pass;
  if (token !== undefined) nats.token = token;
  const credsFile = env.EDGENFV_NATS_CREDS ?? (natsRaw.credsFile as string | undefined);
  if (credsFile !== undefined) nats.credsFile = credsFile;
  const inboxPrefix = env.EDGENFV_NATS_INBOX_PREFIX ?? (natsRaw.inboxPrefix as string | undefined);
  if (inboxPrefix !== undefined) {
    if (typeof inboxPrefix !== 'string' || !/^_INBOX[A-Za-z0-9_-]*$/.test(inboxPrefix)) issues.push({ field: 'nats.inboxPrefix', message: 'must be _INBOX followed by letters, digits, _ or -' });
    else nats.inboxPrefix = inboxPrefix;
  }
  for (const k of Object.keys(natsRaw)) {
    if (!['servers', 'user', 'pass', 'token', 'credsFile', 'inboxPrefix'].includes(k)) issues.push({ field: `nats.${k}`, message: 'is not a known setting' });
  }

  const networks = (raw.networks ?? []) as NetworkConfig[];
  if (!Array.isArray(networks)) issues.push({ field: 'networks', message: 'must be a list' });
  const seen = new Set<string>();
  (Array.isArray(networks) ? networks : []).forEach((n, i) => {
    if (!n || typeof n !== 'object' || typeof n.name !== 'string') issues.push({ field: `networks[${i}].name`, message: 'is required' });
    else if (seen.has(n.name)) issues.push({ field: `networks[${i}].name`, message: `duplicates "${n.name}"` });
    else seen.add(n.name);
    if (!n || typeof n.cidr !== 'string') issues.push({ field: `networks[${i}].cidr`, message: 'is required' });
  });

  const metricsOff = env.EDGENFV_SCHEDULER_METRICS_PORT === 'off' || raw.metrics === null;
  const metricsPort = metricsOff ? undefined : int(env.EDGENFV_SCHEDULER_METRICS_PORT ?? (raw.metrics as { port?: unknown } | undefined)?.port, 'metrics.port', 0, 65535, issues);
  const cfg: SchedulerConfig = {
    instanceId: env.EDGENFV_INSTANCE_ID ?? (raw.instanceId as string | undefined) ?? `scheduler-${process.pid}`,
    nats,
    kvReplicas: int(env.EDGENFV_KV_REPLICAS ?? raw.kvReplicas, 'kvReplicas', 1, 5, issues) ?? DEFAULTS.kvReplicas,
    networks: Array.isArray(networks) ? networks : [],
    heartbeatGraceMs: int(env.EDGENFV_HEARTBEAT_GRACE_MS ?? raw.heartbeatGraceMs, 'heartbeatGraceMs', 100, 3_600_000, issues) ?? DEFAULTS.heartbeatGraceMs,
    leaderLeaseTtlMs: int(raw.leaderLeaseTtlMs, 'leaderLeaseTtlMs', 500, 600_000, issues) ?? DEFAULTS.leaderLeaseTtlMs,
    startTimeoutMs: int(env.EDGENFV_START_TIMEOUT_MS ?? raw.startTimeoutMs, 'startTimeoutMs', 100, 21_600_000, issues) ?? DEFAULTS.startTimeoutMs,
    stopTimeoutMs: int(raw.stopTimeoutMs, 'stopTimeoutMs', 100, 3_600_000, issues) ?? DEFAULTS.stopTimeoutMs,
    retentionMs: int(env.EDGENFV_RETENTION_MS ?? raw.retentionMs, 'retentionMs', 1000, 365 * 24 * 3600 * 1000, issues) ?? DEFAULTS.retentionMs,
    bucketMaxBytes: int(raw.bucketMaxBytes, 'bucketMaxBytes', 1024 * 1024, Number.MAX_SAFE_INTEGER, issues) ?? DEFAULTS.bucketMaxBytes,
    eventsMaxBytes: int(raw.eventsMaxBytes, 'eventsMaxBytes', 1024 * 1024, Number.MAX_SAFE_INTEGER, issues) ?? DEFAULTS.eventsMaxBytes,
    metrics: metricsOff ? null : { host: '127.0.0.1', port: metricsPort ?? DEFAULTS.metricsPort },
    logLevel: env.EDGENFV_LOG_LEVEL ?? (raw.logLevel as string | undefined) ?? 'info',
  };
  const credRaw = raw.credentials as { issuerFile?: unknown } | undefined;
  const issuerFile = env.EDGENFV_CREDENTIALS_ISSUER ?? credRaw?.issuerFile;
  if (credRaw !== undefined && (typeof credRaw !== 'object' || credRaw === null || Object.keys(credRaw).some((k) => k !== 'issuerFile'))) {
    issues.push({ field: 'credentials', message: 'must be {issuerFile: <path>}' });
  }
  if (issuerFile !== undefined) {
    if (typeof issuerFile !== 'string' || !issuerFile.startsWith('/')) issues.push({ field: 'credentials.issuerFile', message: 'must be an absolute path' });
    else cfg.credentials = { issuerFile };
  }
  if (issues.length) throw new InvalidArgumentError(issues);
  return Object.freeze(cfg);
}
