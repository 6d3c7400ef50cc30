import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'nats';
import { silentLogger, createRegistry } from '@edgenfv/telemetry';
import { buildApp, explainUnschedulable, type Overview } from '../src/index.js';
import { OP, OPERATOR_TOKEN, startFixture, type Fixture } from './fixture.js';

let f: Fixture;
before(async () => {
  f = await startFixture();
});
after(async () => {
  await f.close();
});

test('overview: nodes, tenants, VNFs with replicas and interfaces, and why a VNF is not scheduled', async () => {
  const res = await f.app.inject({ method: 'GET', url: '/api/overview', headers: OP });
  assert.equal(res.statusCode, 200);
  const o = res.json<Overview>();
  assert.deepEqual(o.nodes.map((n) => n.id).sort(), ['node-a', 'node-b']);
  assert.deepEqual(o.tenants.map((t) => t.id).sort(), ['acme', 'blocked']);
  assert.deepEqual(o.errors, []);
  const vr = o.vnfs.find((v) => v.id === f.vnfId)!;
  assert.equal(vr.replicas.length, 2);
  assert.deepEqual(vr.replicas[0].interfaces.map((i) => i.name), ['mgmt', 'dp0']);
  assert.equal(vr.lastOpOcc?.operationState, 'COMPLETED');
  assert.equal(vr.unschedulable, undefined);
  const fw = o.vnfs.find((v) => v.id === f.blockedVnfId)!;
  assert.equal(fw.lastOpOcc?.operationState, 'FAILED');
  assert.deepEqual(fw.unschedulable?.reasons, ['[cordon] node is cordoned (2 nodes)']);
  assert.equal(fw.unschedulable?.message, 'no feasible node among 2: node is cordoned (2)');
});

test('explainUnschedulable reads the scheduler explanation, reasons as strings/objects, or plain details', () => {
  assert.deepEqual(
    explainUnschedulable({
      code: 'UNSCHEDULABLE',
      message: 'no node fits',
      details: { nodes: 3, message: 'no node fits', rejected: [{ filter: 'sriov', reason: 'no 2 free VFs on physnet1 on one NUMA node', nodes: 2 }, { filter: 'cordon', reason: 'cordoned', nodes: 1 }] },
    }),
    { message: 'no node fits', reasons: ['[sriov] no 2 free VFs on physnet1 on one NUMA node (2 nodes)', '[cordon] cordoned (1 node)'] },
  );
  assert.deepEqual(explainUnschedulable({ code: 'UNSCHEDULABLE', message: 'm', details: { reasons: ['x', { nodeClass: 'edge', reason: 'no node with 2 free VFs on physnet1 on one NUMA node' }] } }).reasons, [
    'x',
    'edge: no node with 2 free VFs on physnet1 on one NUMA node',
  ]);
  assert.deepEqual(explainUnschedulable({ code: 'UNSCHEDULABLE', message: 'm', details: { physnet1: 'no free VF' } }).reasons, ['physnet1: no free VF']);
  assert.deepEqual(explainUnschedulable({ code: 'UNSCHEDULABLE', message: 'm' }), { message: 'm', reasons: [] });
});

test('reads: tenants, nodes, VNFs, op occurrences', async () => {
  const get = async (url: string): Promise<{ status: number; body: any }> => {
    const r = await f.app.inject({ method: 'GET', url, headers: OP });
    return { status: r.statusCode, body: r.json() };
  };
  assert.equal((await get('/api/tenants')).body.items.length, 2);
  const t = await get('/api/tenants/acme');
  assert.equal(t.status, 200);
  assert.equal(t.body.usage.vnfs, 1);
  assert.equal((await get('/api/nodes')).body.items.length, 2);
  assert.equal((await get('/api/nodes/node-a')).body.inventory.numaNodes.length, 2);
  assert.deepEqual((await get('/api/tenants/acme/vnfs')).body.items.map((v: { id: string }) => v.id), [f.vnfId]);
  const v = await get(`/api/tenants/acme/vnfs/${f.vnfId}`);
  assert.equal(v.body.name, 'vrouter');
  const op = await get(`/api/tenants/blocked/opoccs/${(await get(`/api/tenants/blocked/vnfs/${f.blockedVnfId}`)).body.lastOpOccId}`);
  assert.equal(op.body.error.code, 'UNSCHEDULABLE');
});

