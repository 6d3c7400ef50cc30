/**
 * `npm start` as a user runs it: the appliance process with its embedded nats-server and services; connect.json
 * written (0600) once it serves and usable as is; Ctrl-C stops everything and leaves no process behind; a taken
 * port is refused with a message naming it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, credsAuthenticator } from 'nats';
import { freePort } from './helpers.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));


async function startAppliance(home: string, yaml: string, args: string[] = []): Promise<{ child: ReturnType<typeof spawn>; out: string[]; exited: Promise<number | null> }> {
  writeFileSync(join(home, 'edgenfv.yaml'), yaml);
  // its own process group, as a shell runs a command: Ctrl-C is a SIGINT to the whole group
  const child = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, EDGENFV_HOME: home }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const out: string[] = [];
  child.stdout!.on('data', (d: Buffer) => out.push(d.toString()));
  child.stderr!.on('data', (d: Buffer) => out.push(d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, out, exited };
}

async function waitFor(path: string, exited: Promise<number | null>, out: string[]): Promise<void> {
  let done = false;
  void exited.then(() => (done = true));
  for (let i = 0; i < 600; i++) {
    if (existsSync(path)) return;
    if (done) throw new Error(`appliance exited early: ${out.join('')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no ${path}: ${out.join('')}`);
}

test('starts, writes connect.json, serves the API with its credentials, stops cleanly on SIGINT', async () => {
  const home = mkdtempSync(join(tmpdir(), 'edgenfv-home-'));
  const [nats, sched] = [await freePort(), await freePort()];
  const app = await startAppliance(home, `ports: {nats: ${nats}, schedulerMetrics: ${sched}}\nservices: {nodeAgent: false, dashboard: false}\n`);
  try {
    const connectPath = join(home, 'connect.json');
    await waitFor(connectPath, app.exited, app.out);
    assert.equal(statSync(connectPath).mode & 0o777, 0o600);
    const info = JSON.parse(readFileSync(connectPath, 'utf8'));
    assert.deepEqual(info.servers, [`nats://127.0.0.1:${nats}`]);
    assert.match(info.creds, /BEGIN NATS USER JWT/);
    assert.equal(info.user, undefined, 'no password any more: the operator connects with its creds (JWT + nkey)');
    assert.deepEqual(info.metricsUrls, [`http://127.0.0.1:${sched}/metrics`]);
    // without credentials: refused; with connect.json's: served
    await assert.rejects(connect({ servers: info.servers, reconnect: false }));
    const nc = await connect({ servers: info.servers, authenticator: credsAuthenticator(new TextEncoder().encode(info.creds)) });
    const r = await nc.request('nfv.v1.admin.tenants.create', JSON.stringify({ id: 'from-connect-json' }), { timeout: 5000 });
    assert.equal(JSON.parse(r.string()).ok, true);
    await nc.close();
    const metrics = await (await fetch(info.metricsUrls[0])).text();
    assert.match(metrics, /edgenfv_api_requests_total\{[^}]*op="tenants.create"[^}]*code="OK"/);

    process.kill(-app.child.pid!, 'SIGINT'); // Ctrl-C in a terminal: the whole foreground process group
    assert.equal(await app.exited, 0);
    assert.equal(existsSync(connectPath), false, 'connect.json removed');
    // nothing left listening
    for (const port of [nats, sched]) {
      const s: Server = createServer();
      await new Promise<void>((res, rej) => {
        s.once('error', rej);
        s.listen(port, '127.0.0.1', () => s.close(() => res()));
      });
    }
  } finally {
    if (app.child.exitCode === null) app.child.kill('SIGKILL');
    rmSync(home, { recursive: true, force: true });
  }
});

test('the dashboard serves with its own token from connect.json (not the NATS credentials), read from a file, not its environment', async () => {
  const home = mkdtempSync(join(tmpdir(), 'edgenfv-home-'));
  const [nats, sched, dash] = [await freePort(), await freePort(), await freePort()];
  const app = await startAppliance(home, `ports: {nats: ${nats}, schedulerMetrics: ${sched}, dashboard: ${dash}}\nservices: {nodeAgent: false}\n`);
  try {
    await waitFor(join(home, 'connect.json'), app.exited, app.out);
    const info = JSON.parse(readFileSync(join(home, 'connect.json'), 'utf8'));
    assert.equal(info.dashboardUrl, `http://127.0.0.1:${dash}/`);
    assert.match(info.dashboardToken, /^[A-Za-z0-9_-]{32}$/);
    assert.equal(info.pass, undefined, 'no NATS password any more');
    const natsJwt = String(info.creds).split('\n')[1]!;
    const get = (token: string): Promise<Response> => fetch(`${info.dashboardUrl}api/overview`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal((await get(info.dashboardToken)).status, 200);
    assert.equal((await get(natsJwt)).status, 403, "the operator's NATS credentials are not a dashboard token");
    assert.equal((await fetch(`${info.dashboardUrl}api/overview`)).status, 401);
    // the live stream works with the dashboard's own (least-privilege) NATS principal: it follows EDGENFV_EVENTS
    const ac = new AbortController();
    const stream = await fetch(`${info.dashboardUrl}api/events/stream`, { headers: { authorization: `Bearer ${info.dashboardToken}`, 'last-event-id': '0' }, signal: ac.signal });
    assert.equal(stream.status, 200);
    const reader = stream.body!.pipeThrough(new TextDecoderStream()).getReader();
    let sse = '';
    while (!/event: (ready|error)\n/.test(sse)) sse += (await reader.read()).value ?? '';
    ac.abort();
    assert.match(sse, /event: ready\n/, sse);
    process.kill(-app.child.pid!, 'SIGINT');
    assert.equal(await app.exited, 0);
  } finally {
    if (app.child.exitCode === null) app.child.kill('SIGKILL');
    rmSync(home, { recursive: true, force: true });
  }
});

test('state survives an appliance restart', async () => {
  const home = mkdtempSync(join(tmpdir(), 'edgenfv-home-'));
  const [nats, sched] = [await freePort(), await freePort()];
  const yaml = `ports: {nats: ${nats}, schedulerMetrics: ${sched}}\nservices: {nodeAgent: false, dashboard: false}\n`;
  try {
    for (const round of [1, 2]) {
      const app = await startAppliance(home, yaml);
      await waitFor(join(home, 'connect.json'), app.exited, app.out);
      const info = JSON.parse(readFileSync(join(home, 'connect.json'), 'utf8'));
      const nc = await connect({ servers: info.servers, authenticator: credsAuthenticator(new TextEncoder().encode(info.creds)) });
      if (round === 1) await nc.request('nfv.v1.admin.tenants.create', JSON.stringify({ id: 'durable' }), { timeout: 5000 });
      const got = JSON.parse((await nc.request('nfv.v1.admin.tenants.get', JSON.stringify({ id: 'durable' }), { timeout: 5000 })).string());
      assert.equal(got.ok, true, `round ${round}`);
      await nc.close();
      app.child.kill('SIGTERM');
      assert.equal(await app.exited, 0);
    }
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('a taken port is refused with a message that names it, and nothing starts', async () => {
  const home = mkdtempSync(join(tmpdir(), 'edgenfv-home-'));
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
  const taken = (blocker.address() as AddressInfo).port;
  try {
    const app = await startAppliance(home, `ports: {nats: ${taken}}\nservices: {nodeAgent: false, dashboard: false, scheduler: false}\n`);
    const code = await app.exited;
    assert.notEqual(code, 0);
    assert.match(app.out.join(''), new RegExp(`port ${taken} \\(NATS\\).*already in use`));
    assert.equal(existsSync(join(home, 'connect.json')), false);
    assert.equal(existsSync(join(home, 'nats')), false, 'no nats-server store was created');
  } finally {
    blocker.close();
    rmSync(home, { recursive: true, force: true });
  }
});

test('bad appliance config: every issue named, exit non-zero', async () => {
  const home = mkdtempSync(join(tmpdir(), 'edgenfv-home-'));
  try {
    const app = await startAppliance(home, `ports: {nats: 70000, bogus: 1}\nwhat: 1\nservices: {dashboard: maybe}\n`);
    assert.equal(await app.exited, 2);
    const text = app.out.join('');
    for (const field of ['ports.nats', 'ports.bogus', 'what', 'services.dashboard']) assert.match(text, new RegExp(`config: ${field.replace('.', '\\.')}:`));
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

/**
 * Ctrl-C says what keeps running: a tenant sandbox the node agent holds (a record in its state folder, planted
 * here: no VM is booted in this test) is named as kept for re-adoption; with `--stop-vms` the node agent tears it
 * down on the way out and the record is gone.
 */
