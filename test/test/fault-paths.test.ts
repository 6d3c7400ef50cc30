/**
 * Failure paths found by reading the code (issue 12, item 3), each through the real scheduler process and a real
 * nats-server: a malformed value in a KV bucket does not stop the leader's watches (before: the scheduler never
 * finished starting, or stopped seeing replica reports); a request over 1 MiB is refused with INVALID_ARGUMENT and
 * every error reply stays small whatever the request echoes.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { KV_BUCKETS } from '@edgenfv/contracts';
import { startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';
import { Api, startScheduler, type SchedulerProc } from '../src/harness.js';
import { startSimNode, type SimNode } from '../src/sim-node.js';
import { snapshotState } from '../src/state-fixtures.js';

let dir: string;
let nats: NatsServerHandle;
let sched: SchedulerProc;
let nc: NatsConnection;
let api: Api;
let node: SimNode;
const cleanups: (() => void)[] = [];
const enc = new TextEncoder();

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgenfv-faultpaths-'));
  nats = await startNatsServer({ storeDir: join(dir, 'js') });
  nc = await connect({ servers: nats.url });
  api = new Api(nc);
  // Malformed values in the buckets the leader watches, there before it starts (the buckets are created here
  // with the scheduler's own settings: history 1, one replica).
  const js = nc.jetstream();
  const put = async (bucket: string, key: string, value: string): Promise<void> => {
    const kv = await js.views.kv(bucket, { history: 1, replicas: 1 });
    await kv.put(key, enc.encode(value));
  };
  await put(KV_BUCKETS.opoccs, 'acme.op-broken', '{"not json');
  await put(KV_BUCKETS.status, 'ghost.alloc-1', 'null');
  await put(KV_BUCKETS.nodes, 'ghost', '[1,2,3]');
  await put('edgenfv_ledger', 'ghost', '{"nodeId":"ghost"}');
  const config = join(dir, 'scheduler.json');
  writeFileSync(config, JSON.stringify({ networks: [] }));
  sched = await startScheduler({ EDGENFV_NATS_URL: nats.url, EDGENFV_CONFIG: config, EDGENFV_HEARTBEAT_GRACE_MS: '600000' });
  const sim = await startSimNode(nc, 'fp-a', 500);
  cleanups.push(sim.cleanup);
  node = sim.node;
}, { timeout: 90_000 });

after(async () => {
  if (process.env.FP_DEBUG) console.log(sched?.logs.join("\n"));
  node?.stop();
  await nc?.close();
  await sched?.stop();
  await nats?.stop();
  for (const c of cleanups) c();
  rmSync(dir, { recursive: true, force: true });
});

test('malformed KV values are skipped and reported; the watches keep going (instantiate and scale complete)', async () => {
  await api.ok('nfv.v1.admin.tenants.create', { id: 'acme' });
  // one more bad replica report while the leader runs
  const status = await nc.jetstream().views.kv(KV_BUCKETS.status);
  await status.put('ghost.alloc-2', enc.encode('{"tenantId":7}'));
  const inst = await api.ok('nfv.v1.tenant.acme.vnfs.instantiate', { descriptor: { name: 'fw', replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:vrouter' } } });
  assert.equal((await api.waitOp('acme', inst.opOccId, 30_000)).operationState, 'COMPLETED');
  const scale = await api.ok('nfv.v1.tenant.acme.vnfs.scale', { id: inst.vnfId, replicas: 2 });
  assert.equal((await api.waitOp('acme', scale.opOccId, 30_000)).operationState, 'COMPLETED');
  const skipped = sched.logs.filter((l) => l.includes('malformed KV entry skipped'));
  for (const bucket of [KV_BUCKETS.opoccs, KV_BUCKETS.status, KV_BUCKETS.nodes, 'edgenfv_ledger']) {
    assert.ok(skipped.some((l) => l.includes(`"bucket":"${bucket}"`)), `a skipped entry of ${bucket} is reported`);
  }
  assert.ok(skipped.some((l) => l.includes('ghost.alloc-2')), 'the report written while running is skipped too');
  assert.deepEqual(node.conflicts, []);
});

test('a request over 1 MiB is refused with INVALID_ARGUMENT and changes nothing', async () => {
  const before = await snapshotState(nc);
  const body = JSON.stringify({ descriptor: { name: 'big', replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:vrouter' } }, pad: 'x'.repeat(1024 * 1024) });
  const msg = await nc.request('nfv.v1.tenant.acme.vnfs.instantiate', enc.encode(body), { timeout: 10_000 });
  const r = JSON.parse(new TextDecoder().decode(msg.data));
  assert.equal(r.ok, false);
  assert.equal(r.error.code, 'INVALID_ARGUMENT');
  assert.match(r.error.message, /\(request\).*at most 1048576 bytes/);
  assert.deepEqual(await snapshotState(nc), before);
});

test('an error reply stays small whatever the request echoes (a huge unknown key, many bad fields)', async () => {
  const hugeKey = 'k'.repeat(900 * 1024);
  const msg = await nc.request('nfv.v1.tenant.acme.vnfs.get', enc.encode(JSON.stringify({ [hugeKey]: 1 })), { timeout: 10_000 });
  assert.ok(msg.data.length < 20 * 1024, `reply is ${msg.data.length} bytes`);
  const r = JSON.parse(new TextDecoder().decode(msg.data));
  assert.equal(r.ok, false);
  assert.equal(r.error.code, 'INVALID_ARGUMENT');
  const many = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`unknown${i}`.padEnd(150, 'z'), i]));
  const m2 = await nc.request('nfv.v1.tenant.acme.vnfs.get', enc.encode(JSON.stringify(many)), { timeout: 10_000 });
  assert.ok(m2.data.length < 20 * 1024, `reply is ${m2.data.length} bytes`);
  const r2 = JSON.parse(new TextDecoder().decode(m2.data));
  assert.equal(r2.error.code, 'INVALID_ARGUMENT');
  assert.ok(r2.error.details.issues.length <= 20);
});
