/**
 * The appliance's NATS principals (docs/security.md): the trust (operator, system and application accounts) and a
 * creds file per service, made at the first start under `$EDGENFV_HOME/nats-auth/` (0700, files 0600) and kept,
 * so connect.json's operator credentials stay the same across restarts. The scheduler also gets the issuer keys,
 * with which it issues and revokes tenants' credentials while everything runs.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { isDnsLabel } from '@edgenfv/contracts';
import { createTrust, inboxPrefix, issueRole, issuerConfig, type Role, type TrustBundle } from '@edgenfv/nats-launcher';

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

export async function loadPrincipals(home: string, nodeId: string): Promise<Principals> {
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
  const principal = async (file: string, role: Role): Promise<Principal> => {
    const path = join(dir, file);
    if (!existsSync(path)) writePrivate(path, (await issueRole(trust, role)).creds);
    return { credsFile: path, inboxPrefix: inboxPrefix(role) };
  };
  const issuerFile = join(dir, 'issuer.json');
  if (!existsSync(issuerFile)) writePrivate(issuerFile, JSON.stringify(await issuerConfig(trust), null, 2) + '\n');
  return {
    trust,
    operator: await principal('operator.creds', { kind: 'operator' }),
    scheduler: await principal('scheduler.creds', { kind: 'scheduler', id: 'appliance' }),
    node: await principal(`node-${nodeId}.creds`, { kind: 'node', nodeId }),
    nodeId,
    dashboard: await principal('dashboard.creds', { kind: 'dashboard' }),
    issuerFile,
  };
}
