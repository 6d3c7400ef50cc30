import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError } from '@edgenfv/contracts';
import { parseDataplanePlan, renderOvsOtherConfig, ovsAddVhostUserClientPortArgs, ovsDelPortArgs, ovsAddUplinkArgs, ovsAddBridgeArgs, ovsSetOtherConfigArgs, ovsVsctl } from '../src/index.js';
import { noHugeVhost, ovsTwoNodes, vppNode1 } from './fixtures.js';

test('other_config: hex masks for the main lcore and the PMD threads, socket-mem per NUMA node', () => {
  assert.deepEqual(Object.fromEntries(renderOvsOtherConfig(parseDataplanePlan(vppNode1))), {
    'dpdk-init': 'true',
    'dpdk-socket-mem': '0,1024',
    'dpdk-lcore-mask': '0x100',
    'pmd-cpu-mask': '0x1600',
    'dpdk-extra': '--iova-mode va',
  });
  assert.deepEqual(Object.fromEntries(renderOvsOtherConfig(parseDataplanePlan(ovsTwoNodes))), {
    'dpdk-init': 'true',
    'dpdk-socket-mem': '1024,1024',
    'dpdk-hugepage-dir': '/dev/hugepages1G',
    'dpdk-lcore-mask': '0x2',
    'pmd-cpu-mask': '0x40000000000000004',
    'dpdk-extra': '--in-memory',
  });
  const noWorkers = parseDataplanePlan({ ...noHugeVhost, workerCpus: [] });
  assert.deepEqual(renderOvsOtherConfig(noWorkers), [
    ['dpdk-init', 'true'],
    ['dpdk-lcore-mask', '0x1'],
    ['dpdk-extra', '--no-huge -m 256'],
  ]);
});

test('vhost-user client port argv; queues optional', () => {
  assert.deepEqual(ovsAddVhostUserClientPortArgs({ bridge: 'br0', port: 'vhu0', socketPath: '/run/a.sock' }), [
    'ovs-vsctl', '--may-exist', 'add-port', 'br0', 'vhu0', '--', 'set', 'Interface', 'vhu0',
    'type=dpdkvhostuserclient', 'options:vhost-server-path=/run/a.sock',
  ]);
  assert.deepEqual(ovsDelPortArgs('br0', 'vhu0'), ['ovs-vsctl', '--if-exists', 'del-port', 'br0', 'vhu0']);
});

test('vhost-user client port refuses bad names, relative paths and zero queues, naming each field', () => {
  assert.throws(
    () => ovsAddVhostUserClientPortArgs({ bridge: 'br 0', port: 'a-very-long-port-name', socketPath: 'x.sock', queues: 0 }),
    (err: unknown) => {
      assert.ok(err instanceof InvalidArgumentError);
      assert.deepEqual(err.issues.map((i) => i.field), ['bridge', 'port', 'socketPath', 'queues']);
      return true;
    },
  );
});

test('the node switch: pmd-maxsleep, an ovsdb target, uplinks trunking the VLAN', () => {
  const plan = parseDataplanePlan(ovsTwoNodes);
  assert.equal(Object.fromEntries(renderOvsOtherConfig(plan, { pmdMaxSleepUs: 500 }))['pmd-maxsleep'], '500');
  assert.throws(() => renderOvsOtherConfig(plan, { pmdMaxSleepUs: 20_000 }), (e: unknown) => e instanceof InvalidArgumentError && /pmdMaxSleepUs/.test(e.message));
  assert.deepEqual(ovsSetOtherConfigArgs(plan, { db: 'unix:/run/o/db.sock' }).slice(0, 3), ['ovs-vsctl', '--db=unix:/run/o/db.sock', '--no-wait']);
  assert.deepEqual(ovsAddBridgeArgs('br-prov', 'unix:/run/o/db.sock'), ['ovs-vsctl', '--db=unix:/run/o/db.sock', '--may-exist', 'add-br', 'br-prov', '--', 'set', 'Bridge', 'br-prov', 'datapath_type=netdev']);
  assert.deepEqual(ovsAddUplinkArgs({ bridge: 'br-prov', port: 'up-prov', vlan: 100 }), ['ovs-vsctl', '--may-exist', 'add-port', 'br-prov', 'up-prov', '--', 'set', 'Port', 'up-prov', 'vlan_mode=trunk', 'trunks=100']);
  assert.deepEqual(ovsAddUplinkArgs({ bridge: 'br-prov', port: 'eth1' }).slice(-2), ['vlan_mode=[]', 'trunks=[]']);
  assert.throws(() => ovsAddUplinkArgs({ bridge: 'br prov', port: 'x'.repeat(16), vlan: 5000 }), (e: unknown) => e instanceof InvalidArgumentError && ['bridge', 'port', 'vlan'].every((f) => e.issues.some((i) => i.field === f)));
  assert.throws(() => ovsVsctl('/run/db.sock'), /db: must be an OVSDB remote/);
});
