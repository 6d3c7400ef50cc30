/**
 * Tenants' tap ports on one shared bridge cannot impersonate each other (antispoof.ts): two tap attachments (tenant
 * A's and tenant B's sandboxes) on a real bridge with real nftables rules. No VM here: behind each tap, inside the
 * sandbox's netns, a veth into a "vm" netns of its own sends what the guest would (a stand-in: the frames take the
 * same path, nsBridge -> veth -> host veth -> shared bridge). A third host C sits on the bridge directly.
 * A reaches C as itself; with B's MAC, or B's IP, nothing of A's gets through, and the drop counters say why.
 * DEL removes the rules with the attachment.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { TapPlugin, tapNames } from '../src/tap.js';
import { antispoofTable } from '../src/antispoof.js';
import { IpBatchNetlink } from '../src/netlink.js';
import { ip, tempState, tryIp, uniq } from './helpers.js';

const st = tempState();
const plugin = new TapPlugin({ netlink: new IpBatchNetlink(), records: st.records, locks: st.locks });
const bridge = uniq('asbr');
const sA = uniq('assa');
const sB = uniq('assb');
const vA = uniq('asva');
const vB = uniq('asvb');
const vC = uniq('asvc');
const hostC = uniq('asc');
const A = { ctx: { containerId: `${sA}-vm`, ifName: 'tap0', netns: sA }, mac: '02:aa:00:00:00:05', ip: '10.93.0.5' };
const B = { ctx: { containerId: `${sB}-vm`, ifName: 'tap0', netns: sB }, mac: '02:bb:00:00:00:06', ip: '10.93.0.6' };
const C = { ip: '10.93.0.7' };

function inNs(ns: string, ...args: string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function pings(from: string, to: string): boolean {
  try {
    inNs(from, 'busybox', 'ping', '-c', '2', '-W', '2', to);
    return true;
  } catch {
    return false;
  }
}
/** Packets dropped so far by the port's rules (the counters of its table). */
function dropped(hostVeth: string): number {
  const out = execFileSync('nft', ['-j', 'list', 'table', 'bridge', antispoofTable(hostVeth)], { encoding: 'utf8' });
  let n = 0;
  for (const item of JSON.parse(out).nftables as Array<{ rule?: { expr: Array<{ counter?: { packets: number } }> } }>) {
    for (const e of item.rule?.expr ?? []) n += e.counter?.packets ?? 0;
  }
  return n;
}
/** The "VM" behind a tap: a veth from the sandbox's per-attachment bridge into a netns of its own. */
function vmBehind(sandbox: string, nsBridge: string, vm: string, mac: string, addr: string): void {
  ip('netns', 'add', vm);
  ip('-n', sandbox, 'link', 'add', 'vmport', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', vm);
  ip('-n', sandbox, 'link', 'set', 'vmport', 'master', nsBridge, 'up');
  ip('-n', vm, 'link', 'set', 'eth0', 'address', mac);
  ip('-n', vm, 'addr', 'add', `${addr}/24`, 'dev', 'eth0');
  ip('-n', vm, 'link', 'set', 'eth0', 'up');
  ip('-n', vm, 'link', 'set', 'lo', 'up');
}

before(async () => {
  for (const ns of [sA, sB]) ip('netns', 'add', ns);
  for (const t of [A, B]) await plugin.add(t.ctx, plugin.parseConfig({ bridge, mac: t.mac, ips: [{ address: `${t.ip}/24` }] }));
  vmBehind(sA, tapNames(A.ctx).nsBridge, vA, A.mac, A.ip);
  vmBehind(sB, tapNames(B.ctx).nsBridge, vB, B.mac, B.ip);
  // C: on the shared bridge directly, no attachment (an operator's host, say)
  ip('netns', 'add', vC);
  ip('link', 'add', hostC, 'master', bridge, 'up', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', vC);
  ip('-n', vC, 'addr', 'add', `${C.ip}/24`, 'dev', 'eth0');
  ip('-n', vC, 'link', 'set', 'eth0', 'up');
});

after(async () => {
  for (const t of [A, B]) await plugin.del(t.ctx).catch(() => undefined);
  for (const ns of [vA, vB, vC, sA, sB]) tryIp('netns', 'del', ns);
  tryIp('link', 'del', hostC);
  tryIp('link', 'del', bridge);
  st.cleanup();
});

test("each port's frames must carry its own MAC and addresses: as itself A reaches B and C; as B it reaches nothing", () => {
  const hvA = tapNames(A.ctx).hostVeth;
  assert.ok(pings(vA, C.ip), 'A reaches C as itself');
  assert.ok(pings(vA, B.ip), 'A reaches B as itself (an open network)');
  const before = dropped(hvA);

  // A takes B's MAC
  ip('-n', vA, 'link', 'set', 'eth0', 'address', B.mac);
  ip('-n', vA, 'neigh', 'flush', 'all');
  ip('-n', vC, 'neigh', 'flush', 'all');
  assert.equal(pings(vA, C.ip), false, "with B's MAC A reaches nothing");
  const afterMac = dropped(hvA);
  assert.ok(afterMac > before, `the MAC rule dropped A's frames (${before} -> ${afterMac})`);

  // A keeps its MAC but claims B's address
  ip('-n', vA, 'link', 'set', 'eth0', 'address', A.mac);
  ip('-n', vA, 'addr', 'flush', 'dev', 'eth0');
  ip('-n', vA, 'addr', 'add', `${B.ip}/24`, 'dev', 'eth0');
  ip('-n', vC, 'neigh', 'flush', 'all');
  assert.equal(pings(vA, C.ip), false, "with B's IP A reaches nothing");
  const afterIp = dropped(hvA);
  assert.ok(afterIp > afterMac, `the address rules dropped A's packets (${afterMac} -> ${afterIp})`);
  // C never learned B's address at A's MAC
  assert.doesNotMatch(inNs(vC, 'ip', 'neigh', 'show', B.ip), new RegExp(A.mac, 'i'));

  // back to itself: through again
  ip('-n', vA, 'addr', 'flush', 'dev', 'eth0');
  ip('-n', vA, 'addr', 'add', `${A.ip}/24`, 'dev', 'eth0');
  assert.ok(pings(vA, C.ip), 'A as itself reaches C again');
  // B was never hindered
  assert.ok(pings(vB, C.ip));
});

test('the rules live and die with the attachment', async () => {
  const hvB = tapNames(B.ctx).hostVeth;
  execFileSync('nft', ['list', 'table', 'bridge', antispoofTable(hvB)], { stdio: 'pipe' });
  await plugin.check(B.ctx);
  await plugin.del(B.ctx);
  assert.throws(() => execFileSync('nft', ['list', 'table', 'bridge', antispoofTable(hvB)], { stdio: 'pipe' }));
  await plugin.del(B.ctx); // twice: nothing left to do
});
