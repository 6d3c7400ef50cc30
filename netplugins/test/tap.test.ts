import { test, after, before } from 'node:test';
import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { TapPlugin, tapNames } from '../src/tap.js';
import { IpBatchNetlink, BatchError } from '../src/netlink.js';
import { InvalidArgumentError } from '@edgenfv/contracts';
import { ip, linkNames, tapLinksOnHost, tempState, tryIp, uniq } from './helpers.js';

const st = tempState();
const ns = uniq('npt');
const ns2 = uniq('npt');
const bridge = uniq('nbr');
const plugin = new TapPlugin({ netlink: new IpBatchNetlink(), records: st.records, locks: st.locks });

before(() => {
  ip('netns', 'add', ns);
  ip('netns', 'add', ns2);
});
after(() => {
  tryIp('netns', 'del', ns);
  tryIp('netns', 'del', ns2);
  tryIp('link', 'del', bridge);
  st.cleanup();
});

test('parseConfig lists every bad field in one error', () => {
  assert.throws(
    () => plugin.parseConfig({ mtuBytes: 10, mac: 'ff:ff:ff:ff:ff:ff', ips: [{ address: '10.0.0.1' }], color: 'red', wiring: 'tube' }),
    (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      const fields = e.issues.map((i) => i.field).sort();
      assert.deepEqual(fields, ['color', 'ips[0].address', 'mac', 'mtuBytes', 'wiring']);
      return true;
    },
  );
});

test('add creates the tap in the netns on the bridge; add twice gives the same result; check passes', async () => {
  const ctx = { containerId: 'sb1', ifName: 'tap0', netns: ns };
  const cfg = plugin.parseConfig({ bridge, mtuBytes: 1400, ips: [{ address: '10.9.0.5/24', gateway: '10.9.0.1' }] });
  const r1 = await plugin.add(ctx, cfg);
  const r2 = await plugin.add(ctx, cfg);
  assert.deepEqual(r2, r1);
  assert.equal(r1.kind, 'tap');
  assert.equal(r1.tapName, 'tap0');
  assert.deepEqual(r1.ips, [{ address: '10.9.0.5/24', gateway: '10.9.0.1' }]);
  const tap = JSON.parse(ip('-n', ns, '-j', '-d', 'link', 'show', 'tap0'))[0];
  assert.equal(tap.linkinfo.info_kind, 'tun');
  assert.equal(tap.mtu, 1400);
  const names = tapNames(ctx);
  assert.equal(tap.master, names.nsBridge);
  const hv = JSON.parse(ip('-j', 'link', 'show', names.hostVeth))[0];
  assert.equal(hv.master, bridge);
  await plugin.check(ctx, r1);
  // a different config for the same attachment is refused, and changes nothing
  await assert.rejects(plugin.add(ctx, plugin.parseConfig({ bridge, mtuBytes: 1500 })), /another configuration/);
  await plugin.check(ctx);
  await plugin.del(ctx);
  await plugin.del(ctx);
  assert.deepEqual(linkNames(ns).sort(), ['lo']);
  assert.ok(!linkNames().includes(names.hostVeth));
  await assert.rejects(plugin.check(ctx), /no tap attachment/);
  assert.deepEqual(st.leftovers(), []);
});

test('tc wiring with an owner: tap owned by the VM user, mirred both ways; check; del leaves nothing', async () => {
  const ctx = { containerId: 'sbtc', ifName: 'tap1', netns: ns };
  const cfg = plugin.parseConfig({ bridge, wiring: 'tc', owner: { uid: 4321, gid: 4322 }, mtuBytes: 1400 });
  const r = await plugin.add(ctx, cfg);
  assert.deepEqual(await plugin.add(ctx, cfg), r);
  const tap = JSON.parse(ip('-n', ns, '-j', '-d', 'link', 'show', 'tap1'))[0];
  assert.equal(tap.linkinfo.info_data.user, 4321);
  assert.equal(tap.linkinfo.info_data.group, 4322);
  assert.equal(tap.master, undefined);
  const names = tapNames(ctx);
  const filters = execFileSync('tc', ['-n', ns, '-j', 'filter', 'show', 'dev', names.peer, 'ingress'], { encoding: 'utf8' });
  assert.match(filters, /"to_dev":"tap1"|tap1/);
  await plugin.check(ctx, r);
  ip('-n', ns, 'link', 'del', names.peer);
  await assert.rejects(plugin.check(ctx), /veth vp[0-9a-f]+ is missing/);
  await plugin.del(ctx);
  await plugin.del(ctx);
  assert.deepEqual(linkNames(ns).sort(), ['lo']);
  assert.ok(!linkNames().includes(names.hostVeth));
  assert.deepEqual(st.leftovers(), []);
});

