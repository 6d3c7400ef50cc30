import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { internalSubjects, type Envelope, type HeartbeatReply } from '@edgenfv/contracts';
import { AckPolicy, nanos, type NatsConnection } from 'nats';
import { NodeRegistry, type NodeLostEvent, type StoredNode } from '../../src/nodes/index.js';
import {
  ClusterState,
  allocationResources,
  buildPlacementRequest,
  getJson,
  simulatedInventory,
  sriovOf,
  type AllocationBuilder,
  type NodeLedger,
  type SchedulerBuckets,
} from '../../src/placement/index.js';
import { buckets, natsFixture, waitFor, type NatsFixture } from '../placement/nats-helpers.js';
import { SimAgent } from './sim-agent.js';

let fx: NatsFixture;
let nc: NatsConnection;
let b: SchedulerBuckets;
const enc = new TextEncoder();
const dec = new TextDecoder();

before(async () => {
  fx = await natsFixture();
  nc = await fx.connect();
  b = await buckets(nc);
});
after(async () => {
  await fx.close();
});

async function request<T>(subject: string, body: unknown): Promise<Envelope<T>> {
  const m = await nc.request(subject, typeof body === 'string' ? enc.encode(body) : enc.encode(JSON.stringify(body)), { timeout: 5000 });
  return JSON.parse(dec.decode(m.data)) as Envelope<T>;
}

const GRACE = 1000;

