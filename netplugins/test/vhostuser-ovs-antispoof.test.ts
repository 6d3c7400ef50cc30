// A tenant's vhost-user port on OVS-DPDK cannot impersonate another port or play router (ovs-antispoof.ts): two
// ports of the plugin on a real ovs-vswitchd-dpdk bridge, and OVS's own classifier asked what becomes of each frame
// A could send (ofproto/trace through the bridge's flow tables: the decision a frame from the guest would meet).
// As itself, or forwarding another subnet's traffic, A's frames are flooded to B; with B's MAC, IPv4 or IPv6 source,
// an ARP claiming B, a router advertisement, a neighbour advertisement for B's address or with another MAC in its
// option, they are dropped. CHECK sees lost flows, restorePorts puts them back, DEL takes them away.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { VhostUserPlugin } from '../src/vhostuser/vhostuser.js';
import { ofTarget, portCookie } from '../src/vhostuser/ovs-antispoof.js';
import { tempState } from './helpers.js';
import { startTestOvs, type TestOvs } from './ovs-dpdk-helper.js';

const work = mkdtempSync(join(tmpdir(), 'np-vhu-as-'));
const st = tempState();
const plugin = new VhostUserPlugin({ records: st.records, locks: st.locks });
let ovs: TestOvs;
const A = { ctx: { containerId: 'sbxas1', ifName: 'net0' }, mac: '02:aa:00:00:00:05', ip: '10.95.0.5', ip6: 'fd00:95::5' };
const B = { ctx: { containerId: 'sbxas2', ifName: 'net0' }, mac: '02:bb:00:00:00:06', ip: '10.95.0.6', ip6: 'fd00:95::6' };

before(async () => {
  ovs = await startTestOvs();
});
after(async () => {
  for (const t of [A, B]) await plugin.del(t.ctx).catch(() => undefined);
  await ovs?.stop();
  rmSync(work, { recursive: true, force: true });
  st.cleanup();
});

const flows = (port: string): string =>
  execFileSync('ovs-ofctl', ['dump-flows', ofTarget(ovs.bridge, ovs.db), `cookie=${portCookie(port)}/-1`], { encoding: 'utf8' });

/** What OVS does with a frame entering from `port` (the datapath actions of ofproto/trace): 'drop' or the output. */
function fate(port: string, flow: string): string {
  const out = execFileSync('ovs-appctl', ['-t', join(dirname(ovs.db.slice(5)), 'vswitchd.ctl'), 'ofproto/trace', ovs.bridge, `in_port=${port},${flow}`], { encoding: 'utf8' });
  const m = /^Datapath actions: (.*)$/m.exec(out);
  assert.ok(m, out);
  return m[1]!.trim();
}