test('check reports a tap removed behind our back', async () => {
  const ctx = { containerId: 'sb2', ifName: 'eth1', netns: ns };
  await plugin.add(ctx, plugin.parseConfig({ bridge }));
  ip('-n', ns, 'link', 'del', 'eth1');
  await assert.rejects(plugin.check(ctx), /tap eth1 is missing/);
  await plugin.del(ctx);
  assert.deepEqual(linkNames(ns).sort(), ['lo']);
});

test('del without add is success', async () => {
  await plugin.del({ containerId: 'never', ifName: 'tap9', netns: ns });
  assert.deepEqual(st.leftovers(), []);
});

test('without a bridge: a bare tap in the netns, nothing on the host; check passes; del twice leaves nothing', async () => {
  const ctx = { containerId: 'sb5', ifName: 'tap9', netns: ns };
  const r = await plugin.add(ctx, plugin.parseConfig({ mtuBytes: 1400 }));
  assert.equal(r.bridge, undefined);
  assert.equal(r.hostVeth, undefined);
  const tap = JSON.parse(ip('-n', ns, '-d', '-j', 'link', 'show', 'tap9'))[0];
  assert.equal(tap.linkinfo.info_kind, 'tun');
  assert.equal(tap.mtu, 1400);
  assert.equal(tap.master, undefined);
  assert.deepEqual(tapLinksOnHost(ctx), [], 'nothing made on the host');
  await plugin.check(ctx, r);
  assert.deepEqual(await plugin.add(ctx, plugin.parseConfig({ mtuBytes: 1400 })), r);
  await plugin.del(ctx);
  await plugin.del(ctx);
  assert.ok(!linkNames(ns).includes('tap9'));
  assert.deepEqual(st.leftovers(), []);
});

test('del after the netns is gone', async () => {
  const ctx = { containerId: 'sb3', ifName: 'tap0', netns: ns2 };
  const r = await plugin.add(ctx, plugin.parseConfig({ bridge }));
  ip('netns', 'del', ns2);
  await plugin.del(ctx);
  await plugin.del(ctx);
  assert.ok(r.hostVeth && !linkNames().includes(r.hostVeth));
  assert.deepEqual(st.leftovers(), []);
});

test('add into a missing netns fails and leaves nothing', async () => {
  await assert.rejects(plugin.add({ containerId: 'sb4', ifName: 'tap0', netns: uniq('nope') }, plugin.parseConfig({ bridge })), /does not exist/);
  assert.deepEqual(st.leftovers(), []);
});

test('a failing step rolls back what was made (in reverse order)', async () => {
  // the real netlink, failing the netns-side batch after the host side was made
  class FailingNetlink extends IpBatchNetlink {
    override async batch(lines: readonly string[], netns?: string): Promise<unknown[]> {
      const i = lines.findIndex((l) => l.startsWith('tuntap add'));
      if (netns && i >= 0) {
        await super.batch(lines.slice(0, i + 2), netns); // the ns bridge and the tap get made and renamed, then the batch "fails"
        throw new BatchError([{ index: i + 2, line: lines[i + 2] ?? '', message: 'injected failure' }], netns);
      }
      return super.batch(lines, netns);
    }
  }
  const failing = new TapPlugin({ netlink: new FailingNetlink(), records: st.records, locks: st.locks });
  const ctx = { containerId: 'sb5', ifName: 'tap0', netns: ns };
  await assert.rejects(failing.add(ctx, failing.parseConfig({ bridge })), /injected failure/);
  assert.ok(!linkNames().includes(tapNames(ctx).hostVeth));
  assert.deepEqual(linkNames(ns).sort(), ['lo']);
  assert.deepEqual(st.leftovers(), []);
});

test('gc deletes attachments not in the valid set', async () => {
  const a = { containerId: 'gc1', ifName: 'tap0', netns: ns };
  const b = { containerId: 'gc2', ifName: 'tap1', netns: ns };
  await plugin.add(a, plugin.parseConfig({ bridge }));
  await plugin.add(b, plugin.parseConfig({ bridge }));
  assert.deepEqual(await plugin.gc(new Set(['gc1/tap0'])), ['gc2/tap1']);
  assert.deepEqual(await plugin.gc(new Set()), ['gc1/tap0']);
  assert.deepEqual(linkNames(ns).sort(), ['lo']);
  assert.deepEqual(st.leftovers(), []);
});
