/**
 * `npm run nats:site`: the generated multi-node NATS config runs as it is. Three nats-servers (one host, its own
 * ports) form a JetStream cluster from the generated files; the generated operator creds make an R3 bucket; a
 * node's creds write its own keys only; a route without the generated route credentials is refused; the committed
 * deploy/nats sample is valid nats-server config.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, credsAuthenticator, type NatsConnection } from 'nats';
import { findNatsServer, spawnTied } from '@edgenfv/nats-launcher';
import { generateSite } from '../src/site.js';
import { freePort } from './helpers.js';

const REPO = fileURLToPath(new URL('../../../../', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'edgenfv-site-'));
const children: ChildProcess[] = [];
const conns: NatsConnection[] = [];
after(async () => {
  for (const c of conns) await c.close().catch(() => undefined);
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});


function startServer(conf: string): Promise<void> {
  const child = spawnTied(findNatsServer()!, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let log = '';
    const on = (d: Buffer): void => {
      log += d.toString();
      if (/Server is ready/.test(log)) resolve();
    };
    child.stdout!.on('data', on);
    child.stderr!.on('data', on);
    child.once('exit', (code) => reject(new Error(`nats-server exited ${code}: ${log}`)));
  });
}

test('three nats-servers run the generated site config: a JetStream cluster with the principals of the appliance', async () => {
  const ports = [await freePort(), await freePort(), await freePort()];
  const clusterPort = (await freePort()) + 0;
  const out = join(dir, 'site');
  const r = await generateSite({ out, servers: ports.map((p) => `127.0.0.1:${p}`), nodes: ['edge-1', 'edge-2'], schedulers: 2, storeDir: join(dir, 'store'), clusterPort });
  assert.equal(r.configs.length, 3);
  assert.equal(statSync(r.secrets).mode & 0o777, 0o700);
  for (const f of readdirSync(r.secrets)) assert.equal(statSync(join(r.secrets, f)).mode & 0o777, 0o600, f);
  // an nkey seed is a standalone 58-character base32 token starting S + O/A/U (operator, account, user); a public key
  // (56 characters) can hold "SU…" inside it, so the token is matched whole. Every seed in secrets/ is looked for too.
  const seedShape = /(?<![A-Z2-7])S[OAU][A-Z2-7]{56}(?![A-Z2-7])/;
  const seeds = readdirSync(r.secrets).flatMap((f) => readFileSync(join(r.secrets, f), 'utf8').match(new RegExp(seedShape, 'g')) ?? []);
  assert.ok(seeds.length >= 3, `the secrets hold the seeds (found ${seeds.length})`);
  for (const c of r.configs) {
    const text = readFileSync(c, 'utf8');
    assert.doesNotMatch(text, seedShape, 'no seed in a server config');
    for (const seed of seeds) assert.ok(!text.includes(seed), 'no seed of secrets/ in a server config');
  }
  // the routes' credentials: in their own 0600 file, included by each server's cluster block, in no server config
  assert.ok(r.routes);
  assert.equal(statSync(r.routes).mode & 0o777, 0o600);
  const password = readFileSync(join(r.secrets, 'route-password'), 'utf8').trim();
  assert.ok(password.length >= 24);
  assert.match(readFileSync(r.routes, 'utf8'), new RegExp(`password: "${password}"`));
  for (const c of r.configs) {
    const text = readFileSync(c, 'utf8');
    assert.ok(!text.includes(password), 'no route password in a server config');
    assert.match(text, /cluster \{[^}]*include "cluster-routes.conf"/s);
  }
  await Promise.all(r.configs.map((c) => startServer(c)));
  // a route that does not know the password is refused on every cluster port
  for (let i = 0; i < 3; i++) assert.match(await routeHandshake(clusterPort + i, 'edgenfv-route', 'guessed'), /Authorization Violation/);

  const creds = (f: string): ReturnType<typeof credsAuthenticator> => credsAuthenticator(readFileSync(join(r.secrets, f)));
  const servers = ports.map((p) => `nats://127.0.0.1:${p}`);
  const opNc = await connect({ servers, authenticator: creds('operator.creds') });
  conns.push(opNc);
  // the cluster elects its JetStream meta leader: an R3 bucket can be made once it has
  let kv;
  for (let i = 0; ; i++) {
    try {
      kv = await opNc.jetstream().views.kv('edgenfv_status', { history: 1, replicas: 3 });
      break;
    } catch (err) {
      if (i > 150) throw err;
      await new Promise((res) => setTimeout(res, 200));
    }
  }
  assert.equal((await (await opNc.jetstreamManager()).streams.info('KV_edgenfv_status')).config.num_replicas, 3);
  const nodeNc = await connect({ servers: [servers[1]!], authenticator: creds('node-edge-1.creds'), inboxPrefix: '_INBOX_n_edge-1' });
  conns.push(nodeNc);
  const nodeKv = await nodeNc.jetstream().views.kv('edgenfv_status', { bindOnly: true });
  await nodeKv.put('edge-1.a1', 'RUNNING');
  await assert.rejects(nodeKv.put('edge-2.a1', 'RUNNING'), /Permissions Violation for Publish to "\$KV.edgenfv_status.edge-2.a1"/);
  assert.equal((await kv.get('edge-1.a1'))?.string(), 'RUNNING');
  // a tenant has no creds file here: the scheduler issues them (issuer.json); none exists without it
  assert.ok(JSON.parse(readFileSync(join(r.secrets, 'issuer.json'), 'utf8')).accountSigningSeed);
});

/** Opens a route connection to a cluster port with these credentials; resolves with what the server answers. */
function routeHandshake(port: number, user: string, pass: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = tcpConnect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(got);
    }, 5000);
    sock.on('data', (d) => {
      got += d.toString();
      if (got.startsWith('INFO') && !got.includes('CONNECT_SENT')) {
        got += 'CONNECT_SENT\n';
        sock.write(`CONNECT ${JSON.stringify({ verbose: false, pedantic: false, user, pass, name: 'intruder', cluster: 'edgenfv' })}\r\nPING\r\n`);
      }
      if (/-ERR/.test(got)) {
        clearTimeout(timer);
        sock.destroy();
        resolve(got);
      }
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      if (got) resolve(got);
      else reject(err);
    });
  });
}

test('the committed deploy/nats sample is valid nats-server config', () => {
  const confs = readdirSync(join(REPO, 'deploy/nats')).filter((f) => /^nats-\d+\.conf$/.test(f)); // cluster-routes.conf is included by them
  assert.ok(confs.length >= 3, confs.join(','));
  for (const c of confs) execFileSync(findNatsServer()!, ['-t', '-c', join(REPO, 'deploy/nats', c)], { stdio: 'pipe' });
});
