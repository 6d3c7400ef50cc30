/**
 * Service credentials expire and are rotated (docs/security.md, "Service credentials"): the appliance (`npm start`'s
 * process, real nats-server) gives the scheduler, the node agent and the dashboard a new user at every start, with
 * an expiry, and revokes the one each replaced. After a restart the previous start's dashboard and scheduler
 * credentials are refused by nats-server; the new ones work; the operator's (connect.json) stay the same.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, credsAuthenticator } from 'nats';
import { credsClaims } from '@edgenfv/nats-launcher';
import { freePort, startAppliance, type RunningAppliance } from '../src/appliance.js';

const te = new TextEncoder();
let home: string | undefined;
let app: RunningAppliance | undefined;

after(async () => {
  await app?.stop();
  if (home) rmSync(home, { recursive: true, force: true });
});

async function tryConnect(servers: string[], creds: string): Promise<string> {
  try {
    const nc = await connect({ servers, authenticator: credsAuthenticator(te.encode(creds)), maxReconnectAttempts: 0, reconnect: false });
    await nc.flush();
    await nc.close();
    return 'connected';
  } catch (err) {
    return (err as Error).message;
  }
}

test('service credentials: an expiry, a new user at every start, the replaced one refused; the operator\'s kept', async () => {
  home = mkdtempSync(join(tmpdir(), 'edgenfv-rot-'));
  const config = { ports: { nats: await freePort(), schedulerMetrics: await freePort() }, services: { nodeAgent: false, dashboard: false } };
  const auth = (f: string): string => readFileSync(join(home!, 'nats-auth', f), 'utf8');
  app = await startAppliance(home, config);
  const first = { dashboard: auth('dashboard.creds'), scheduler: auth('scheduler.creds'), operator: auth('operator.creds') };
  const now = Date.now() / 1000;
  const exp = credsClaims(first.dashboard).expiresAt;
  assert.ok(exp !== undefined && exp > now + 300 * 24 * 3600 && exp <= now + 366 * 24 * 3600, `the dashboard's credentials expire (${exp})`);
  assert.equal(credsClaims(first.operator).expiresAt, undefined, "the operator's do not");
  const servers = app.info.servers;
  assert.equal(await tryConnect(servers, first.dashboard), 'connected');
  await app.stop();
  app = undefined;

  app = await startAppliance(home, config);
  const second = { dashboard: auth('dashboard.creds'), scheduler: auth('scheduler.creds'), operator: auth('operator.creds') };
  assert.notEqual(credsClaims(second.dashboard).publicKey, credsClaims(first.dashboard).publicKey, 'a new dashboard user');
  assert.notEqual(credsClaims(second.scheduler).publicKey, credsClaims(first.scheduler).publicKey, 'a new scheduler user');
  assert.equal(second.operator, first.operator, "the operator's credentials stay");
  const issuer = JSON.parse(auth('issuer.json')) as { revoked?: Record<string, number> };
  for (const c of [first.dashboard, first.scheduler]) assert.ok(issuer.revoked?.[credsClaims(c).publicKey], 'the replaced users are listed as revoked');
  // the scheduler pushed the account with the revocations at its start: the old users are refused
  for (const [what, c] of Object.entries({ dashboard: first.dashboard, scheduler: first.scheduler })) {
    assert.match(await tryConnect(servers, c), /Authorization Violation|authentication|revoked/i, `the previous ${what} credentials`);
  }
  assert.equal(await tryConnect(servers, second.dashboard), 'connected');
  assert.equal(await tryConnect(servers, second.operator), 'connected');
  await app.api.ok('nfv.v1.admin.tenants.list'); // the rotated scheduler serves
});
