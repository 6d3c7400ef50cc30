/**
 * A tenant's macvtap port cannot impersonate another port or play router (antispoof.ts, netdev egress of the macvtap
 * in the sandbox's netns). Real links and real nftables: a macvtap (the plugin's, on a veth parent) in a sandbox
 * netns; the test writes into its /dev/tapN what a guest would (QEMU does the same: a virtio-net header, then the
 * frame); the parent's far end, in a netns of its own, counts what arrives (nft netdev ingress counters). Frames
 * with the port's MAC and addresses, and routed traffic from another subnet, arrive; B's MAC, B's IPv4 or IPv6
 * address, an ARP claiming B's address, a router advertisement, a neighbour advertisement for B's address or with
 * another MAC in its option do not, and the port's own drop counters say so. DEL removes the table.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, writeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { MacvtapPlugin } from '../src/macvtap.js';
import { deviceAntispoofScript, deviceAntispoofTable } from '../src/antispoof.js';
import { IpBatchNetlink } from '../src/netlink.js';
import { ip, tempState, tryIp, uniq } from './helpers.js';

const st = tempState();
const sandbox = uniq('mas');
const far = uniq('maf');
const parent = uniq('mavp');
const peer = uniq('mavq');
const plugin = new MacvtapPlugin({ netlink: new IpBatchNetlink(), records: st.records, locks: st.locks });
const ctx = { containerId: `${sandbox}-vm`, ifName: 'mv0', netns: sandbox };
const A = { mac: '02:aa:00:00:00:05', ip: '10.94.0.5', ip6: 'fd00:94::5' };
const B = { mac: '02:bb:00:00:00:06', ip: '10.94.0.6', ip6: 'fd00:94::6' };

function nft(ns: string, args: string[], input?: string): string {
  return execFileSync('ip', ['netns', 'exec', ns, 'nft', ...args], { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
}
/** Counter packets of each rule of a table, by the rule's comment (far end) or in order (the port's own table). */
function counters(ns: string, family: string, table: string): { comment?: string; packets: number }[] {
  const out: { comment?: string; packets: number }[] = [];
  for (const item of JSON.parse(nft(ns, ['-j', 'list', 'table', family, table])).nftables as Array<{ rule?: { comment?: string; expr: Array<{ counter?: { packets: number } }> } }>) {
    if (!item.rule) continue;
    const c = item.rule.expr.find((e) => e.counter)?.counter;
    out.push({ ...(item.rule.comment ? { comment: item.rule.comment } : {}), packets: c?.packets ?? 0 });
  }
  return out;
}

const mac = (m: string): Buffer => Buffer.from(m.replace(/:/g, ''), 'hex');
const v4 = (a: string): Buffer => Buffer.from(a.split('.').map(Number));
function v6(a: string): Buffer {
  const [h = '', t = ''] = a.split('::');
  const hs = h ? h.split(':') : [];
  const ts = t ? t.split(':') : [];
  const g = [...hs, ...Array<string>(8 - hs.length - ts.length).fill('0'), ...ts];
  return Buffer.concat(g.map((x) => Buffer.from(x.padStart(4, '0'), 'hex')));
}
const BCAST = 'ff:ff:ff:ff:ff:ff';
const eth = (src: string, type: number, payload: Buffer, dst = BCAST): Buffer => Buffer.concat([mac(dst), mac(src), Buffer.from([type >> 8, type & 0xff]), payload]);
function udp4(src: string, dst: string): Buffer {
  const udp = Buffer.from([0x30, 0x39, 0x27, 0x0f, 0, 12, 0, 0, 1, 2, 3, 4]); // :12345 -> :9999
  const hdr = Buffer.from([0x45, 0, 0, 20 + udp.length, 0, 0, 0, 0, 64, 17, 0, 0]);
  return Buffer.concat([hdr, v4(src), v4(dst), udp]);
}
function arp(sha: string, spa: string, tpa: string): Buffer {
  return Buffer.concat([Buffer.from([0, 1, 8, 0, 6, 4, 0, 2]), mac(sha), v4(spa), mac('00:00:00:00:00:00'), v4(tpa)]);
}
function icmp6(src: string, dst: string, body: Buffer): Buffer {
  const hdr = Buffer.from([0x60, 0, 0, 0, body.length >> 8, body.length & 0xff, 58, 255]);
  return Buffer.concat([hdr, v6(src), v6(dst), body]);
}
/** Neighbour advertisement for `target`, its target link-layer address option carrying `tll`. */
const na = (target: string, tll: string): Buffer => Buffer.concat([Buffer.from([136, 0, 0, 0, 0x20, 0, 0, 0]), v6(target), Buffer.from([2, 1]), mac(tll)]);
const ra = (): Buffer => Buffer.from([134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]);

