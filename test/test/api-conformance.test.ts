/**
 * Message API v1 conformance (shared API.md): every subject through a NATS client, the envelope, the error codes,
 * requestId idempotency, notifications kept in JetStream, and a table of malformed requests that each get
 * INVALID_ARGUMENT naming the field and change no state. Real nats-server, real scheduler process.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ERROR_CODES, EVENTS_STREAM } from '@edgenfv/contracts';
import { AckPolicy, DeliverPolicy } from 'nats';
import { startCluster, vnfd, type Cluster } from '../src/harness.js';
import { snapshotState, putNode } from '../src/state-fixtures.js';

let c: Cluster;
before(async () => {
  c = await startCluster({ env: { EDGENFV_START_TIMEOUT_MS: '2000' } });
  await c.api.ok('nfv.v1.admin.tenants.create', {
    id: 'acme',
    displayName: 'ACME Edge',
    quota: { vcpus: 64, memoryMiB: 65536, vfs: 8, vnfs: 20 },
  });
});
after(async () => {
  await c?.close();
});

function assertEnvelope(r: any): void {
  assert.equal(typeof r.ok, 'boolean');
  if (r.ok) assert.ok('result' in r, 'a success carries result');
  else {
    assert.ok(ERROR_CODES.includes(r.error.code), `known code: ${r.error.code}`);
    assert.equal(typeof r.error.message, 'string');
    assert.ok(r.error.message.length > 0);
  }
}

describe('tenants', () => {
  test('create, get with usage, list, duplicate, delete', async () => {
    const created = await c.api.admin('tenants.create', { id: 'beta', quota: { vnfs: 1 } });
    assertEnvelope(created);
    assert.equal(created.ok, true);
    assert.equal(created.result.id, 'beta');
    assert.deepEqual(created.result.usage, { vcpus: 0, memoryMiB: 0, vfs: 0, vnfs: 0 });
    const dup = await c.api.admin('tenants.create', { id: 'beta' });
    assert.equal(dup.ok, false);
    assert.equal(dup.error.code, 'ALREADY_EXISTS');
    const got = await c.api.admin('tenants.get', { id: 'beta' });
    assert.deepEqual(got.result.quota, { vnfs: 1 });
    const list = await c.api.admin('tenants.list', {});
    assert.deepEqual(
      list.result.items.map((t: any) => t.id),
      ['acme', 'beta'],
    );
    assert.deepEqual((await c.api.admin('tenants.delete', { id: 'beta' })).result, {});
    const gone = await c.api.admin('tenants.get', { id: 'beta' });
    assert.equal(gone.error.code, 'NOT_FOUND');
    assert.equal((await c.api.admin('tenants.delete', { id: 'beta' })).error.code, 'NOT_FOUND');
  });

  test('delete is a CONFLICT while the tenant has VNFs', async () => {
    await c.api.ok('nfv.v1.admin.tenants.create', { id: 'gamma' });
    const inst = await c.api.tenant('gamma', 'vnfs.instantiate', { descriptor: vnfd('fw') });
    assert.equal(inst.ok, true);
    const del = await c.api.admin('tenants.delete', { id: 'gamma' });
    assert.equal(del.ok, false);
    assert.equal(del.error.code, 'CONFLICT');
    // no node is registered: the instantiate fails truthfully and gives the quota back; then delete works
    const op = await c.api.waitOp('gamma', inst.result.opOccId);
    assert.equal(op.operationState, 'FAILED');
    assert.equal((await c.api.admin('tenants.delete', { id: 'gamma' })).ok, true);
  });
});

describe('nodes', () => {
  test('list, get, cordon, uncordon, drain; unknown nodes are NOT_FOUND', async () => {
    for (const op of ['nodes.get', 'nodes.cordon', 'nodes.uncordon', 'nodes.drain']) {
      const r = await c.api.admin(op, { id: 'nowhere' });
      assertEnvelope(r);
      assert.equal(r.error.code, 'NOT_FOUND', op);
    }
    await putNode(c.nc, 'edge-a');
    const list = await c.api.admin('nodes.list', {});
    assert.deepEqual(
      list.result.items.map((n: any) => n.id),
      ['edge-a'],
    );
    assert.equal(list.result.items[0].allocated.replicas, 0);
    const cordoned = await c.api.admin('nodes.cordon', { id: 'edge-a' });
    assert.equal(cordoned.result.cordoned, true);
    assert.equal((await c.api.admin('nodes.get', { id: 'edge-a' })).result.cordoned, true);
    assert.equal((await c.api.admin('nodes.uncordon', { id: 'edge-a' })).result.cordoned, false);
    const drained = await c.api.admin('nodes.drain', { id: 'edge-a' });
    assert.deepEqual(drained.result.opOccIds, []);
    assert.equal((await c.api.admin('nodes.get', { id: 'edge-a' })).result.cordoned, true, 'drain cordons');
    await c.api.admin('nodes.uncordon', { id: 'edge-a' });
  });
});

describe('VNF lifecycle', () => {
  test('instantiate with no room ends FAILED/UNSCHEDULABLE with a reason, never RUNNING', async () => {
    await c.api.ok('nfv.v1.admin.tenants.create', { id: 'lonely' });
    const d = vnfd('big', { resources: { vcpus: 200, memoryMiB: 1024 } });
    const inst = await c.api.tenant('lonely', 'vnfs.instantiate', { descriptor: d });
    assertEnvelope(inst);
    assert.match(inst.result.vnfId, /^vnf-/);
    const op = await c.api.waitOp('lonely', inst.result.opOccId);
    assert.equal(op.operation, 'INSTANTIATE');
    assert.equal(op.operationState, 'FAILED');
    assert.equal(op.error.code, 'UNSCHEDULABLE');
    assert.match(op.error.message, /nodes fit|no nodes/);
    const vnf = (await c.api.tenant('lonely', 'vnfs.get', { id: inst.result.vnfId })).result;
    assert.equal(vnf.instantiationState, 'NOT_INSTANTIATED');
    assert.ok(vnf.replicas.every((r: any) => r.state === 'FAILED'));
    const t = (await c.api.admin('tenants.get', { id: 'lonely' })).result;
    assert.deepEqual(t.usage, { vcpus: 0, memoryMiB: 0, vfs: 0, vnfs: 0 }, 'quota given back');
  });

  test('placed on a node whose agent never reports: truthful FAILED_TEMP after the start timeout, FAILED on fail', async () => {
    const inst = await c.api.tenant('acme', 'vnfs.instantiate', { descriptor: vnfd('silent') });
    const placedOp = await waitState('acme', inst.result.opOccId, ['PROCESSING', 'FAILED', 'FAILED_TEMP']);
    const vnf = (await c.api.tenant('acme', 'vnfs.get', { id: inst.result.vnfId })).result;
    assert.notEqual(vnf.replicas[0].state, 'RUNNING');
    const op = await c.api.waitOp('acme', inst.result.opOccId);
    assert.equal(op.operationState, 'FAILED_TEMP', JSON.stringify(placedOp));
    assert.equal(op.error.code, 'UNAVAILABLE');
    assert.ok(op.steps.some((s: any) => /placed on node edge-a/.test(s.message)), JSON.stringify(op.steps));
    const failed = await c.api.ok('nfv.v1.tenant.acme.opoccs.fail', { id: inst.result.opOccId });
    assert.equal(failed.operationState, 'FAILED');
    assert.equal((await c.api.ok('nfv.v1.tenant.acme.vnfs.get', { id: inst.result.vnfId })).instantiationState, 'NOT_INSTANTIATED');
  });

  test('a vhost-user interface on a network no node has a DPDK switch for ends FAILED/UNSCHEDULABLE naming the network', async () => {
    // edge-a (registered above) has no data plane; edge-dp's switch serves uplink-net only, and is not ready
    await putNode(c.nc, 'edge-dp', { dataplanes: [{ kind: 'ovs-dpdk', state: 'failed', error: 'ovs-vswitchd did not start', networks: ['uplink-net'] }] });
    for (const network of ['mgmt', 'uplink-net']) {
      const d = vnfd(`dpdk-${network}`, { interfaces: [{ name: 'dp0', type: 'vhostuser', network }] });
      const inst = await c.api.tenant('acme', 'vnfs.instantiate', { descriptor: d });
      assert.equal(inst.ok, true, JSON.stringify(inst));
      const op = await c.api.waitOp('acme', inst.result.opOccId);
      assert.equal(op.operationState, 'FAILED');
      assert.equal(op.error.code, 'UNSCHEDULABLE');
      assert.match(op.error.message, new RegExp(`no healthy OVS-DPDK switch on network ${network}`), op.error.message);
      const vnf = (await c.api.tenant('acme', 'vnfs.get', { id: inst.result.vnfId })).result;
      assert.ok(vnf.replicas.every((r: any) => r.state === 'FAILED'));
    }
    await c.api.admin('nodes.cordon', { id: 'edge-dp' }); // out of the way of the tests below
  });

  test('get, list, and operations on unknown or not-instantiated VNFs', async () => {
    const inst = await c.api.tenant('acme', 'vnfs.instantiate', { descriptor: vnfd('notyet', { resources: { vcpus: 1, memoryMiB: 60000 } }) });
    await c.api.waitOp('acme', inst.result.opOccId);
    const list = await c.api.tenant('acme', 'vnfs.list', {});
    assert.ok(list.result.items.some((v: any) => v.id === inst.result.vnfId));
    for (const [op, body] of [
      ['vnfs.get', { id: 'vnf-000000000000' }],
      ['vnfs.scale', { id: 'vnf-000000000000', replicas: 2 }],
      ['vnfs.heal', { id: 'vnf-000000000000' }],
      ['vnfs.terminate', { id: 'vnf-000000000000' }],
      ['opoccs.get', { id: 'op-000000000000' }],
    ] as const) {
      const r = await c.api.tenant('acme', op, body);
      assertEnvelope(r);
      assert.equal(r.error.code, 'NOT_FOUND', op);
    }
    for (const [op, body] of [
      ['vnfs.scale', { id: inst.result.vnfId, replicas: 2 }],
      ['vnfs.heal', { id: inst.result.vnfId }],
      ['vnfs.terminate', { id: inst.result.vnfId }],
    ] as const) {
      const r = await c.api.tenant('acme', op, body);
      assert.equal(r.error.code, 'CONFLICT', `${op} on a NOT_INSTANTIATED VNF`);
    }
    assert.equal((await c.api.tenant('nosuch', 'vnfs.list', {})).error.code, 'NOT_FOUND');
    assert.equal((await c.api.tenant('nosuch', 'vnfs.instantiate', { descriptor: vnfd('x') })).error.code, 'NOT_FOUND');
  });

  test('names are unique within a tenant while the VNF holds them', async () => {
    await c.api.ok('nfv.v1.admin.tenants.create', { id: 'names' });
    const a = await c.api.tenant('names', 'vnfs.instantiate', { descriptor: vnfd('dup', { resources: { vcpus: 200, memoryMiB: 512 } }) });
    assert.equal(a.ok, true);
    const b = await c.api.tenant('names', 'vnfs.instantiate', { descriptor: vnfd('dup') });
    // either the first still holds the name (ALREADY_EXISTS) or it already failed and gave it back
    if (!b.ok) assert.equal(b.error.code, 'ALREADY_EXISTS');
    await c.api.waitOp('names', a.result.opOccId);
    if (b.ok) await c.api.waitOp('names', b.result.opOccId);
  });
});

async function waitState(t: string, opId: string, states: string[]): Promise<any> {
  for (let i = 0; i < 200; i++) {
    const r = await c.api.tenant(t, 'opoccs.get', { id: opId });
    if (r.ok && states.includes(r.result.operationState)) return r.result;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`op ${opId} never reached ${states.join(' or ')}`);
}

describe('requestId idempotency', () => {
  test('the same requestId returns the first reply and does nothing again', async () => {
    await c.api.ok('nfv.v1.admin.tenants.create', { id: 'idem' });
    const body = { descriptor: vnfd('once', { resources: { vcpus: 200, memoryMiB: 512 } }), requestId: 'req-42' };
    const replies = await Promise.all([1, 2, 3, 4].map(() => c.api.tenant('idem', 'vnfs.instantiate', body)));
    for (const r of replies) assert.deepEqual(r, replies[0]);
    assert.equal(replies[0]!.ok, true);
    const again = await c.api.tenant('idem', 'vnfs.instantiate', body);
    assert.deepEqual(again, replies[0]);
    const list = await c.api.tenant('idem', 'vnfs.list', {});
    assert.equal(list.result.items.length, 1, 'one VNF, not five');
    // another tenant with the same requestId is a different request
    await c.api.ok('nfv.v1.admin.tenants.create', { id: 'idem2' });
    const other = await c.api.tenant('idem2', 'vnfs.instantiate', body);
    assert.notEqual(other.result.vnfId, replies[0]!.result.vnfId);
    // a first reply that was an error is returned again too
    const err1 = await c.api.tenant('idem', 'vnfs.terminate', { id: 'vnf-ffffffffffff', requestId: 'term-1' });
    const err2 = await c.api.tenant('idem', 'vnfs.terminate', { id: 'vnf-ffffffffffff', requestId: 'term-1' });
    assert.equal(err1.error.code, 'NOT_FOUND');
    assert.deepEqual(err2, err1);
    await c.api.waitOp('idem', replies[0]!.result.opOccId);
    await c.api.waitOp('idem2', other.result.opOccId);
  });
});

describe('notifications', () => {
  test('op occurrence and replica events are published and kept in the EDGENFV_EVENTS stream', async () => {
    await c.api.ok('nfv.v1.admin.tenants.create', { id: 'events' });
    const inst = await c.api.tenant('events', 'vnfs.instantiate', { descriptor: vnfd('ev', { resources: { vcpus: 200, memoryMiB: 512 } }) });
    await c.api.waitOp('events', inst.result.opOccId);
    const js = c.nc.jetstream();
    const jsm = await c.nc.jetstreamManager();
    const name = `conformance-${Date.now()}`;
    await jsm.consumers.add(EVENTS_STREAM, {
      durable_name: name,
      filter_subject: `nfv.v1.tenant.events.events.${inst.result.vnfId}`,
      deliver_policy: DeliverPolicy.All,
      ack_policy: AckPolicy.None,
    });
    const consumer = await js.consumers.get(EVENTS_STREAM, name);
    const seen: any[] = [];
    const iter = await consumer.fetch({ max_messages: 10, expires: 2000 });
    for await (const m of iter) seen.push(m.json());
    const states = seen.filter((e) => e.type === 'OpOcc').map((e) => e.operationState);
    assert.deepEqual(states, ['STARTING', 'PROCESSING', 'FAILED']);
    assert.ok(seen.every((e) => e.vnfId === inst.result.vnfId && typeof e.at === 'string'));
    assert.equal(seen.find((e) => e.operationState === 'FAILED').error.code, 'UNSCHEDULABLE');
  });
});

// ------------------------------------------------------------------ malformed requests

const big = 'x'.repeat(512 * 1024); // over every field's limit, under the 1 MiB request limit
const huge = 'x'.repeat(10 * 1024 * 1024);
const good = vnfd('ok-name');
const withRes = (r: Record<string, unknown>): unknown => ({ descriptor: { ...good, resources: { vcpus: 1, memoryMiB: 512, ...r } } });
const withIf = (i: unknown): unknown => ({ descriptor: { ...good, interfaces: [i] } });

/** [subject suffix, raw body or object, the field the error must name] */
const MALFORMED: [string, unknown, string][] = [
  ['admin.tenants.create', 'not json at all', '(request)'],
  ['admin.tenants.create', '{"id": "a",', '(request)'],
  ['admin.tenants.create', '[1,2,3]', '(request)'],
  ['admin.tenants.create', '"a string"', '(request)'],
  ['admin.tenants.create', 'null', '(request)'],
  ['admin.tenants.create', '42', '(request)'],
  ['admin.tenants.create', new Uint8Array([0xff, 0xfe, 0x7b, 0x7d]), '(request)'],
  ['admin.tenants.create', {}, 'id'],
  ['admin.tenants.create', { id: 42 }, 'id'],
  ['admin.tenants.create', { id: 'UPPER' }, 'id'],
  ['admin.tenants.create', { id: 'a'.repeat(64) }, 'id'],
  ['admin.tenants.create', { id: 'ok', bogus: true }, 'bogus'],
  ['admin.tenants.create', { id: 'ok', quota: { vcpus: -1 } }, 'quota.vcpus'],
  ['admin.tenants.create', { id: 'ok', quota: { vcpus: 1.5 } }, 'quota.vcpus'],
  ['admin.tenants.create', { id: 'ok', quota: { cores: 4 } }, 'quota.cores'],
  ['admin.tenants.create', { id: 'ok', displayName: big }, 'displayName'],
  ['admin.tenants.create', { id: 'ok', displayName: huge }, '(request)'],
  ['admin.tenants.get', { id: ['acme'] }, 'id'],
  ['admin.tenants.list', { page: 2 }, 'page'],
  ['admin.nodes.get', {}, 'id'],
  ['admin.nodes.cordon', { id: 'has space' }, 'id'],
  ['admin.nodes.nonsense', {}, '(subject)'],
  ['tenant.acme.vnfs.instantiate', {}, 'descriptor'],
  ['tenant.acme.vnfs.instantiate', { descriptor: 'vrouter' }, 'descriptor'],
  ['tenant.acme.vnfs.instantiate', { descriptor: { ...good, name: big } }, 'descriptor.name'],
  ['tenant.acme.vnfs.instantiate', { descriptor: { ...good, replicas: 0 } }, 'descriptor.replicas'],
  ['tenant.acme.vnfs.instantiate', { descriptor: { ...good, replicas: '2' } }, 'descriptor.replicas'],
  ['tenant.acme.vnfs.instantiate', withRes({ vcpus: -2 }), 'descriptor.resources.vcpus'],
  ['tenant.acme.vnfs.instantiate', withRes({ memoryMiB: 1e12 }), 'descriptor.resources.memoryMiB'],
  ['tenant.acme.vnfs.instantiate', withRes({ numa: 'always' }), 'descriptor.resources.numa'],
  ['tenant.acme.vnfs.instantiate', withRes({ hugepages: { sizeKiB: 4, count: 1 } }), 'descriptor.resources.hugepages.sizeKiB'],
  ['tenant.acme.vnfs.instantiate', withRes({ numa: 'strict' }), 'descriptor.resources.numa'],
  ['tenant.acme.vnfs.instantiate', { descriptor: { ...good, image: { ref: 'evil:latest' } } }, 'descriptor.image.ref'],
  ['tenant.acme.vnfs.instantiate', { descriptor: { ...good, image: { ref: 'reg.example/acme/vfw@sha256:1234' } } }, 'descriptor.image.ref'],
  ['tenant.acme.vnfs.instantiate', { descriptor: { ...good, extra: 1 } }, 'descriptor.extra'],
  ['tenant.acme.vnfs.instantiate', withIf({ name: 'up', type: 'sriov', physnet: 'physnet1', vlan: 4095 }), 'descriptor.interfaces[0].vlan'],
  ['tenant.acme.vnfs.instantiate', withIf({ name: 'up', type: 'sriov' }), 'descriptor.interfaces[0].physnet'],
  ['tenant.acme.vnfs.instantiate', withIf({ name: 'up', type: 'warp' }), 'descriptor.interfaces[0].type'],
  ['tenant.acme.vnfs.instantiate', withIf({ name: 'this-name-is-too-long', type: 'tap' }), 'descriptor.interfaces[0].name'],
  ['tenant.acme.vnfs.instantiate', withIf({ name: 'm', type: 'tap', network: 'nowhere' }), 'descriptor.interfaces[0].network'],
  ['tenant.acme.vnfs.instantiate', withIf({ name: 'd', type: 'vhostuser', dataplane: 'vpp', queues: 0 }), 'descriptor.interfaces[0].queues'],
  ['tenant.acme.vnfs.instantiate', withIf({ name: 'd', type: 'vhostuser' }), 'descriptor.interfaces[0].network'],
  ['tenant.acme.vnfs.instantiate', { descriptor: { ...good, routes: [{ dst: '10.0.0.0/99', via: '10.0.0.1' }] } }, 'descriptor.routes[0].dst'],
  ['tenant.acme.vnfs.instantiate', { descriptor: { ...good, routes: [{ dst: 'default', dev: 'nope' }] } }, 'descriptor.routes[0].dev'],
  ['tenant.acme.vnfs.instantiate', { descriptor: good, requestId: '' }, 'requestId'],
  ['tenant.acme.vnfs.instantiate', { descriptor: { ...good, command: [big] } }, 'descriptor.command[0]'],
  ['tenant.acme.vnfs.scale', { id: 'vnf-1', replicas: -1 }, 'replicas'],
  ['tenant.acme.vnfs.scale', { id: 'vnf-1' }, 'replicas'],
  ['tenant.acme.vnfs.heal', { id: 'vnf-1', replica: 'first' }, 'replica'],
  ['tenant.acme.vnfs.terminate', { id: 'vnf-1', mode: 'NOW' }, 'mode'],
  ['tenant.acme.opoccs.get', { id: null }, 'id'],
  ['tenant.ACME.vnfs.list', {}, '(subject).tenant'],
  ['tenant.acme.vnfs.explode', {}, '(subject)'],
];

describe('malformed requests', () => {
  test(`each of ${MALFORMED.length} malformed requests gets INVALID_ARGUMENT naming the field, and no state changes`, async () => {
    assert.ok(MALFORMED.length >= 30);
    const beforeState = await snapshotState(c.nc);
    for (const [suffix, body, field] of MALFORMED) {
      const subject = `nfv.v1.${suffix}`;
      const data = body instanceof Uint8Array ? body : typeof body === 'string' ? body : JSON.stringify(body);
      const r = await c.api.raw(subject, data, 10_000);
      assertEnvelope(r);
      assert.equal(r.ok, false, `${subject} ${String(data).slice(0, 80)}`);
      assert.equal(r.error.code, 'INVALID_ARGUMENT', `${subject}: ${r.error.message}`);
      const fields = (r.error.details?.issues ?? []).map((i: any) => i.field);
      assert.ok(fields.includes(field), `${subject}: expected field ${field}, got ${JSON.stringify(fields)} (${r.error.message.slice(0, 200)})`);
      assert.ok(r.error.message.length < 4096, 'the message does not echo a huge input');
    }
    const afterState = await snapshotState(c.nc);
    assert.deepEqual(afterState, beforeState, 'no state changed');
  });
});
