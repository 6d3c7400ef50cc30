/**
 * The page in a real headless Chromium: it loads, renders nodes, tenants and VNFs from the API, explains an
 * UNSCHEDULABLE VNF, and an operator action (cordon with the token) goes through.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium, type Browser } from 'playwright-core';
import { OPERATOR_TOKEN, startFixture, type Fixture } from './fixture.js';

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let f: Fixture;
let browser: Browser;
let baseUrl: string;

before(async () => {
  f = await startFixture();
  baseUrl = await f.app.listen({ host: '127.0.0.1', port: 0 });
  browser = await chromium.launch({ executablePath: process.env.EDGENFV_CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
});
after(async () => {
  await browser?.close();
  await f?.close();
});

test('the page renders a node, a tenant and a VNF from the API, and explains UNSCHEDULABLE', async () => {
  const page = await browser.newPage();
  const consoleErrors: string[] = [];
  page.on('pageerror', (e) => consoleErrors.push(e.message));
  try {
    await page.goto(baseUrl);
    await page.waitForSelector('body[data-loaded="true"]');
    const nodeRow = page.locator('#nodes tr[data-node="node-a"]');
    assert.match(await nodeRow.innerText(), /node-a\s+node-a\.edge\s+Ready\s+enabled/);
    const tenantRow = page.locator('#tenants tr[data-tenant="acme"]');
    assert.match(await tenantRow.innerText(), /acme\s+Acme Corp\s+4\/16/);
    const vnf = page.locator(`.vnf[data-vnf="${f.vnfId}"]`);
    assert.match(await vnf.innerText(), /acme \/ vrouter/);
    assert.match(await vnf.innerText(), /INSTANTIATED, 2\/2 replicas running/);
    assert.match(await vnf.innerText(), /socket \/run\/edgenfv\/vhost\/acme-vrouter-0-dp0\.sock/);
    const why = page.locator(`.vnf[data-vnf="${f.blockedVnfId}"] .why`);
    const text = await why.innerText();
    assert.match(text, /Not scheduled \(UNSCHEDULABLE\)/);
    assert.match(text, /no feasible node among 2/);
    assert.match(text, /\[cordon\] node is cordoned \(2 nodes\)/);
    await page.waitForSelector('#events li');
    assert.match(await page.locator('#events').innerText(), /blocked\/vnf-\d+ INSTANTIATE FAILED UNSCHEDULABLE/);
    assert.deepEqual(consoleErrors, []);
  } finally {
    await page.close();
  }
});

test('cordon from the page: refused without the token, done with it', async () => {
  const page = await browser.newPage();
  try {
    await page.goto(baseUrl);
    await page.waitForSelector('body[data-loaded="true"]');
    const row = page.locator('#nodes tr[data-node="node-b"]');
    await row.locator('button[data-action="cordon"]').click();
    await page.locator('#status', { hasText: /cordon node-b: PERMISSION_DENIED/ }).waitFor();
    assert.equal(f.api.nodes.get('node-b')!.cordoned, false);

    await page.fill('#token', OPERATOR_TOKEN);
    await row.locator('button[data-action="cordon"]').click();
    await page.locator('#status', { hasText: /cordon node-b: done/ }).waitFor();
    assert.match(await row.innerText(), /cordoned/);
    assert.equal(f.api.nodes.get('node-b')!.cordoned, true);
    await row.locator('button[data-action="uncordon"]').click();
    await page.locator('#status', { hasText: /uncordon node-b: done/ }).waitFor();
    assert.equal(f.api.nodes.get('node-b')!.cordoned, false);
  } finally {
    await page.close();
  }
});

test('API values are rendered as text, never as markup', async () => {
  await f.client.createTenant({ id: 'xss', displayName: '<img src=x onerror="window.__xss=1">' });
  const page = await browser.newPage();
  try {
    await page.goto(baseUrl);
    await page.waitForSelector('#tenants tr[data-tenant="xss"]');
    const row = page.locator('#tenants tr[data-tenant="xss"]');
    assert.match(await row.innerText(), /<img src=x onerror="window\.__xss=1">/);
    assert.equal(await row.locator('img').count(), 0);
    assert.equal(await page.evaluate('window.__xss'), undefined);
  } finally {
    await page.close();
    await f.client.deleteTenant('xss');
  }
});
