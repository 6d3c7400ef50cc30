/**
 * The `edgenfv` executable as a real process against a real nats-server, answered by the fake API responder of
 * @edgenfv/api-client (the real scheduler's end-to-end CLI test lives in /test).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, type NatsConnection } from 'nats';
import { tenantDashboardToken } from '@edgenfv/api-client';
import { parse as parseYaml } from 'yaml';
import { startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';
import { sampleNode, startFakeApi, type FakeApi } from '@edgenfv/api-client/testing';
import { EXIT_CODES } from '../src/index.js';

const BIN = fileURLToPath(new URL('../../bin/edgenfv.js', import.meta.url));
let dir: string;
let home: string;
let server: NatsServerHandle;
let nc: NatsConnection;
let api: FakeApi;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], opts: { env?: Record<string, string>; stdin?: string } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { PATH: process.env.PATH ?? '', EDGENFV_HOME: home, ...opts.env },
      cwd: dir,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(opts.stdin ?? '');
  });
}
const json = (r: Run): any => {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout);
};

const VNFD_YAML = `
name: vrouter
replicas: 2
resources: {vcpus: 2, memoryMiB: 1024, cpuPolicy: dedicated, numa: strict}
image: {ref: "builtin:vrouter"}
interfaces:
  - {name: mgmt, type: tap, network: mgmt}
  - {name: dp0, type: vhostuser, dataplane: vpp, queues: 2}
`;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgenfv-cli-'));
  home = join(dir, 'home');
  mkdirSync(home);
  server = await startNatsServer({ storeDir: join(dir, 'js'), user: 'operator', pass: 's3cret' });
  nc = await connect({ servers: server.url, user: 'operator', pass: 's3cret' });
  api = await startFakeApi(nc, { nodes: [sampleNode('node-a'), sampleNode('node-b')] });
  writeFileSync(join(home, 'connect.json'), JSON.stringify({ servers: [server.url], user: 'operator', pass: 's3cret', dashboardUrl: 'http://127.0.0.1:8080/', dashboardToken: 'operator-dash-token' }), { mode: 0o600 });
  writeFileSync(join(dir, 'vrouter.yaml'), VNFD_YAML);
});
after(async () => {
  await api.stop();
  await nc.close();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('tenants: create/get/list/delete through connect.json, in json, yaml and table', async () => {
  const t = json(await cli(['tenants', 'create', 'acme', '--display-name', 'Acme Corp', '--quota-vcpus', '8', '--quota-vnfs', '4', '-o', 'json']));
  assert.equal(t.id, 'acme');
  assert.deepEqual(t.quota, { vcpus: 8, vnfs: 4 });
  const y = await cli(['tenants', 'get', 'acme', '-o', 'yaml']);
  assert.equal(y.code, 0, y.stderr);
  assert.equal(parseYaml(y.stdout).displayName, 'Acme Corp');
  json(await cli(['tenants', 'create', 'beta', '-o', 'json']));
  const table = await cli(['tenants', 'list']);
  assert.equal(table.code, 0, table.stderr);
  const lines = table.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^ID\s+NAME\s+VCPUS\s+MEMORY_MIB\s+VFS\s+VNFS\s+CREATED$/);
  assert.match(lines.find((l) => l.startsWith('acme'))!, /^acme\s+Acme Corp\s+0\/8\s+0\/-\s+0\/-\s+0\/4\s/);
  const del = await cli(['tenants', 'delete', 'beta']);
  assert.equal(del.code, 0, del.stderr);
  assert.ok(!api.tenants.has('beta'));
});

test('errors: the server code and message on stderr, one exit code per class', async () => {
  const nf = await cli(['tenants', 'get', 'nope']);
  assert.equal(nf.code, EXIT_CODES.NOT_FOUND);
  assert.equal(nf.stderr, 'error: NOT_FOUND: tenant "nope" not found\n');
  assert.equal(nf.stdout, '');
  const dup = await cli(['tenants', 'create', 'acme']);
  assert.equal(dup.code, EXIT_CODES.ALREADY_EXISTS);
  assert.match(dup.stderr, /^error: ALREADY_EXISTS: tenant "acme" already exists/);
  const bad = await cli(['tenants', 'create', 'Not_A_Label', '-o', 'json']);
  assert.equal(bad.code, EXIT_CODES.INVALID_ARGUMENT);
  const env = JSON.parse(bad.stderr);
  assert.equal(env.ok, false);
  assert.equal(env.error.code, 'INVALID_ARGUMENT');
  assert.ok(env.error.details.issues.some((i: { field: string }) => i.field === 'id'), bad.stderr);
  const usage = await cli(['tenants', 'frobnicate']);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /unknown command 'frobnicate'/);
});

test('connection: flags override connect.json; bad credentials and no server have their own exit codes', async () => {
  const denied = await cli(['tenants', 'list', '--pass', 'wrong']);
  assert.equal(denied.code, EXIT_CODES.PERMISSION_DENIED);
  assert.match(denied.stderr, /^error: PERMISSION_DENIED: NATS refused the credentials/);
  const down = await cli(['tenants', 'list', '--server', 'nats://127.0.0.1:1']);
  assert.equal(down.code, EXIT_CODES.UNAVAILABLE);
  assert.match(down.stderr, /^error: UNAVAILABLE: cannot connect to nats:\/\/127\.0\.0\.1:1/);
  const nohome = await cli(['tenants', 'list'], { env: { EDGENFV_HOME: join(dir, 'empty') } });
  assert.equal(nohome.code, EXIT_CODES.INVALID_ARGUMENT);
  assert.match(nohome.stderr, /--server: no .*empty\/connect\.json/);
  const flags = await cli(['tenants', 'list', '-o', 'json', '--server', server.url, '--user', 'operator', '--pass', 's3cret'], {
    env: { EDGENFV_HOME: join(dir, 'empty') },
  });
  assert.ok(json(flags).some((t: { id: string }) => t.id === 'acme'));
});

test('nodes: list/get/cordon/uncordon/drain', async () => {
  const list = await cli(['nodes', 'list']);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^ID\s+HEALTH\s+SCHEDULING\s+CPUS\s+MEMORY_MIB\s+VFS\s+REPLICAS\s+NUMA\s+EPOCH\n/);
  assert.match(list.stdout, /\nnode-a\s+Ready\s+enabled\s+0\/16\s+0\/65536\s+0\/4\s+0\s+2\s+1\n/);
  assert.equal(json(await cli(['nodes', 'get', 'node-a', '-o', 'json'])).inventory.hostname, 'node-a.edge');
  assert.equal(json(await cli(['nodes', 'cordon', 'node-b', '-o', 'json'])).cordoned, true);
  const detail = (await cli(['nodes', 'get', 'node-b'])).stdout;
  assert.match(detail, /node-b\s+Ready\s+cordoned/);
  assert.match(detail, /\nNUMA\s+CPUS\s+MEMORY_MIB\s+HUGEPAGES_FREE\/TOTAL\n0\s+0-7\s+32768\s+1024\/1024x2M\n1\s+8-15\s+32768\s+512\/1024x2M\n/);
  assert.match(detail, /\nPF\s+IFNAME\s+PHYSNET\s+NUMA\s+VFS\n0000:81:00\.0\s+ens1f0\s+physnet1\s+1\s+4\/8\n/);
  assert.equal(json(await cli(['nodes', 'uncordon', 'node-b', '-o', 'json'])).cordoned, false);
  const drain = await cli(['nodes', 'drain', 'node-zzz']);
  assert.equal(drain.code, EXIT_CODES.NOT_FOUND);
});

test('vnfs: instantiate from a file with a request id, get/list, scale/heal/terminate --wait, opoccs get', async () => {
  const file = join(dir, 'vrouter.yaml');
  const first = json(await cli(['vnfs', 'instantiate', '-t', 'acme', '-f', file, '--request-id', 'r-1', '-o', 'json']));
  assert.match(first.vnfId, /^vnf-/);
  const again = json(await cli(['vnfs', 'instantiate', '-t', 'acme', '-f', '-', '--request-id', 'r-1', '-o', 'json'], { stdin: VNFD_YAML }));
  assert.deepEqual(again, first, 'same requestId: the first reply');

  const get = await cli(['vnfs', 'get', first.vnfId, '-t', 'acme']);
  assert.equal(get.code, 0, get.stderr);
  assert.match(get.stdout, new RegExp(`${first.vnfId}\\s+vrouter\\s+INSTANTIATED\\s+2/2\\s+node-a,node-b\\s+${first.opOccId}`));
  assert.match(get.stdout, /\n0\s+RUNNING\s+node-a\s+sb-acme-node-a\s+mgmt\(tap 02:00:00:00:00:00 10\.0\.0\.10\/24\) dp0\(vhostuser 02:00:00:00:00:01 sock=\/run\/edgenfv\/vhost\/acme-vrouter-0-dp0\.sock\)/);
  const list = json(await cli(['vnfs', 'list', '-t', 'acme', '-o', 'json']));
  assert.deepEqual(list.map((v: { id: string }) => v.id), [first.vnfId]);
  const viaEnv = json(await cli(['vnfs', 'list', '-o', 'json'], { env: { EDGENFV_TENANT: 'acme' } }));
  assert.equal(viaEnv.length, 1);

  const scaled = await cli(['vnfs', 'scale', first.vnfId, '-t', 'acme', '--replicas', '3', '--wait']);
  assert.equal(scaled.code, 0, scaled.stderr);
  assert.match(scaled.stdout, /\bSCALE\s+COMPLETED\b/);
  // --wait shows the steps as they happen (stderr; stdout keeps the record)
  assert.match(scaled.stderr, /^SCALE op-\d+ on acme\/vnf-\d+: following \(\w+\)\n/);
  assert.match(scaled.stderr, /^ {2}\+\d+\.\d s {2}SCALE accepted$/m);
  assert.match(scaled.stderr, /^SCALE COMPLETED after \d+\.\d s$/m);
  assert.equal(api.vnfs.get(`acme.${first.vnfId}`)!.replicas.length, 3);
  const healed = json(await cli(['vnfs', 'heal', first.vnfId, '-t', 'acme', '--replica', '1', '-o', 'json']));
  const op = json(await cli(['opoccs', 'get', healed.opOccId, '-t', 'acme', '-o', 'json']));
  assert.equal(op.operation, 'HEAL');
  assert.deepEqual(op.params, { replica: 1 });
  const opTable = await cli(['opoccs', 'get', healed.opOccId, '-t', 'acme']);
  assert.match(opTable.stdout, /AT\s+STEP\n.*HEAL accepted\n.*completed\n/);

  const conflict = await cli(['tenants', 'delete', 'acme']);
  assert.equal(conflict.code, EXIT_CODES.CONFLICT);
  assert.match(conflict.stderr, /^error: CONFLICT: tenant "acme" still has VNFs/);

  const term = await cli(['vnfs', 'terminate', first.vnfId, '-t', 'acme', '--mode', 'GRACEFUL', '--wait', '-o', 'json']);
  assert.equal(term.code, 0, term.stderr);
  assert.equal(JSON.parse(term.stdout).operationState, 'COMPLETED');
});

test('a bad VNFD is refused before anything is sent, naming each field', async () => {
  const before = api.received.length;
  writeFileSync(join(dir, 'bad.yaml'), 'name: Bad_Name\nreplicas: 0\nresources: {vcpus: 1, memoryMiB: 64, numa: strict}\nimage: {ref: x}\n');
  const r = await cli(['vnfs', 'instantiate', '-t', 'acme', '-f', join(dir, 'bad.yaml')]);
  assert.equal(r.code, EXIT_CODES.INVALID_ARGUMENT);
  assert.match(r.stderr, /^error: INVALID_ARGUMENT:\n/);
  assert.match(r.stderr, /- descriptor\.name: /);
  assert.match(r.stderr, /- descriptor\.replicas: /);
  const missing = await cli(['vnfs', 'instantiate', '-t', 'acme', '-f', join(dir, 'nope.yaml')]);
  assert.equal(missing.code, EXIT_CODES.INVALID_ARGUMENT);
  assert.match(missing.stderr, /--file: cannot read .*nope\.yaml/);
  assert.equal(api.received.length, before, 'no request reached the API');
});

test('UNSCHEDULABLE: instantiate --wait exits with its code and prints the rejections per filter', async () => {
  json(await cli(['tenants', 'create', 'gamma', '-o', 'json']));
  for (const n of ['node-a', 'node-b']) json(await cli(['nodes', 'cordon', n, '-o', 'json']));
  try {
    const r = await cli(['vnfs', 'instantiate', '-t', 'gamma', '-f', join(dir, 'vrouter.yaml'), '--wait']);
    assert.equal(r.code, EXIT_CODES.UNSCHEDULABLE, r.stderr);
    assert.match(r.stdout, /INSTANTIATE\s+FAILED/);
    assert.match(r.stderr, /^INSTANTIATE op-\d+ on gamma\/vnf-\d+: following/, 'progress first (not a terminal: plain lines)');
    assert.match(r.stderr, /^INSTANTIATE FAILED after \d+\.\d s\nerror: UNSCHEDULABLE: INSTANTIATE op-\d+ ended FAILED: no feasible node among 2: node is cordoned \(2\)\n/m);
    assert.match(r.stderr, /\n  - \[cordon\] node is cordoned \(2 nodes\)\n$/);
  } finally {
    for (const n of ['node-a', 'node-b']) json(await cli(['nodes', 'uncordon', n, '-o', 'json']));
  }
});

test('events: replay as NDJSON; --follow prints new events and stops cleanly on SIGINT', async () => {
  json(await cli(['tenants', 'create', 'evt', '-o', 'json']));
  const { vnfId } = json(await cli(['vnfs', 'instantiate', '-t', 'evt', '-f', join(dir, 'vrouter.yaml'), '-o', 'json']));
  const replay = await cli(['events', '-t', 'evt', '-o', 'json']);
  assert.equal(replay.code, 0, replay.stderr);
  const evs = replay.stdout.trimEnd().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(evs.map((e) => `${e.type}:${e.operationState ?? e.state}`), ['OpOcc:STARTING', 'Replica:RUNNING', 'Replica:RUNNING', 'OpOcc:COMPLETED']);
  assert.ok(evs.every((e) => e.tenantId === 'evt' && e.vnfId === vnfId));
  const table = await cli(['events', '-t', 'evt', '--vnf', vnfId]);
  assert.match(table.stdout, new RegExp(`#\\d+  evt/${vnfId}  Replica 1 RUNNING on node-b\\n`));

  const child = spawn(process.execPath, [BIN, 'events', '-t', 'evt', '--follow'], { env: { PATH: process.env.PATH ?? '', EDGENFV_HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  // one listener for the child's whole life (an event can be printed before the test starts waiting for it)
  let wake = (): void => undefined;
  child.stdout.on('data', (b: Buffer) => {
    out += b.toString();
    wake();
  });
  const waitFor = (re: RegExp): Promise<void> =>
    new Promise((resolve) => {
      wake = () => {
        if (re.test(out)) resolve();
      };
      wake();
    });
  try {
    await waitFor(/INSTANTIATE COMPLETED\n/);
    json(await cli(['vnfs', 'terminate', vnfId, '-t', 'evt', '-o', 'json']));
    await waitFor(/TERMINATE COMPLETED\n/);
    } finally {
    child.kill('SIGINT');
  }
  assert.equal(await exited, 0, err);
  assert.equal(out.trimEnd().split('\n').length, 5);

  // --follow again: it resumes after the last event the previous --follow printed (remembered in EDGENFV_HOME)
  const lastSeq = Number(/#(\d+) {2}/.exec(out.trimEnd().split('\n').pop()!)?.[1]);
  assert.ok(lastSeq > 0);
  const again = json(await cli(['vnfs', 'instantiate', '-t', 'evt', '-f', join(dir, 'vrouter.yaml'), '-o', 'json']));
  const child2 = spawn(process.execPath, [BIN, 'events', '-t', 'evt', '--follow'], { env: { PATH: process.env.PATH ?? '', EDGENFV_HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out2 = '';
  let err2 = '';
  const exited2 = new Promise<number | null>((r) => child2.once('exit', (c) => r(c)));
  child2.stderr.on('data', (b: Buffer) => (err2 += b.toString()));
  await new Promise<void>((resolve) => {
    child2.stdout.on('data', (b: Buffer) => {
      out2 += b.toString();
      if (/INSTANTIATE COMPLETED\n/.test(out2)) resolve();
    });
  });
  child2.kill('SIGINT');
  assert.equal(await exited2, 0, err2);
  assert.match(err2, new RegExp(`resuming after event #${lastSeq} `));
  const seqs = out2.trimEnd().split("\n").map((l) => Number(/#(\d+) {2}/.exec(l)?.[1]));
  assert.equal(seqs[0], lastSeq + 1, 'nothing printed twice, nothing skipped');
  assert.ok(out2.includes(again.vnfId as string));
});

test("tenants dashboard-token: the tenant's own dashboard token, derived from the operator's; a re-created tenant gets a new one", async () => {
  const t = json(await cli(['tenants', 'create', 'dash', '-o', 'json']));
  const r = json(await cli(['tenants', 'dashboard-token', 'dash', '-o', 'json']));
  assert.equal(r.tenantId, 'dash');
  assert.match(r.dashboardToken, /^edt\.dash\.[A-Za-z0-9_-]{43}$/);
  assert.equal(r.dashboardToken, tenantDashboardToken('operator-dash-token', t), 'the same derivation the dashboard checks');
  assert.equal(r.open, `http://127.0.0.1:8080/#token=${r.dashboardToken as string}`);
  const table = await cli(['tenants', 'dashboard-token', 'dash']);
  assert.equal(table.stdout, `${r.open as string}\n`);
  json(await cli(['tenants', 'delete', 'dash', '-o', 'json']));
  await new Promise((res) => setTimeout(res, 5));
  json(await cli(['tenants', 'create', 'dash', '-o', 'json']));
  const again = json(await cli(['tenants', 'dashboard-token', 'dash', '-o', 'json']));
  assert.notEqual(again.dashboardToken, r.dashboardToken, 'the old token is revoked with the tenant');
  const none = await cli(['tenants', 'dashboard-token', 'nope']);
  assert.equal(none.code, EXIT_CODES.NOT_FOUND);
});
