/**
 * Prometheus and Grafana as shipped in deploy/: `promtool check rules` and `promtool check config` accept them;
 * the Grafana dashboard passes a structural lint and every panel query parses (promtool, as recording rules); and
 * every metric a panel or an alert names is exported by the live services: a real scheduler, a real node agent
 * (its main.js, TCG, no VM booted) and the dashboard process, all on one nats-server.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnTied, startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';
import { REPO_ROOT, startScheduler, type SchedulerProc } from '../src/harness.js';
import { freePort } from '../src/appliance.js';

const RULES = join(REPO_ROOT, 'deploy/prometheus/edgenfv-rules.yml');
const PROM_CONFIG = join(REPO_ROOT, 'deploy/prometheus/prometheus.yml');
const GRAFANA = join(REPO_ROOT, 'deploy/grafana/edgenfv-site.json');
const CGROUP_PARENT = `edgenfv-obs-${process.pid}`;

let dir: string;
let nats: NatsServerHandle;
let sched: SchedulerProc;
const procs: ChildProcess[] = [];
const exposed = new Map<string, string>(); // service -> /metrics text

function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, out }));
  });
}

function startProcess(script: string, env: Record<string, string>, ready: RegExp): Promise<void> {
  const child = spawnTied(process.execPath, [join(REPO_ROOT, script)], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (b: Buffer): void => {
      out += b.toString();
      if (ready.test(out)) resolve();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${script} exited ${code}: ${out.slice(-2000)}`)));
  });
}

async function metricsOf(url: string): Promise<string> {
  const res = await fetch(url);
  assert.equal(res.status, 200, url);
  return res.text();
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgenfv-obs-'));
  nats = await startNatsServer({ storeDir: join(dir, 'js') });
  const schedPort = await freePort();
  const config = join(dir, 'scheduler.json');
  writeFileSync(config, JSON.stringify({ networks: [] }));
  sched = await startScheduler({ EDGENFV_NATS_URL: nats.url, EDGENFV_CONFIG: config, EDGENFV_SCHEDULER_METRICS_PORT: String(schedPort) });

  // the node agent's own main.js: TCG, a guest image that is never booted (no VM in this test)
  const agentPort = await freePort();
  const kernel = join(dir, 'vmlinuz');
  const initrd = join(dir, 'initrd');
  writeFileSync(kernel, '');
  writeFileSync(initrd, '');
  const agentConfig = join(dir, 'node-agent.json');
  writeFileSync(
    agentConfig,
    JSON.stringify({ nodeId: 'obs-node', stateDir: join(dir, 'node'), qemu: { accel: 'tcg' }, guest: { kernelPath: kernel, initrdPath: initrd }, isolation: { cgroupParent: CGROUP_PARENT } }),
  );
  await startProcess('services/node-agent/dist/src/main.js', { EDGENFV_NODE_CONFIG: agentConfig, EDGENFV_NATS_URL: nats.url, EDGENFV_METRICS_PORT: String(agentPort) }, /node agent ready/);

  const dashPort = await freePort();
  await startProcess('services/dashboard/dist/src/main.js', { EDGENFV_HOME: dir, EDGENFV_NATS_URL: nats.url, EDGENFV_DASHBOARD_PORT: String(dashPort), EDGENFV_DASHBOARD_TOKEN: 'obs' }, /Server listening at/);

  exposed.set('scheduler', await metricsOf(`http://127.0.0.1:${schedPort}/metrics`));
  exposed.set('node-agent', await metricsOf(`http://127.0.0.1:${agentPort}/metrics`));
  exposed.set('dashboard', await metricsOf(`http://127.0.0.1:${dashPort}/metrics`));
});

after(async () => {
  for (const p of procs.reverse()) {
    if (p.exitCode === null && p.signalCode === null) {
      p.kill('SIGTERM');
      await new Promise((r) => p.once('exit', r));
    }
  }
  await sched?.stop();
  await nats?.stop();
  // the node agent's (empty) cgroup parent, wherever this host's cgroup v2 is mounted
  for (const root of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) {
    try {
      rmdirSync(join(root, CGROUP_PARENT));
    } catch {
      /* not made there */
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

/** Every `edgenfv_*` metric family an expression names (histogram/counter suffixes folded to the family). */
function metricNames(expr: string): string[] {
  const names = new Set<string>();
  for (const m of expr.matchAll(/\b(edgenfv_[a-z0-9_]+)\b/g)) names.add(m[1]!);
  return [...names];
}