test('errors: API codes become HTTP statuses with {error: {code, message, details}}', async () => {
  const nf = await f.app.inject({ method: 'GET', url: '/api/tenants/nope', headers: OP });
  assert.equal(nf.statusCode, 404);
  assert.deepEqual(nf.json(), { error: { code: 'NOT_FOUND', message: 'tenant "nope" not found' } });
  const bad = await f.app.inject({ method: 'GET', url: '/api/tenants/Bad_Id', headers: OP });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error.code, 'INVALID_ARGUMENT');
  assert.equal(bad.json().error.details.issues[0].field, 'params.tenant');
  const lim = await f.app.inject({ method: 'GET', url: '/api/events?limit=0', headers: OP });
  assert.equal(lim.statusCode, 400);
  const noRoute = await f.app.inject({ method: 'GET', url: '/api/nothing', headers: OP });
  assert.equal(noRoute.statusCode, 404);
  assert.equal(noRoute.json().error.code, 'NOT_FOUND');
  const vnfNf = await f.app.inject({ method: 'GET', url: '/api/tenants/acme/vnfs/vnf-9999', headers: OP });
  assert.equal(vnfNf.statusCode, 404);
});

test('no API server: 503 UNAVAILABLE; /healthz still answers while NATS is connected', async () => {
  // a connection to the same NATS under a separate app, after the responder of a *different* subject space:
  // simplest real case is a second nats-server with nobody answering
  const { startNatsServer } = await import('@edgenfv/nats-launcher');
  const dir = mkdtempSync(join(tmpdir(), 'edgenfv-dash-empty-'));
  const server = await startNatsServer({ storeDir: join(dir, 'js') });
  const nc = await connect({ servers: server.url });
  const app = await buildApp({ nc, logger: silentLogger(), registry: createRegistry('dashboard', { defaultMetrics: false }), apiTimeoutMs: 500, operatorToken: 't0k' });
  try {
    const r = await app.inject({ method: 'GET', url: '/api/tenants', headers: { authorization: 'Bearer t0k' } });
    assert.equal(r.statusCode, 503);
    assert.equal(r.json().error.code, 'UNAVAILABLE');
    assert.match(r.json().error.message, /no API server answers on nfv\.v1\.admin\.tenants\.list/);
    const h = await app.inject({ method: 'GET', url: '/healthz' });
    assert.deepEqual(h.json(), { status: 'ok', nats: 'connected' });
    const ev = await app.inject({ method: 'GET', url: '/api/events', headers: { authorization: 'Bearer t0k' } });
    assert.equal(ev.statusCode, 503, 'no events stream');
    const tenantTok = await app.inject({ method: 'POST', url: '/api/nodes/node-a/cordon', headers: { authorization: 'Bearer edt.acme.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' } });
    assert.equal(tenantTok.statusCode, 503, 'a tenant token cannot be checked without the API: unavailable, not accepted');
    await nc.close();
    const down = await app.inject({ method: 'GET', url: '/healthz' });
    assert.equal(down.statusCode, 503);
  } finally {
    await app.close();
    if (!nc.isClosed()) await nc.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('no token configured: every /api request is refused, the page and /healthz still load', async () => {
  const app = await buildApp({ nc: f.nc, logger: silentLogger(), registry: createRegistry('dashboard', { defaultMetrics: false }) });
  try {
    const r = await app.inject({ method: 'GET', url: '/api/overview', headers: OP });
    assert.equal(r.statusCode, 403);
    assert.match(r.json().error.message, /no token configured \(EDGENFV_DASHBOARD_TOKEN\)/);
    assert.equal((await app.inject({ method: 'GET', url: '/' })).statusCode, 200);
  } finally {
    await app.close();
  }
});

test('every /api read needs a token; a tenant token sees and acts on its own tenant only', async () => {
  for (const url of ['/api/overview', '/api/tenants', '/api/nodes', '/api/events', '/api/tenants/acme/vnfs', '/api/events/stream']) {
    const none = await f.app.inject({ method: 'GET', url });
    assert.equal(none.statusCode, 401, url);
    assert.equal(none.headers['www-authenticate'], 'Bearer realm="edgenfv"');
    const wrong = await f.app.inject({ method: 'GET', url, headers: { authorization: 'Bearer nope' } });
    assert.equal(wrong.statusCode, 403, url);
  }
  // the operator hands out a tenant's token; a tenant cannot get one
  const tok = await f.app.inject({ method: 'GET', url: '/api/tenants/acme/token', headers: OP });
  assert.equal(tok.statusCode, 200);
  const acme = { authorization: `Bearer ${tok.json().token as string}` };
  assert.match(tok.json().token, /^edt\.acme\.[A-Za-z0-9_-]{43}$/);
  assert.equal((await f.app.inject({ method: 'GET', url: '/api/tenants/acme/token', headers: acme })).statusCode, 403);
  assert.equal((await f.app.inject({ method: 'GET', url: '/api/tenants/nope/token', headers: OP })).statusCode, 404);

  const o = (await f.app.inject({ method: 'GET', url: '/api/overview', headers: acme })).json<Overview>();
  assert.deepEqual(o.principal, { role: 'tenant', tenantId: 'acme' });
  assert.deepEqual(o.nodes, [], 'tenants do not see nodes');
  assert.deepEqual(o.tenants.map((t) => t.id), ['acme']);
  assert.deepEqual(o.vnfs.map((v) => v.tenantId), ['acme']);
  assert.deepEqual((await f.app.inject({ method: 'GET', url: '/api/tenants', headers: acme })).json().items.map((t: { id: string }) => t.id), ['acme']);
  for (const url of ['/api/tenants/blocked', '/api/tenants/blocked/vnfs', `/api/tenants/blocked/vnfs/${f.blockedVnfId}`, '/api/nodes', '/api/nodes/node-a', '/api/histograms', '/api/events?tenant=blocked']) {
    const r = await f.app.inject({ method: 'GET', url, headers: acme });
    assert.equal(r.statusCode, 403, url);
    assert.equal(r.json().error.code, 'PERMISSION_DENIED');
  }
  const ev = (await f.app.inject({ method: 'GET', url: '/api/events?limit=1000', headers: acme })).json().items;
  assert.ok(ev.length > 0);
  assert.ok(ev.every((e: { tenantId: string }) => e.tenantId === 'acme'));
  const before = f.api.vnfs.get(`blocked.${f.blockedVnfId}`)!.instantiationState;
  const term = await f.app.inject({ method: 'POST', url: `/api/tenants/blocked/vnfs/${f.blockedVnfId}/terminate`, headers: acme, payload: {} });
  assert.equal(term.statusCode, 403);
  assert.equal(f.api.vnfs.get(`blocked.${f.blockedVnfId}`)!.instantiationState, before, 'a refused action changes nothing');
  assert.equal((await f.app.inject({ method: 'POST', url: '/api/nodes/node-a/cordon', headers: acme })).statusCode, 403);
  assert.equal(f.api.nodes.get('node-a')!.cordoned, false);
  // a forged token for another tenant, and a token of a deleted tenant, are refused
  const forged = `Bearer ${(tok.json().token as string).replace('edt.acme.', 'edt.blocked.')}`;
  assert.equal((await f.app.inject({ method: 'GET', url: '/api/overview', headers: { authorization: forged } })).statusCode, 403);
  await f.client.createTenant({ id: 'shortlived' });
  const sl = (await f.app.inject({ method: 'GET', url: '/api/tenants/shortlived/token', headers: OP })).json().token as string;
  assert.equal((await f.app.inject({ method: 'GET', url: '/api/overview', headers: { authorization: `Bearer ${sl}` } })).statusCode, 200);
  await f.client.deleteTenant('shortlived');
  const fresh = await buildApp({ nc: f.nc, logger: silentLogger(), registry: createRegistry('dashboard', { defaultMetrics: false }), operatorToken: OPERATOR_TOKEN });
  try {
    assert.equal((await fresh.inject({ method: 'GET', url: '/api/overview', headers: { authorization: `Bearer ${sl}` } })).statusCode, 403, 'deleted tenant: token revoked');
  } finally {
    await fresh.close();
  }
});

test('Host header is checked (DNS rebinding); /metrics and /healthz answer any Host', async () => {
  const evil = await f.app.inject({ method: 'GET', url: '/api/overview', headers: { ...OP, host: 'evil.example:8080' } });
  assert.equal(evil.statusCode, 421);
  assert.match(evil.json().error.message, /Host "evil\.example:8080" is not one this dashboard serves/);
  assert.equal((await f.app.inject({ method: 'GET', url: '/', headers: { host: 'evil.example' } })).statusCode, 421);
  assert.equal((await f.app.inject({ method: 'GET', url: '/api/overview', headers: { ...OP, host: '127.0.0.1:8080' } })).statusCode, 200);
  assert.equal((await f.app.inject({ method: 'GET', url: '/metrics', headers: { host: 'prometheus.site:9000' } })).statusCode, 200);
  const named = await buildApp({ nc: f.nc, logger: silentLogger(), registry: createRegistry('dashboard', { defaultMetrics: false }), operatorToken: OPERATOR_TOKEN, allowedHosts: ['edge1.example'] });
  try {
    assert.equal((await named.inject({ method: 'GET', url: '/api/tenants', headers: { ...OP, host: 'edge1.example:8080' } })).statusCode, 200);
  } finally {
    await named.close();
  }
});

test('requests are rate limited per client: 429 with retry-after', async () => {
  const app = await buildApp({ nc: f.nc, logger: silentLogger(), registry: createRegistry('dashboard', { defaultMetrics: false }), operatorToken: OPERATOR_TOKEN, rateLimitPerSec: 1 });
  try {
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) codes.push((await app.inject({ method: 'GET', url: '/api/tenants', headers: OP })).statusCode);
    assert.deepEqual(codes.slice(0, 3), [200, 200, 200], 'burst of 3');
    const limited = await app.inject({ method: 'GET', url: '/api/tenants', headers: OP });
    assert.equal(limited.statusCode, 429);
    assert.ok(Number(limited.headers['retry-after']) >= 1);
    assert.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'health is not limited');
  } finally {
    await app.close();
  }
});

test('operator actions need the bearer token; cordon, uncordon and drain reach the API', async () => {
  const none = await f.app.inject({ method: 'POST', url: '/api/nodes/node-b/cordon' });
  assert.equal(none.statusCode, 401);
  assert.equal(none.headers['www-authenticate'], 'Bearer realm="edgenfv"');
  assert.equal(none.json().error.code, 'PERMISSION_DENIED');
  const wrong = await f.app.inject({ method: 'POST', url: '/api/nodes/node-b/cordon', headers: { authorization: 'Bearer nope' } });
  assert.equal(wrong.json().error.code, 'PERMISSION_DENIED');
  assert.equal(wrong.statusCode, 403);
  assert.equal(f.api.nodes.get('node-b')!.cordoned, false, 'refused actions change nothing');
  const auth = OP;
  const c = await f.app.inject({ method: 'POST', url: '/api/nodes/node-b/cordon', headers: auth });
  assert.equal(c.statusCode, 200);
  assert.equal(c.json().cordoned, true);
  const u = await f.app.inject({ method: 'POST', url: '/api/nodes/node-b/uncordon', headers: auth });
  assert.equal(u.json().cordoned, false);
  const d = await f.app.inject({ method: 'POST', url: '/api/nodes/node-a/drain', headers: auth });
  assert.equal(d.statusCode, 200);
  assert.equal(d.json().opOccIds.length, 1, 'the vrouter replica on node-a');
  await f.client.uncordonNode('node-a');
  const missing = await f.app.inject({ method: 'POST', url: '/api/nodes/node-x/cordon', headers: auth });
  assert.equal(missing.statusCode, 404);
  const line = f.logs.find((l) => l.msg === 'operator action' && l.action === 'drain');
  assert.ok(line, 'drain is logged');
  assert.equal(line.nodeId, 'node-a');
  assert.equal(line.component, 'dashboard');
  assert.ok(!JSON.stringify(f.logs).includes(OPERATOR_TOKEN), 'the token never reaches the logs');
});

test('recent events: newest first, per tenant', async () => {
  const all = (await f.app.inject({ method: 'GET', url: '/api/events?limit=3', headers: OP })).json().items;
  assert.equal(all.length, 3);
  assert.ok(all[0].seq > all[1].seq && all[1].seq > all[2].seq);
  const blocked = (await f.app.inject({ method: 'GET', url: '/api/events?limit=1000&tenant=blocked', headers: OP })).json().items;
  assert.deepEqual(blocked.filter((e: any) => e.event.vnfId === f.blockedVnfId).map((e: any) => `${e.event.operation}:${e.event.operationState}`), ['INSTANTIATE:FAILED', 'INSTANTIATE:STARTING']);
  assert.equal(blocked[0].event.error.code, 'UNSCHEDULABLE');
});

test('static page, /healthz, and /metrics that promtool accepts', async () => {
  const page = await f.app.inject({ method: 'GET', url: '/' });
  assert.equal(page.statusCode, 200);
  assert.match(page.headers['content-type'] as string, /^text\/html/);
  assert.match(page.body, /<script src="\/app\.js"/);
  assert.match((await f.app.inject({ method: 'GET', url: '/app.js' })).headers['content-type'] as string, /^text\/javascript/);
  assert.equal((await f.app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
  const m = await f.app.inject({ method: 'GET', url: '/metrics' });
  assert.equal(m.statusCode, 200);
  assert.match(m.body, /^edgenfv_dashboard_http_requests_total\{method="GET",route="\/api\/tenants\/:tenant",status_code="404",service="dashboard"\} 1$/m);
  assert.match(m.body, /^edgenfv_dashboard_api_requests_total\{op="tenants.get",result="NOT_FOUND",service="dashboard"\} \d+$/m);
  assert.match(m.body, /^edgenfv_dashboard_http_request_duration_seconds_bucket\{/m);
  assert.match(m.body, /^edgenfv_process_cpu_user_seconds_total/m);
  const { code, out } = await promtool(m.body);
  assert.equal(out, '', `promtool check metrics said: ${out}`);
  assert.equal(code, 0);
});

function promtool(text: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, out }));
    child.stdin.end(text);
  });
}

