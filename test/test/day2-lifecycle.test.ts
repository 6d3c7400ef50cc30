/**
 * Day-2 lifecycle through the message API, on simulated nodes (the real node protocol, no VMs): a node killed
 * during an INSTANTIATE sends the operation to FAILED_TEMP holding what it reserved, `retry` places the replica
 * elsewhere and completes it; `rollback` leaves nothing behind (no allocation, lease, quota, name or replica);
 * OPERATE STOPPED/STARTED keeps the replica's node, MAC and addresses and its quota; requestId reuse with another
 * body is a CONFLICT; retry/rollback/fail outside FAILED_TEMP are CONFLICTs.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';
import { KV_BUCKETS } from '@edgenfv/contracts';
import { Api, startScheduler, TEST_NETWORKS, type SchedulerProc } from '../src/harness.js';
import { SimNode, simulatedNodeInventory } from '../src/sim-node.js';
import { waitNodeKnown } from '../src/state-fixtures.js';

const GRACE_MS = 2000;
let dir: string;
let nats: NatsServerHandle;
let sched: SchedulerProc;
let nc: NatsConnection;
let api: Api;
const nodes = new Map<string, SimNode>();
const cleanups: (() => void)[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgenfv-day2-'));
  nats = await startNatsServer({ storeDir: join(dir, 'js') });
  const config = join(dir, 'scheduler.json');
  writeFileSync(config, JSON.stringify({ networks: TEST_NETWORKS }));
  sched = await startScheduler({ EDGENFV_NATS_URL: nats.url, EDGENFV_CONFIG: config, EDGENFV_HEARTBEAT_GRACE_MS: String(GRACE_MS) });
  nc = await connect({ servers: nats.url });
  api = new Api(nc);
  for (const id of ['d2-a', 'd2-b', 'd2-c']) {
    const { inventory, cleanup } = await simulatedNodeInventory(id, { numaNodes: 1, cpusPerNuma: 8, isolatedPerNuma: 4, vfsPerNuma: 4, physnet: 'physnet1' });
    cleanups.push(cleanup);
    const n = new SimNode(nc, inventory, 300);
    await n.start();
    nodes.set(id, n);
  }
  for (const id of nodes.keys()) await waitNodeKnown(nc, id);
});

after(async () => {
  for (const n of nodes.values()) n.stop();
  await nc?.close();
  await sched?.stop();
  await nats?.stop();
  for (const c of cleanups) c();
  rmSync(dir, { recursive: true, force: true });
});

const descriptor = (name: string) => ({
  name,
  replicas: 1,
  resources: { vcpus: 1, memoryMiB: 256 },
  image: { ref: 'builtin:vrouter' },
  interfaces: [{ name: 'mgmt', type: 'tap', network: 'mgmt' }],
});

async function waitState(t: string, opOccId: string, states: string[], timeoutMs = 30_000): Promise<any> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const op = await api.ok(`nfv.v1.tenant.${t}.opoccs.get`, { id: opOccId });
    if (states.includes(op.operationState)) return op;
    if (Date.now() > end) throw new Error(`op ${opOccId} is ${op.operationState}, not ${states.join('|')}: ${JSON.stringify(op.steps.slice(-3))}\n${sched.logs.slice(-5).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function kvKeys(bucket: string): Promise<string[]> {
  const kv = await nc.jetstream().views.kv(bucket);
  const out: string[] = [];
  for await (const k of await kv.keys()) out.push(k);
  return out;
}

/** IP leases whose owner is one of the VNF's allocations. */
async function leasesOf(vnfId: string): Promise<string[]> {
  const kv = await nc.jetstream().views.kv(KV_BUCKETS.ipam);
  const out: string[] = [];
  for (const k of await kvKeys(KV_BUCKETS.ipam)) {
    const e = await kv.get(k);
    if (e && e.operation === 'PUT' && e.string().includes(vnfId)) out.push(k);
  }
  return out;
}

