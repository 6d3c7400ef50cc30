/**
 * Tenants kept apart (issue 11), on the real nats-server with the real appliance config (`npm start`'s process:
 * JWT auth, one principal per role). As tenant A with the credentials the appliance issued to A, nats-server
 * denies (or the scheduler ignores) everything that is not A's: B's API subjects, B's notifications live and
 * replayed, publishing into an events subject, other inboxes, admin and internal subjects, `$KV.>`, `$JS.API.>`, a
 * reply subject pointing into KV or B's subjects. A node's credentials cannot act for another node. Rotating or
 * deleting a tenant closes its old connections while every other client stays connected, and a rotated tenant's
 * old dashboard token is refused by the (real) dashboard while the one issued with the new credentials works.
 * And A's orchestrator
 * does its whole lifecycle with A's credentials (instantiate, get, list, notifications, terminate) against a
 * simulated node that itself runs with a node principal.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, credsAuthenticator, type NatsConnection } from 'nats';
import { issueRole, type TrustBundle } from '@edgenfv/nats-launcher';
import { fromClient } from '@edgenfv/contracts';
import { freePort, startAppliance, type RunningAppliance } from '../src/appliance.js';
import { Api, REPO_ROOT } from '../src/harness.js';
import { SimNode, simulatedNodeInventory } from '../src/sim-node.js';
import { waitNodeKnown } from '../src/state-fixtures.js';

const CLI = join(REPO_ROOT, 'services/cli/bin/edgenfv.js');
const te = new TextEncoder();
const tag = String(process.pid % 100000);
const A = `iso-a${tag}`;
const B = `iso-b${tag}`;
const NODE = `iso-node${tag}`;

let home: string;
let app: RunningAppliance;
let trust: TrustBundle;
let op: Api;
let credsA: { servers: string[]; creds: string; inboxPrefix: string };
let credsB: { servers: string[]; creds: string; inboxPrefix: string };
let ncA: NatsConnection;
let ncB: NatsConnection;
let ncNode: NatsConnection;
let node: SimNode | undefined;
let cleanupInventory: (() => void) | undefined;
const extra: NatsConnection[] = [];

function connectWith(c: { servers: string[]; creds: string; inboxPrefix: string }, name: string): Promise<NatsConnection> {
  return connect({ servers: c.servers, name, authenticator: credsAuthenticator(te.encode(c.creds)), inboxPrefix: c.inboxPrefix, maxReconnectAttempts: 0 });
}

/** nats-server refuses the publish (a request is a publish): the client's request fails with the violation. */
async function publishDenied(nc: NatsConnection, subject: string, body: unknown = {}, reply?: string): Promise<void> {
  await assert.rejects(nc.request(subject, te.encode(JSON.stringify(body)), { timeout: 5000, ...(reply ? { reply, noMux: true } : {}) }), (err: Error) => {
    assert.match(err.message, new RegExp(`Permissions Violation for Publish to "${subject.replace(/[$.*>]/g, '\\$&')}"`));
    return true;
  });
}

/** nats-server refuses the subscription: it is closed with the violation. */
async function subscribeDenied(nc: NatsConnection, subject: string): Promise<void> {
  const sub = nc.subscribe(subject);
  const got = [];
  const done = (async () => {
    for await (const m of sub) got.push(m);
  })();
  await assert.rejects(done, /Permissions Violation for Subscription to/);
  assert.equal(got.length, 0);
}

/** Whether the connection is closed by the server within a while (revoked credentials). */
async function closedByServer(nc: NatsConnection): Promise<Error | void> {
  return nc.closed();
}

