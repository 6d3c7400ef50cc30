/**
 * The CLI against the real scheduler (not a fake responder): connect.json as `npm start` writes it, tenants,
 * a VNF instantiated from a YAML file and waited for, its op occurrence, events, and exit codes per error class.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, startCluster, type Cluster } from '../src/harness.js';
import { putNode } from '../src/state-fixtures.js';

const CLI = join(REPO_ROOT, 'services/cli/bin/edgenfv.js');
let c: Cluster;
let home: string;

before(async () => {
  c = await startCluster();
  home = join(c.dir, 'home');
  mkdirSync(home);
  writeFileSync(join(home, 'connect.json'), JSON.stringify({ servers: [c.nats.url], metricsUrls: [] }), { mode: 0o600 });
});
after(async () => {
  await c?.close();
});

function cli(...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, EDGENFV_HOME: home }, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('tenants, instantiate --wait, opoccs, events and exit codes against the real scheduler', async () => {
  let r = cli('tenants', 'create', 'clitest', '--quota-vnfs', '3', '-o', 'json');
  assert.equal(r.code, 0, r.err);
  assert.equal(JSON.parse(r.out).id, 'clitest');
  r = cli('tenants', 'create', 'clitest');
  assert.equal(r.code, 5, 'ALREADY_EXISTS');
  assert.match(r.err, /ALREADY_EXISTS/);
  r = cli('tenants', 'list', '-o', 'json');
  assert.deepEqual(JSON.parse(r.out).map((t: any) => t.id), ['clitest']);

  const vnfd = join(c.dir, 'vnfd.yaml');
  writeFileSync(vnfd, 'name: fw\nreplicas: 1\nresources: {vcpus: 64, memoryMiB: 512}\nimage: {ref: "builtin:vrouter"}\n');
  // no node can hold 64 vCPUs: the operation ends FAILED/UNSCHEDULABLE, exit 8, the reason printed
  await putNode(c.nc, 'cli-node');
  r = cli('vnfs', 'instantiate', '-t', 'clitest', '-f', vnfd, '--wait');
  assert.equal(r.code, 8, `${r.out}\n${r.err}`);
  assert.match(r.err + r.out, /UNSCHEDULABLE/);
  assert.match(r.err + r.out, /0\/1 nodes fit/);

  writeFileSync(vnfd, 'name: fw\nreplicas: 0\nresources: {vcpus: 1, memoryMiB: 512}\nimage: {ref: "builtin:vrouter"}\n');
  r = cli('vnfs', 'instantiate', '-t', 'clitest', '-f', vnfd);
  assert.equal(r.code, 3, 'INVALID_ARGUMENT, checked before sending');
  assert.match(r.err, /descriptor\.replicas/);

  r = cli('vnfs', 'list', '-t', 'clitest', '-o', 'json');
  const [vnf] = JSON.parse(r.out);
  assert.equal(vnf.instantiationState, 'NOT_INSTANTIATED');
  r = cli('opoccs', 'get', vnf.lastOpOccId, '-t', 'clitest', '-o', 'json');
  assert.equal(r.code, 0, r.err);
  assert.equal(JSON.parse(r.out).error.code, 'UNSCHEDULABLE');
  r = cli('events', '-t', 'clitest', '-o', 'json');
  assert.equal(r.code, 0, r.err);
  const events = r.out.trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(events.some((e) => e.type === 'OpOcc' && e.operationState === 'FAILED' && e.vnfId === vnf.id), r.out);
  // day-2 commands: the op occurrence list; retry/rollback/fail only from FAILED_TEMP; OPERATE/logs need an instantiated VNF
  r = cli('opoccs', 'list', '-t', 'clitest', '--vnf', vnf.id, '-o', 'json');
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(JSON.parse(r.out).map((o: any) => `${o.operation}:${o.operationState}`), ['INSTANTIATE:FAILED']);
  r = cli('opoccs', 'list', '-t', 'clitest');
  assert.match(r.out, /INSTANTIATE\s+FAILED/);
  r = cli('opoccs', 'retry', vnf.lastOpOccId, '-t', 'clitest');
  assert.equal(r.code, 6, `CONFLICT: ${r.err}`);
  assert.match(r.err, /needs FAILED_TEMP/);
  r = cli('vnfs', 'operate', vnf.id, '-t', 'clitest', '--state', 'STOPPED');
  assert.equal(r.code, 6, `CONFLICT: ${r.err}`);
  r = cli('vnfs', 'logs', vnf.id, '-t', 'clitest');
  assert.equal(r.code, 6, `CONFLICT (on no node): ${r.err}`);
  r = cli('vnfs', 'exec', vnf.id, '-t', 'clitest', '--', 'cat', '/etc/hostname');
  assert.equal(r.code, 6, `CONFLICT (on no node): ${r.err}`);
  r = cli('vnfs', 'get', 'vnf-000000000000', '-t', 'clitest');
  assert.equal(r.code, 4, 'NOT_FOUND');
  r = cli('nodes', 'cordon', 'cli-node', '-o', 'json');
  assert.equal(r.code, 0, r.err);
  assert.equal(JSON.parse(r.out).cordoned, true);
});