test('Ctrl-C names the tenant VMs it leaves running; --stop-vms stops them too', async () => {
  const home = mkdtempSync(join(tmpdir(), 'edgenfv-home-'));
  const kernel = join(home, 'vmlinuz');
  writeFileSync(kernel, '');
  const cg = `edgenfv-appl-${process.pid}`;
  const plant = (): string => {
    const dir = join(home, 'node', 'sandboxes');
    const rec = {
      version: 1, sandboxId: 'sb-acme-test', tenantId: 'acme', hypervisor: 'qemu', state: 'running', uid: 0, gid: 0,
      tenantDir: join(home, 'node', 'tenants', 'acme'), runDir: join(home, 'node', 'run', 'acme'), netns: `edgenfv-fake-${process.pid}`,
      replicas: {}, createdAt: new Date().toISOString(), updatedAt: new Date().toISOString(),
    };
    const path = join(dir, 'sb-acme-test.json');
    writeFileSync(path, JSON.stringify(rec));
    return path;
  };
  try {
    for (const stopVms of [false, true]) {
      const [nats, sched, agent] = [await freePort(), await freePort(), await freePort()];
      const yaml =
        `ports: {nats: ${nats}, schedulerMetrics: ${sched}, nodeAgentMetrics: ${agent}}\nservices: {dashboard: false}\n` +
        `nodeAgent: {qemu: {accel: tcg}, guest: {kernelPath: ${JSON.stringify(kernel)}, initrdPath: ${JSON.stringify(kernel)}}, isolation: {cgroupParent: ${cg}}}\n`;
      const app = await startAppliance(home, yaml, stopVms ? ['--stop-vms'] : []);
      try {
        await waitFor(join(home, 'connect.json'), app.exited, app.out);
        const record = plant();
        process.kill(-app.child.pid!, 'SIGINT');
        assert.equal(await app.exited, 0, app.out.join(''));
        const text = app.out.join('');
        if (!stopVms) {
          assert.match(text, /edgenfv: stopping the appliance\. 1 tenant VM\(s\) keep running, so that the next `npm start` re-adopts them/);
          assert.match(text, /^ {2}acme: sandbox sb-acme-test, 0 replicas$/m);
          assert.match(text, /npm start -- --stop-vms/);
          assert.match(text, /edgenfv: stopped in \d+\.\d s; still running: 1 tenant VM\(s\) \(acme\)\./);
          assert.ok(existsSync(record), 'kept');
        } else {
          assert.match(text, /stopping the appliance and, as asked \(--stop-vms\), its 1 tenant VM\(s\):/);
          assert.match(text, /stopping with the 1 tenant VM\(s\)/, 'the node agent was told');
          assert.match(text, /sandbox torn down: nothing left/);
          assert.equal(existsSync(record), false, 'the node agent tore the sandbox down');
          assert.match(text, /edgenfv: stopped in \d+\.\d s\.\n/);
        }
      } finally {
        if (app.child.exitCode === null) app.child.kill('SIGKILL');
      }
    }
  } finally {
    for (const root of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) {
      try {
        rmdirSync(join(root, cg)); // the node agent's (empty) cgroup parent
      } catch {
        /* not made there */
      }
    }
    rmSync(home, { recursive: true, force: true });
  }
});
