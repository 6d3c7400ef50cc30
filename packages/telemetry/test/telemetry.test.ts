import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Counter } from 'prom-client';
import { createRegistry, serveMetrics } from '../src/index.js';

test('a service registry (default metrics included) passes promtool check metrics, served over HTTP', async () => {
  const registry = createRegistry('unit');
  new Counter({ name: 'edgenfv_unit_things_total', help: 'Things.', labelNames: ['result'], registers: [registry] }).inc({ result: 'ok' });
  const srv = await serveMetrics(registry, { port: 0 });
  try {
    const res = await fetch(srv.url);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /edgenfv_unit_things_total\{result="ok",service="unit"\} 1/);
    assert.match(text, /edgenfv_process_cpu_user_seconds_total/);
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(check.error, undefined, 'promtool must be installed (Debian package prometheus)');
    assert.equal(check.status, 0, check.stdout + check.stderr);
    assert.equal((check.stdout + check.stderr).trim(), '');
    assert.equal((await fetch(srv.url.replace('/metrics', '/healthz'))).status, 200);
  } finally {
    await srv.close();
  }
});
