/**
 * A tenant VM holding several VNFs' replicas live-migrates as one (issue 16, docs/migration.md), with the real
 * scheduler process and simulated nodes that serve `nodes.<n>.migrate` (no VM; seconds). A simulated node stands
 * a tenant's allocations on it for one tenant VM: its `check` lists them (`members`), an incoming group is reported
 * `incoming` once every member's allocation is there and switches over as one at the source's `continue`.
 * - `nodes.drain`: the tenant's two VNFs (one VM on A) move to B as one group: one HEAL drives it (one `start`, one
 *   `continue` on A), the other follows and completes; both replicas RUNNING throughout, same addresses (leases
 *   stay), both destination allocations name the whole group and carry the source VM's layout from A's `check`
 *   (`migration.vm`), the VM's overhead booked once on B as it was on A, A holds nothing;
 * - a failed fence aborts the whole group: both replicas run on at the source, both HEALs FAILED_TEMP, nothing left
 *   on the destination; `opoccs.retry` of the driver moves the group, the follower's retry completes;
 * - `vnfs.heal {replica, migrate}` of one VNF of a shared VM (no HEAL moves the other): restarted, and says why.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import type { Allocation } from '@edgenfv/contracts';
import { startCluster, type Api, type Cluster, until } from '../src/harness.js';
import { startMigratingSimNodes, type SimNode } from '../src/sim-node.js';

let cluster: Cluster;
let nc: NatsConnection;
let api: Api;
let nodes = new Map<string, SimNode>();
let stopNodes = (): void => undefined;

before(async () => {
  cluster = await startCluster({ env: { EDGENFV_HEARTBEAT_GRACE_MS: '60000' } }); // no node is lost here, even on a loaded host
  ({ nc, api } = cluster);
  ({ nodes, stop: stopNodes } = await startMigratingSimNodes(nc, ['mg-a', 'mg-b'], 16));
}, { timeout: 90_000 });

after(async () => {
  stopNodes();
  await cluster?.close();
});

const steps = (op: any): string => op.steps.map((s: any) => s.message).join(' | ');

async function leaseOwners(): Promise<string[]> {
  const kv = await nc.jetstream().views.kv('edgenfv_ipam');
  const out: string[] = [];
  for await (const k of await kv.keys('mgmt.owner.>')) out.push(k.slice('mgmt.owner.'.length));
  return out.sort();
}

async function allocsOf(nodeId: string, tenantId: string): Promise<Allocation[]> {
  const kv = await nc.jetstream().views.kv('edgenfv_allocs');
  const out: Allocation[] = [];
  const keys: string[] = [];
  for await (const k of await kv.keys(`${nodeId}.>`)) keys.push(k);
  for (const k of keys) {
    const a = await allocation(nodeId, k.slice(nodeId.length + 1));
    if (a?.tenantId === tenantId) out.push(a);
  }
  return out;
}

async function allocation(nodeId: string, allocId: string): Promise<Allocation | undefined> {
  const kv = await nc.jetstream().views.kv('edgenfv_allocs');
  const e = await kv.get(`${nodeId}.${allocId}`);
  return e && e.operation === 'PUT' && e.length ? (e.json() as Allocation) : undefined;
}

/** A tenant with two VNFs (a tap NIC on mgmt each) in one VM on `on` (the other node cordoned meanwhile). */
async function twoVnfTenant(t: string, on: string, off: string): Promise<string[]> {
  await api.ok('nfv.v1.admin.nodes.uncordon', { id: on });
  await api.ok('nfv.v1.admin.nodes.cordon', { id: off });
  await api.ok('nfv.v1.admin.tenants.create', { id: t });
  const ids: string[] = [];
  for (const name of ['fw', 'lb']) {
    const descriptor = { name, replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:busybox' }, interfaces: [{ name: 'm', type: 'tap', network: 'mgmt' }] };
    const inst = await api.ok(`nfv.v1.tenant.${t}.vnfs.instantiate`, { descriptor });
    assert.equal((await api.waitOp(t, inst.opOccId, 30_000)).operationState, 'COMPLETED');
    ids.push(inst.vnfId);
  }
  for (const id of ids) assert.equal((await api.ok(`nfv.v1.tenant.${t}.vnfs.get`, { id })).replicas[0].nodeId, on);
  await api.ok('nfv.v1.admin.nodes.uncordon', { id: off });
  return ids;
}

async function replicas(t: string, ids: string[]): Promise<any[]> {
  return Promise.all(ids.map(async (id) => (await api.ok(`nfv.v1.tenant.${t}.vnfs.get`, { id })).replicas[0]));
}

test('nodes.drain moves a tenant VM holding two VNFs as one group: one HEAL drives, the other follows, leases and ledger follow', async (t) => {
  const a = nodes.get('mg-a')!;
  const ids = await twoVnfTenant('mg', 'mg-a', 'mg-b');
  const before = await replicas('mg', ids);
  const sources = before.map((r) => r.allocId as string);
  const ips = before.map((r) => r.interfaces[0].ips);
  assert.deepEqual(await leaseOwners(), sources.map((s) => `${s}.m`).sort());
  const onA = await api.ok('nfv.v1.admin.nodes.get', { id: 'mg-a' });
  assert.equal(onA.allocated.replicas, 2);
  a.migrateLog.length = 0;

  // the replicas stay RUNNING while they move (polled until both HEALs end)
  const seen = new Set<string>();
  let polling = true;
  const poller = (async () => {
    while (polling) {
      for (const r of await replicas('mg', ids)) seen.add(r.state);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const drain = await api.ok('nfv.v1.admin.nodes.drain', { id: 'mg-a' });
  assert.deepEqual(drain.vnfs.map((v: any) => v.mode), ['migrate', 'migrate'], JSON.stringify(drain.vnfs));
  const ops = [];
  for (const v of drain.vnfs) ops.push(await api.waitOp('mg', v.opOccId, 60_000));
  polling = false;
  await poller;
  for (const op of ops) t.diagnostic(steps(op));
  for (const op of ops) assert.equal(op.operationState, 'COMPLETED', steps(op));
  assert.deepEqual([...seen], ['RUNNING'], 'both replicas RUNNING throughout');

  // the first HEAL drove the group; the second followed it
  const [driver, follower] = ops;
  const rec = driver.params.migrations['0'];
  assert.equal(rec.group.length, 2, JSON.stringify(rec));
  assert.deepEqual(rec.group.map((g: any) => g.opOccId).sort(), ops.map((o) => o.id).sort());
  assert.equal(follower.params.migrations['0'].drivenBy, driver.id, steps(follower));
  assert.equal(follower.params.migrations['0'].phase, 'done');
  assert.match(steps(driver), /other replica\(s\) of its tenant VM/);
  assert.match(steps(follower), new RegExp(`replica 0 moved with its tenant VM by op ${driver.id}: node mg-a -> node mg-b`));
  // one VM moved once: A was asked to send it and switch over once, for the driver's replica
  const acts = a.migrateLog.filter((r) => r.action === 'start' || r.action === 'continue');
  assert.deepEqual(acts.map((r) => r.action), ['start', 'continue'], JSON.stringify(a.migrateLog));
  assert.equal(acts[0]!.allocId, rec.source);

  const after = await replicas('mg', ids);
  for (const [k, r] of after.entries()) {
    assert.equal(r.nodeId, 'mg-b');
    assert.equal(r.state, 'RUNNING');
    assert.deepEqual(r.interfaces[0].ips, ips[k], 'the guest keeps its address');
  }
  // both destination allocations name the whole group (source -> destination)
  const pairs = after.map((r, k) => ({ fromAllocId: sources[k], allocId: r.allocId })).sort((x, y) => x.allocId.localeCompare(y.allocId));
  for (const r of after) {
    const alloc = await allocation('mg-b', r.allocId);
    assert.ok(alloc?.migration, `allocation ${r.allocId} on mg-b`);
    assert.equal(alloc.migration.fromNodeId, 'mg-a');
    assert.deepEqual([...(alloc.migration.group ?? [])].sort((x, y) => x.allocId.localeCompare(y.allocId)), pairs);
    // the source VM as A's check described it, copied into every destination allocation
    assert.deepEqual(alloc.migration.vm?.members.map((x) => x.allocId).sort(), [...sources].sort());
  }
  // the ledger: A holds nothing; B holds both, the VM's overhead once (as A did)
  await until('A holds nothing', async () => (await api.ok('nfv.v1.admin.nodes.get', { id: 'mg-a' })).allocated.replicas === 0);
  const onB = await api.ok('nfv.v1.admin.nodes.get', { id: 'mg-b' });
  assert.equal(onB.allocated.replicas, 2);
  assert.equal(onB.allocated.memoryMiB, onA.allocated.memoryMiB, 'the same memory as on A: one VM overhead');
  assert.deepEqual(await leaseOwners(), sources.map((s) => `${s}.m`).sort(), 'the leases stay with the moved replicas');
  for (const n of nodes.values()) assert.deepEqual(n.conflicts, []);
  assert.ok(!a.running.has(sources[0]!) && !a.running.has(sources[1]!), 'A tore the source VM down');
});

test('a failed fence aborts the whole group (both run on at the source); retrying the driver moves it, the follower completes', async (t) => {
  const b = nodes.get('mg-b')!;
  const ids = await twoVnfTenant('mg2', 'mg-a', 'mg-b');
  const sources = (await replicas('mg2', ids)).map((r) => r.allocId as string);
  // B's node agent does not confirm its incoming VM at the fence
  b.beforeMigrateReply = async (req) => {
    if (req.action === 'check' && req.tenantId === 'mg2' && !sources.includes(req.allocId)) throw new Error('simulated: the incoming VM is gone');
  };
  const drain = await api.ok('nfv.v1.admin.nodes.drain', { id: 'mg-a', maxParallel: 2 });
  assert.equal(drain.vnfs.length, 2);
  const ended = [];
  for (const v of drain.vnfs) ended.push(await api.waitOp('mg2', v.opOccId, 60_000));
  for (const op of ended) t.diagnostic(steps(op));
  for (const op of ended) assert.equal(op.operationState, 'FAILED_TEMP', steps(op));
  const driver = ended.find((o) => o.params.migrations?.['0']?.group);
  const follower = ended.find((o) => o !== driver);
  assert.ok(driver && follower, ended.map(steps).join('\n'));
  assert.match(steps(driver), /did not confirm the incoming VM: migration cancelled \(cancelled\); every replica of the tenant VM runs on node mg-a/);
  assert.match(steps(follower), new RegExp(`driven by op ${driver.id}.*retry op ${driver.id} first`));
  const r1 = await replicas('mg2', ids);
  assert.deepEqual(r1.map((r) => [r.nodeId, r.state, r.allocId]), sources.map((s) => ['mg-a', 'RUNNING', s]), 'both run on at the source');
  // nothing of the tenant left on B: neither in the ledger nor on the node
  await until('B holds nothing of the tenant', async () => (await allocsOf('mg-b', 'mg2')).length === 0 && ![...b.running.values()].some((r) => r.tenantId === 'mg2'));

  b.beforeMigrateReply = undefined;
  await api.ok('nfv.v1.tenant.mg2.opoccs.retry', { id: driver.id });
  const d2 = await api.waitOp('mg2', driver.id, 60_000);
  assert.equal(d2.operationState, 'COMPLETED', steps(d2));
  const moved = await replicas('mg2', ids);
  assert.deepEqual(moved.map((r) => [r.nodeId, r.state]), [['mg-b', 'RUNNING'], ['mg-b', 'RUNNING']]);
  await api.ok('nfv.v1.tenant.mg2.opoccs.retry', { id: follower.id });
  const f2 = await api.waitOp('mg2', follower.id, 60_000);
  assert.equal(f2.operationState, 'COMPLETED', steps(f2));
  assert.equal(f2.params.migrations['0'].drivenBy, driver.id);
  await until('A holds nothing', async () => (await api.ok('nfv.v1.admin.nodes.get', { id: 'mg-a' })).allocated.replicas === 0);
  assert.equal((await allocsOf('mg-b', 'mg2')).length, 2);
  for (const n of nodes.values()) assert.deepEqual(n.conflicts, []);
});

test('vnfs.heal {migrate} of one VNF of a shared tenant VM (no HEAL moves the other): restarted, and the op says why', async () => {
  const ids = await twoVnfTenant('mg3', 'mg-a', 'mg-b');
  const heal = await api.ok('nfv.v1.tenant.mg3.vnfs.heal', { id: ids[0], replica: 0, migrate: true });
  const done = await api.waitOp('mg3', heal.opOccId, 60_000);
  assert.equal(done.operationState, 'COMPLETED', steps(done));
  assert.equal(done.params.mode, 'restart');
  assert.match(done.params.restartReason, /shares its tenant VM on node mg-a with VNF lb replica 0, which no live-migrating HEAL moves/);
  const [r0, r1] = await replicas('mg3', ids);
  assert.equal(r0.state, 'RUNNING');
  assert.equal(r1.nodeId, 'mg-a', 'the other VNF stays');
});

test('two replicas of one VNF in one tenant VM: the drain\'s one HEAL moves them as one group', async () => {
  await api.ok('nfv.v1.admin.nodes.uncordon', { id: 'mg-a' });
  await api.ok('nfv.v1.admin.nodes.cordon', { id: 'mg-b' });
  await api.ok('nfv.v1.admin.tenants.create', { id: 'mg4' });
  const descriptor = { name: 'fw', replicas: 2, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:busybox' }, interfaces: [{ name: 'm', type: 'tap', network: 'mgmt' }] };
  const inst = await api.ok('nfv.v1.tenant.mg4.vnfs.instantiate', { descriptor });
  assert.equal((await api.waitOp('mg4', inst.opOccId, 30_000)).operationState, 'COMPLETED');
  const v0 = await api.ok('nfv.v1.tenant.mg4.vnfs.get', { id: inst.vnfId });
  assert.deepEqual(v0.replicas.map((r: any) => r.nodeId), ['mg-a', 'mg-a']);
  await api.ok('nfv.v1.admin.nodes.uncordon', { id: 'mg-b' });
  const drain = await api.ok('nfv.v1.admin.nodes.drain', { id: 'mg-a' });
  const mine = drain.vnfs.filter((v: any) => v.tenantId === 'mg4');
  assert.deepEqual(mine.map((v: any) => [v.mode, v.replicas]), [['migrate', [0, 1]]]);
  const op = await api.waitOp('mg4', mine[0].opOccId, 60_000);
  assert.equal(op.operationState, 'COMPLETED', steps(op));
  assert.equal(op.params.mode, 'migrate');
  assert.deepEqual(op.params.migrations['0'].group.map((g: any) => g.replica).sort(), [0, 1]);
  assert.equal(op.params.migrations['1'].drivenBy, op.id);
  assert.equal(op.params.migrations['1'].phase, 'done');
  const v1 = await api.ok('nfv.v1.tenant.mg4.vnfs.get', { id: inst.vnfId });
  assert.deepEqual(v1.replicas.map((r: any) => [r.nodeId, r.state]), [['mg-b', 'RUNNING'], ['mg-b', 'RUNNING']]);
  assert.deepEqual(v1.replicas.map((r: any) => r.interfaces[0].ips), v0.replicas.map((r: any) => r.interfaces[0].ips));
  await until('A holds nothing of the tenant', async () => (await allocsOf('mg-a', 'mg4')).length === 0);
  for (const n of nodes.values()) assert.deepEqual(n.conflicts, []);
});
