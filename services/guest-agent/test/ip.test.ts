/**
 * IprouteIp's `ip -json` parsing with a scripted runner: output that is not JSON is looked at once more (a nested
 * guest printed it once while a VF's netdev registered), a second bad output fails naming the command and the text.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IprouteIp } from '../src/net/ip.js';
import type { Runner } from '../src/exec.js';

const GOOD = JSON.stringify([
  { ifindex: 1, ifname: 'lo', flags: ['LOOPBACK', 'UP'], mtu: 65536, operstate: 'UNKNOWN', address: '00:00:00:00:00:00', addr_info: [] },
  { ifindex: 2, ifname: 'eth0', flags: ['BROADCAST', 'UP'], mtu: 1500, operstate: 'UP', address: '02:3b:65:49:c1:9e', addr_info: [{ family: 'inet', local: '10.79.0.42', prefixlen: 24, scope: 'global' }] },
]);
const BAD = GOOD.slice(0, 120) + '"mtu"' + GOOD.slice(120);

function scripted(outputs: string[]): { runner: Runner; calls: string[][] } {
  const calls: string[][] = [];
  return {
    calls,
    runner: async (argv) => {
      calls.push([...argv]);
      return { stdout: outputs.shift() ?? '', stderr: '' };
    },
  };
}

test('ip -json: output that is not JSON is read once more; the second look is used', async () => {
  const { runner, calls } = scripted([BAD, GOOD]);
  const bad: Array<{ attempt: number; near: string }> = [];
  const ip = new IprouteIp({ runner, onBadOutput: (o) => bad.push(o) });
  const snap = await ip.snapshot();
  assert.deepEqual(snap.links.map((l) => l.name), ['lo', 'eth0']);
  assert.deepEqual(snap.addrs.map((a) => a.cidr), ['10.79.0.42/24']);
  assert.equal(calls.length, 2);
  assert.deepEqual(calls[0], ['ip', '-json', '-d', 'addr', 'show']);
  assert.equal(bad.length, 1);
  assert.equal(bad[0]!.attempt, 1);
  assert.ok(bad[0]!.near.includes('"mtu"'), bad[0]!.near);
});

test('ip -json: bad output twice fails naming the command and showing the text near the error', async () => {
  const { runner, calls } = scripted([BAD, BAD]);
  const ip = new IprouteIp({ runner });
  await assert.rejects(ip.snapshot(), (err: Error) => {
    assert.equal(err.name, 'InternalError');
    assert.match(err.message, /^ip -json -d addr show: output is not JSON \(.*\) near: /);
    assert.ok(err.message.includes('"mtu"'), err.message);
    return true;
  });
  assert.equal(calls.length, 2);
});

test('ip -json: empty output is no links, and good output is read once', async () => {
  const { runner, calls } = scripted(['', GOOD]);
  const ip = new IprouteIp({ runner });
  assert.deepEqual(await ip.links(), []);
  assert.equal((await ip.links()).length, 2);
  assert.equal(calls.length, 2);
});
