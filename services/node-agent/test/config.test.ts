import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '@edgenfv/contracts';
import { DEFAULTS, loadConfig, parseConfig } from '../src/config.js';

test('defaults: an empty config is valid and frozen', () => {
  const cfg = parseConfig({}, { EDGENFV_NODE_ID: 'edge-1' });
  assert.equal(cfg.nodeId, 'edge-1');
  assert.equal(cfg.stateDir, DEFAULTS.stateDir);
  assert.equal(cfg.sysfsRoot, '/sys');
  assert.equal(cfg.qemu.machine, 'q35');
  assert.equal(cfg.nats.url, DEFAULTS.natsUrl);
  assert.equal(cfg.isolation.sandbox, true);
  assert.ok(Object.isFrozen(cfg) && Object.isFrozen(cfg.qemu) && Object.isFrozen(cfg.physnets));
});

test('env wins over the file; YAML and JSON files both load', () => {
  const dir = mkdtempSync(join(tmpdir(), 'na-cfg-'));
  try {
    const y = join(dir, 'node.yaml');
    writeFileSync(
      y,
      [
        'nodeId: edge-7',
        'labels: {site: edge-1}',
        'stateDir: /var/lib/x',
        'physnets: {"0000:3B:00.0": physnet1, ens1f1: physnet2}',
        'dataplanes: [{kind: vpp, socketDir: /run/vpp, probePath: /run/vpp/cli.sock}]',
        'nats: {url: "nats://10.0.0.1:4222", user: a, pass: b}',
        'metrics: {port: 9500}',
      ].join('\n'),
    );
    const cfg = loadConfig({ EDGENFV_STATE_DIR: '/tmp/state', EDGENFV_METRICS_PORT: '9600' }, y);
    assert.equal(cfg.nodeId, 'edge-7');
    assert.deepEqual(cfg.labels, { site: 'edge-1' });
    assert.equal(cfg.stateDir, '/tmp/state');
    assert.equal(cfg.metrics.port, 9600);
    assert.deepEqual(cfg.physnets, { '0000:3b:00.0': 'physnet1', ens1f1: 'physnet2' });
    assert.equal(cfg.dataplanes[0]!.kind, 'vpp');
    assert.deepEqual(cfg.nats, { url: 'nats://10.0.0.1:4222', user: 'a', pass: 'b' });
    const j = join(dir, 'node.json');
    writeFileSync(j, JSON.stringify({ nodeId: 'edge-8', qemu: { machine: 'microvm', accel: 'tcg' } }));
    const c2 = loadConfig({}, j);
    assert.equal(c2.qemu.machine, 'microvm');
    assert.equal(c2.qemu.accel, 'tcg');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('every issue is reported together, each naming its field', () => {
  const bad = {
    nodeId: 'Not_A_Label',
    bogus: 1,
    stateDir: 'relative/path',
    physnets: { 'not a pf!': 'physnet1', '0000:3b:00.0': 7 },
    dataplanes: [{ kind: 'dpdk', extra: true }],
    nats: { url: 'http://x', user: 'a' },
    metrics: { port: 70000 },
    qemu: { machine: 'pc', maxVcpus: 0 },
    guest: { kernelPath: '/k' },
    isolation: { sandbox: 'yes', cgroupParent: 'a/b' },
  };
  let err: unknown;
  try {
    parseConfig(bad);
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof InvalidArgumentError);
  const fields = err.issues.map((i) => i.field).sort();
  for (const f of [
    'nodeId',
    'bogus',
    'stateDir',
    'physnets.not a pf!',
    'physnets.0000:3b:00.0',
    'dataplanes[0].kind',
    'dataplanes[0].extra',
    'dataplanes[0].socketDir',
    'nats.url',
    'nats.pass',
    'metrics.port',
    'qemu.machine',
    'qemu.maxVcpus',
    'guest.initrdPath',
    'isolation.sandbox',
    'isolation.cgroupParent',
  ]) {
    assert.ok(fields.includes(f), `missing issue for ${f}: ${fields.join(', ')}`);
  }
});

test('an unreadable or malformed file is a clear error', () => {
  assert.throws(() => loadConfig({}, '/nonexistent/node.yaml'), (e: unknown) => e instanceof InvalidArgumentError && /cannot read/.test(e.message));
  const dir = mkdtempSync(join(tmpdir(), 'na-cfg-'));
  try {
    const j = join(dir, 'bad.json');
    writeFileSync(j, '{nope');
    assert.throws(() => loadConfig({}, j), /not valid JSON/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
