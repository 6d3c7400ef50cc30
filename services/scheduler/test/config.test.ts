import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config.js';

test('defaults, environment overrides and a YAML file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sched-cfg-'));
  try {
    const file = join(dir, 'scheduler.yaml');
    writeFileSync(file, 'networks:\n  - {name: mgmt, cidr: 10.0.0.0/24}\nkvReplicas: 3\nnats: {servers: [nats://a:4222, nats://b:4222]}\n');
    const cfg = loadConfig({ EDGENFV_HEARTBEAT_GRACE_MS: '2500' }, file);
    assert.deepEqual(cfg.nats.servers, ['nats://a:4222', 'nats://b:4222']);
    assert.equal(cfg.kvReplicas, 3);
    assert.equal(cfg.heartbeatGraceMs, 2500);
    assert.equal(cfg.startTimeoutMs, 300_000);
    assert.equal(cfg.networks[0]!.name, 'mgmt');
    assert.ok(Object.isFrozen(cfg));
    const env = loadConfig({ EDGENFV_NATS_URL: 'nats://x:1,nats://y:2', EDGENFV_NATS_USER: 'u', EDGENFV_NATS_PASS: 'p' }, undefined);
    assert.deepEqual(env.nats, { servers: ['nats://x:1', 'nats://y:2'], user: 'u', pass: 'p' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('every issue is reported together, by field', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sched-cfg-'));
  try {
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'kvReplicas: 4.5\nnetworks:\n  - {name: a, cidr: 10.0.0.0/24}\n  - {name: a}\ncolour: blue\nnats: {server: x}\n');
    assert.throws(
      () => loadConfig({ EDGENFV_HEARTBEAT_GRACE_MS: 'soon' }, file),
      (err: any) => {
        const fields = err.issues.map((i: any) => i.field).sort();
        assert.deepEqual(fields, ['colour', 'heartbeatGraceMs', 'kvReplicas', 'nats.server', 'networks[1].cidr', 'networks[1].name'].sort());
        assert.equal(err.code, 'INVALID_ARGUMENT');
        return true;
      },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
