/**
 * Live migration's recovery paths (issue 16: "a migration interrupted by a node or leader failure ends with exactly
 * one running copy"; drain's `deadlineS`), with the real scheduler processes and simulated nodes that serve
 * `nodes.<n>.migrate` (no VM; seconds; docs/migration.md):
 * - `nodes.drain {deadlineS: 6}` while the destination never gets its incoming VM ready: the migration is given up
 *   at the deadline (the destination allocation released), the replica restarted on the other node, and the op
 *   occurrence says so (`params.mode: restart`, `restartReason`); and while the source is still sending the RAM (its
 *   answer to `start` held until the deadline has passed):
 *   the migration is cancelled on the source before any switchover, the replica restarted;
 * - two scheduler replicas; the leader is killed (SIGKILL) between `start` (RAM copied, the source paused before the
 *   switchover) and `continue`, while the destination's fence check is unanswered: the new leader resumes the HEAL
 *   from its recorded phase (sends `start` again, which the source takes as the migration under way, checks, switches
 *   over once), the op COMPLETED, exactly one running copy (on the destination), the ledger and the leases consistent;
 *   the same with a tenant VM holding two VNFs (a group: its driving HEAL resumed, one switchover, one copy of each);
 * - the answer to `continue` lost after the switchover: `cancel` on the source answers `completed` (resumes nothing),
 *   the migration completes, one copy;
 * - the destination fails right after the switchover (FAILED, torn down): the source's paused VM is resumed, the op
 *   FAILED_TEMP, the replica runs on at the source; `opoccs.retry` completes the migration.
 * The destination node agent killed mid-migration (FAILED_TEMP, the VNF runs on at the source, `opoccs.retry`
 * completes it) is tested with real VMs in migrate.test.ts.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import type { Allocation } from '@edgenfv/contracts';
import { startCluster, startScheduler, type Api, type Cluster, type SchedulerProc } from '../src/harness.js';
import { startMigratingSimNodes, type SimNode } from '../src/sim-node.js';

let cluster: Cluster;
let nc: NatsConnection;
let api: Api;
const schedulers = new Map<string, SchedulerProc>();
let nodes = new Map<string, SimNode>();
let stopNodes = (): void => undefined;

before(async () => {
  // a long heartbeat grace: the new leader of the failover test must not take the nodes for lost
  cluster = await startCluster({ env: { EDGENFV_HEARTBEAT_GRACE_MS: '30000', EDGENFV_INSTANCE_ID: 'mr-s1' } });
  ({ nc, api } = cluster);
  schedulers.set('mr-s1', cluster.scheduler);
  schedulers.set('mr-s2', await startScheduler({ ...cluster.env, EDGENFV_INSTANCE_ID: 'mr-s2' }));
  ({ nodes, stop: stopNodes } = await startMigratingSimNodes(nc, ['mr-a', 'mr-b'], 16));
}, { timeout: 90_000 });

after(async () => {
  stopNodes();
  for (const s of schedulers.values()) await s.stop();
  await cluster?.close();
});

async function until(what: string, cond: () => Promise<boolean>, ms = 30_000, show?: () => Promise<unknown>): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`not reached: ${what}${show ? `: ${JSON.stringify(await show())}` : ''}; the schedulers' warnings: ${warnings()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The schedulers' last warnings and leadership changes (for a failure's message). */
function warnings(): string {
  return [...schedulers.entries()]
    .flatMap(([id, s]) => s.logs.filter((l) => /"level":(40|50)|leader/.test(l)).slice(-8).map((l) => `${id}: ${l.slice(0, 300)}`))
    .join('\n');
}

/** Waits until exactly these copies of the VNF's replica 0 run on the simulated nodes (`node/allocId`). */
async function untilCopies(vnfId: string, want: string[]): Promise<void> {
  await until(`copies ${want.join(', ')}`, async () => JSON.stringify(copies(vnfId)) === JSON.stringify(want), 30_000, async () => copies(vnfId));
}

/** Waits until node mr-a holds no reservation. */
async function untilAEmpty(): Promise<void> {
  await until('A holds nothing', async () => (await api.ok('nfv.v1.admin.nodes.get', { id: 'mr-a' })).allocated.replicas === 0, 30_000, async () => (await api.ok('nfv.v1.admin.nodes.get', { id: 'mr-a' })).reservations);
}

