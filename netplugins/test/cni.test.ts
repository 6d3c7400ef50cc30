// The CNI executables as real processes: environment + stdin in, result/error JSON out (CNI 1.0).
import { test, before, after, describe } from 'node:test';
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readdirSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeSysfs } from '../src/sriov/fake.js';
import { startCniServer, type CniServerHandle } from '../src/cni/server.js';
import { binDir, cniErrorProblems, cniResultProblems, ensureBin, runExe } from './cni-helpers.js';
import { ip, linkNames, stateLeftovers, tapLinksOnHost, tryIp, uniq } from './helpers.js';
import { startTestpmd } from './testpmd-helper.js';
import { tapNames } from '../src/tap.js';

const work = mkdtempSync(join(tmpdir(), 'np-cni-'));
const stateDir = join(work, 'state');
const hostLocalDir = join(work, 'host-local');
const ns = uniq('npc');
const ns2 = uniq('npc');
const bridge = uniq('cbr');
const parent = uniq('cvp');
const sysRoot = join(work, 'sys');
let server: CniServerHandle | undefined;

before(() => {
  ensureBin();
  ip('netns', 'add', ns);
  ip('netns', 'add', ns2);
  ip('link', 'add', parent, 'type', 'veth', 'peer', 'name', uniq('cvq'));
  FakeSysfs.build(sysRoot, [{ bdf: '0000:05:00.0', ifName: 'ens5f0', totalVfs: 2 }]);
});
after(async () => {
  await server?.close();
  tryIp('netns', 'del', ns);
  tryIp('netns', 'del', ns2);
  tryIp('link', 'del', bridge);
  tryIp('link', 'del', parent);
  rmSync(work, { recursive: true, force: true });
});

const exe = (type: string, mode: 'node' | 'shim' = 'node') => join(binDir, mode === 'node' ? `node-edgenfv-${type}` : `edgenfv-${type}`);
const env = (cmd: string, extra: Record<string, string> = {}) => ({
  CNI_COMMAND: cmd,
  CNI_CONTAINERID: 'ctr1',
  CNI_IFNAME: 'eth0',
  CNI_NETNS: `/var/run/netns/${ns}`,
  CNI_PATH: '/usr/lib/cni',
  EDGENFV_NETPLUGINS_STATE: stateDir,
  EDGENFV_CNI_SOCKET: join(work, 'no-server.sock'),
  ...extra,
});
const tapConf = (extra: Record<string, unknown> = {}) => ({ cniVersion: '1.0.0', name: 'mgmt', type: 'edgenfv-tap', bridge, ...extra });
const hostLocal = { type: 'host-local', ranges: [[{ subnet: '10.77.0.0/24', gateway: '10.77.0.1' }]], dataDir: hostLocalDir };
const leftovers = () => stateLeftovers(stateDir, ['records', 'locks', 'sriov-claims']);
const hostLocalLeases = () => (existsSync(join(hostLocalDir, 'mgmt')) ? readdirSync(join(hostLocalDir, 'mgmt')).filter((f) => /^\d/.test(f)) : []);

test('VERSION from every executable', async () => {
  for (const t of ['sriov', 'vhostuser', 'tap', 'macvtap']) {
    for (const mode of ['node', 'shim'] as const) {
      const r = await runExe(exe(t, mode), { CNI_COMMAND: 'VERSION', EDGENFV_CNI_SOCKET: join(work, 'none.sock') }, { cniVersion: '1.0.0' });
      assert.equal(r.exitCode, 0, `${t} ${mode}: ${r.stdout}`);
      assert.deepEqual(r.json, { cniVersion: '1.0.0', supportedVersions: ['1.0.0', '1.1.0'] });
    }
  }
});

