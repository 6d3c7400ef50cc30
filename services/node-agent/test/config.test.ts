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
    cpuAllocationRatio: 0,
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
    'cpuAllocationRatio',
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

test('dataplanes: an ovs-dpdk switch with its networks and uplinks; defaults filled in', () => {
  const cfg = parseConfig({
    stateDir: '/var/lib/n',
    networks: [
      { name: 'provider', cidr: '10.20.0.0/24', vlan: 100, dataplane: 'ovs-dpdk' },
      { name: 'mgmt', cidr: '10.99.0.0/24' },
    ],
    dataplanes: [{ kind: 'ovs-dpdk', numaNode: 0, ovs: { pmdCpus: [1], lcoreCpu: 0, netns: 'enfv-ovs', uplinks: { provider: { veth: { netns: 'prov', name: 'eth0' } } } } }],
  });
  const dp = cfg.dataplanes[0]!;
  assert.equal(dp.socketDir, '/var/lib/n/vhost-user');
  assert.deepEqual(dp.ovs, {
    socketMemMiB: DEFAULTS.ovsSocketMemMiB,
    pmdMaxSleepUs: DEFAULTS.ovsPmdMaxSleepUs,
    ealArgs: [],
    uplinks: { provider: { kind: 'veth', netns: 'prov', peerName: 'eth0' } },
    vswitchdBinary: '/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk',
    startTimeoutMs: DEFAULTS.ovsStartTimeoutMs,
    lcoreCpu: 0,
    pmdCpus: [1],
    netns: 'enfv-ovs',
  });
  assert.equal(cfg.networks.find((n) => n.name === 'provider')?.dataplane, 'ovs-dpdk');
  assert.equal(cfg.networks.find((n) => n.name === 'provider')?.vlan, 100);
});

test('dataplanes: every ovs-dpdk issue named', () => {
  let err: unknown;
  try {
    parseConfig({
      networks: [{ name: 'mgmt', cidr: '10.99.0.0/24', dataplane: 'vpp' }, { name: 'lan', cidr: '10.1.0.0/24' }],
      dataplanes: [
        {
          kind: 'ovs-dpdk',
          probePath: '/run/x',
          ovs: {
            socketMemMiB: 1,
            lcoreCpu: 1,
            pmdCpus: [1],
            pmdMaxSleepUs: 99999,
            netns: 'bad name',
            ealArgs: ['--a b'],
            vswitchdBinary: 'ovs',
            colour: 'red',
            uplinks: { lan: { nic: 'eth1' }, nowhere: { nic: 'eth2' }, both: { nic: 'x', veth: {} }, v: { veth: { netns: 'p', name: 'much-too-long-name' } } },
          },
        },
        { kind: 'ovs-dpdk' },
        { kind: 'vpp', socketDir: '/run/vpp', ovs: {} },
      ],
    });
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof InvalidArgumentError);
  const fields = err.issues.map((i) => i.field);
  for (const f of [
    'networks[0].dataplane',
    'dataplanes[0].probePath',
    'dataplanes[0].ovs.socketMemMiB',
    'dataplanes[0].ovs.pmdCpus',
    'dataplanes[0].ovs.pmdMaxSleepUs',
    'dataplanes[0].ovs.netns',
    'dataplanes[0].ovs.ealArgs',
    'dataplanes[0].ovs.vswitchdBinary',
    'dataplanes[0].ovs.colour',
    'dataplanes[0].ovs.uplinks.both',
    'dataplanes[0].ovs.uplinks.v.veth.name',
    'dataplanes[1].kind',
    'dataplanes[2].ovs',
  ]) {
    assert.ok(fields.includes(f), `missing issue for ${f}: ${fields.join(', ')}`);
  }
  // an uplink must name a network that asks for the switch
  assert.throws(
    () =>
      parseConfig({
        networks: [{ name: 'lan', cidr: '10.1.0.0/24' }],
        dataplanes: [{ kind: 'ovs-dpdk', ovs: { uplinks: { lan: { nic: 'eth1' }, nowhere: { nic: 'eth2' } } } }],
      }),
    (e: unknown) =>
      e instanceof InvalidArgumentError &&
      e.issues.some((i) => i.field === 'dataplanes[0].ovs.uplinks.lan' && /does not ask for the switch/.test(i.message)) &&
      e.issues.some((i) => i.field === 'dataplanes[0].ovs.uplinks.nowhere' && /no network/.test(i.message)),
  );
});

test('warmPool: flavours parsed and frozen; every bad entry named', () => {
  const cfg = parseConfig({ warmPool: [{ vcpus: 1, memoryMiB: 512, count: 2 }, { vcpus: 2, memoryMiB: 1024, numaNode: 1, count: 1 }], warmPoolCpuBudgetPercent: 80 });
  assert.deepEqual(cfg.warmPool, [{ vcpus: 1, memoryMiB: 512, count: 2 }, { vcpus: 2, memoryMiB: 1024, numaNode: 1, count: 1 }]);
  assert.equal(cfg.warmPoolCpuBudgetPercent, 80);
  assert.ok(Object.isFrozen(cfg.warmPool) && Object.isFrozen(cfg.warmPool[0]));
  assert.deepEqual(parseConfig({}).warmPool, []);
  assert.equal(parseConfig({}).warmPoolCpuBudgetPercent, DEFAULTS.warmPoolCpuBudgetPercent);
  let err: unknown;
  try {
    parseConfig({
      qemu: { maxVcpus: 2 },
      warmPool: [{ vcpus: 3, memoryMiB: 512, count: 1 }, { vcpus: 1, count: -1, colour: 'red' }, { vcpus: 1, memoryMiB: 64 }, { vcpus: 1, memoryMiB: 64, count: 2 }],
      warmPoolCpuBudgetPercent: 0,
    });
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof InvalidArgumentError);
  const fields = err.issues.map((i) => i.field);
  for (const f of ['warmPool[0].vcpus', 'warmPool[1].memoryMiB', 'warmPool[1].count', 'warmPool[1].colour', 'warmPool[3]', 'warmPoolCpuBudgetPercent']) {
    assert.ok(fields.includes(f), `missing issue for ${f}: ${fields.join(', ')}`);
  }
  assert.throws(() => parseConfig({ warmPool: { vcpus: 1 } }), (e: unknown) => e instanceof InvalidArgumentError && e.issues.some((i) => i.field === 'warmPool'));
});