before(async () => {
  ip('netns', 'add', sandbox);
  ip('netns', 'add', far);
  ip('link', 'add', parent, 'type', 'veth', 'peer', 'name', peer, 'netns', far);
  ip('link', 'set', parent, 'up');
  ip('-n', far, 'link', 'set', peer, 'up');
  // the far end counts what arrives from A's MAC or claims B's identity
  nft(far, ['-f', '-'], [
    'table netdev seen {',
    '  chain in {',
    `    type filter hook ingress device "${peer}" priority 0; policy accept;`,
    `    ether saddr ${B.mac} counter comment "b-mac"`,
    `    ether type ip ip saddr ${A.ip} udp dport 9999 counter comment "a-ip"`,
    `    ether type ip ip saddr 192.0.2.1 udp dport 9999 counter comment "routed"`,
    `    ether type ip ip saddr ${B.ip} counter comment "b-ip"`,
    `    ether type arp arp saddr ip ${B.ip} counter comment "b-arp"`,
    `    ether type arp arp saddr ip ${A.ip} counter comment "a-arp"`,
    `    ether type ip6 ip6 saddr ${B.ip6} counter comment "b-ip6"`,
    `    ether saddr ${A.mac} icmpv6 type nd-router-advert counter comment "ra"`,
    `    ether saddr ${A.mac} icmpv6 type nd-neighbor-advert counter comment "na"`,
    '  }',
    '}',
  ].join('\n') + '\n');
});

after(async () => {
  await plugin.del(ctx).catch(() => undefined);
  tryIp('netns', 'del', sandbox);
  tryIp('netns', 'del', far);
  tryIp('link', 'del', parent);
  st.cleanup();
});

test('the generated rules parse on their own (nft -c), IPv4 and IPv6', () => {
  const script = deviceAntispoofScript('mv0', A.mac, [{ address: `${A.ip}/24` }, { address: `${A.ip6}/64` }]);
  execFileSync('ip', ['netns', 'exec', sandbox, 'nft', '-c', '-f', '-'], { input: script.replace(/^table netdev \S+ \{\}\ndelete table netdev \S+\n/, '') .replace('device "mv0"', 'device "lo"') });
  assert.match(script, /icmpv6 type nd-neighbor-advert @th,64,64 0xfd00009400000000 @th,64,128 != 0xfd000094000000000000000000000005/);
});

test('macvtap: only the port\'s own MAC and addresses leave it; no RA, no NA for another\'s address; DEL removes the rules', async () => {
  const res = await plugin.add(ctx, plugin.parseConfig({ parent, mac: A.mac, ips: [{ address: `${A.ip}/24` }, { address: `${A.ip6}/64` }] }));
  assert.ok(nft(sandbox, ['list', 'table', 'netdev', deviceAntispoofTable('mv0')]).includes('hook egress device "mv0"'));
  await plugin.check(ctx, res); // CHECK sees the table
  const fd = openSync(res.tapDevice, 'r+');
  const vnetHdr = Buffer.alloc(10); // what QEMU puts before each frame (IFF_VNET_HDR, the macvtap's default)
  const send = (frame: Buffer, n = 3): void => {
    for (let i = 0; i < n; i++) writeSync(fd, Buffer.concat([vnetHdr, frame]));
  };
  try {
    send(eth(A.mac, 0x0800, udp4(A.ip, '10.94.0.1'))); // itself
    send(eth(A.mac, 0x0800, udp4('192.0.2.1', '10.94.0.1'))); // routed from another subnet: a router VNF's
    send(eth(A.mac, 0x0806, arp(A.mac, A.ip, '10.94.0.1')));
    send(eth(A.mac, 0x86dd, icmp6(A.ip6, 'ff02::1', na(A.ip6, A.mac)))); // its own address, its own MAC
    send(eth(B.mac, 0x0800, udp4(B.ip, '10.94.0.1'))); // B's MAC
    send(eth(A.mac, 0x0800, udp4(B.ip, '10.94.0.1'))); // B's IPv4
    send(eth(A.mac, 0x0806, arp(A.mac, B.ip, '10.94.0.1'))); // ARP: "B's address is at my MAC"
    send(eth(A.mac, 0x0806, arp(B.mac, A.ip, '10.94.0.1'))); // ARP with B's MAC as sender
    send(eth(A.mac, 0x86dd, icmp6(B.ip6, 'ff02::1', na(A.ip6, A.mac)))); // B's IPv6 source
    send(eth(A.mac, 0x86dd, icmp6('fe80::aa:ff:fe00:5', 'ff02::1', ra()))); // router advertisement
    send(eth(A.mac, 0x86dd, icmp6('fe80::aa:ff:fe00:5', 'ff02::1', na(B.ip6, A.mac)))); // NA: "B's address is mine"
    send(eth(A.mac, 0x86dd, icmp6('fe80::aa:ff:fe00:5', 'ff02::1', na('fe80::aa:ff:fe00:5', B.mac)))); // NA with B's MAC
  } finally {
    closeSync(fd);
  }
  await new Promise((r) => setTimeout(r, 300));
  const seen = Object.fromEntries(counters(far, 'netdev', 'seen').map((c) => [c.comment, c.packets]));
  assert.deepEqual(seen, { 'b-mac': 0, 'a-ip': 3, routed: 3, 'b-ip': 0, 'b-arp': 0, 'a-arp': 3, 'b-ip6': 0, ra: 0, na: 3 }, JSON.stringify(seen));
  const drops = counters(sandbox, 'netdev', deviceAntispoofTable('mv0')).reduce((n, c) => n + c.packets, 0);
  assert.equal(drops, 8 * 3, 'every spoofed frame dropped by the port\'s own rules');

  await plugin.del(ctx);
  assert.throws(() => nft(sandbox, ['list', 'table', 'netdev', deviceAntispoofTable('mv0')]), /No such file or directory/);
});