before(async () => {
  home = mkdtempSync(join(tmpdir(), 'edgenfv-iso-'));
  app = await startAppliance(home, {
    ports: { nats: await freePort(), schedulerMetrics: await freePort(), dashboard: await freePort() },
    services: { nodeAgent: false },
    scheduler: { heartbeatGraceMs: 600000 },
    networks: [
      { name: 'a-only', cidr: '10.98.1.0/24', tenants: [A] },
      { name: 'shared', cidr: '10.98.2.0/24', macPrefix: '02:ed:', parent: 'eth0' },
    ],
  });
  trust = JSON.parse(readFileSync(join(home, 'nats-auth', 'trust.json'), 'utf8')) as TrustBundle;
  op = app.api;
  for (const t of [A, B]) await op.ok('nfv.v1.admin.tenants.create', { id: t, quota: { vcpus: 8, vnfs: 5 } });
  credsA = await op.ok('nfv.v1.admin.tenants.credentials', { id: A });
  credsB = await op.ok('nfv.v1.admin.tenants.credentials', { id: B });
  ncA = await connectWith(credsA, 'tenant-a');
  ncB = await connectWith(credsB, 'tenant-b');
  // a simulated node (the real node protocol) connected with a node principal of its own
  const nodeCreds = await issueRole(trust, { kind: 'node', nodeId: NODE });
  ncNode = await connectWith({ servers: app.info.servers, creds: nodeCreds.creds, inboxPrefix: nodeCreds.inboxPrefix }, NODE);
  const inv = await simulatedNodeInventory(NODE, { numaNodes: 1, cpusPerNuma: 8, isolatedPerNuma: 0, vfsPerNuma: 0, physnet: 'physnet1' });
  cleanupInventory = inv.cleanup;
  node = new SimNode(ncNode, inv.inventory);
  await node.start();
  await waitNodeKnown(app.nc, NODE);
});

after(async () => {
  node?.stop();
  cleanupInventory?.();
  for (const nc of [ncA, ncB, ncNode, ...extra]) await nc?.close().catch(() => undefined);
  await app?.stop();
  if (home) rmSync(home, { recursive: true, force: true });
});