test('cpuAllocationRatio: default 1, fractional allowed within 1..16; a bad value named', () => {
  const env = { EDGENFV_NODE_ID: 'edge-1' };
  assert.equal(parseConfig({}, env).cpuAllocationRatio, 1);
  assert.equal(parseConfig({ cpuAllocationRatio: 1.5 }, env).cpuAllocationRatio, 1.5);
  assert.equal(parseConfig({ cpuAllocationRatio: 16 }, env).cpuAllocationRatio, 16);
  for (const bad of [0.5, 0, -2, 16.5, '2', null, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(
      () => parseConfig({ cpuAllocationRatio: bad }, env),
      (e: unknown) => e instanceof InvalidArgumentError && e.issues.some((i) => i.field === 'cpuAllocationRatio' && /1\.\.16/.test(i.message)),
      String(bad),
    );
  }
});

test('fencing: stopAfterMs defaults to 60 s, graceMs follows the scheduler unless set; bad values named', () => {
  const d = parseConfig({}, { EDGENFV_NODE_ID: 'edge-1' });
  assert.deepEqual({ ...d.fencing }, { stopAfterMs: 60_000 });
  const c = parseConfig({ fencing: { stopAfterMs: 5000, graceMs: 2000 } }, { EDGENFV_NODE_ID: 'edge-1' });
  assert.deepEqual({ ...c.fencing }, { stopAfterMs: 5000, graceMs: 2000 });
  assert.throws(
    () => parseConfig({ fencing: { stopAfterMs: -1, graceMs: 'soon', after: 1 } }, { EDGENFV_NODE_ID: 'edge-1' }),
    (e: unknown) => {
      const fields = (e as InvalidArgumentError).issues.map((i) => i.field);
      return ['fencing.stopAfterMs', 'fencing.graceMs', 'fencing.after'].every((f) => fields.includes(f));
    },
  );
});

test('guest liveness and the debug console: defaults (watch every 10 s, lost after 120 s silent, console off); bad values named', () => {
  const d = parseConfig({}, { EDGENFV_NODE_ID: 'edge-1' });
  assert.equal(d.guest.livenessIntervalMs, 10_000);
  assert.equal(d.guest.livenessFailAfterMs, 120_000);
  assert.equal(d.guest.debugConsole, false);
  assert.equal(d.guest.keepaliveTimeoutMs, 10_000);
  assert.equal(d.guest.rpcTimeoutScale, 1);
  assert.equal(parseConfig({ guest: { rpcTimeoutScale: 20 } }, { EDGENFV_NODE_ID: 'edge-1' }).guest.rpcTimeoutScale, 20);
  assert.throws(() => parseConfig({ guest: { rpcTimeoutScale: 0 } }, { EDGENFV_NODE_ID: 'edge-1' }), /guest\.rpcTimeoutScale/);
  const c = parseConfig({ guest: { livenessIntervalMs: 0, livenessFailAfterMs: 30_000, keepaliveTimeoutMs: 300_000, debugConsole: true } }, { EDGENFV_NODE_ID: 'edge-1' });
  assert.deepEqual([c.guest.livenessIntervalMs, c.guest.livenessFailAfterMs, c.guest.keepaliveTimeoutMs, c.guest.debugConsole], [0, 30_000, 300_000, true]);
  assert.throws(
    () => parseConfig({ guest: { livenessIntervalMs: -5, livenessFailAfterMs: 'long', keepaliveTimeoutMs: 5, debugConsole: 'yes' } }, { EDGENFV_NODE_ID: 'edge-1' }),
    (e: unknown) => {
      const fields = (e as InvalidArgumentError).issues.map((i) => i.field);
      return ['guest.livenessIntervalMs', 'guest.livenessFailAfterMs', 'guest.keepaliveTimeoutMs', 'guest.debugConsole'].every((f) => fields.includes(f));
    },
  );
});

test('guest.viommu: on-demand by default, always on q35 only; bad values named', () => {
  const env = { EDGENFV_NODE_ID: 'edge-1' };
  assert.equal(parseConfig({}, env).guest.viommu, 'on-demand');
  assert.equal(parseConfig({ qemu: { machine: 'q35' }, guest: { viommu: 'always' } }, env).guest.viommu, 'always');
  assert.equal(parseConfig({ qemu: { machine: 'q35' }, guest: { viommu: 'on-demand' } }, env).guest.viommu, 'on-demand');
  for (const bad of ['yes', true, 1, 'ALWAYS']) {
    assert.throws(() => parseConfig({ qemu: { machine: 'q35' }, guest: { viommu: bad } }, env), (e: unknown) => (e as InvalidArgumentError).issues.some((i) => i.field === 'guest.viommu' && /on-demand.*always/.test(i.message)), String(bad));
  }
  assert.throws(() => parseConfig({ qemu: { machine: 'microvm' }, guest: { viommu: 'always' } }, env), (e: unknown) => (e as InvalidArgumentError).issues.some((i) => i.field === 'guest.viommu' && /q35/.test(i.message)));
});
