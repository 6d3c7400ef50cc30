/**
 * NATS beyond one machine (issue 12, item 1): three real nats-servers (configs from the site generator: cluster
 * routes on loopback, JWT accounts), two schedulers with `kvReplicas: 3` (every KV bucket and the events stream
 * at R3) and three simulated nodes, all given the three server URLs. In the middle of a workload of instantiate /
 * scale / terminate (each request retried with its requestId until answered) one server is SIGKILLed and started
 * again: every request gets an answer, none is carried out twice, no state is lost.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { EVENTS_STREAM, KV_BUCKETS } from '@edgenfv/contracts';
import { startScheduler, type SchedulerProc } from '../src/harness.js';
import { NatsCluster } from '../src/nats-cluster.js';
import { SimNode, simulatedNodeInventory } from '../src/sim-node.js';
import { waitNodeKnown } from '../src/state-fixtures.js';
import { RetryingClient } from '../src/retrying-client.js';
import { Store } from '@edgenfv/scheduler/internal/state/store';

let dir: string;
let cluster: NatsCluster;
const scheds: SchedulerProc[] = [];
const conns: NatsConnection[] = [];
const nodes: SimNode[] = [];
const cleanups: (() => void)[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgenfv-natscluster-'));
  cluster = await NatsCluster.start(dir);
  const nc = await cluster.operator();
  conns.push(nc);
  await cluster.waitJetStream(nc);
  const config = join(dir, 'scheduler.json');
  writeFileSync(config, JSON.stringify({ networks: [] }));
  for (const i of [1, 2]) {
    scheds.push(
      await startScheduler({
        EDGENFV_NATS_URL: cluster.urls.join(','),
        EDGENFV_NATS_CREDS: cluster.credsFile(`scheduler-${i}`),
        EDGENFV_NATS_INBOX_PREFIX: '_INBOX_svc_scheduler',
        EDGENFV_KV_REPLICAS: '3',
        EDGENFV_CONFIG: config,
        EDGENFV_INSTANCE_ID: `sched-${i}`,
        EDGENFV_HEARTBEAT_GRACE_MS: '20000',
      }),
    );
  }
  for (const id of ['nc-a', 'nc-b', 'nc-c']) {
    const { inventory, cleanup } = await simulatedNodeInventory(id, { numaNodes: 1, cpusPerNuma: 16, isolatedPerNuma: 8, vfsPerNuma: 4, physnet: 'physnet1' });
    cleanups.push(cleanup);
    const conn = await cluster.operator();
    conns.push(conn);
    const n = new SimNode(conn, inventory, 500);
    await n.start();
    nodes.push(n);
    await waitNodeKnown(nc, id);
  }
}, { timeout: 180_000 });

after(async () => {
  for (const n of nodes) n.stop();
  for (const c of conns) await c.close().catch(() => undefined);
  for (const s of scheds) await s.stop().catch(() => undefined);
  await cluster?.stop();
  for (const c of cleanups) c();
  rmSync(dir, { recursive: true, force: true });
});

test('a server of three is SIGKILLed and restarted mid-workload: no request lost or done twice, no state lost', { timeout: 600_000 }, async () => {
  const nc = conns[0]!;
  const jsm = await nc.jetstreamManager();
  for (const b of [KV_BUCKETS.vnfs, KV_BUCKETS.opoccs, KV_BUCKETS.tenants, KV_BUCKETS.status, 'edgenfv_ledger']) {
    assert.equal((await jsm.streams.info(`KV_${b}`)).config.num_replicas, 3, b);
  }
  assert.equal((await jsm.streams.info(EVENTS_STREAM)).config.num_replicas, 3);

  const client = new RetryingClient(nc);
  assert.equal((await client.call('nfv.v1.admin.tenants.create', { id: 'cl', quota: { vcpus: 100 } })).ok, true);
  const JOBS = 8;
  const victim = 1;
  let killed = false;
  const job = async (i: number): Promise<{ vnfId: string; terminated: boolean }> => {
    const descriptor = { name: `fw-${i}`, replicas: 1, resources: { vcpus: 1, memoryMiB: 128 }, image: { ref: 'builtin:vrouter' } };
    const inst = await client.mutate('cl', 'vnfs.instantiate', { requestId: `inst-${i}`, descriptor });
    const io = await client.waitOp('cl', inst.opOccId);
    assert.equal(io.operationState, 'COMPLETED', `instantiate ${i}: ${JSON.stringify(io)}`);
    if (i === 2 && !killed) {
      killed = true;
      await cluster.kill(victim);
      setTimeout(() => void cluster.startServer(victim), 3000);
    }
    const sc = await client.mutate('cl', 'vnfs.scale', { requestId: `scale-${i}`, id: inst.vnfId, replicas: 2 });
    const so = await client.waitOp('cl', sc.opOccId);
    assert.equal(so.operationState, 'COMPLETED', `scale ${i}: ${JSON.stringify(so)}`);
    const terminated = i % 2 === 0;
    if (terminated) {
      const t = await client.mutate('cl', 'vnfs.terminate', { requestId: `term-${i}`, id: inst.vnfId });
      const to = await client.waitOp('cl', t.opOccId);
      assert.equal(to.operationState, 'COMPLETED', `terminate ${i}: ${JSON.stringify(to)}`);
    }
    return { vnfId: inst.vnfId as string, terminated };
  };
  const results: { vnfId: string; terminated: boolean }[] = [];
  // two at a time, so that the kill lands while requests are in flight
  for (let i = 0; i < JOBS; i += 2) results.push(...(await Promise.all([job(i), job(i + 1)])));
  assert.ok(killed);

  // every request with a requestId answered the same each time it was asked (nothing done twice)
  assert.deepEqual(client.answeredDifferently(), [], JSON.stringify(client.answeredDifferently().map((k) => ({ [k]: client.answersOf(k) }))));
  // the state: exactly the VNFs asked for, each as its last operation left it
  const list = await client.call('nfv.v1.tenant.cl.vnfs.list', {});
  const byId = new Map((list.result.items as { id: string; instantiationState: string; replicas: unknown[] }[]).map((v) => [v.id, v]));
  assert.equal(byId.size, JOBS, 'one VNF per instantiate requestId');
  for (const r of results) {
    const v = byId.get(r.vnfId)!;
    assert.equal(v.instantiationState, r.terminated ? 'NOT_INSTANTIATED' : 'INSTANTIATED');
    if (!r.terminated) assert.equal(v.replicas.length, 2);
  }
  const live = results.filter((r) => !r.terminated).length;
  const tenant = (await client.call('nfv.v1.admin.tenants.get', { id: 'cl' })).result;
  // the tenant's usage is exactly what runs (it drifted by 2-6 units while two charges from one revision could both
  // be stored: see the CAS test below)
  const quotaDrift = Math.abs(tenant.usage.vcpus - 2 * live) + Math.abs(tenant.usage.vnfs - live);
  const running = nodes.reduce((n, s) => n + s.running.size, 0);
  assert.equal(running, 2 * live, 'the nodes run exactly the live replicas');
  for (const n of nodes) assert.deepEqual(n.conflicts, []);
  console.log(JSON.stringify({ servers: 3, killed: 1, requests: client.requests, retried: client.retried, lost: 0, answeredTwice: client.answeredDifferently().length, quotaDrift }));
  assert.equal(quotaDrift, 0, `usage ${JSON.stringify(tenant.usage)} for ${live} live VNFs of 2 replicas`);
});

test('a compare-and-set on an R3 bucket is serializable: of many writes from one revision, exactly one is stored', async () => {
  const nc = conns[0]!;
  const store = await Store.open(nc, { replicas: 3 });
  const key = 'cas-probe';
  const first = await store.tenants.create(key, { n: 0 } as never);
  assert.ok(first);
  let lost = 0;
  for (let round = 0; round < 20; round++) {
    const cur = (await store.tenants.get(key))!;
    // eight writers read the same revision and write at once (nats-server 2.9 stored several of them before casMsgId)
    const revs = await Promise.all(Array.from({ length: 8 }, (_, w) => store.tenants.update(key, { n: round, w } as never, cur.revision)));
    const won = revs.filter((r) => r !== null);
    if (won.length !== 1) lost++;
    // and the bucket holds the winner's value
    const after = (await store.tenants.get(key))!;
    assert.equal(after.revision, won[0]);
  }
  assert.equal(lost, 0, 'rounds where more (or fewer) than one write from the same revision was stored');
  await store.tenants.delete(key);
});