test('VNF actions: terminate, heal, scale reach the API; bad input names the field and changes nothing', async () => {
  const { vnfId } = await f.client.instantiate('acme', { ...vrouterOne, name: 'acted' });
  const bad = await f.app.inject({ method: 'POST', url: `/api/tenants/acme/vnfs/${vnfId}/scale`, headers: OP, payload: { replicas: -1 } });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error.details.issues[0].field, 'body.replicas');
  const scale = await f.app.inject({ method: 'POST', url: `/api/tenants/acme/vnfs/${vnfId}/scale`, headers: OP, payload: { replicas: 2 } });
  assert.equal(scale.statusCode, 200);
  assert.match(scale.json().opOccId, /./);
  const heal = await f.app.inject({ method: 'POST', url: `/api/tenants/acme/vnfs/${vnfId}/heal`, headers: OP, payload: { replica: 0 } });
  assert.equal(heal.statusCode, 200);
  const term = await f.app.inject({ method: 'POST', url: `/api/tenants/acme/vnfs/${vnfId}/terminate`, headers: OP, payload: {} });
  assert.equal(term.statusCode, 200);
  const op = (await f.app.inject({ method: 'GET', url: `/api/tenants/acme/opoccs/${term.json().opOccId as string}`, headers: OP })).json();
  assert.equal(op.operation, 'TERMINATE');
});