test('tap: ADD (with host-local IPAM) / ADD again / CHECK / DEL / DEL, CNI 1.0 result shape', async () => {
  const conf = tapConf({ ipam: hostLocal, mtuBytes: 1450 });
  const add = await runExe(exe('tap'), env('ADD'), conf);
  assert.equal(add.exitCode, 0, add.stdout);
  assert.deepEqual(cniResultProblems(add.json), []);
  const res = add.json as { interfaces: Array<{ name: string; mac: string; sandbox: string; mtu: number }>; ips: Array<{ address: string; gateway: string }> };
  assert.equal(res.interfaces[0].name, 'eth0');
  assert.equal(res.interfaces[0].sandbox, `/var/run/netns/${ns}`);
  assert.equal(res.interfaces[0].mtu, 1450);
  assert.match(res.ips[0].address, /^10\.77\.0\.\d+\/24$/);
  assert.equal(res.ips[0].gateway, '10.77.0.1');
  assert.ok(linkNames(ns).includes('eth0'));
  const again = await runExe(exe('tap'), env('ADD'), conf);
  assert.equal(again.exitCode, 0, again.stdout);
  assert.deepEqual(again.json, add.json);
  assert.equal(hostLocalLeases().length, 1, 'host-local keeps one lease per container+ifname');
  const check = await runExe(exe('tap'), env('CHECK'), { ...conf, prevResult: add.json });
  assert.equal(check.exitCode, 0, check.stdout);
  const badCheck = await runExe(exe('tap'), env('CHECK'), { ...conf, prevResult: { ...add.json, interfaces: [{ name: 'eth0', mac: '02:00:00:00:00:01' }] } });
  assert.equal(badCheck.exitCode, 1);
  assert.match(String(badCheck.json?.msg), /prevResult\.mac/);
  for (let i = 0; i < 2; i++) {
    const del = await runExe(exe('tap'), env('DEL'), conf);
    assert.equal(del.exitCode, 0, del.stdout);
    assert.equal(del.stdout, '');
  }
  assert.deepEqual(linkNames(ns), ['lo']);
  assert.deepEqual(hostLocalLeases(), []);
  assert.deepEqual(leftovers(), []);
});

test('tap without bridge (as the reference tap plugin): ADD makes a bare tap in the netns / CHECK / DEL twice', async () => {
  const conf = { cniVersion: '1.0.0', name: 'bare', type: 'edgenfv-tap' };
  const e = env('ADD', { CNI_CONTAINERID: 'ctr-bare', CNI_IFNAME: 'tap0' });
  const add = await runExe(exe('tap'), e, conf);
  assert.equal(add.exitCode, 0, add.stdout);
  assert.deepEqual(cniResultProblems(add.json, '1.0.0'), []);
  const tap = JSON.parse(ip('-n', ns, '-d', '-j', 'link', 'show', 'tap0'))[0];
  assert.equal(tap.linkinfo.info_kind, 'tun');
  assert.equal(tap.master, undefined);
  assert.deepEqual(tapLinksOnHost({ containerId: 'ctr-bare', ifName: 'tap0', netns: e.CNI_NETNS }), [], 'nothing made on the host');
  const check = await runExe(exe('tap'), { ...e, CNI_COMMAND: 'CHECK' }, { ...conf, prevResult: add.json });
  assert.equal(check.exitCode, 0, check.stdout);
  for (let i = 0; i < 2; i++) assert.equal((await runExe(exe('tap'), { ...e, CNI_COMMAND: 'DEL' }, conf)).exitCode, 0);
  assert.ok(!linkNames(ns).includes('tap0'));
  assert.deepEqual(leftovers(), []);
});

test('DEL without ADD, DEL after the netns is gone', async () => {
  const none = await runExe(exe('tap'), env('DEL', { CNI_CONTAINERID: 'never' }), tapConf());
  assert.equal(none.exitCode, 0, none.stdout);
  const e2 = env('ADD', { CNI_CONTAINERID: 'ctr2', CNI_NETNS: `/var/run/netns/${ns2}` });
  assert.equal((await runExe(exe('tap'), e2, tapConf())).exitCode, 0);
  ip('netns', 'del', ns2);
  for (let i = 0; i < 2; i++) {
    const del = await runExe(exe('tap'), { ...e2, CNI_COMMAND: 'DEL' }, tapConf());
    assert.equal(del.exitCode, 0, del.stdout);
  }
  assert.deepEqual(leftovers(), []);
});