test('OVS-DPDK vhost-user port: only its own MAC and addresses leave it; ND/RA guard; CHECK, restore, DEL', async () => {
  const cfg = (t: typeof A) =>
    plugin.parseConfig({ dataplane: 'ovs-dpdk', mode: 'server', socketDir: join(work, 's'), tenant: 'acme', mac: t.mac, ips: [{ address: `${t.ip}/24` }, { address: `${t.ip6}/64` }], ovs: { bridge: ovs.bridge, db: ovs.db } });
  const a = await plugin.add(A.ctx, cfg(A));
  const b = await plugin.add(B.ctx, cfg(B));
  assert.match(flows(a.portName), /table=1.*icmp_type=134 actions=drop/);
  await plugin.check(A.ctx, a);

  const bcast = 'dl_dst=ff:ff:ff:ff:ff:ff';
  const passes = (flow: string) => assert.notEqual(fate(a.portName, flow), 'drop', `${flow} should pass`);
  const dropped = (flow: string) => assert.equal(fate(a.portName, flow), 'drop', `${flow} should be dropped`);
  passes(`dl_src=${A.mac},${bcast},udp,nw_src=${A.ip},nw_dst=10.95.0.1`);
  passes(`dl_src=${A.mac},${bcast},udp,nw_src=192.0.2.1,nw_dst=10.95.0.1`); // a router VNF forwarding another subnet
  passes(`dl_src=${A.mac},${bcast},arp,arp_op=2,arp_sha=${A.mac},arp_spa=${A.ip},arp_tpa=10.95.0.1`);
  passes(`dl_src=${A.mac},${bcast},udp6,ipv6_src=${A.ip6},ipv6_dst=fd00:95::1`);
  passes(`dl_src=${A.mac},dl_dst=33:33:00:00:00:01,icmp6,ipv6_src=${A.ip6},ipv6_dst=ff02::1,icmpv6_type=136,icmpv6_code=0,nd_target=${A.ip6},nd_tll=${A.mac}`);
  passes(`dl_src=${A.mac},dl_dst=33:33:ff:00:00:01,icmp6,ipv6_src=fe80::aa:ff:fe00:5,ipv6_dst=ff02::1:ff00:1,icmpv6_type=135,icmpv6_code=0,nd_target=fd00:95::1,nd_sll=${A.mac}`);
  dropped(`dl_src=${B.mac},${bcast},udp,nw_src=${B.ip},nw_dst=10.95.0.1`);
  dropped(`dl_src=${A.mac},${bcast},udp,nw_src=${B.ip},nw_dst=10.95.0.1`);
  dropped(`dl_src=${A.mac},${bcast},arp,arp_op=2,arp_sha=${A.mac},arp_spa=${B.ip},arp_tpa=10.95.0.1`);
  dropped(`dl_src=${A.mac},${bcast},arp,arp_op=2,arp_sha=${B.mac},arp_spa=${A.ip},arp_tpa=10.95.0.1`);
  dropped(`dl_src=${A.mac},${bcast},udp6,ipv6_src=${B.ip6},ipv6_dst=fd00:95::1`);
  dropped(`dl_src=${A.mac},dl_dst=33:33:00:00:00:01,icmp6,ipv6_src=fe80::aa:ff:fe00:5,ipv6_dst=ff02::1,icmpv6_type=134,icmpv6_code=0`);
  dropped(`dl_src=${A.mac},dl_dst=33:33:00:00:00:01,icmp6,ipv6_src=fe80::aa:ff:fe00:5,ipv6_dst=ff02::1,icmpv6_type=136,icmpv6_code=0,nd_target=${B.ip6},nd_tll=${A.mac}`);
  dropped(`dl_src=${A.mac},dl_dst=33:33:00:00:00:01,icmp6,ipv6_src=fe80::aa:ff:fe00:5,ipv6_dst=ff02::1,icmpv6_type=136,icmpv6_code=0,nd_target=fe80::aa:ff:fe00:5,nd_tll=${B.mac}`);
  dropped(`dl_src=${A.mac},dl_dst=33:33:ff:00:00:01,icmp6,ipv6_src=fe80::aa:ff:fe00:5,ipv6_dst=ff02::1:ff00:1,icmpv6_type=135,icmpv6_code=0,nd_target=fd00:95::1,nd_sll=${B.mac}`);
  // B's port is untouched by A's rules: B as itself passes
  assert.notEqual(fate(b.portName, `dl_src=${B.mac},${bcast},udp,nw_src=${B.ip},nw_dst=10.95.0.1`), 'drop');

  // the flows are lost (a switch restart loses them all): CHECK says so, restorePorts brings them back
  execFileSync('ovs-ofctl', ['del-flows', ofTarget(ovs.bridge, ovs.db), `cookie=${portCookie(a.portName)}/-1`]);
  await assert.rejects(plugin.check(A.ctx, a), /anti-spoofing flows of port/);
  await plugin.restorePorts((c) => c.ovs?.db === ovs.db);
  await plugin.check(A.ctx, a);
  dropped(`dl_src=${B.mac},${bcast},udp,nw_src=${B.ip},nw_dst=10.95.0.1`);

  await plugin.del(A.ctx);
  assert.doesNotMatch(flows(a.portName), /cookie=/, 'DEL takes the port\'s flows');
});