test('live stream: notifications as SSE with the stream sequence as id; Last-Event-ID resumes after a blip; a tenant gets its own', async () => {
  const base = `${await f.app.listen({ host: '127.0.0.1', port: 0 })}/`;
  const tok = (await f.app.inject({ method: 'GET', url: '/api/tenants/blocked/token', headers: OP })).json().token as string;
  const o = (await f.app.inject({ method: 'GET', url: '/api/overview', headers: OP })).json<Overview>();
  // 1. from the overview's position: only what happens after it
  const s1 = await openSse(`${base}api/events/stream`, { ...OP, 'last-event-id': String(o.eventsSeq) });
  const t1 = await openSse(`${base}api/events/stream`, { authorization: `Bearer ${tok}`, 'last-event-id': String(o.eventsSeq) });
  await s1.next('ready');
  await t1.next('ready');
  const { vnfId } = await f.client.instantiate('acme', { ...vrouterOne, name: 'live' });
  const first = await s1.next('notification');
  assert.ok(Number(first.id) > o.eventsSeq);
  assert.equal(first.data.tenantId, 'acme');
  assert.equal(first.data.event.vnfId, vnfId);
  s1.close(); // a blip
  // 2. while disconnected, more happens
  await f.client.terminate('acme', { id: vnfId });
  await f.client.instantiate('blocked', { ...vrouterOne, name: 'other' });
  const bounds = await f.nc.jetstreamManager().then((j) => j.streams.info('EDGENFV_EVENTS'));
  // 3. reconnect with Last-Event-ID: every event after it, in order, none twice
  const s2 = await openSse(`${base}api/events/stream`, { ...OP, 'last-event-id': first.id! });
  const seqs: number[] = [];
  while (seqs.length === 0 || seqs[seqs.length - 1] < bounds.state.last_seq) seqs.push(Number((await s2.next('notification')).id));
  assert.deepEqual(seqs, Array.from({ length: bounds.state.last_seq - Number(first.id) }, (_, i) => Number(first.id) + 1 + i), 'no gap, no repeat');
  s2.close();
  // the tenant's stream: only its own tenant's notifications
  const tn = await t1.next('notification');
  assert.equal(tn.data.tenantId, 'blocked');
  t1.close();
  const bad = await fetch(`${base}api/events/stream`, { headers: { ...OP, 'last-event-id': 'abc' } });
  assert.equal(bad.status, 400);
});