test('register: epoch 1, same epoch on re-register, malformed requests get one INVALID_ARGUMENT reply', async () => {
  const reg = new NodeRegistry(nc, b, { graceMs: GRACE });
  await reg.start();
  const agent = new SimAgent(nc, b, simulatedInventory({ nodeId: 'reg-a' }));
  try {
    assert.equal(await agent.register(), 1);
    assert.equal(await agent.register(), 1, 'an agent restart keeps the epoch');
    const rec = (await getJson<StoredNode>(b.nodes, 'reg-a'))!.value;
    assert.equal(rec.health, 'Ready');
    assert.equal(rec.epoch, 1);
    assert.equal((await getJson<NodeLedger>(b.ledger, 'reg-a'))!.value.epoch, 1);
    const bad = await request(internalSubjects.register('reg-b'), 'not json');
    assert.deepEqual(bad, { ok: false, error: { code: 'INVALID_ARGUMENT', message: 'not JSON', details: { issues: [{ field: '', message: 'not JSON' }] } } });
    const wrong = await request(internalSubjects.register('reg-b'), { nodeId: 'reg-c', inventory: simulatedInventory({ nodeId: 'reg-c' }), running: [] });
    assert.equal(wrong.ok, false);
    if (!wrong.ok) assert.match(wrong.error.message, /nodeId: must equal the subject's node id "reg-b"/);
    assert.equal(await getJson(b.nodes, 'reg-b'), null, 'no state change');
  } finally {
    agent.stop();
    await reg.stop();
  }
});

test("a JetStream push consumer's deliveries onto a node's heartbeat subject do not keep the silent node alive", async () => {
  // what a node principal could do: a consumer of a stream it may read, its delivery subject another node's
  // heartbeat. Deliveries arrive under their stream subject (here one naming the node, the worst case) with a
  // `$JS.ACK.` reply: the registry takes no such message for a heartbeat (fromClient)
  const reg = new NodeRegistry(nc, b, { graceMs: GRACE, checkIntervalMs: 100 });
  await reg.start();
  reg.setActive(true);
  const agent = new SimAgent(nc, b, simulatedInventory({ nodeId: 'push-a' }), 100);
  const lost: NodeLostEvent[] = [];
  reg.onNodeLost((ev) => void lost.push(ev));
  const jsm = await nc.jetstreamManager();
  const stream = `PUSHHB${process.pid}`;
  await jsm.streams.add({ name: stream, subjects: [`nfv.v1.internal.nodes.push-a.pushed${process.pid}`] });
  const js = nc.jetstream();
  let pumping = true;
  const delivered: string[] = [];
  const spy = nc.subscribe(internalSubjects.heartbeat('push-a'), { callback: (_e, m) => void delivered.push(`${m.reply ?? ''} ${m.string()}`) });
  try {
    await agent.start();
    agent.stopHeartbeats();
    await jsm.consumers.add(stream, { deliver_subject: internalSubjects.heartbeat('push-a'), ack_policy: AckPolicy.None, idle_heartbeat: nanos(100) });
    const pump = (async () => {
      // a fresh "heartbeat" body every 100 ms: {nodeId, epoch} as an allocation record carries them
      while (pumping) {
        await js.publish(`nfv.v1.internal.nodes.push-a.pushed${process.pid}`, enc.encode(JSON.stringify({ nodeId: 'push-a', epoch: 1, at: new Date().toISOString() })));
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const ev = await waitFor('node lost despite the deliveries', () => lost.find((e) => e.nodeId === 'push-a'), GRACE + 5000);
    assert.match(ev.reason, /no heartbeat/);
    pumping = false;
    await pump;
    assert.ok(delivered.length > 5, `the consumer delivered onto the heartbeat subject: ${delivered.slice(0, 3).join(' | ')}`);
  } finally {
    pumping = false;
    spy.unsubscribe();
    agent.stop();
    await jsm.streams.delete(stream).catch(() => undefined);
    await reg.stop();
  }
});

test('cordon and uncordon', async () => {
  const reg = new NodeRegistry(nc, b, { graceMs: GRACE });
  await reg.start();
  const agent = new SimAgent(nc, b, simulatedInventory({ nodeId: 'cd-a' }));
  try {
    await agent.register();
    assert.equal((await reg.cordon('cd-a')).cordoned, true);
    assert.equal((await reg.uncordon('cd-a')).cordoned, false);
    await assert.rejects(reg.cordon('nope'), { code: 'NOT_FOUND' });
    assert.equal((await reg.cordon('cd-a')).cordoned, true);
    assert.equal((await getJson<StoredNode>(b.nodes, 'cd-a'))!.value.cordoned, true);
    assert.equal((await reg.uncordon('cd-a')).cordoned, false);
  } finally {
    agent.stop();
    await reg.stop();
  }
});

test('heartbeats: a stale-epoch heartbeat is told to re-register; only the active replica declares nodes lost', async () => {
  const passive = new NodeRegistry(nc, b, { graceMs: GRACE, checkIntervalMs: 100 });
  const active = new NodeRegistry(nc, b, { graceMs: GRACE, checkIntervalMs: 100 });
  await Promise.all([passive.start(), active.start()]);
  const agent = new SimAgent(nc, b, simulatedInventory({ nodeId: 'hb-a' }), 100);
  const lost: NodeLostEvent[] = [];
  active.onNodeLost((ev) => void lost.push(ev));
  passive.onNodeLost(() => assert.fail('a passive registry must not declare nodes lost'));
  try {
    await agent.start();
    active.setActive(true);
    const r = await request<HeartbeatReply>(internalSubjects.heartbeat('hb-a'), { nodeId: 'hb-a', epoch: 0, at: '', sandboxes: 0, replicas: 0 });
    assert.deepEqual(r, { ok: true, result: { epoch: 1, reregister: true } });
    agent.stopHeartbeats();
    const ev = await waitFor('node lost', () => lost.find((e) => e.nodeId === 'hb-a'), GRACE + 5000);
    assert.equal(ev.nodeId, 'hb-a');
    assert.equal(ev.previousEpoch, 1);
    assert.equal(ev.epoch, 2);
    assert.match(ev.reason, /no heartbeat for \d+ s \(grace 1 s\)/);
    const rec = (await getJson<StoredNode>(b.nodes, 'hb-a'))!.value;
    assert.equal(rec.health, 'NotReady');
    assert.equal(rec.epoch, 2);
    assert.equal((await getJson<NodeLedger>(b.ledger, 'hb-a'))!.value.epoch, 2, 'the ledger is fenced too');
    // heartbeats of the old epoch do not revive it
    agent.heartbeat();
    const again = await request<HeartbeatReply>(internalSubjects.heartbeat('hb-a'), { nodeId: 'hb-a', epoch: 1, at: '', sandboxes: 0, replicas: 0 });
    assert.deepEqual(again, { ok: true, result: { epoch: 2, reregister: true } });
    assert.equal(await agent.register(), 2, 'it returns under the new epoch');
    assert.equal((await getJson<StoredNode>(b.nodes, 'hb-a'))!.value.health, 'Ready');
  } finally {
    agent.stop();
    await Promise.all([passive.stop(), active.stop()]);
  }
});

test('node loss: replicas healed elsewhere within grace + 5 s; on return its stale sandboxes are torn down and VFs freed', async () => {
  const reg = new NodeRegistry(nc, b, { graceMs: GRACE, checkIntervalMs: 100 });
  await reg.start();
  const cs = new ClusterState(b, { seed: 5 });
  await cs.start();
  const inv = (nodeId: string) =>
    simulatedInventory({ nodeId, labels: { suite: 'loss' }, pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 4 }] });
  const a = new SimAgent(nc, b, inv('loss-a'), 100);
  const c = new SimAgent(nc, b, inv('loss-c'), 100);
  const descriptor = {
    name: 'fw',
    replicas: 3,
    image: { ref: 'builtin:fw' },
    placement: { nodeSelector: { suite: 'loss' } },
    resources: { vcpus: 1, memoryMiB: 512, cpuPolicy: 'dedicated' as const, numa: 'strict' as const },
    interfaces: [{ name: 'up', type: 'sriov' as const, physnet: 'physnet1' }],
  };
  const req = (replica: number) => buildPlacementRequest({ tenantId: 'tl', vnfId: 'fw', replica, descriptor });
  const builder = (allocId: string): AllocationBuilder => (d, r) => ({
    allocId,
    nodeId: d.nodeId,
    epoch: d.epoch,
    tenantId: r.tenantId,
    vnfId: r.vnfId,
    replica: r.replica,
    resources: allocationResources(r, d),
    image: { ref: 'builtin:fw' },
    interfaces: d.assignment.vfs.map((v) => ({ name: v.interface, type: 'sriov', mac: '02:00:00:00:00:01', sriov: sriovOf(v) })),
    createdAt: new Date().toISOString(),
  });
  // healing as the leader will wire it: place each lost replica elsewhere, then release the old allocation
  const healed = new Map<number, string>();
  reg.onNodeLost(async (ev) => {
    for (const { reservation } of ev.allocations) {
      const r = await cs.schedule(req(reservation.replica), `fw-${reservation.replica}-g2`, builder(`fw-${reservation.replica}-g2`));
      assert.ok(r.ok, 'healed');
      await cs.release(reservation.allocId, { nodeId: ev.nodeId });
      // counted once its old allocation is released (fenced on the lost node): the checks below read the ledger
      healed.set(reservation.replica, r.decision.nodeId);
    }
  });
  try {
    await a.start();
    reg.setActive(true);
    await waitFor('cluster sees loss-a', () => cs.node('loss-a')?.health === 'Ready');
    for (let i = 0; i < 3; i++) assert.ok((await cs.schedule(req(i), `fw-${i}`, builder(`fw-${i}`))).ok);
    await waitFor('loss-a runs 3 sandboxes', () => a.sandboxes.size === 3 || undefined);
    await c.start();
    await waitFor('cluster sees loss-c', () => cs.node('loss-c')?.health === 'Ready');
    // loss-a's heartbeats stop (a partition: the agent keeps its sandboxes)
    a.partition();
    await waitFor('replicas healed onto loss-c', () => (healed.size === 3 ? true : undefined), GRACE + 5000);
    assert.deepEqual([...healed.values()], ['loss-c', 'loss-c', 'loss-c']);
    await waitFor('loss-c runs them', () => c.sandboxes.size === 3 || undefined);
    // while loss-a is away its VFs stay booked (fenced): nothing else gets them
    const ledgerA = (await getJson<NodeLedger>(b.ledger, 'loss-a'))!.value;
    assert.equal(Object.values(ledgerA.reservations).filter((r) => r.fenced).length, 3);
    assert.equal(a.sandboxes.size, 3, 'the partitioned node still runs its old sandboxes');
    // it returns: registers (learns epoch 2), tears down what it no longer owns, heartbeats with what runs
    assert.equal(await a.register(), 2);
    await a.reconcile();
    assert.equal(a.sandboxes.size, 0);
    assert.deepEqual([...a.tornDown].sort(), ['fw-0', 'fw-1', 'fw-2']);
    a.resumeHeartbeats();
    await waitFor('fenced reservations freed', async () => {
      const l = (await getJson<NodeLedger>(b.ledger, 'loss-a'))!.value;
      return Object.keys(l.reservations).length === 0 || undefined;
    });
    await waitFor('the view of loss-a has its 4 VFs again', () => (cs.node('loss-a')?.freeVfs.get('physnet1') === 4 ? true : undefined));
    assert.equal(cs.node('loss-a')!.epoch, 2);
  } finally {
    a.stop();
    c.stop();
    await cs.stop();
    await reg.stop();
  }
});

test('a heartbeat carrying a changed inventory updates the record (and placement sees it)', async () => {
  const reg = new NodeRegistry(nc, b, { graceMs: 5000 });
  await reg.start();
  const cs = new ClusterState(b, { seed: 1 });
  await cs.start();
  const agent = new SimAgent(nc, b, simulatedInventory({ nodeId: 'inv-a', labels: { site: 'old' } }), 100);
  try {
    await agent.start();
    reg.setActive(true);
    const inv = simulatedInventory({ nodeId: 'inv-a', labels: { site: 'new' }, pfs: [{ physnet: 'physnet9', numaNode: 0, vfs: 2 }] });
    nc.publish(
      internalSubjects.heartbeat('inv-a'),
      enc.encode(JSON.stringify({ nodeId: 'inv-a', epoch: agent.epoch, at: new Date().toISOString(), sandboxes: 0, replicas: 0, inventory: inv })),
    );
    await waitFor('record updated', async () => ((await getJson<StoredNode>(b.nodes, 'inv-a'))?.value.inventory.labels.site === 'new' ? true : undefined));
    await waitFor('view updated', () => (cs.node('inv-a')?.freeVfs.get('physnet9') === 2 && cs.node('inv-a')?.labels.site === 'new' ? true : undefined));
  } finally {
    agent.stop();
    await cs.stop();
    await reg.stop();
  }
});

test('node metrics: a /metrics page promtool-style names, counts by health', async () => {
  const { createRegistry } = await import('@edgenfv/telemetry');
  const { nodeMetrics } = await import('../../src/nodes/index.js');
  const { placementMetrics, ledgerMetrics } = await import('../../src/placement/index.js');
  const promReg = createRegistry('scheduler-test', { defaultMetrics: false });
  const reg = new NodeRegistry(nc, b, { graceMs: 60_000 });
  await reg.start();
  try {
    nodeMetrics(promReg, reg);
    const pm = placementMetrics(promReg);
    ledgerMetrics(promReg, () => undefined);
    pm.onDecision(0.05, true);
    pm.onDecision(0.5, false);
    const text = await promReg.metrics();
    const ready = reg.list().filter((n) => n.health === 'Ready' && !n.cordoned).length;
    assert.match(text, new RegExp(`edgenfv_nodes\\{health="Ready",cordoned="false",service="scheduler-test"\\} ${ready}`));
    assert.match(text, /edgenfv_placement_decisions_total\{result="placed",service="scheduler-test"\} 1/);
    assert.match(text, /edgenfv_placement_decisions_total\{result="unschedulable",service="scheduler-test"\} 1/);
    assert.match(text, /edgenfv_ledger_writes_total\{service="scheduler-test"\} 0/);
    // promtool (Debian package prometheus) has nothing to say about these metrics
    const { spawnSync } = await import('node:child_process');
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    if (lint.error) assert.fail(`promtool not runnable: ${lint.error.message}`);
    assert.equal(`${lint.stdout}${lint.stderr}`.trim(), '', 'promtool findings');
    assert.equal(lint.status, 0);
  } finally {
    await reg.stop();
  }
});
