import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { MacvtapPlugin } from '../src/macvtap.js';
import { IpBatchNetlink } from '../src/netlink.js';
import { ip, linkNames, tempState, tryIp, uniq } from './helpers.js';

const st = tempState();
const ns = uniq('npm');
const ns2 = uniq('npm');
const parent = uniq('mvp');
const peer = uniq('mvq');
const plugin = new MacvtapPlugin({ netlink: new IpBatchNetlink(), records: st.records, locks: st.locks });

before(() => {
  ip('netns', 'add', ns);
  ip('netns', 'add', ns2);
  ip('link', 'add', parent, 'type', 'veth', 'peer', 'name', peer); // no dummy links here: a veth is the parent
  ip('link', 'set', parent, 'up');
});
after(() => {
  tryIp('netns', 'del', ns);
  tryIp('netns', 'del', ns2);
  tryIp('link', 'del', parent);
  st.cleanup();
});

test('parseConfig: every issue at once', () => {
  assert.throws(() => plugin.parseConfig({ mode: 'weird', mtuBytes: 'x' }), /parent: is required; mode: must be one of bridge, vepa, private, passthru.*; mtuBytes: must be an integer/);
});

test('add creates a macvtap in the netns; twice gives the same result; check; del twice', async () => {
  const ctx = { containerId: 'vm1', ifName: 'mv0', netns: ns };
  const cfg = plugin.parseConfig({ parent, mac: '02:aa:bb:cc:dd:01' });
  const r1 = await plugin.add(ctx, cfg);
  assert.deepEqual(await plugin.add(ctx, cfg), r1);
  const l = JSON.parse(ip('-n', ns, '-j', '-d', 'link', 'show', 'mv0'))[0];
  assert.equal(l.linkinfo.info_kind, 'macvtap');
  assert.equal(l.address, '02:aa:bb:cc:dd:01');
  assert.equal(r1.ifIndex, l.ifindex);
  // a node of the plugin's own (/dev/tap<ifindex> is not unique across netns), with the macvtap's device number
  assert.match(r1.tapDevice, /^\/dev\/edgenfv-macvtap\/[0-9a-f]{16}$/);
  const devt = execFileSync('ip', ['netns', 'exec', ns, 'cat', `/sys/class/net/mv0/macvtap/tap${l.ifindex}/dev`], { encoding: 'utf8' }).trim();
  const rdev = statSync(r1.tapDevice).rdev;
  assert.equal(`${(rdev >> 8) & 0xfff}:${(rdev & 0xff) | ((rdev >> 12) & 0xfff00)}`, devt);
  assert.ok(existsSync(r1.tapDevice), 'the tap character device exists');
  await plugin.check(ctx, r1);
  await assert.rejects(plugin.check(ctx, { ...r1, mac: '02:00:00:00:00:09' as typeof r1.mac }), /prevResult.mac/);
  await plugin.del(ctx);
  await plugin.del(ctx);
  assert.deepEqual(linkNames(ns), ['lo']);
  assert.equal(existsSync(r1.tapDevice), false, 'the device node goes with the attachment');
  assert.deepEqual(st.leftovers(), []);
});

test('an unknown parent is a clear error and changes nothing', async () => {
  await assert.rejects(plugin.add({ containerId: 'vm2', ifName: 'mv0', netns: ns }, plugin.parseConfig({ parent: 'nosuchlink0' })), /parent: host link nosuchlink0 does not exist/);
  assert.deepEqual(linkNames(ns), ['lo']);
  assert.deepEqual(st.leftovers(), []);
});

test('del without add; del after the netns is gone', async () => {
  await plugin.del({ containerId: 'none', ifName: 'mv0', netns: ns });
  const ctx = { containerId: 'vm3', ifName: 'mv1', netns: ns2 };
  await plugin.add(ctx, plugin.parseConfig({ parent }));
  ip('netns', 'del', ns2);
  await plugin.del(ctx);
  await plugin.del(ctx);
  assert.deepEqual(st.leftovers(), []);
});