const vrouterOne = { name: 'x', replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:vrouter' }, interfaces: [{ name: 'mgmt', type: 'tap' as const, network: 'mgmt' }] };

interface SseEvent {
  event: string;
  id?: string;
  data: any;
}

/** A minimal SSE reader over fetch (headers are allowed, unlike EventSource). */
async function openSse(url: string, headers: Record<string, string>): Promise<{ next: (type: string) => Promise<SseEvent>; close: () => void }> {
  const ac = new AbortController();
  const res = await fetch(url, { headers, signal: ac.signal });
  assert.equal(res.status, 200, await (res.status === 200 ? Promise.resolve('') : res.text()));
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  const queue: SseEvent[] = [];
  const pull = async (): Promise<void> => {
    const { value, done } = await reader.read();
    if (done) throw new Error('stream ended');
    buf += value;
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const frame = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const e: SseEvent = { event: 'message', data: undefined };
      for (const line of frame.split('\n')) {
        if (line.startsWith('event: ')) e.event = line.slice(7);
        else if (line.startsWith('id: ')) e.id = line.slice(4);
        else if (line.startsWith('data: ')) e.data = JSON.parse(line.slice(6));
      }
      if (e.data !== undefined) queue.push(e);
    }
  };
  return {
    async next(type) {
      for (;;) {
        const i = queue.findIndex((e) => e.event === type);
        if (i >= 0) return queue.splice(i, 1)[0];
        await pull();
      }
    },
    close: () => ac.abort(),
  };
}