/** Instantiates with every node holding starts, then kills the node the replica went to. */
async function instantiateAndKill(t: string, name: string): Promise<{ vnfId: string; opOccId: string; killed: SimNode }> {
  for (const n of nodes.values()) n.holdStarts = true;
  const inst = await api.ok(`nfv.v1.tenant.${t}.vnfs.instantiate`, { descriptor: descriptor(name) });
  let nodeId: string | undefined;
  for (let i = 0; i < 100 && !nodeId; i++) {
    nodeId = (await api.ok(`nfv.v1.tenant.${t}.vnfs.get`, { id: inst.vnfId })).replicas[0].nodeId;
    if (!nodeId) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(nodeId, 'placed');
  const killed = nodes.get(nodeId)!;
  killed.partition(); // the node agent dies mid-boot: no more heartbeats, no status
  for (const n of nodes.values()) if (n !== killed) n.holdStarts = false;
  return { ...inst, killed };
}

test('a node killed during INSTANTIATE: FAILED_TEMP holding the reservation; retry places it elsewhere and completes', async () => {
  await api.ok('nfv.v1.admin.tenants.create', { id: 'retry', quota: { vcpus: 4 } });
  const { vnfId, opOccId, killed } = await instantiateAndKill('retry', 'fw');
  const ft = await waitState('retry', opOccId, ['FAILED_TEMP']);
  assert.equal(ft.error.code, 'UNAVAILABLE');
  assert.match(ft.error.message, new RegExp(`node ${killed.nodeId}`));
  assert.match(ft.steps.at(-1).message, /FAILED_TEMP: retry, rollback or fail/);
  const held = await api.ok('nfv.v1.admin.tenants.get', { id: 'retry' });
  assert.equal(held.usage.vcpus, 1, 'the quota stays charged in FAILED_TEMP');
  const busy = await api.tenant('retry', 'vnfs.terminate', { id: vnfId });
  assert.equal(busy.error.code, 'CONFLICT', 'FAILED_TEMP keeps the VNF locked');

  const retried = await api.ok('nfv.v1.tenant.retry.opoccs.retry', { id: opOccId });
  assert.equal(retried.operationState, 'PROCESSING');
  assert.equal(retried.retries, 1);
  const done = await waitState('retry', opOccId, ['COMPLETED', 'FAILED', 'FAILED_TEMP']);
  assert.equal(done.operationState, 'COMPLETED', JSON.stringify(done.steps));
  assert.ok(done.steps.some((s: any) => /retry: replica 0 .* released, to be placed again/.test(s.message)));
  const vnf = await api.ok('nfv.v1.tenant.retry.vnfs.get', { id: vnfId });
  assert.equal(vnf.instantiationState, 'INSTANTIATED');
  assert.equal(vnf.replicas[0].state, 'RUNNING');
  assert.notEqual(vnf.replicas[0].nodeId, killed.nodeId);
  assert.equal(vnf.replicas[0].generation, 1);
  assert.equal((await api.ok('nfv.v1.admin.tenants.get', { id: 'retry' })).usage.vcpus, 1, 'charged once');
  const again = await api.tenant('retry', 'opoccs.retry', { id: opOccId });
  assert.equal(again.error.code, 'CONFLICT', 'retry needs FAILED_TEMP');

  await killed.rejoin();
  killed.holdStarts = false;
  const term = await api.ok('nfv.v1.tenant.retry.vnfs.terminate', { id: vnfId });
  assert.equal((await api.waitOp('retry', term.opOccId)).operationState, 'COMPLETED');
});

test('rollback of a FAILED_TEMP INSTANTIATE leaves nothing behind', async () => {
  await api.ok('nfv.v1.admin.tenants.create', { id: 'rb', quota: { vcpus: 4, vnfs: 2 } });
  const { vnfId, opOccId, killed } = await instantiateAndKill('rb', 'fw');
  await waitState('rb', opOccId, ['FAILED_TEMP']);
  assert.ok((await leasesOf(vnfId)).length >= 1, 'the replica holds an address while FAILED_TEMP');
  const rolling = await api.ok('nfv.v1.tenant.rb.opoccs.rollback', { id: opOccId });
  assert.equal(rolling.operationState, 'ROLLING_BACK');
  const rb = await waitState('rb', opOccId, ['ROLLED_BACK', 'FAILED']);
  assert.equal(rb.operationState, 'ROLLED_BACK', JSON.stringify(rb.steps));
  const vnf = await api.ok('nfv.v1.tenant.rb.vnfs.get', { id: vnfId });
  assert.equal(vnf.instantiationState, 'NOT_INSTANTIATED');
  assert.deepEqual(vnf.replicas, []);
  assert.equal(vnf.activeOpOccId, undefined);
  const t = await api.ok('nfv.v1.admin.tenants.get', { id: 'rb' });
  assert.deepEqual(t.usage, { vcpus: 0, memoryMiB: 0, vfs: 0, vnfs: 0 });
  assert.deepEqual((await kvKeys(KV_BUCKETS.allocs)).filter((k) => k.includes(vnfId)), [], 'no allocation');
  assert.deepEqual((await kvKeys(KV_BUCKETS.status)).filter((k) => k.includes(vnfId)), [], 'no status');
  await killed.rejoin(); // the node comes back and tears down the sandbox it no longer owns
  killed.holdStarts = false;
  assert.equal(killed.running.size, 0);
  for (let i = 0; ; i++) {
    const n = await api.ok('nfv.v1.admin.nodes.get', { id: killed.nodeId });
    if (n.health === 'Ready' && n.allocated.replicas === 0) break;
    assert.ok(i < 100, `node ${killed.nodeId} still holds ${JSON.stringify(n.allocated)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  // a lost node's leases stay held (fenced) until it confirmed the teardown: now they are free
  assert.deepEqual(await leasesOf(vnfId), [], 'the address is free again');
  // the name is free: the same VNF can be instantiated again
  const again = await api.ok('nfv.v1.tenant.rb.vnfs.instantiate', { descriptor: descriptor('fw') });
  assert.equal((await api.waitOp('rb', again.opOccId)).operationState, 'COMPLETED');
  const ops = await api.ok('nfv.v1.tenant.rb.opoccs.list', { vnfId });
  assert.deepEqual(ops.items.map((o: any) => `${o.operation}:${o.operationState}`), ['INSTANTIATE:ROLLED_BACK']);
  const term = await api.ok('nfv.v1.tenant.rb.vnfs.terminate', { id: again.vnfId });
  assert.equal((await api.waitOp('rb', term.opOccId)).operationState, 'COMPLETED');
});

test('OPERATE STOPPED then STARTED keeps node, MAC, addresses and quota; CONFLICTs where SOL003 has 409s', async () => {
  for (const n of nodes.values()) n.holdStarts = false;
  await api.ok('nfv.v1.admin.tenants.create', { id: 'op', quota: { vcpus: 4 } });
  const inst = await api.ok('nfv.v1.tenant.op.vnfs.instantiate', { descriptor: descriptor('fw'), requestId: 'deploy-1' });
  // the same requestId: the first reply; with another body: CONFLICT
  assert.deepEqual(await api.ok('nfv.v1.tenant.op.vnfs.instantiate', { requestId: 'deploy-1', descriptor: descriptor('fw') }), inst);
  const reuse = await api.tenant('op', 'vnfs.instantiate', { descriptor: descriptor('other'), requestId: 'deploy-1' });
  assert.equal(reuse.error.code, 'CONFLICT');
  assert.match(reuse.error.message, /requestId/);
  assert.equal((await api.waitOp('op', inst.opOccId)).operationState, 'COMPLETED');
  const before = await api.ok('nfv.v1.tenant.op.vnfs.get', { id: inst.vnfId });
  const r0 = before.replicas[0];

  const already = await api.tenant('op', 'vnfs.operate', { id: inst.vnfId, changeStateTo: 'STARTED' });
  assert.equal(already.error.code, 'CONFLICT');
  const stop = await api.ok('nfv.v1.tenant.op.vnfs.operate', { id: inst.vnfId, changeStateTo: 'STOPPED' });
  const stopOp = await api.waitOp('op', stop.opOccId);
  assert.equal(stopOp.operationState, 'COMPLETED', JSON.stringify(stopOp.steps));
  const stopped = await api.ok('nfv.v1.tenant.op.vnfs.get', { id: inst.vnfId });
  assert.equal(stopped.operationalState, 'STOPPED');
  const s0 = stopped.replicas[0];
  assert.equal(s0.state, 'STOPPED');
  assert.deepEqual([s0.nodeId, s0.allocId, s0.interfaces], [r0.nodeId, r0.allocId, r0.interfaces], 'node, allocation, MAC and addresses kept');
  assert.ok(nodes.get(r0.nodeId)!.containersStopped.has(r0.allocId));
  assert.equal((await api.ok('nfv.v1.admin.tenants.get', { id: 'op' })).usage.vcpus, 1, 'quota stays charged');

  const start = await api.ok('nfv.v1.tenant.op.vnfs.operate', { id: inst.vnfId, changeStateTo: 'STARTED' });
  assert.equal((await api.waitOp('op', start.opOccId)).operationState, 'COMPLETED');
  const started = await api.ok('nfv.v1.tenant.op.vnfs.get', { id: inst.vnfId });
  assert.equal(started.operationalState, 'STARTED');
  assert.equal(started.replicas[0].state, 'RUNNING');
  assert.deepEqual(started.replicas[0].interfaces, r0.interfaces);

  const list = await api.ok('nfv.v1.tenant.op.opoccs.list', { vnfId: inst.vnfId });
  assert.deepEqual(list.items.map((o: any) => o.operation), ['INSTANTIATE', 'OPERATE', 'OPERATE']);
  for (const action of ['retry', 'rollback', 'fail']) {
    const r = await api.tenant('op', `opoccs.${action}`, { id: start.opOccId });
    assert.equal(r.error.code, 'CONFLICT', `${action} of a COMPLETED op`);
  }
  // logs/exec go to the node agent; a simulated node has none: the node is named
  const logs = await api.tenant('op', 'vnfs.logs', { id: inst.vnfId }, );
  assert.equal(logs.error.code, 'UNAVAILABLE');
  assert.match(logs.error.message, new RegExp(`node ${r0.nodeId} did not answer`));
  const bad = await api.tenant('op', 'vnfs.exec', { id: inst.vnfId, command: [] });
  assert.equal(bad.error.code, 'INVALID_ARGUMENT');

  // terminate a STOPPED VNF: released as usual
  await api.ok('nfv.v1.tenant.op.vnfs.operate', { id: inst.vnfId, changeStateTo: 'STOPPED' }).then((r) => api.waitOp('op', r.opOccId));
  const term = await api.ok('nfv.v1.tenant.op.vnfs.terminate', { id: inst.vnfId });
  assert.equal((await api.waitOp('op', term.opOccId)).operationState, 'COMPLETED');
  assert.equal(nodes.get(r0.nodeId)!.running.has(r0.allocId), false);
  assert.equal((await api.ok('nfv.v1.admin.tenants.get', { id: 'op' })).usage.vcpus, 0);
});

test('SCALE and HEAL of a STOPPED VNF place replicas without starting their containers; OPERATE STARTED starts them', async () => {
  for (const n of nodes.values()) n.holdStarts = false;
  await api.ok('nfv.v1.admin.tenants.create', { id: 'opscale', quota: { vcpus: 4 } });
  const inst = await api.ok('nfv.v1.tenant.opscale.vnfs.instantiate', { descriptor: descriptor('fw') });
  assert.equal((await api.waitOp('opscale', inst.opOccId)).operationState, 'COMPLETED');
  const stop = await api.ok('nfv.v1.tenant.opscale.vnfs.operate', { id: inst.vnfId, changeStateTo: 'STOPPED' });
  assert.equal((await api.waitOp('opscale', stop.opOccId)).operationState, 'COMPLETED');
  const started = (allocId: string): boolean => [...nodes.values()].some((n) => n.containersStarted.has(allocId));

  const scale = await api.ok('nfv.v1.tenant.opscale.vnfs.scale', { id: inst.vnfId, replicas: 2 });
  const scaleOp = await api.waitOp('opscale', scale.opOccId);
  assert.equal(scaleOp.operationState, 'COMPLETED', JSON.stringify(scaleOp.steps));
  let vnf = await api.ok('nfv.v1.tenant.opscale.vnfs.get', { id: inst.vnfId });
  assert.equal(vnf.operationalState, 'STOPPED');
  const r1 = vnf.replicas[1];
  assert.equal(r1.state, 'STOPPED');
  assert.ok(r1.nodeId && r1.allocId, 'the new replica is placed (VM, NICs, addresses)');
  assert.ok(r1.interfaces[0].ips.length > 0);
  assert.equal(started(r1.allocId), false, 'its container was never started');
  assert.ok(nodes.get(r1.nodeId)!.containersStopped.has(r1.allocId));

  const heal = await api.ok('nfv.v1.tenant.opscale.vnfs.heal', { id: inst.vnfId, replica: 0 });
  const healOp = await api.waitOp('opscale', heal.opOccId);
  assert.equal(healOp.operationState, 'COMPLETED', JSON.stringify(healOp.steps));
  vnf = await api.ok('nfv.v1.tenant.opscale.vnfs.get', { id: inst.vnfId });
  const h0 = vnf.replicas[0];
  assert.equal(h0.state, 'STOPPED');
  assert.equal(h0.generation, 1, 'replica 0 got a new allocation');
  assert.equal(started(h0.allocId), false, 'the healed replica\'s container was never started');

  const start = await api.ok('nfv.v1.tenant.opscale.vnfs.operate', { id: inst.vnfId, changeStateTo: 'STARTED' });
  assert.equal((await api.waitOp('opscale', start.opOccId)).operationState, 'COMPLETED');
  vnf = await api.ok('nfv.v1.tenant.opscale.vnfs.get', { id: inst.vnfId });
  assert.deepEqual(vnf.replicas.map((r: any) => r.state), ['RUNNING', 'RUNNING']);
  assert.ok(started(h0.allocId) && started(r1.allocId));
  const term = await api.ok('nfv.v1.tenant.opscale.vnfs.terminate', { id: inst.vnfId });
  assert.equal((await api.waitOp('opscale', term.opOccId)).operationState, 'COMPLETED');
});

test('a retried request whose first copy was carried out but whose answer and idempotency marker were lost gets the same op occurrence, not CONFLICT', async () => {
  for (const n of nodes.values()) n.holdStarts = false;
  await api.ok('nfv.v1.admin.tenants.create', { id: 'rt', quota: { vcpus: 8 } });
  const inst = await api.ok('nfv.v1.tenant.rt.vnfs.instantiate', { descriptor: descriptor('fw') });
  assert.equal((await api.waitOp('rt', inst.opOccId)).operationState, 'COMPLETED');
  for (const n of nodes.values()) n.holdStarts = true; // the scale stays in progress
  try {
    const first = await api.ok('nfv.v1.tenant.rt.vnfs.scale', { id: inst.vnfId, replicas: 2, requestId: 'grow-1' });
    // the marker lost (a NATS server went away before the reply was stored): only the op occurrence remains
    const kv = await nc.jetstream().views.kv(KV_BUCKETS.requests);
    for await (const k of await kv.keys()) if (k.startsWith('rt.')) await kv.purge(k);
    assert.deepEqual(await api.ok('nfv.v1.tenant.rt.vnfs.scale', { id: inst.vnfId, replicas: 2, requestId: 'grow-1' }), first, 'the retry names the first copy\'s op occurrence');
    const other = await api.tenant('rt', 'vnfs.scale', { id: inst.vnfId, replicas: 3, requestId: 'grow-2' });
    assert.equal(other.error?.code, 'CONFLICT', 'another request still finds the operation in progress');
  } finally {
    for (const n of nodes.values()) n.holdStarts = false;
  }
});