describe('bad input gets a CNI error and changes nothing', () => {
  const cases: Array<[string, string, Record<string, string>, unknown, number, RegExp]> = [
    ['tap: several bad fields at once', 'tap', {}, { cniVersion: '1.0.0', name: 'n', type: 'edgenfv-tap', mtuBytes: 1, mac: 'nope', bridge: 'no spaces' }, 7, /bridge: .*; mtuBytes: must be in 68\.\.65535 \(got 1\); mac: must be a MAC/],
    ['sriov VLAN 4095', 'sriov', {}, { cniVersion: '1.0.0', name: 'n', type: 'edgenfv-sriov', physnet: 'physnet1', vlan: 4095, pfs: [{ pf: 'ens5f0', physnet: 'physnet1' }] }, 7, /vlan: must be in 0\.\.4094 \(got 4095\)/],
    ['sriov unknown physnet', 'sriov', {}, { cniVersion: '1.0.0', name: 'n', type: 'edgenfv-sriov', physnet: 'nope', pfs: [{ pf: 'ens5f0', physnet: 'physnet1' }] }, 7, /physnet: unknown physnet "nope"/],
    ['sriov PCI address that does not exist', 'sriov', {}, { cniVersion: '1.0.0', name: 'n', type: 'edgenfv-sriov', deviceID: '0000:42:00.1', pfs: [] }, 7, /deviceID: PCI device 0000:42:00\.1 does not exist/],
    ['sriov malformed PCI address', 'sriov', {}, { cniVersion: '1.0.0', name: 'n', type: 'edgenfv-sriov', deviceID: 'pci-7' }, 7, /deviceID: must be a PCI address/],
    ['vhostuser missing fields', 'vhostuser', {}, { cniVersion: '1.0.0', name: 'n', type: 'edgenfv-vhostuser' }, 7, /dataplane: is required.*socketDir: is required.*tenant: is required/],
    ['macvtap unknown parent', 'macvtap', {}, { cniVersion: '1.0.0', name: 'n', type: 'edgenfv-macvtap', parent: 'nosuch0' }, 7, /parent: host link nosuch0 does not exist/],
    ['missing cniVersion and name', 'tap', {}, { type: 'edgenfv-tap', bridge: 'x' }, 7, /cniVersion: is required; name: is required/],
    ['old cniVersion', 'tap', {}, { cniVersion: '0.3.1', name: 'n', bridge: 'x' }, 1, /cniVersion 0\.3\.1 is not supported/],
    ['stdin not JSON', 'tap', {}, '{nope', 6, /not JSON/],
    ['missing CNI_CONTAINERID', 'tap', { CNI_CONTAINERID: '' }, { cniVersion: '1.0.0', name: 'n', bridge: 'x' }, 4, /CNI_CONTAINERID is required/],
    ['unknown CNI_COMMAND', 'tap', { CNI_COMMAND: 'FROB' }, { cniVersion: '1.0.0', name: 'n', bridge: 'x' }, 4, /CNI_COMMAND: unknown command "FROB"/],
    ['netns that does not exist', 'tap', { CNI_NETNS: '/var/run/netns/nosuchns' }, { cniVersion: '1.0.0', name: 'n', bridge: 'x' }, 3, /netns .* does not exist/],
  ];
  for (const [title, type, extraEnv, conf, code, re] of cases) {
    test(title, async () => {
      const r = await runExe(exe(type), env('ADD', { EDGENFV_SRIOV_FAKE_ROOT: sysRoot, CNI_CONTAINERID: 'bad', ...extraEnv }), conf);
      assert.equal(r.exitCode, 1, r.stdout);
      assert.deepEqual(cniErrorProblems(r.json), []);
      assert.equal(r.json?.code, code, r.stdout);
      assert.match(String(r.json?.msg), re);
      // nothing made: no host veth of this attachment, no bridge "x", nothing in the netns (the host netns itself is
      // shared with other tests running in parallel, so only our own names are checked)
      const host = linkNames();
      assert.ok(!host.includes(tapNames({ containerId: 'bad', ifName: 'eth0' }).hostVeth) && !host.includes('x'));
      assert.deepEqual(linkNames(ns), ['lo']);
      assert.deepEqual(leftovers(), []);
    });
  }
});

