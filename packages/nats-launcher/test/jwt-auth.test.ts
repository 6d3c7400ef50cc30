/**
 * JWT auth (auth.ts) on the real nats-server: the roles' permissions hold, a revoked user is disconnected while
 * others stay, and a store made before auth (the global account) keeps its KV buckets when auth is switched on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, credsAuthenticator } from 'nats';
import { appAccountJwt, createTrust, issueRole, issuerConfig, publicKeyOfSeed, startNatsServer } from '../src/index.js';

const te = new TextEncoder();

test('a store made without auth keeps its buckets when JWT auth is switched on (adopted by the account)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nats-jwt-'));
  try {
    const plain = await startNatsServer({ storeDir: join(dir, 'js') });
    const nc = await connect({ servers: plain.url });
    await (await nc.jetstream().views.kv('kept', { history: 1 })).put('k', 'before auth');
    await nc.close();
    await plain.stop();

    const trust = await createTrust();
    const srv = await startNatsServer({ storeDir: join(dir, 'js'), jwtAuth: trust });
    try {
      await assert.rejects(connect({ servers: srv.url, maxReconnectAttempts: 0 }), /Authorization Violation/i);
      const op = await issueRole(trust, { kind: 'operator' });
      const nc2 = await connect({ servers: srv.url, authenticator: credsAuthenticator(te.encode(op.creds)) });
      assert.equal((await (await nc2.jetstream().views.kv('kept', { bindOnly: true })).get('k'))?.string(), 'before auth');
      await nc2.close();
    } finally {
      await srv.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a revocation pushed on $SYS.REQ.CLAIMS.UPDATE closes that user only', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nats-jwt-'));
  const trust = await createTrust();
  const srv = await startNatsServer({ storeDir: join(dir, 'js'), jwtAuth: trust });
  try {
    const a = await issueRole(trust, { kind: 'tenant', tenantId: 'a' });
    const b = await issueRole(trust, { kind: 'tenant', tenantId: 'b' });
    const ncA = await connect({ servers: srv.url, authenticator: credsAuthenticator(te.encode(a.creds)), inboxPrefix: a.inboxPrefix, maxReconnectAttempts: 0 });
    const ncB = await connect({ servers: srv.url, authenticator: credsAuthenticator(te.encode(b.creds)), inboxPrefix: b.inboxPrefix, maxReconnectAttempts: 0 });
    const issuer = await issuerConfig(trust);
    const signing = publicKeyOfSeed(trust.app.signingSeed);
    const jwt = await appAccountJwt(trust.app.publicKey, signing, issuer.operatorSigningSeed, { [a.publicKey]: a.issuedAt });
    const sys = await connect({ servers: srv.url, authenticator: credsAuthenticator(te.encode(issuer.systemCreds)), inboxPrefix: issuer.systemInboxPrefix });
    const r = JSON.parse(new TextDecoder().decode((await sys.request('$SYS.REQ.CLAIMS.UPDATE', te.encode(jwt), { timeout: 5000 })).data));
    assert.equal(r.data?.code, 200, JSON.stringify(r));
    await ncA.closed();
    assert.equal(ncA.isClosed(), true);
    assert.equal(ncB.isClosed(), false);
    await ncB.flush();
    await assert.rejects(connect({ servers: srv.url, authenticator: credsAuthenticator(te.encode(a.creds)), maxReconnectAttempts: 0 }));
    // the claims user may do nothing else
    await assert.rejects(sys.request('$SYS.REQ.SERVER.PING', te.encode(''), { timeout: 2000 }), /Permissions Violation/);
    await ncB.close();
    await sys.close();
  } finally {
    await srv.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
