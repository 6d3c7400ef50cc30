import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { parseBatchOutput, vfSetLine, netnsArgs, IpBatchNetlink, IpNetlink } from '../src/netlink.js';

const nl = new IpBatchNetlink();
after(() => nl.close());

test('parseBatchOutput attributes errors to their lines and keeps JSON outputs in order', () => {
  const lines = ['link show dev lo', 'link add x type nosuch', 'link del y'];
  const text = '[{"ifname":"lo"}]\nError: Unknown device type.\nCommand failed -:6\nCannot find device "y"\nCommand failed -:7\n';
  const r = parseBatchOutput(text, lines, 5);
  assert.deepEqual(r.outputs, [[{ ifname: 'lo' }]]);
  assert.deepEqual(r.failures, [
    { index: 1, line: 'link add x type nosuch', message: 'Error: Unknown device type.' },
    { index: 2, line: 'link del y', message: 'Cannot find device "y"' },
  ]);
});

test('vfSetLine and netnsArgs', () => {
  assert.equal(vfSetLine('eth0', 3, { mac: '02:00:00:00:00:01', vlan: 100, vlanQos: 2, spoofchk: true, trust: false }), 'link set dev eth0 vf 3 mac 02:00:00:00:00:01 vlan 100 qos 2 spoofchk on trust off');
  assert.equal(vfSetLine('eth0', 0, { vlan: 0, vlanQos: 5 }), 'link set dev eth0 vf 0 vlan 0');
  assert.deepEqual(netnsArgs('/var/run/netns/a'), { pre: [], ipOpts: ['-n', 'a'] });
  assert.deepEqual(netnsArgs('/proc/42/ns/net'), { pre: ['nsenter', '--net=/proc/42/ns/net'], ipOpts: [] });
});

test('the long-lived host ip process answers like one-shot ip, stops at the first failure, survives errors', async () => {
  const one = new IpNetlink();
  assert.deepEqual(await nl.link('lo'), await one.link('lo'));
  assert.equal(await nl.link('nosuchlink0'), null);
  await assert.rejects(nl.batch(['link add x0np type nosuchkind', 'link show dev lo']), (e: Error & { failedIndex?: number }) => e.failedIndex === 0);
  const many = await Promise.all(Array.from({ length: 20 }, () => nl.link('lo')));
  assert.ok(many.every((l) => l?.name === 'lo'));
  // an argument error makes ip exit even with -force: the line fails, the next request gets a new process
  const crash = await nl.tryBatch(['link set lo master nosuchbr0', 'link show dev lo']);
  assert.equal(crash.failures.length, 1);
  assert.match(crash.failures[0]!.message, /nosuchbr0/);
  assert.equal(crash.outputs.length, 1);
  const r = await nl.tryBatch(['link del nosuch1', 'link show dev lo']);
  assert.equal(r.failures.length, 1);
  assert.equal(r.outputs.length, 1);
});
