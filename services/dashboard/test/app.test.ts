import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect } from 'nats';
import { silentLogger, createRegistry } from '@edgenfv/telemetry';
import { buildApp, explainUnschedulable, type Overview } from '../src/index.js';
import { OPERATOR_TOKEN, startFixture, type Fixture } from './fixture.js';

let f: Fixture;
before(async () => {
  f = await startFixture();
});
after(async () => {
  await f.close();
});

test('overview: nodes, tenants, VNFs with replicas and interfaces, and why a VNF is not scheduled', async () => {
  const res = await f.app.inject({ method: 'GET', url: '/api/overview' });
  assert.equal(res.statusCode, 200);
  const o = res.json<Overview>();
  assert.deepEqual(o.nodes.map((n) => n.id).sort(), ['node-a', 'node-b']);
  assert.deepEqual(o.tenants.map((t) => t.id).sort(), ['acme', 'blocked']);
  assert.deepEqual(o.errors, []);
  const vr = o.vnfs.find((v) => v.id === f.vnfId)!;
  assert.equal(vr.replicas.length, 2);
  assert.deepEqual(vr.replicas[0]!.interfaces.map((i) => i.name), ['mgmt', 'dp0']);
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
    const r = await f.app.inject({ method: 'GET', url });
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
  const nf = await f.app.inject({ method: 'GET', url: '/api/tenants/nope' });
  assert.equal(nf.statusCode, 404);
  assert.deepEqual(nf.json(), { error: { code: 'NOT_FOUND', message: 'tenant "nope" not found' } });
  const bad = await f.app.inject({ method: 'GET', url: '/api/tenants/Bad_Id' });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error.code, 'INVALID_ARGUMENT');
  assert.equal(bad.json().error.details.issues[0].field, 'params.tenant');
  const lim = await f.app.inject({ method: 'GET', url: '/api/events?limit=0' });
  assert.equal(lim.statusCode, 400);
  const noRoute = await f.app.inject({ method: 'GET', url: '/api/nothing' });
  assert.equal(noRoute.statusCode, 404);
  assert.equal(noRoute.json().error.code, 'NOT_FOUND');
  const vnfNf = await f.app.inject({ method: 'GET', url: '/api/tenants/acme/vnfs/vnf-9999' });
  assert.equal(vnfNf.statusCode, 404);
});

test('no API server: 503 UNAVAILABLE; /healthz still answers while NATS is connected', async () => {
  // a connection to the same NATS under a separate app, after the responder of a *different* subject space:
  // simplest real case is a second nats-server with nobody answering
  const { startNatsServer } = await import('@edgenfv/nats-launcher');
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'edgenfv-dash-empty-'));
  const server = await startNatsServer({ storeDir: join(dir, 'js') });
  const nc = await connect({ servers: server.url });
  const app = await buildApp({ nc, logger: silentLogger(), registry: createRegistry('dashboard', { defaultMetrics: false }), apiTimeoutMs: 500 });
  try {
    const r = await app.inject({ method: 'GET', url: '/api/tenants' });
    assert.equal(r.statusCode, 503);
    assert.equal(r.json().error.code, 'UNAVAILABLE');
    assert.match(r.json().error.message, /no API server answers on nfv\.v1\.admin\.tenants\.list/);
    const h = await app.inject({ method: 'GET', url: '/healthz' });
    assert.deepEqual(h.json(), { status: 'ok', nats: 'connected' });
    const ev = await app.inject({ method: 'GET', url: '/api/events' });
    assert.equal(ev.statusCode, 503, 'no events stream');
    const act = await app.inject({ method: 'POST', url: '/api/nodes/node-a/cordon', headers: { authorization: 'Bearer x' } });
    assert.equal(act.statusCode, 403);
    assert.match(act.json().error.message, /operator actions are disabled/);
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

test('operator actions need the bearer token; cordon, uncordon and drain reach the API', async () => {
  const none = await f.app.inject({ method: 'POST', url: '/api/nodes/node-b/cordon' });
  assert.equal(none.statusCode, 401);
  assert.equal(none.headers['www-authenticate'], 'Bearer realm="edgenfv"');
  assert.equal(none.json().error.code, 'PERMISSION_DENIED');
  const wrong = await f.app.inject({ method: 'POST', url: '/api/nodes/node-b/cordon', headers: { authorization: 'Bearer nope' } });
  assert.equal(wrong.statusCode, 403);
  assert.equal(f.api.nodes.get('node-b')!.cordoned, false, 'refused actions change nothing');
  const auth = { authorization: `Bearer ${OPERATOR_TOKEN}` };
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
  const all = (await f.app.inject({ method: 'GET', url: '/api/events?limit=3' })).json().items;
  assert.equal(all.length, 3);
  assert.ok(all[0].seq > all[1].seq && all[1].seq > all[2].seq);
  const blocked = (await f.app.inject({ method: 'GET', url: '/api/events?limit=1000&tenant=blocked' })).json().items;
  assert.deepEqual(blocked.map((e: any) => `${e.event.operation}:${e.event.operationState}`), ['INSTANTIATE:FAILED', 'INSTANTIATE:STARTING']);
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