/** The drains' deadline (s). */
const DEADLINE_S = 6;

const steps = (op: any): string => op.steps.map((s: any) => s.message).join(' | ');

async function leaseOwners(): Promise<string[]> {
  const kv = await nc.jetstream().views.kv('edgenfv_ipam');
  const out: string[] = [];
  for await (const k of await kv.keys('mgmt.owner.>')) out.push(k.slice('mgmt.owner.'.length));
  return out.sort();
}

async function leaderId(): Promise<string | undefined> {
  const kv = await nc.jetstream().views.kv('edgenfv_leader');
  const e = await kv.get('scheduler');
  return e && e.operation === 'PUT' ? (JSON.parse(e.string()).holder as string) : undefined;
}

/** A tenant with one VNF (a tap NIC on mgmt) on mr-a (mr-b cordoned meanwhile). */
async function vnfOnA(t: string): Promise<{ vnfId: string; allocId: string; ips: string[] }> {
  await api.ok('nfv.v1.admin.nodes.uncordon', { id: 'mr-a' });
  await api.ok('nfv.v1.admin.nodes.cordon', { id: 'mr-b' });
  await api.ok('nfv.v1.admin.tenants.create', { id: t });
  const descriptor = { name: 'fw', replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:vrouter' }, interfaces: [{ name: 'm', type: 'tap', network: 'mgmt' }] };
  const inst = await api.ok(`nfv.v1.tenant.${t}.vnfs.instantiate`, { descriptor });
  assert.equal((await api.waitOp(t, inst.opOccId, 30_000)).operationState, 'COMPLETED');
  await api.ok('nfv.v1.admin.nodes.uncordon', { id: 'mr-b' });
  const r = (await api.ok(`nfv.v1.tenant.${t}.vnfs.get`, { id: inst.vnfId })).replicas[0];
  assert.equal(r.nodeId, 'mr-a');
  return { vnfId: inst.vnfId, allocId: r.allocId, ips: r.interfaces[0].ips };
}

/** Which simulated nodes run a copy of the VNF's replica 0 (allocIds). */
function copies(vnfId: string): string[] {
  return [...nodes.values()].flatMap((n) => [...n.running].filter(([, r]) => r.vnfId === vnfId && r.replica === 0).map(([id]) => `${n.nodeId}/${id}`));
}

test('drain past its deadlineS: the migration not switched over is given up and the replica restarted; the op says so', async (t) => {
  const a = nodes.get('mr-a')!;
  const b = nodes.get('mr-b')!;
  const { vnfId, allocId } = await vnfOnA('mrd');
  b.holdIncoming = true; // B takes the incoming allocation and never gets its VM ready
  try {
    // DEADLINE_S: long enough that even a loaded host places the destination before it (the leader then waits for
    // an incoming VM that never comes, until the deadline)
    const drain = await api.ok('nfv.v1.admin.nodes.drain', { id: 'mr-a', deadlineS: DEADLINE_S });
    assert.equal(drain.vnfs.length, 1);
    assert.equal(drain.vnfs[0].mode, 'migrate');
    const op = await api.waitOp('mrd', drain.vnfs[0].opOccId, 60_000);
    t.diagnostic(steps(op));
    assert.equal(op.operationState, 'COMPLETED', steps(op));
    assert.equal(op.params.mode, 'restart', steps(op));
    assert.match(op.params.restartReason, /the drain's deadline passed while node mr-b prepared the incoming VM/);
    assert.match(steps(op), /live migration from node mr-a to node mr-b .*deadline passed while node mr-b prepared the incoming VM: restarted instead/);
    const migrationDest = op.params.migrations['0'];
    assert.equal(migrationDest.phase, 'place', 'the next attempt would place anew: the given-up destination is released');
    const r = (await api.ok('nfv.v1.tenant.mrd.vnfs.get', { id: vnfId })).replicas[0];
    assert.equal(r.nodeId, 'mr-b');
    assert.equal(r.state, 'RUNNING');
    assert.notEqual(r.allocId, allocId);
    assert.equal(op.params.targets['0'], r.generation, 'the restart\'s allocation');
    // one copy, on B, as the restart placed it; nothing on A; the given-up incoming allocation torn down
    await untilCopies(vnfId, [`mr-b/${r.allocId}`]);
    await untilAEmpty();
    assert.equal((await api.ok('nfv.v1.admin.nodes.get', { id: 'mr-b' })).allocated.replicas, 1);
    assert.ok(!a.migrateLog.some((x) => x.action === 'start'), 'A never sent the VM');
    for (const n of nodes.values()) assert.deepEqual(n.conflicts, []);
  } finally {
    b.holdIncoming = false;
  }
});

test('drain past its deadlineS while the RAM is sent: cancelled on the source before the switchover, the replica restarted', async (t) => {
  const a = nodes.get('mr-a')!;
  const { vnfId, allocId } = await vnfOnA('mrc');
  a.migrateLog.length = 0;
  // A's answer to `start` (RAM copied, paused before the switchover) comes once the drain's deadline has passed (the
  // scheduler set it before its reply, so it is before `answered + DEADLINE_S`)
  let answered = Infinity;
  a.beforeMigrateReply = async (req) => {
    if (req.action !== 'start' || req.tenantId !== 'mrc') return;
    while (!(Date.now() > answered + DEADLINE_S * 1000 + 200)) await new Promise((r) => setTimeout(r, 100));
  };
  try {
    const drain = await api.ok('nfv.v1.admin.nodes.drain', { id: 'mr-a', deadlineS: DEADLINE_S });
    answered = Date.now();
    const op = await api.waitOp('mrc', drain.vnfs[0].opOccId, 60_000);
    t.diagnostic(steps(op));
    assert.equal(op.operationState, 'COMPLETED', steps(op));
    assert.equal(op.params.mode, 'restart', steps(op));
    assert.match(op.params.restartReason, /the drain's deadline passed before the switchover of replica 0 \(migration cancelled on node mr-a: cancelled\)/);
    const acts = a.migrateLog.filter((x) => x.tenantId === 'mrc').map((x) => x.action);
    // probed (`check`: can it migrate, then the VM's layout for the destination), sent, cancelled: never switched over
    assert.deepEqual(acts, ['check', 'check', 'start', 'cancel']);
    const r = (await api.ok('nfv.v1.tenant.mrc.vnfs.get', { id: vnfId })).replicas[0];
    assert.equal(r.nodeId, 'mr-b');
    assert.equal(r.state, 'RUNNING');
    assert.notEqual(r.allocId, allocId);
    await untilCopies(vnfId, [`mr-b/${r.allocId}`]);
    await untilAEmpty();
    for (const n of nodes.values()) assert.deepEqual(n.conflicts, []);
  } finally {
    a.beforeMigrateReply = undefined;
  }
});

test('the leader killed between start and continue: the new leader resumes the migration, exactly one running copy', async (t) => {
  const a = nodes.get('mr-a')!;
  const b = nodes.get('mr-b')!;
  const { vnfId, allocId, ips } = await vnfOnA('mrl');
  const owners = await leaseOwners();
  assert.ok(owners.includes(`${allocId}.m`));
  a.migrateLog.length = 0;
  // B holds its answer to the fence check (the RAM is copied, the VM paused on A before the switchover)
  let reached!: () => void;
  const atFence = new Promise<void>((r) => (reached = r));
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  b.beforeMigrateReply = async (req) => {
    if (req.action !== 'check' || req.tenantId !== 'mrl') return;
    reached();
    await released;
  };
  try {
    const heal = await api.ok('nfv.v1.tenant.mrl.vnfs.heal', { id: vnfId, replica: 0, migrate: true });
    await atFence;
    const old = await leaderId();
    assert.ok(old && schedulers.has(old), `leader ${old}`);
    assert.deepEqual(a.migrateLog.filter((x) => x.tenantId === 'mrl').map((x) => x.action), ['check', 'check', 'start'], 'A was asked to send the VM, not yet to switch over');
    await schedulers.get(old)!.stop('SIGKILL');
    schedulers.delete(old);
    release(); // the answer goes to a dead leader
    await until('another scheduler leads', async () => {
      const l = await leaderId();
      return l !== undefined && l !== old;
    });

    const op = await api.waitOp('mrl', heal.opOccId, 60_000);
    t.diagnostic(steps(op));
    assert.equal(op.operationState, 'COMPLETED', steps(op));
    assert.equal(op.params.mode, 'migrate', steps(op));
    assert.equal(op.params.migrations['0'].phase, 'done');
    // resumed at `incoming`: `start` again (the migration under way), the fence, one switchover
    const acts = a.migrateLog.filter((x) => x.tenantId === 'mrl').map((x) => x.action);
    assert.deepEqual(acts.filter((x) => x === 'continue'), ['continue'], JSON.stringify(acts));
    assert.equal(acts.filter((x) => x === 'start').length, 2, JSON.stringify(acts));
    assert.ok(!acts.includes('cancel'), JSON.stringify(acts));
    const r = (await api.ok('nfv.v1.tenant.mrl.vnfs.get', { id: vnfId })).replicas[0];
    assert.equal(r.nodeId, 'mr-b');
    assert.equal(r.state, 'RUNNING');
    assert.equal(r.allocId, op.params.migrations['0'].allocId);
    assert.deepEqual(r.interfaces[0].ips, ips, 'the guest keeps its address');
    // exactly one running copy, on B; the source VM torn down; the ledger agrees; the lease stays
    await untilCopies(vnfId, [`mr-b/${r.allocId}`]);
    await untilAEmpty();
    const onB = await api.ok('nfv.v1.admin.nodes.get', { id: 'mr-b' });
    assert.equal(onB.reservations.filter((x: any) => x.vnfId === vnfId).length, 1, JSON.stringify(onB.reservations));
    assert.deepEqual(await leaseOwners(), owners, 'the leases stay with the moved replica');
    for (const n of nodes.values()) assert.deepEqual(n.conflicts, []);
  } finally {
    b.beforeMigrateReply = undefined;
    release();
  }
});

test('the leader killed mid-migration of a tenant VM holding two VNFs: the new leader resumes the group, one copy of each', async (t) => {
  const a = nodes.get('mr-a')!;
  const b = nodes.get('mr-b')!;
  if (schedulers.size < 2) schedulers.set('mr-s3', await startScheduler({ ...cluster.env, EDGENFV_INSTANCE_ID: 'mr-s3' }));
  // two VNFs of one tenant in one VM on A
  await api.ok('nfv.v1.admin.nodes.uncordon', { id: 'mr-a' });
  await api.ok('nfv.v1.admin.nodes.cordon', { id: 'mr-b' });
  await api.ok('nfv.v1.admin.tenants.create', { id: 'mrg' });
  const ids: string[] = [];
  for (const name of ['fw', 'lb']) {
    const descriptor = { name, replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:busybox' }, interfaces: [{ name: 'm', type: 'tap', network: 'mgmt' }] };
    const inst = await api.ok('nfv.v1.tenant.mrg.vnfs.instantiate', { descriptor });
    assert.equal((await api.waitOp('mrg', inst.opOccId, 30_000)).operationState, 'COMPLETED');
    ids.push(inst.vnfId);
  }
  await api.ok('nfv.v1.admin.nodes.uncordon', { id: 'mr-b' });
  a.migrateLog.length = 0;
  let reached!: () => void;
  const atFence = new Promise<void>((r) => (reached = r));
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  b.beforeMigrateReply = async (req) => {
    if (req.action !== 'check' || req.tenantId !== 'mrg') return;
    reached();
    await released;
  };
  try {
    const drain = await api.ok('nfv.v1.admin.nodes.drain', { id: 'mr-a', maxParallel: 2 });
    assert.deepEqual(drain.vnfs.map((v: any) => v.mode), ['migrate', 'migrate']);
    await atFence;
    const old = await leaderId();
    assert.ok(old && schedulers.has(old), `leader ${old}`);
    await schedulers.get(old)!.stop('SIGKILL');
    schedulers.delete(old);
    release();
    const ops = [];
    for (const v of drain.vnfs) ops.push(await api.waitOp('mrg', v.opOccId, 60_000));
    for (const op of ops) t.diagnostic(steps(op));
    for (const op of ops) assert.equal(op.operationState, 'COMPLETED', steps(op));
    assert.equal(ops.filter((o) => o.params.migrations['0'].group).length, 1, 'one HEAL drove the group');
    const acts = a.migrateLog.filter((x) => x.tenantId === 'mrg').map((x) => x.action);
    assert.deepEqual(acts.filter((x) => x === 'continue'), ['continue'], JSON.stringify(acts));
    assert.ok(!acts.includes('cancel'), JSON.stringify(acts));
    for (const vnfId of ids) {
      const r = (await api.ok('nfv.v1.tenant.mrg.vnfs.get', { id: vnfId })).replicas[0];
      assert.equal(r.nodeId, 'mr-b');
      assert.equal(r.state, 'RUNNING');
      await untilCopies(vnfId, [`mr-b/${r.allocId}`]);
    }
    await untilAEmpty();
    for (const n of nodes.values()) assert.deepEqual(n.conflicts, []);
  } finally {
    b.beforeMigrateReply = undefined;
    release();
  }
});

test('the answer to continue is lost after the switchover: cancel on the source says completed, the migration completes', async (t) => {
  const a = nodes.get('mr-a')!;
  const { vnfId, ips, allocId } = await vnfOnA('mrx');
  a.migrateLog.length = 0;
  a.afterMigrate = async (req) => {
    if (req.action === 'continue' && req.tenantId === 'mrx') throw new Error('simulated: the answer to continue is lost');
  };
  try {
    const heal = await api.ok('nfv.v1.tenant.mrx.vnfs.heal', { id: vnfId, replica: 0, migrate: true });
    const op = await api.waitOp('mrx', heal.opOccId, 60_000);
    t.diagnostic(steps(op));
    assert.equal(op.operationState, 'COMPLETED', steps(op));
    assert.equal(op.params.mode, 'migrate');
    assert.deepEqual(a.migrateLog.filter((x) => x.tenantId === 'mrx').map((x) => x.action), ['check', 'check', 'start', 'continue', 'cancel']);
    assert.match(steps(op), /no answer to continue \(.*the answer to continue is lost\); node mr-a says the VM switched over \(cancel: completed\)/);
    const r = (await api.ok('nfv.v1.tenant.mrx.vnfs.get', { id: vnfId })).replicas[0];
    // a single replica's destination allocation carries the source VM's layout from A's `check` too
    const dest = (await (await nc.jetstream().views.kv('edgenfv_allocs')).get(`mr-b.${r.allocId}`))!.json<Allocation>();
    assert.deepEqual(dest.migration?.vm?.members.map((x) => x.allocId), [allocId]);
    assert.equal(dest.migration?.group, undefined);
    assert.deepEqual([r.nodeId, r.state], ['mr-b', 'RUNNING']);
    assert.deepEqual(r.interfaces[0].ips, ips);
    await untilCopies(vnfId, [`mr-b/${r.allocId}`]);
    for (const n of nodes.values()) assert.deepEqual(n.conflicts, []);
  } finally {
    a.afterMigrate = undefined;
  }
});

test('the destination fails right after the switchover: the source VM is resumed, FAILED_TEMP; a retry completes', async (t) => {
  const a = nodes.get('mr-a')!;
  const b = nodes.get('mr-b')!;
  const { vnfId, allocId } = await vnfOnA('mrf');
  a.migrateLog.length = 0;
  b.failAfterSwitchover = true;
  let op: any;
  try {
    const heal = await api.ok('nfv.v1.tenant.mrf.vnfs.heal', { id: vnfId, replica: 0, migrate: true });
    op = await api.waitOp('mrf', heal.opOccId, 60_000);
    t.diagnostic(steps(op));
    assert.equal(op.operationState, 'FAILED_TEMP', steps(op));
    assert.match(steps(op), /the destination on node mr-b failed after the switchover; the source VM was resumed/);
    assert.deepEqual(a.migrateLog.filter((x) => x.tenantId === 'mrf').map((x) => x.action), ['check', 'check', 'start', 'continue', 'resume']);
    const r = (await api.ok('nfv.v1.tenant.mrf.vnfs.get', { id: vnfId })).replicas[0];
    assert.deepEqual([r.nodeId, r.state, r.allocId], ['mr-a', 'RUNNING', allocId], 'the replica runs on at the source');
    await untilCopies(vnfId, [`mr-a/${allocId}`]);
  } finally {
    b.failAfterSwitchover = false;
  }
  await api.ok('nfv.v1.tenant.mrf.opoccs.retry', { id: op.id });
  const done = await api.waitOp('mrf', op.id, 60_000);
  assert.equal(done.operationState, 'COMPLETED', steps(done));
  const r = (await api.ok('nfv.v1.tenant.mrf.vnfs.get', { id: vnfId })).replicas[0];
  assert.deepEqual([r.nodeId, r.state], ['mr-b', 'RUNNING']);
  await untilCopies(vnfId, [`mr-b/${r.allocId}`]);
  await untilAEmpty();
  for (const n of nodes.values()) assert.deepEqual(n.conflicts, []);
});
