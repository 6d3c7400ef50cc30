import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';
import { AppError, type Vnfd } from '@edgenfv/contracts';
import { ApiClient, ApiError, type StoredEvent } from '../src/index.js';
import { sampleNode, startFakeApi, type FakeApi } from '../src/testing/fake-api.js';

let dir: string;
let server: NatsServerHandle;
let nc: NatsConnection;
let api: FakeApi;
let client: ApiClient;
const observed: string[] = [];

const vnfd: Vnfd = {
  name: 'vrouter',
  replicas: 2,
  resources: { vcpus: 2, memoryMiB: 1024 },
  image: { ref: 'builtin:vrouter' },
  interfaces: [{ name: 'mgmt', type: 'tap', network: 'mgmt' }],
};

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgenfv-apiclient-'));
  server = await startNatsServer({ storeDir: join(dir, 'js') });
  nc = await connect({ servers: server.url });
  api = await startFakeApi(nc, { nodes: [sampleNode('node-a'), sampleNode('node-b')] });
  client = new ApiClient(nc, { observe: (op, result) => observed.push(`${op}:${result}`) });
});
after(async () => {
  await api.stop();
  await nc.close();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('operator and tenant calls decode the envelope', async () => {
  const t = await client.createTenant({ id: 'acme', quota: { vcpus: 8 } });
  assert.equal(t.id, 'acme');
  assert.deepEqual((await client.listTenants()).map((x) => x.id), ['acme']);
  const { vnfId, opOccId } = await client.instantiate('acme', vnfd, 'req-1');
  const again = await client.instantiate('acme', vnfd, 'req-1');
  assert.deepEqual(again, { vnfId, opOccId }, 'same requestId, same reply');
  const v = await client.getVnf('acme', vnfId);
  assert.deepEqual(v.replicas.map((r) => r.nodeId), ['node-a', 'node-b']);
  assert.equal((await client.getOpOcc('acme', opOccId)).operationState, 'COMPLETED');
  assert.equal((await client.cordonNode('node-a')).cordoned, true);
  assert.equal((await client.uncordonNode('node-a')).cordoned, false);
  assert.ok(observed.includes('tenants.create:ok'));
});

test('error replies become ApiError with the server code, message and details', async () => {
  await assert.rejects(client.getTenant('nope'), (err: unknown) => {
    assert.ok(err instanceof ApiError && err instanceof AppError);
    assert.equal(err.code, 'NOT_FOUND');
    assert.equal(err.subject, 'nfv.v1.admin.tenants.get');
    assert.match(err.message, /tenant "nope" not found/);
    return true;
  });
  await assert.rejects(client.createTenant({ id: 'Bad_Id' }), (err: unknown) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.code, 'INVALID_ARGUMENT');
    const issues = (err.details as { issues: Array<{ field: string }> }).issues;
    assert.ok(issues.some((i) => i.field === 'id'), JSON.stringify(issues));
    return true;
  });
  assert.ok(observed.includes('tenants.get:NOT_FOUND'));
});

test('no responder and no reply are UNAVAILABLE', async () => {
  const other = new ApiClient(nc, { timeoutMs: 200 });
  await assert.rejects(other.request('nfv.v1.nobody.here', 'tenants.list', {}), (err: unknown) => {
    assert.ok(err instanceof AppError);
    assert.equal(err.code, 'UNAVAILABLE');
    assert.match(err.message, /no API server answers on nfv\.v1\.nobody\.here/);
    return true;
  });
  const silent = nc.subscribe('nfv.v1.silent'); // receives but never answers
  try {
    await assert.rejects(other.request('nfv.v1.silent', 'tenants.list', {}), (err: unknown) => {
      assert.ok(err instanceof AppError);
      assert.equal(err.code, 'UNAVAILABLE');
      assert.match(err.message, /no reply on nfv\.v1\.silent within 200 ms/);
      return true;
    });
  } finally {
    silent.unsubscribe();
  }
});

test('a reply that is not an envelope is INTERNAL', async () => {
  const sub = nc.subscribe('nfv.v1.garbage', { callback: (_e, m) => m.respond(new TextEncoder().encode('[1,2]')) });
  try {
    await assert.rejects(client.request('nfv.v1.garbage', 'tenants.list', {}), (err: unknown) => {
      assert.ok(err instanceof AppError);
      assert.equal(err.code, 'INTERNAL');
      assert.match(err.message, /not an API envelope/);
      return true;
    });
  } finally {
    sub.unsubscribe();
  }
});

test('events: replay ends at the last stored event; follow sees new ones until aborted', async () => {
  await client.createTenant({ id: 'evt' });
  const { vnfId } = await client.instantiate('evt', { ...vnfd, replicas: 1 });
  const replay: StoredEvent[] = [];
  for await (const e of client.events('evt')) replay.push(e);
  assert.deepEqual(
    replay.map((e) => (e.event.type === 'OpOcc' ? `OpOcc ${e.event.operationState}` : `Replica ${e.event.state}`)),
    ['OpOcc STARTING', 'Replica RUNNING', 'OpOcc COMPLETED'],
  );
  assert.ok(replay.every((e) => e.tenantId === 'evt' && e.subject === `nfv.v1.tenant.evt.events.${vnfId}`));
  assert.deepEqual([...(await collect(client.events('nobody')))], [], 'no events: the replay ends at once');

  const ac = new AbortController();
  const seen: StoredEvent[] = [];
  const following = (async () => {
    for await (const e of client.events('evt', { follow: true, signal: ac.signal })) {
      seen.push(e);

      if (seen.length === 4) ac.abort();
    }
  })();
  await client.terminate('evt', { id: vnfId });
  await following;
  assert.equal(seen.length, 4);
  const last = seen[3]!.event;
  assert.ok(last.type === 'OpOcc' && last.operation === 'TERMINATE' && last.operationState === 'COMPLETED');
});

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

test('recentEvents: the newest N events of every tenant, oldest first', async () => {
  await client.createTenant({ id: 'recent' });
  await client.instantiate('recent', { ...vnfd, name: 'r1', replicas: 1 });
  const all = await client.recentEvents(1000);
  const last2 = await client.recentEvents(2);
  assert.deepEqual(last2.map((e) => e.seq), all.slice(-2).map((e) => e.seq));
  assert.equal(last2[1]!.tenantId, 'recent');
  assert.ok(last2[1]!.event.type === 'OpOcc' && last2[1]!.event.operationState === 'COMPLETED');
  assert.ok(all.length > 2 && all.every((e, i) => i === 0 || e.seq > all[i - 1]!.seq));
});

test('events and recentEvents without the EDGENFV_EVENTS stream are UNAVAILABLE', async () => {
  const empty = await startNatsServer({ storeDir: join(dir, 'empty-js') });
  const nc2 = await connect({ servers: empty.url });
  try {
    const c = new ApiClient(nc2, { timeoutMs: 1000 });
    await assert.rejects(collect(c.events('acme')), (err: unknown) => {
      assert.ok(err instanceof AppError);
      assert.equal(err.code, 'UNAVAILABLE');
      assert.match(err.message, /events stream EDGENFV_EVENTS does not exist/);
      return true;
    });
    await assert.rejects(c.recentEvents(10), (err: unknown) => err instanceof AppError && err.code === 'UNAVAILABLE');
  } finally {
    await nc2.close();
    await empty.stop();
  }
});