test("tenant A's orchestrator does its whole lifecycle with A's credentials (tenant create is the operator's)", async () => {
  const api = new Api(ncA);
  const events: string[] = [];
  const live = ncA.subscribe(`nfv.v1.tenant.${A}.events.>`, { callback: (_e, m) => events.push(m.string()) });
  const inst = await api.ok(`nfv.v1.tenant.${A}.vnfs.instantiate`, {
    descriptor: { name: 'fw', replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:vrouter' }, interfaces: [] },
  });
  const o = await api.waitOp(A, inst.opOccId);
  assert.equal(o.operationState, 'COMPLETED', JSON.stringify(o));
  assert.equal((await api.ok(`nfv.v1.tenant.${A}.vnfs.get`, { id: inst.vnfId })).instantiationState, 'INSTANTIATED');
  assert.deepEqual((await api.ok(`nfv.v1.tenant.${A}.vnfs.list`)).items.map((v: { id: string }) => v.id), [inst.vnfId]);
  const term = await api.ok(`nfv.v1.tenant.${A}.vnfs.terminate`, { id: inst.vnfId });
  assert.equal((await api.waitOp(A, term.opOccId)).operationState, 'COMPLETED');
  // its own notifications: live, and replayed by the scheduler (A has no JetStream rights of its own)
  const replay = await api.ok(`nfv.v1.tenant.${A}.notifications.list`, {});
  assert.ok(replay.items.length >= 2, JSON.stringify(replay));
  assert.ok(replay.items.every((i: { subject: string }) => i.subject.startsWith(`nfv.v1.tenant.${A}.events.`)));
  assert.ok(replay.items.some((i: { event: { operation?: string; operationState?: string } }) => i.event.operation === 'TERMINATE' && i.event.operationState === 'COMPLETED'));
  for (let i = 0; i < 100 && !events.some((e) => e.includes('TERMINATE') && e.includes('COMPLETED')); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(events.some((e) => e.includes('TERMINATE') && e.includes('COMPLETED')), `live events: ${events.join(' | ')}`);
  live.unsubscribe();
});

test("tenant A cannot call B's API, admin or internal subjects, nor touch $KV / $JS.API", async () => {
  await publishDenied(ncA, `nfv.v1.tenant.${B}.vnfs.list`);
  await publishDenied(ncA, `nfv.v1.tenant.${B}.notifications.list`);
  await publishDenied(ncA, 'nfv.v1.admin.tenants.list');
  await publishDenied(ncA, `nfv.v1.admin.tenants.credentials`, { id: B });
  await publishDenied(ncA, `nfv.v1.internal.nodes.${NODE}.heartbeat`);
  await publishDenied(ncA, `$KV.edgenfv_tenants.${A}`, { id: A, quota: { vcpus: 1000 } });
  await publishDenied(ncA, '$JS.API.INFO');
  await publishDenied(ncA, '$JS.API.STREAM.INFO.EDGENFV_EVENTS');
  await publishDenied(ncA, '$JS.API.STREAM.MSG.GET.EDGENFV_EVENTS', { seq: 1 });
  await publishDenied(ncA, '$JS.API.CONSUMER.CREATE.EDGENFV_EVENTS', { stream_name: 'EDGENFV_EVENTS', config: { deliver_subject: `${credsA.inboxPrefix}.x`, filter_subject: `nfv.v1.tenant.${B}.events.>` } });
  // A's own quota is untouched
  assert.equal((await op.ok('nfv.v1.admin.tenants.get', { id: A })).quota.vcpus, 8);
});

test("tenant A cannot read B's notifications (live or replayed), other inboxes, or publish any event", async () => {
  await subscribeDenied(ncA, `nfv.v1.tenant.${B}.events.>`);
  await subscribeDenied(ncA, 'nfv.v1.tenant.*.events.>');
  await subscribeDenied(ncA, '_INBOX.>');
  await subscribeDenied(ncA, `${credsB.inboxPrefix}.>`);
  await subscribeDenied(ncA, '$KV.>');
  await subscribeDenied(ncA, 'nfv.v1.>');
  const forged = { type: 'OpOcc', opOccId: 'x', vnfId: 'x', operation: 'INSTANTIATE', operationState: 'COMPLETED', at: new Date().toISOString() };
  await publishDenied(ncA, `nfv.v1.tenant.${A}.events.forged`, forged);
  await publishDenied(ncA, `nfv.v1.tenant.${B}.events.forged`, forged);
  const jsm = await app.nc.jetstreamManager();
  const info = await jsm.streams.info('EDGENFV_EVENTS', { subjects_filter: 'nfv.v1.tenant.*.events.forged' });
  assert.deepEqual(info.state.subjects ?? {}, {}, 'nothing forged reached the events stream');
  // B replays its own, and none of A's
  const replayB = await new Api(ncB).ok(`nfv.v1.tenant.${B}.notifications.list`, {});
  assert.ok(replayB.items.every((i: { subject: string }) => i.subject.startsWith(`nfv.v1.tenant.${B}.`)));
});

test('a reply subject pointing into KV, an events stream or B\'s inbox gets nothing from the scheduler', async () => {
  const kv = await app.nc.jetstream().views.kv('edgenfv_tenants');
  const before = await kv.get(B);
  const spy: string[] = [];
  const spySub = ncB.subscribe(`${credsB.inboxPrefix}.>`, { callback: (_e, m) => spy.push(m.subject) });
  await ncB.flush();
  for (const reply of [`$KV.edgenfv_tenants.${B}`, `nfv.v1.tenant.${B}.events.injected`, `${credsB.inboxPrefix}.stolen`, `$JS.API.STREAM.DELETE.EDGENFV_EVENTS`]) {
    ncA.publish(`nfv.v1.tenant.${A}.vnfs.list`, te.encode('{}'), { reply });
  }
  await ncA.flush();
  // a request sent after them is answered: the scheduler has seen them all by then (one queue group, in order)
  await new Api(ncA).ok(`nfv.v1.tenant.${A}.vnfs.list`);
  await new Api(ncB).ok(`nfv.v1.tenant.${B}.vnfs.list`);
  const afterEntry = await kv.get(B);
  assert.equal(afterEntry?.revision, before?.revision, "B's tenant record was not written");
  const jsm = await app.nc.jetstreamManager();
  const info = await jsm.streams.info('EDGENFV_EVENTS', { subjects_filter: `nfv.v1.tenant.${B}.events.injected` });
  assert.deepEqual(info.state.subjects ?? {}, {}, 'no reply landed in the events stream');
  assert.ok((await jsm.streams.info('EDGENFV_EVENTS')).config.name, 'the events stream still exists');
  assert.deepEqual(spy.filter((s) => s.endsWith('.stolen')), [], "nothing arrived in B's inbox");
  spySub.unsubscribe();
});

test("a node's credentials cannot write another node's status or heartbeat for it", async () => {
  const other = await issueRole(trust, { kind: 'node', nodeId: `other${tag}` });
  const nc = await connectWith({ servers: app.info.servers, creds: other.creds, inboxPrefix: other.inboxPrefix }, 'other-node');
  extra.push(nc);
  await publishDenied(nc, `$KV.edgenfv_status.${NODE}.fake-alloc`, { state: 'RUNNING' });
  await publishDenied(nc, `nfv.v1.internal.nodes.${NODE}.heartbeat`, { nodeId: NODE, epoch: 1 });
  await publishDenied(nc, `nfv.v1.internal.nodes.${NODE}.register`, { nodeId: NODE });
  await publishDenied(nc, `$KV.edgenfv_allocs.other${tag}.x`, {});
  await publishDenied(nc, '$JS.API.STREAM.LIST');
  await publishDenied(nc, `$JS.API.CONSUMER.CREATE.KV_edgenfv_allocs.x.$KV.edgenfv_allocs.${NODE}.>`, {});
  await subscribeDenied(nc, `nfv.v1.internal.nodes.${NODE}.>`);
  await subscribeDenied(nc, `_INBOX_n_${NODE}.>`);
  // its own register, with a reply subject pointing into KV: the scheduler does not write there
  const kv = await app.nc.jetstream().views.kv('edgenfv_nodes');
  const before = (await kv.get('hijacked'))?.revision;
  nc.publish(`nfv.v1.internal.nodes.other${tag}.heartbeat`, te.encode(JSON.stringify({ nodeId: `other${tag}`, epoch: 1 })), { reply: '$KV.edgenfv_nodes.hijacked' });
  await nc.flush();
  await op.ok('nfv.v1.admin.nodes.list');
  await new Promise((r) => setTimeout(r, 500));
  assert.equal((await kv.get('hijacked'))?.revision, before, 'no reply was written into the nodes bucket');
});

test('rotating A and deleting a tenant close their old connections; every other client stays connected', async () => {
  const oldA = ncA;
  const closedA = closedByServer(oldA);
  // A's dashboard token (the operator's CLI hands it out) works until A's credentials are rotated
  const cliOp = { ...process.env, EDGENFV_HOME: home };
  const dashboard = (token: string): Promise<number> =>
    fetch(`${app.info.dashboardUrl!}api/tenants/${A}`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.status);
  const oldDash = JSON.parse(execFileSync(process.execPath, [CLI, 'tenants', 'dashboard-token', A, '-o', 'json'], { env: cliOp, encoding: 'utf8' })).dashboardToken as string;
  assert.equal(await dashboard(oldDash), 200, "A's dashboard token works before the rotation");
  // the rotation as the operator does it: `edgenfv tenants credentials A --rotate > a.json` (NATS creds + dashboard token)
  const rotated = JSON.parse(execFileSync(process.execPath, [CLI, 'tenants', 'credentials', A, '--rotate'], { env: cliOp, encoding: 'utf8' })) as typeof credsA & { dashboardToken: string };
  await closedA;
  assert.match(rotated.dashboardToken, new RegExp(`^edt\\.${A}\\.`));
  assert.notEqual(rotated.dashboardToken, oldDash, 'the rotated connect file carries a new dashboard token');
  // the dashboard caches a tenant for a few seconds (TokenAuthority cacheMs; a token that does not match is looked
  // up again after 1 s): the new token works and the old one is refused once the dashboard has seen the rotation
  const settled = async (token: string, want: number): Promise<number> => {
    let status = await dashboard(token);
    for (let i = 0; i < 60 && status !== want; i++) {
      await new Promise((r) => setTimeout(r, 500));
      status = await dashboard(token);
    }
    return status;
  };
  assert.equal(await settled(rotated.dashboardToken, 200), 200, 'the new dashboard token works');
  assert.equal(await settled(oldDash, 403), 403, "A's old dashboard token is refused after the rotation");
  assert.equal(await dashboard(rotated.dashboardToken), 200, 'the new one still works');
  assert.equal(oldA.isClosed(), true, "A's old connection was closed");
  await assert.rejects(connectWith(credsA, 'old-a'), /Authorization Violation|authentication|revoked/i);
  ncA = await connectWith(rotated, 'tenant-a-rotated');
  await new Api(ncA).ok(`nfv.v1.tenant.${A}.vnfs.list`);
  // the CLI as tenant A (the rotated connect file): its own notifications replayed without JetStream rights
  const fileA = join(home, `${A}.json`);
  writeFileSync(fileA, JSON.stringify(rotated), { mode: 0o600 });
  const envA = { ...process.env, EDGENFV_CONNECT: fileA, EDGENFV_HOME: join(home, 'cli-a') };
  const eventsA = execFileSync(process.execPath, [CLI, 'events', '-t', A, '-o', 'json'], { env: envA, encoding: 'utf8' });
  assert.match(eventsA, /TERMINATE/);
  assert.ok(!eventsA.includes(`nfv.v1.tenant.${B}.`), eventsA);
  assert.throws(() => execFileSync(process.execPath, [CLI, 'events', '-t', B, '-o', 'json'], { env: envA, encoding: 'utf8', stdio: 'pipe' }), "A's connect file cannot replay B's");

  // a tenant's deletion: its credentials (from the CLI, the same connect-file format) stop working
  const C = `iso-c${tag}`;
  await op.ok('nfv.v1.admin.tenants.create', { id: C });
  const out = execFileSync(process.execPath, [CLI, 'tenants', 'credentials', C], { env: { ...process.env, EDGENFV_HOME: home }, encoding: 'utf8' });
  const file = join(home, `${C}.json`);
  writeFileSync(file, out, { mode: 0o600 });
  const listed = execFileSync(process.execPath, [CLI, 'vnfs', 'list', '-t', C, '-o', 'json'], { env: { ...process.env, EDGENFV_CONNECT: file }, encoding: 'utf8' });
  assert.deepEqual(JSON.parse(listed), [], 'the CLI works with the tenant connect file');
  const ncC = await connectWith(JSON.parse(out), 'tenant-c');
  const closedC = closedByServer(ncC);
  await op.ok('nfv.v1.admin.tenants.delete', { id: C });
  await closedC;
  assert.equal(ncC.isClosed(), true);
  await assert.rejects(connectWith(JSON.parse(out), 'tenant-c-again'), /Authorization Violation|authentication|revoked/i);

  // everyone else never noticed
  for (const nc of [ncB, ncNode, app.nc]) assert.equal(nc.isClosed(), false);
  await new Api(ncB).ok(`nfv.v1.tenant.${B}.vnfs.list`);
  await op.ok('nfv.v1.admin.tenants.list');
  assert.ok((await op.ok('nfv.v1.admin.nodes.get', { id: NODE })).id === NODE);
});

test("the data plane's settings are the operator's: a tenant-scoped network, MACs, a macvtap parent", async () => {
  const apiA = new Api(ncA);
  const apiB = new Api(ncB);
  const vnfd = (name: string, i: Record<string, unknown>): Record<string, unknown> => ({
    descriptor: { name, replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:vrouter' }, interfaces: [{ name: 'eth1', ...i }] },
  });
  const denied = async (api: Api, t: string, body: Record<string, unknown>, field: string): Promise<void> => {
    const r = await api.call(`nfv.v1.tenant.${t}.vnfs.instantiate`, body);
    assert.equal(r.ok, false, JSON.stringify(r));
    assert.equal(r.error.code, 'PERMISSION_DENIED', JSON.stringify(r));
    assert.deepEqual(r.error.details.issues.map((i: { field: string }) => i.field), [field]);
  };
  // only A may attach to A's network: B cannot even get a port on it
  await denied(apiB, B, vnfd('intruder', { type: 'tap', network: 'a-only' }), 'descriptor.interfaces[0].network');
  await denied(apiB, B, vnfd('mcast', { type: 'tap', network: 'shared', mac: '03:ed:00:00:00:01' }), 'descriptor.interfaces[0].mac');
  await denied(apiB, B, vnfd('foreign', { type: 'tap', network: 'shared', mac: '02:aa:00:00:00:01' }), 'descriptor.interfaces[0].mac');
  await denied(apiB, B, vnfd('parent', { type: 'macvtap', network: 'shared', parent: 'eth9' }), 'descriptor.interfaces[0].parent');
  assert.deepEqual((await apiB.ok(`nfv.v1.tenant.${B}.vnfs.list`)).items, [], 'nothing was recorded');
  // A may: its network, a MAC in the range, the network's own parent
  const inst = await apiA.ok(`nfv.v1.tenant.${A}.vnfs.instantiate`, vnfd('mine', { type: 'tap', network: 'a-only' }));
  assert.equal((await apiA.waitOp(A, inst.opOccId)).operationState, 'COMPLETED');
  const term = await apiA.ok(`nfv.v1.tenant.${A}.vnfs.terminate`, { id: inst.vnfId });
  assert.equal((await apiA.waitOp(A, term.opOccId)).operationState, 'COMPLETED');
});

test("a JetStream push consumer a node points at another node's subjects writes no status and is no heartbeat", async () => {
  const other = await issueRole(trust, { kind: 'node', nodeId: `pusher${tag}` });
  const nc = await connectWith({ servers: app.info.servers, creds: other.creds, inboxPrefix: other.inboxPrefix }, 'pusher-node');
  extra.push(nc);
  const jsm = await app.nc.jetstreamManager();
  const allocs = await app.nc.jetstream().views.kv('edgenfv_allocs');
  const statusKey = `$KV.edgenfv_status.${NODE}.forged${tag}`;
  const heartbeat = `nfv.v1.internal.nodes.${NODE}.heartbeat`;
  const seen: { subject: string; reply?: string; code?: number }[] = [];
  const spy = app.nc.subscribe(heartbeat, { callback: (_e, m) => seen.push({ subject: m.subject, reply: m.reply, code: m.headers?.code }) });
  await app.nc.flush();
  const answers: string[] = [];
  for (const [i, deliver] of [statusKey, heartbeat].entries()) {
    // a consumer of its own allocations (the subject form its KV watch uses), delivering onto another node's subject
    const name = `push${tag}x${i}`;
    const body = {
      stream_name: 'KV_edgenfv_allocs',
      config: { name, filter_subject: `$KV.edgenfv_allocs.pusher${tag}.>`, deliver_subject: deliver, idle_heartbeat: 100_000_000, ack_policy: 'none', deliver_policy: 'last_per_subject' },
    };
    answers.push(
      await nc.request(`$JS.API.CONSUMER.CREATE.KV_edgenfv_allocs.${name}.$KV.edgenfv_allocs.pusher${tag}.>`, te.encode(JSON.stringify(body)), { timeout: 5000 }).then(
        (m) => m.string(),
        (e: Error) => e.message,
      ),
    );
  }
  // something to deliver: an allocation of its own (written as the scheduler would)
  await allocs.put(`pusher${tag}.a1`, te.encode(JSON.stringify({ nodeId: NODE, epoch: 99 })));
  await new Promise((res) => setTimeout(res, 1500));
  await allocs.delete(`pusher${tag}.a1`);
  spy.unsubscribe();
  const info = await jsm.streams.info('KV_edgenfv_status', { subjects_filter: statusKey });
  assert.deepEqual(info.state.subjects ?? {}, {}, `nothing written as ${NODE}'s status (${answers[0]})`);
  // subject permissions cannot see a delivery subject: the server does deliver onto NODE's heartbeat subject (under
  // the allocation's own subject, with a `$JS.ACK.` reply or as a status message), and the scheduler and the node
  // agents take no such message for a request or a heartbeat (fromClient: registry.test.ts shows a silent node is
  // still declared lost)
  const pushed = seen.filter((m) => !(m.reply ?? '').startsWith(`_INBOX_n_${NODE}.`)); // not NODE's own heartbeats
  assert.ok(pushed.length > 0, `the consumer was created and delivered (${answers[1]})`);
  assert.deepEqual(pushed.filter((m) => fromClient(m.subject, m.reply, m.code)), [], JSON.stringify(pushed.slice(0, 3)));
});
