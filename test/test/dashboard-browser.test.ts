/**
 * The dashboard in a real headless Chromium against the real scheduler, a simulated node (the real node protocol,
 * no VM) and the dashboard process itself: the page loads with the operator's token; a VNF instantiated through
 * the message API appears and reaches RUNNING without a reload (server-sent events); the node picture shows its
 * pinned CPUs; a terminate from the page (confirmed in a dialog) is followed live to COMPLETED; a tenant token
 * sees only its tenant; API values are rendered as text; a screenshot is written to the test's output folder
 * (`$EDGENFV_TEST_OUTPUT`, default `test-output/` in the repository).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { connect, type NatsConnection } from 'nats';
import { chromium, type Browser, type Page } from 'playwright-core';
import { spawnTied, startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';
import { Api, REPO_ROOT, startScheduler, type SchedulerProc } from '../src/harness.js';
import { SimNode, simulatedNodeInventory } from '../src/sim-node.js';
import { waitNodeKnown } from '../src/state-fixtures.js';

const DASHBOARD_MAIN = join(REPO_ROOT, 'services/dashboard/dist/src/main.js');
const OUTPUT = process.env.EDGENFV_TEST_OUTPUT ?? join(REPO_ROOT, 'test-output');
const TOKEN = 'browser-test-operator-token';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let dir: string;
let nats: NatsServerHandle;
let sched: SchedulerProc;
let nc: NatsConnection;
let api: Api;
let node: SimNode;
let cleanupSysfs: () => void;
let dashboard: ChildProcess;
let base: string;
let browser: Browser;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgenfv-dash-e2e-'));
  nats = await startNatsServer({ storeDir: join(dir, 'js') });
  const config = join(dir, 'scheduler.json');
  writeFileSync(config, JSON.stringify({ networks: [] }));
  sched = await startScheduler({ EDGENFV_NATS_URL: nats.url, EDGENFV_CONFIG: config });
  nc = await connect({ servers: nats.url });
  api = new Api(nc);
  const sim = await simulatedNodeInventory('sim-1', { numaNodes: 2, cpusPerNuma: 8, isolatedPerNuma: 6, vfsPerNuma: 4, physnet: 'physnet1' });
  cleanupSysfs = sim.cleanup;
  // the node's OVS-DPDK switch will not start: the node card says so, with the reason
  sim.inventory.dataplanes = [{ kind: 'ovs-dpdk', state: 'failed', error: 'ovs-vswitchd exited (signal SIGABRT): Unable to initialize DPDK', networks: ['provider'] }];
  node = new SimNode(nc, sim.inventory, 500);
  await node.start();
  await waitNodeKnown(nc, 'sim-1');
  await api.ok('nfv.v1.admin.tenants.create', { id: 'acme', displayName: 'Acme Corp' });
  await api.ok('nfv.v1.admin.tenants.create', { id: 'beta', displayName: '<img src=x onerror="window.__xss=1">' });

  dashboard = spawnTied(process.execPath, [DASHBOARD_MAIN], {
    env: { PATH: process.env.PATH ?? '', EDGENFV_HOME: dir, EDGENFV_NATS_URL: nats.url, EDGENFV_DASHBOARD_PORT: '0', EDGENFV_DASHBOARD_TOKEN: TOKEN, EDGENFV_METRICS_URLS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  base = await new Promise<string>((resolve, reject) => {
    let out = '';
    const onData = (b: Buffer): void => {
      out += b.toString();
      const m = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) resolve(`${m[1]}/`);
    };
    dashboard.stdout!.on('data', onData);
    dashboard.stderr!.on('data', onData);
    dashboard.once('exit', (code) => reject(new Error(`dashboard exited ${code}: ${out}`)));
  });
  browser = await chromium.launch({ executablePath: process.env.EDGENFV_CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  if (dashboard && dashboard.exitCode === null) {
    dashboard.kill('SIGTERM');
    await new Promise((r) => dashboard.once('exit', r));
  }
  node?.stop();
  await nc?.close();
  await sched?.stop();
  await nats?.stop();
  cleanupSysfs?.();
  rmSync(dir, { recursive: true, force: true });
});

async function openPage(token: string): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  await page.goto(`${base}#token=${encodeURIComponent(token)}`);
  try {
    await page.waitForSelector('body[data-loaded="true"][data-live="true"]');
  } catch (err) {
    throw new Error(`the page did not go live: status "${await page.locator('#status').innerText()}", errors ${JSON.stringify(errors)}`, { cause: err });
  }
  return { page, errors };
}

/** Until `selector` matches `n` elements (the page's CSP forbids string evaluation: counted from here). */
async function waitCount(page: Page, selector: string, n: number, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const c = await page.locator(selector).count();
    if (c === n) return;
    if (Date.now() > until) throw new Error(`${selector}: ${c} elements, not ${n}, after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const pinned = (page: Page, tenant: string): Promise<number> => page.locator(`.node[data-node="sim-1"] g.cpu.pinned[data-tenant="${tenant}"]`).count();

test('operator: a VNF from the message API appears live, reaches RUNNING, its pinned CPUs are drawn; terminate from the page completes', async () => {
  const { page, errors } = await openPage(TOKEN);
  try {
    assert.equal(page.url(), base, 'the token left the address bar');
    const nodeCard = page.locator('.node[data-node="sim-1"]');
    await nodeCard.waitFor();
    assert.match(await nodeCard.innerText(), /Ready/);
    assert.match(await nodeCard.locator('.dataplane[data-dataplane="ovs-dpdk"][data-state="failed"]').innerText(), /ovs-dpdk: failed \(networks provider\) — ovs-vswitchd exited .*Unable to initialize DPDK/);
    assert.equal(await nodeCard.locator('g.cpu').count(), 16, 'every CPU of both NUMA nodes');
    assert.equal(await nodeCard.locator('g.cpu.isolated').count(), 12);
    assert.equal(await pinned(page, 'acme'), 0);

    // instantiated by an orchestrator over NATS, not by the page
    const inst = await api.ok('nfv.v1.tenant.acme.vnfs.instantiate', {
      descriptor: {
        name: 'vrouter',
        replicas: 1,
        resources: { vcpus: 2, memoryMiB: 512, cpuPolicy: 'dedicated', numa: 'strict' },
        image: { ref: 'builtin:vrouter' },
        interfaces: [{ name: 'up', type: 'sriov', physnet: 'physnet1' }],
      },
    });
    await api.ok('nfv.v1.tenant.beta.vnfs.instantiate', { descriptor: { name: 'fw', replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:vrouter' } } });
    const card = page.locator(`.vnf[data-vnf="${inst.vnfId as string}"]`);
    await card.locator('td[data-state="RUNNING"]').waitFor({ timeout: 60_000 });
    assert.match(await card.innerText(), /acme \/ vrouter/);
    // the node picture follows (pushed on the replica's event / the node's heartbeat)
    await waitCount(page, '.node[data-node="sim-1"] g.cpu.pinned[data-tenant="acme"]', 2);
    const vnf = await api.ok('nfv.v1.tenant.acme.vnfs.get', { id: inst.vnfId });
    const nodeRec = await api.ok('nfv.v1.admin.nodes.get', { id: 'sim-1' });
    const cpus = (nodeRec.reservations as Array<{ vnfId: string; cpus?: number[] }>).find((r) => r.vnfId === vnf.id)!.cpus!;
    const drawn = await page.locator('.node[data-node="sim-1"] g.cpu.pinned[data-tenant="acme"]').evaluateAll((gs) => gs.map((g) => Number(g.getAttribute('data-cpu'))));
    assert.deepEqual(drawn.sort((a, b) => a - b), [...cpus].sort((a, b) => a - b), 'the pinned CPUs the scheduler gave');
    assert.match(await page.locator('.node[data-node="sim-1"] .bar[data-label="VFs physnet1"]').getAttribute('data-used') ?? '', /^1$/);
    // beta's display name is text, never markup
    const betaRow = page.locator('#tenants tr[data-tenant="beta"]');
    assert.match(await betaRow.innerText(), /<img src=x onerror="window\.__xss=1">/);
    assert.equal(await betaRow.locator('img').count(), 0);
    assert.equal(await page.evaluate('window.__xss'), undefined);

    mkdirSync(OUTPUT, { recursive: true });
    const shot = join(OUTPUT, 'dashboard-operator.png');
    await page.screenshot({ path: shot, fullPage: true });

    // terminate from the page: confirm in the dialog, then the op occurrence is followed live to its end
    await card.locator('button[data-action="terminate"]').click();
    await page.locator('#confirm[open]').waitFor();
    assert.match(await page.locator('#confirm-text').innerText(), /Terminate acme\/vrouter/);
    await page.locator('#confirm-ok').click();
    const timeline = page.locator('#ops svg.timeline[data-state="COMPLETED"]');
    await timeline.waitFor({ timeout: 60_000 });
    assert.match((await timeline.textContent()) ?? '', /TERMINATE COMPLETED/);
    await page.locator(`.vnf[data-vnf="${inst.vnfId as string}"][data-state="NOT_INSTANTIATED"], #vnfs:not(:has(.vnf[data-vnf="${inst.vnfId as string}"]))`).first().waitFor({ timeout: 30_000 });
    await waitCount(page, '.node[data-node="sim-1"] g.cpu.pinned[data-tenant="acme"]', 0);
    const after = await api.ok('nfv.v1.tenant.acme.vnfs.get', { id: inst.vnfId }).catch(() => ({ instantiationState: 'NOT_INSTANTIATED' }));
    assert.equal(after.instantiationState, 'NOT_INSTANTIATED');
    await page.screenshot({ path: join(OUTPUT, 'dashboard-after-terminate.png'), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

test('a tenant token sees only its own tenant: no nodes, no other tenant, and its actions are its own', async () => {
  const tok = await fetch(`${base}api/tenants/beta/token`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(tok.status, 200);
  const { token } = (await tok.json()) as { token: string };
  const { page, errors } = await openPage(token);
  try {
    assert.equal(await page.locator('#who').innerText(), 'tenant beta');
    await page.locator('.vnf[data-tenant="beta"]').first().waitFor();
    assert.equal(await page.locator('.vnf[data-tenant="acme"]').count(), 0);
    assert.deepEqual(await page.locator('#tenants tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-tenant')).filter(Boolean)), ['beta']);
    assert.equal(await page.locator('#nodes-section').isHidden(), true);
    assert.equal(await page.locator('.node').count(), 0);
    // a live event of another tenant does not reach this page; its own does
    const other = await api.ok('nfv.v1.tenant.acme.vnfs.instantiate', { descriptor: { name: 'later', replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:vrouter' } } });
    const own = await api.ok('nfv.v1.tenant.beta.vnfs.instantiate', { descriptor: { name: 'later', replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:vrouter' } } });
    await page.locator(`.vnf[data-vnf="${own.vnfId as string}"] td[data-state="RUNNING"]`).waitFor({ timeout: 60_000 });
    assert.equal(await page.locator(`.vnf[data-vnf="${other.vnfId as string}"]`).count(), 0);
    assert.equal(await page.locator(`#events li:has-text("acme/")`).count(), 0);
    // its own VNF's op occurrences, as timelines
    await page.locator(`.vnf[data-vnf="${own.vnfId as string}"] button[data-action="history"]`).click();
    const hist = page.locator(`.history[data-history="${own.vnfId as string}"] svg.timeline[data-state="COMPLETED"]`);
    await hist.first().waitFor();
    assert.match((await hist.first().textContent()) ?? '', /INSTANTIATE COMPLETED/);
    assert.deepEqual(errors, []);
    // the API behind the page refuses the other tenant
    const denied = await page.evaluate(async ([t, id]) => (await fetch(`/api/tenants/acme/vnfs/${id}/terminate`, { method: 'POST', headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' }, body: '{}' })).status, [token, other.vnfId as string]);
    assert.equal(denied, 403);
    await page.screenshot({ path: join(OUTPUT, 'dashboard-tenant.png'), fullPage: true });
  } finally {
    await page.close();
  }
});
