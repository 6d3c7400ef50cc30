/**
 * `$EDGENFV_HOME/connect.json` (shared API.md, "The embedded appliance"): where the appliance's NATS is and the
 * operator credentials. Flags override the file; without a file, `--server` is required.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { InvalidArgumentError, type FieldIssue } from '@edgenfv/contracts';
import { credsAuthenticator, type ConnectionOptions } from 'nats';

export interface ConnectInfo {
  servers: string[];
  user?: string;
  pass?: string;
  token?: string;
  /** A NATS creds file's text (JWT + seed): the connect file of `edgenfv tenants credentials` (docs/security.md). */
  creds?: string;
  /** The inbox prefix these credentials may subscribe below (restricted principals). */
  inboxPrefix?: string;
  dashboardUrl?: string;
  /** The operator's dashboard token (a secret of its own, not the NATS password). */
  dashboardToken?: string;
  metricsUrls?: string[];
  /** Where it was read from, when it came from a file. */
  source?: string;
}

export interface ConnectOverrides {
  /** One URL or several separated by commas. */
  server?: string;
  user?: string;
  pass?: string;
  token?: string;
}

/** `$EDGENFV_HOME`, default `./.edgenfv` (relative to cwd). */
export function edgenfvHome(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string {
  return resolve(cwd, env.EDGENFV_HOME && env.EDGENFV_HOME.length > 0 ? env.EDGENFV_HOME : '.edgenfv');
}

/** `$EDGENFV_CONNECT` (a connect file of its own, e.g. a tenant's credentials), else `$EDGENFV_HOME/connect.json`. */
export function connectFilePath(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string {
  if (env.EDGENFV_CONNECT) return resolve(cwd, env.EDGENFV_CONNECT);
  return resolve(edgenfvHome(env, cwd), 'connect.json');
}

/** Parses the file's JSON text; unknown keys are kept out, known ones checked. */
export function parseConnectJson(text: string, source: string): ConnectInfo {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError([{ field: source, message: `not JSON: ${(err as Error).message}` }]);
  }
  const issues: FieldIssue[] = [];
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new InvalidArgumentError([{ field: source, message: 'must be a JSON object' }]);
  }
  const o = raw as Record<string, unknown>;
  const servers = o.servers;
  if (!Array.isArray(servers) || servers.length === 0 || !servers.every((s) => typeof s === 'string' && s.length > 0)) {
    issues.push({ field: `${source}: servers`, message: 'must be a non-empty array of NATS URLs' });
  }
  for (const k of ['user', 'pass', 'token', 'creds', 'inboxPrefix', 'dashboardUrl', 'dashboardToken'] as const) {
    if (o[k] !== undefined && typeof o[k] !== 'string') issues.push({ field: `${source}: ${k}`, message: 'must be a string' });
  }
  if (o.metricsUrls !== undefined && !(Array.isArray(o.metricsUrls) && o.metricsUrls.every((s) => typeof s === 'string'))) {
    issues.push({ field: `${source}: metricsUrls`, message: 'must be an array of URLs' });
  }
  if (issues.length > 0) throw new InvalidArgumentError(issues);
  const info: ConnectInfo = { servers: servers as string[], source };
  for (const k of ['user', 'pass', 'token', 'creds', 'inboxPrefix', 'dashboardUrl', 'dashboardToken'] as const) if (typeof o[k] === 'string') info[k] = o[k];
  if (Array.isArray(o.metricsUrls)) info.metricsUrls = o.metricsUrls as string[];
  return info;
}

/**
 * The connection to use: connect.json (when present) with the flags on top. A missing file is fine when
 * `--server` is given; otherwise the error says how to get one.
 */
export function loadConnectInfo(
  overrides: ConnectOverrides = {},
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
  readFile: (path: string) => string = (p) => readFileSync(p, 'utf8'),
): ConnectInfo {
  const path = connectFilePath(env, cwd);
  let info: ConnectInfo | undefined;
  try {
    info = parseConnectJson(readFile(path), path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    if (overrides.server === undefined) {
      throw new InvalidArgumentError([
        {
          field: '--server',
          message: `no ${path} (start the appliance with \`npm start\`, set EDGENFV_HOME, or pass --server nats://host:port)`,
        },
      ]);
    }
  }
  const out: ConnectInfo = info ?? { servers: [] };
  if (overrides.server !== undefined) {
    out.servers = overrides.server.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
    if (out.servers.length === 0) throw new InvalidArgumentError([{ field: '--server', message: 'must name at least one NATS URL' }]);
  }
  if (overrides.user !== undefined) out.user = overrides.user;
  if (overrides.pass !== undefined) out.pass = overrides.pass;
  if (overrides.token !== undefined) out.token = overrides.token;
  return out;
}

/** nats.js connect options for a ConnectInfo. */
export function natsOptions(info: ConnectInfo, o: { name: string; reconnect?: boolean }): ConnectionOptions {
  // A CLI fails fast (no reconnect loop); a long-running service keeps reconnecting.
  const opts: ConnectionOptions = { servers: info.servers, name: o.name, maxReconnectAttempts: o.reconnect ? -1 : 0 };
  if (info.user !== undefined) opts.user = info.user;
  if (info.pass !== undefined) opts.pass = info.pass;
  if (info.token !== undefined) opts.token = info.token;
  if (info.creds !== undefined) opts.authenticator = credsAuthenticator(new TextEncoder().encode(info.creds));
  if (info.inboxPrefix !== undefined) opts.inboxPrefix = info.inboxPrefix;
  return opts;
}