/** The service exporting a family (`# TYPE <family>`), with `_bucket`/`_sum`/`_count` folded. */
function exporter(name: string): string | undefined {
  const candidates = [name, name.replace(/_(bucket|sum|count)$/, '')];
  for (const [service, text] of exposed) {
    for (const c of candidates) if (new RegExp(`^# TYPE ${c} `, 'm').test(text)) return service;
  }
  return undefined;
}

test('promtool accepts the alert rules and the multi-node scrape config', async () => {
  const rules = await run('promtool', ['check', 'rules', RULES]);
  assert.equal(rules.code, 0, rules.out);
  assert.match(rules.out, /SUCCESS: \d+ rules found/);
  const config = await run('promtool', ['check', 'config', PROM_CONFIG]);
  assert.equal(config.code, 0, config.out);
  const text = readFileSync(RULES, 'utf8');
  for (const alert of ['EdgenfvNodeLost', 'EdgenfvVfPoolExhausted', 'EdgenfvOpOccStuck', 'EdgenfvOpOccsFailing', 'EdgenfvBootTimeRegressing', 'EdgenfvJetStreamNearLimit']) {
    assert.match(text, new RegExp(`alert: ${alert}\\b`));
  }
});

test('every metric an alert names is exported by a live service', () => {
  const text = readFileSync(RULES, 'utf8');
  const names = metricNames(text);
  assert.ok(names.length >= 8);
  const missing = names.filter((n) => !exporter(n));
  assert.deepEqual(missing, [], `alert rules name metrics no service exports: ${missing.join(', ')}`);
});

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: Array<{ refId: string; expr: string; datasource?: { uid: string } }>;
}

test('the Grafana dashboard: well-formed, every query parses, every metric it names is exported by a live service', async () => {
  const d = JSON.parse(readFileSync(GRAFANA, 'utf8')) as { title: string; uid: string; schemaVersion: number; panels: Panel[]; templating: { list: Array<{ name: string; type: string; query: string }> } };
  assert.equal(typeof d.title, 'string');
  assert.match(d.uid, /^[a-zA-Z0-9_-]{1,40}$/);
  assert.ok(d.schemaVersion >= 36);
  assert.ok(d.templating.list.some((v) => v.name === 'datasource' && v.type === 'datasource' && v.query === 'prometheus'));
  const ids = new Set<number>();
  const types = new Set(['row', 'stat', 'timeseries', 'heatmap', 'bargauge', 'gauge', 'table', 'text']);
  const exprs: string[] = [];
  for (const p of d.panels) {
    assert.ok(Number.isInteger(p.id) && !ids.has(p.id), `panel id ${p.id} unique`);
    ids.add(p.id);
    assert.ok(types.has(p.type), `panel ${p.id} type ${p.type}`);
    assert.ok(p.title.length > 0);
    const g = p.gridPos;
    assert.ok([g.x, g.y, g.w, g.h].every(Number.isInteger) && g.x >= 0 && g.w > 0 && g.x + g.w <= 24 && g.h > 0, `panel ${p.id} gridPos`);
    if (p.type === 'row') continue;
    assert.equal(p.datasource?.uid, '${datasource}', `panel ${p.id} uses the datasource variable`);
    assert.ok(p.targets && p.targets.length > 0, `panel ${p.id} has queries`);
    const refs = new Set(p.targets.map((t) => t.refId));
    assert.equal(refs.size, p.targets.length, `panel ${p.id} refIds unique`);
    for (const t of p.targets) {
      assert.ok(t.expr.trim().length > 0);
      exprs.push(t.expr);
    }
  }
  // promtool parses each query: as recording rules in a scratch rules file
  const scratch = join(dir, 'panels.rules.yml');
  writeFileSync(scratch, `groups:\n  - name: panels\n    rules:\n${exprs.map((e, i) => `      - record: panel:expr_${i}\n        expr: ${JSON.stringify(e)}\n`).join('')}`);
  const parsed = await run('promtool', ['check', 'rules', scratch]);
  assert.equal(parsed.code, 0, parsed.out);
  // and every metric they name is really exported
  const names = [...new Set(exprs.flatMap(metricNames))];
  const missing = names.filter((n) => !exporter(n));
  assert.deepEqual(missing, [], `panels name metrics no service exports: ${missing.join(', ')}`);
  const by = new Map<string, string[]>();
  for (const n of names) by.set(exporter(n)!, [...(by.get(exporter(n)!) ?? []), n]);
  for (const s of ['scheduler', 'node-agent', 'dashboard']) assert.ok((by.get(s) ?? []).length > 0, `the dashboard shows ${s} metrics`);
});
