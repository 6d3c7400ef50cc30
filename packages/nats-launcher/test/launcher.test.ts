import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'nats';
import { startNatsServer } from '../src/index.js';

test('starts a real nats-server with JetStream on a random port and stops it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nats-launcher-'));
  const srv = await startNatsServer({ storeDir: join(dir, 'js') });
  try {
    assert.match(srv.url, /^nats:\/\/127\.0\.0\.1:\d+$/);
    const nc = await connect({ servers: srv.url });
    const jsm = await nc.jetstreamManager();
    const info = await jsm.getAccountInfo();
    assert.equal(typeof info.limits, 'object');
    const kv = await nc.jetstream().views.kv('launcher-test');
    await kv.put('k', 'v');
    assert.equal((await kv.get('k'))?.string(), 'v');
    await nc.close();
  } finally {
    await srv.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  assert.notEqual(await srv.exited, 0); // nats-server exits 1 on SIGTERM
});

test('user/password: a client without credentials is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nats-launcher-'));
  const srv = await startNatsServer({ storeDir: join(dir, 'js'), user: 'op', pass: 's3cret' });
  try {
    await assert.rejects(connect({ servers: srv.url, reconnect: false }), /Authorization|AUTHORIZATION/);
    const nc = await connect({ servers: srv.url, user: 'op', pass: 's3cret' });
    await nc.close();
  } finally {
    await srv.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the same store folder keeps JetStream state across a SIGKILL', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nats-launcher-'));
  let srv = await startNatsServer({ storeDir: join(dir, 'js') });
  const port = srv.port;
  try {
    let nc = await connect({ servers: srv.url });
    const kv = await nc.jetstream().views.kv('keep', { history: 1 });
    await kv.put('a', 'kept');
    await nc.close();
    srv.kill('SIGKILL');
    await srv.exited;
    srv = await startNatsServer({ storeDir: join(dir, 'js'), port });
    nc = await connect({ servers: srv.url });
    const kv2 = await nc.jetstream().views.kv('keep');
    assert.equal((await kv2.get('a'))?.string(), 'kept');
    await nc.close();
  } finally {
    await srv.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a nats-server dies with the process that started it (no orphan after a kill -9)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nats-launcher-'));
  const { spawn } = await import('node:child_process');
  const script = `import('${new URL('../src/index.js', import.meta.url).href}').then(async (m) => {
    const s = await m.startNatsServer({ storeDir: ${JSON.stringify(join(dir, 'js'))} });
    console.log(s.pid); setInterval(() => {}, 1000);
  });`;
  const parent = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const pid = await new Promise<number>((resolve) => parent.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim()))));
    assert.ok(pid > 0);
    process.kill(pid, 0); // alive
    parent.kill('SIGKILL');
    let alive = true;
    for (let i = 0; i < 100 && alive; i++) {
      await new Promise((r) => setTimeout(r, 50));
      try {
        process.kill(pid, 0);
        // a zombie still answers kill(0); look at its state
        alive = !/^\S+ \(.*\) Z/.test((await import('node:fs')).readFileSync(`/proc/${pid}/stat`, 'utf8'));
      } catch {
        alive = false;
      }
    }
    assert.equal(alive, false, 'nats-server outlived its parent');
  } finally {
    parent.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Whether a client that got INFO and sends nothing is still connected after `waitMs` (nats-server's auth timeout). */
async function stillConnectedAfter(url: string, waitMs: number): Promise<boolean> {
  const { connect: tcp } = await import('node:net');
  const u = new URL(url);
  const s = tcp(Number(u.port), u.hostname);
  let closed = false;
  s.on('close', () => (closed = true));
  s.on('error', () => (closed = true));
  s.on('data', () => undefined);
  await new Promise((r) => setTimeout(r, waitMs));
  s.destroy();
  return !closed;
}

test('authTimeoutS: a slow client gets longer than the 2 s default to send CONNECT', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nats-launcher-'));
  const slow = await startNatsServer({ storeDir: join(dir, 'a'), user: 'u', pass: 'p', authTimeoutS: 30 });
  const dflt = await startNatsServer({ storeDir: join(dir, 'b'), user: 'u', pass: 'p' });
  try {
    const [a, b] = await Promise.all([stillConnectedAfter(slow.url, 3500), stillConnectedAfter(dflt.url, 3500)]);
    assert.equal(a, true, 'still connected after 3.5 s with authTimeoutS: 30');
    assert.equal(b, false, 'closed by the 2 s default');
    await assert.rejects(startNatsServer({ storeDir: join(dir, 'c'), authTimeoutS: -1 }), /authTimeoutS/);
  } finally {
    await slow.stop();
    await dflt.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
