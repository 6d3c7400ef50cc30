/**
 * The appliance's NATS principals (docs/security.md): the trust (operator, system and application accounts) and a
 * creds file per service, made at the first start under `$EDGENFV_HOME/nats-auth/` (0700, files 0600) and kept,
 * so connect.json's operator credentials stay the same across restarts. The scheduler also gets the issuer keys,
 * with which it issues and revokes tenants' credentials while everything runs.
 *
 * Service credentials (scheduler, node agent, dashboard) are rotated at every start: each gets a new user that
 * expires after `serviceCredsTtlS` (nats-server refuses it then), and the user it replaces is revoked — its public
 * key goes into issuer.json's `revoked`, which the scheduler puts into the account JWT it pushes at its start
 * (docs/security.md). Revocations older than the lifetime are dropped: those users have expired anyway.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { isDnsLabel } from '@edgenfv/contracts';
import { createTrust, credsClaims, inboxPrefix, issueRole, issuerConfig, type IssuerConfig, type Role, type TrustBundle } from '@edgenfv/nats-launcher';

/** Lifetime of a service's credentials (they are re-issued at every start well before): 365 days. */
export const SERVICE_CREDS_TTL_S = 365 * 24 * 3600;

export interface Principal {
  credsFile: string;
  inboxPrefix: string;
}

export interface Principals {
  trust: TrustBundle;
  operator: Principal;
  scheduler: Principal;
  node: Principal;
  nodeId: string;
  dashboard: Principal;
  /** The scheduler's issuer keys (JSON, 0600). */
  issuerFile: string;
}

/** A secret file: 0600 from its first byte (and after, should it have existed with looser bits). */
export function writePrivate(path: string, text: string): void {
  writeFileSync(path, text, { mode: 0o600 });
  chmodSync(path, 0o600);
}

/** The node agent's own default (services/node-agent config.ts): the host name as a DNS label. */
export function defaultNodeId(): string {
  const h = hostname().toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/^-+|-+$/g, '').slice(0, 63);
  return isDnsLabel(h) ? h : 'node';
}

export async function loadPrincipals(home: string, nodeId: string, opts: { serviceCredsTtlS?: number } = {}): Promise<Principals> {
  const ttl = opts.serviceCredsTtlS ?? SERVICE_CREDS_TTL_S;
  const now = Math.floor(Date.now() / 1000);
  const dir = join(home, 'nats-auth');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const trustPath = join(dir, 'trust.json');
  let trust: TrustBundle;
  if (existsSync(trustPath)) {
    trust = JSON.parse(readFileSync(trustPath, 'utf8')) as TrustBundle;
  } else {
    trust = await createTrust();
    writePrivate(trustPath, JSON.stringify(trust, null, 2) + '\n');
  }
  const issuerFile = join(dir, 'issuer.json');
  const issuer: IssuerConfig = existsSync(issuerFile) ? (JSON.parse(readFileSync(issuerFile, 'utf8')) as IssuerConfig) : await issuerConfig(trust);
  // revocations still needed: a revoked user whose JWT has expired is refused anyway
  const revoked = Object.fromEntries(Object.entries(issuer.revoked ?? {}).filter(([, at]) => at + ttl > now));
  /** The operator's: kept (connect.json's credentials stay the same; rotate by deleting operator.creds). */
  const kept = async (file: string, role: Role): Promise<Principal> => {
    const path = join(dir, file);
    if (!existsSync(path)) writePrivate(path, (await issueRole(trust, role)).creds);
    return { credsFile: path, inboxPrefix: inboxPrefix(role) };
  };
  /** A service's: a new user at every start, the one it replaces revoked. */
  const rotated = async (file: string, role: Role): Promise<Principal> => {
    const path = join(dir, file);
    if (existsSync(path)) {
      try {
        revoked[credsClaims(readFileSync(path, 'utf8')).publicKey] = now;
      } catch {
        /* not a creds file: nothing to revoke */
      }
    }
    writePrivate(path, (await issueRole(trust, role, { expiresAt: now + ttl })).creds);
    return { credsFile: path, inboxPrefix: inboxPrefix(role) };
  };
  const out: Principals = {
    trust,
    operator: await kept('operator.creds', { kind: 'operator' }),
    scheduler: await rotated('scheduler.creds', { kind: 'scheduler', id: 'appliance' }),
    node: await rotated(`node-${nodeId}.creds`, { kind: 'node', nodeId }),
    nodeId,
    dashboard: await rotated('dashboard.creds', { kind: 'dashboard' }),
    issuerFile,
  };
  writePrivate(issuerFile, JSON.stringify({ ...issuer, revoked }, null, 2) + '\n');
  return out;
}