test('sriov on the fake sysfs tree: ADD reports the VF (pciID in 1.1.0), DEL restores it; GC', async () => {
  const conf = { cniVersion: '1.1.0', name: 'uplink', type: 'edgenfv-sriov', physnet: 'physnet1', vlan: 100, mac: '02:00:00:aa:bb:01', pfs: [{ pf: 'ens5f0', physnet: 'physnet1', numVfs: 2 }] };
  const e = env('ADD', { EDGENFV_SRIOV_FAKE_ROOT: sysRoot, CNI_NETNS: '' });
  const add = await runExe(exe('sriov'), e, conf);
  assert.equal(add.exitCode, 0, add.stdout);
  assert.deepEqual(cniResultProblems(add.json, '1.1.0'), []);
  assert.deepEqual((add.json as { interfaces: unknown[] }).interfaces, [{ name: 'eth0', mac: '02:00:00:aa:bb:01', pciID: '0000:05:10.0' }]);
  const add2 = await runExe(exe('sriov'), { ...e, CNI_CONTAINERID: 'ctr9' }, conf);
  assert.equal(add2.exitCode, 0, add2.stdout);
  const check = await runExe(exe('sriov'), { ...e, CNI_COMMAND: 'CHECK' }, { ...conf, prevResult: add.json });
  assert.equal(check.exitCode, 0, check.stdout);
  // GC keeps ctr1/eth0, deletes ctr9/eth0
  const gc = await runExe(exe('sriov'), { ...e, CNI_COMMAND: 'GC' }, { ...conf, 'cni.dev/valid-attachments': [{ containerID: 'ctr1', ifname: 'eth0' }] });
  assert.equal(gc.exitCode, 0, gc.stdout);
  assert.deepEqual(readdirSync(join(stateDir, 'sriov-claims')), ['0000:05:10.0']);
  for (let i = 0; i < 2; i++) assert.equal((await runExe(exe('sriov'), { ...e, CNI_COMMAND: 'DEL' }, conf)).exitCode, 0);
  assert.deepEqual(leftovers(), []);
});

test('macvtap: ADD / DEL through the executable', async () => {
  const conf = { cniVersion: '1.0.0', name: 'ext', type: 'edgenfv-macvtap', parent };
  const add = await runExe(exe('macvtap'), env('ADD'), conf);
  assert.equal(add.exitCode, 0, add.stdout);
  assert.deepEqual(cniResultProblems(add.json), []);
  assert.ok(linkNames(ns).includes('eth0'));
  const again = await runExe(exe('macvtap'), env('ADD'), conf);
  assert.deepEqual(again.json, add.json);
  const check = await runExe(exe('macvtap'), env('CHECK'), { ...conf, prevResult: add.json });
  assert.equal(check.exitCode, 0, check.stdout);
  assert.equal((await runExe(exe('macvtap'), env('DEL'), conf)).exitCode, 0);
  assert.deepEqual(linkNames(ns), ['lo']);
  assert.deepEqual(leftovers(), []);
});

test('vhostuser: ADD / CHECK / DEL through the executable on a real dpdk-testpmd', async () => {
  const tp = await startTestpmd(work);
  try {
    const conf = {
      cniVersion: '1.1.0', name: 'dp', type: 'edgenfv-vhostuser', dataplane: 'testpmd', mode: 'client', queues: 1,
      socketDir: join(work, 'vhu'), tenant: 'acme', testpmd: { controlPath: tp.controlPath, telemetryPath: tp.telemetryPath },
    };
    const e = env('ADD', { CNI_NETNS: '' });
    const add = await runExe(exe('vhostuser'), e, conf);
    assert.equal(add.exitCode, 0, add.stdout);
    assert.deepEqual(cniResultProblems(add.json, '1.1.0'), []);
    const sock = (add.json as { interfaces: Array<{ socketPath: string }> }).interfaces[0].socketPath;
    assert.ok(statSync(sock).isSocket());
    const check = await runExe(exe('vhostuser'), { ...e, CNI_COMMAND: 'CHECK' }, { ...conf, prevResult: add.json });
    assert.equal(check.exitCode, 0, check.stdout);
    for (let i = 0; i < 2; i++) assert.equal((await runExe(exe('vhostuser'), { ...e, CNI_COMMAND: 'DEL' }, conf)).exitCode, 0);
    assert.equal(existsSync(sock), false);
    assert.equal(existsSync(join(work, 'vhu', 'acme')), false);
    assert.deepEqual(leftovers(), []);
  } finally {
    await tp.stop();
  }
});