test('day-2: operate, logs and the op occurrences of a VNF; a tenant token reaches only its own', async () => {
  const { vnfId } = await f.client.instantiate('acme', { ...vrouterOne, name: 'day2' });
  const stop = await f.app.inject({ method: 'POST', url: `/api/tenants/acme/vnfs/${vnfId}/operate`, headers: OP, payload: { changeStateTo: 'STOPPED' } });
  assert.equal(stop.statusCode, 200, stop.body);
  const again = await f.app.inject({ method: 'POST', url: `/api/tenants/acme/vnfs/${vnfId}/operate`, headers: OP, payload: { changeStateTo: 'STOPPED' } });
  assert.equal(again.statusCode, 409, 'already STOPPED: CONFLICT');
  const bad = await f.app.inject({ method: 'POST', url: `/api/tenants/acme/vnfs/${vnfId}/operate`, headers: OP, payload: { changeStateTo: 'PAUSED' } });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error.details.issues[0].field, 'body.changeStateTo');
  const ops = (await f.app.inject({ method: 'GET', url: `/api/tenants/acme/opoccs?vnfId=${vnfId}`, headers: OP })).json().items;
  assert.deepEqual(ops.map((o: { operation: string }) => o.operation), ['INSTANTIATE', 'OPERATE']);
  const logs = await f.app.inject({ method: 'GET', url: `/api/tenants/acme/vnfs/${vnfId}/logs?tailLines=1`, headers: OP });
  assert.equal(logs.statusCode, 200);
  assert.deepEqual(logs.json().lines, ['day2 replica 0: serving']);
  const tok = (await f.app.inject({ method: 'GET', url: '/api/tenants/blocked/token', headers: OP })).json().token as string;
  const other = { authorization: `Bearer ${tok}` };
  for (const [method, url] of [['GET', `/api/tenants/acme/vnfs/${vnfId}/logs`], ['GET', `/api/tenants/acme/opoccs`], ['POST', `/api/tenants/acme/opoccs/${ops[1].id as string}/retry`]] as const) {
    assert.equal((await f.app.inject({ method, url, headers: other, ...(method === 'POST' ? { payload: {} } : {}) })).statusCode, 403, url);
  }
});