test('edgenfv-cnid serves the shims as its own process', async () => {
  const sock = join(work, 'cnid.sock');
  const d = spawn(join(binDir, 'edgenfv-cnid'), [], { env: { ...process.env, EDGENFV_CNI_SOCKET: sock }, stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    let err = '';
    d.stderr.on('data', (b: Buffer) => (err += b.toString()));
    for (let i = 0; i < 200 && !err.includes('serving'); i++) await new Promise((r) => setTimeout(r, 25));
    assert.match(err, /edgenfv-cnid: serving CNI calls on/);
    const v = await runExe(exe('macvtap', 'shim'), { CNI_COMMAND: 'VERSION', EDGENFV_CNI_SOCKET: sock }, { cniVersion: '1.0.0' });
    assert.deepEqual(v.json, { cniVersion: '1.0.0', supportedVersions: ['1.0.0', '1.1.0'] });
    const conf = { cniVersion: '1.0.0', name: 'ext', type: 'edgenfv-macvtap', parent };
    const add = await runExe(exe('macvtap', 'shim'), env('ADD', { EDGENFV_CNI_SOCKET: sock }), conf);
    assert.equal(add.exitCode, 0, add.stdout);
    assert.deepEqual(cniResultProblems(add.json), []);
    assert.equal((await runExe(exe('macvtap', 'shim'), env('DEL', { EDGENFV_CNI_SOCKET: sock }), conf)).exitCode, 0);
    assert.deepEqual(linkNames(ns), ['lo']);
  } finally {
    d.kill('SIGTERM');
    await new Promise((r) => d.on('exit', r));
  }
  assert.equal(existsSync(sock), false, 'the socket is removed on SIGTERM');
  assert.deepEqual(leftovers(), []);
});

test('the shim: through a running CNI server, and on its own (Node.js fallback), same answers', async () => {
  const sock = join(work, 'cni.sock');
  server = await startCniServer({ socketPath: sock });
  const conf = tapConf({ ipam: hostLocal });
  const viaServer = await runExe(exe('tap', 'shim'), env('ADD', { EDGENFV_CNI_SOCKET: sock }), conf);
  assert.equal(viaServer.exitCode, 0, viaServer.stdout);
  assert.deepEqual(cniResultProblems(viaServer.json), []);
  const fallback = await runExe(exe('tap', 'shim'), env('ADD'), conf); // no server on that socket: runs Node.js
  assert.deepEqual(fallback.json, viaServer.json);
  const bad = await runExe(exe('sriov', 'shim'), env('ADD', { EDGENFV_CNI_SOCKET: sock, EDGENFV_SRIOV_FAKE_ROOT: sysRoot }), { cniVersion: '1.0.0', name: 'n', physnet: 'p', vlan: 4095, pfs: [{ pf: 'ens5f0', physnet: 'p' }] });
  assert.equal(bad.exitCode, 1);
  assert.equal(bad.json?.code, 7);
  assert.match(String(bad.json?.msg), /vlan: must be in 0\.\.4094/);
  assert.equal((await runExe(exe('tap', 'shim'), env('DEL', { EDGENFV_CNI_SOCKET: sock }), conf)).exitCode, 0);
  assert.equal((await runExe(exe('tap', 'shim'), env('DEL', { EDGENFV_CNI_SOCKET: sock }), conf)).exitCode, 0);
  await server.close();
  server = undefined;
  assert.deepEqual(linkNames(ns), ['lo']);
  assert.deepEqual(hostLocalLeases(), []);
  assert.deepEqual(leftovers(), []);
});
