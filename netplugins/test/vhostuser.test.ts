import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhostUserPlugin } from '../src/vhostuser/vhostuser.js';
import { portCookie } from '../src/vhostuser/ovs-antispoof.js';
import { TestpmdTelemetry, VppBackend, OvsDpdkBackend } from '../src/vhostuser/backends.js';
import type { ExecResult } from '../src/exec.js';
import { tempState } from './helpers.js';
import { startTestpmd, type Testpmd } from './testpmd-helper.js';

const work = mkdtempSync(join(tmpdir(), 'np-vhu-'));
const st = tempState();
let tp: Testpmd;
const plugin = new VhostUserPlugin({ records: st.records, locks: st.locks });
const socketDir = join(work, 'sockets');

before(async () => {
  tp = await startTestpmd(work);
});
after(async () => {
  await tp?.stop();
  rmSync(work, { recursive: true, force: true });
  st.cleanup();
});

const cfgFor = (extra: Record<string, unknown> = {}) =>
  plugin.parseConfig({ dataplane: 'testpmd', socketDir, tenant: 'acme', owner: { uid: 1234, gid: 1234 }, testpmd: { controlPath: tp.controlPath, telemetryPath: tp.telemetryPath }, ...extra });

test('parseConfig: every issue at once', () => {
  assert.throws(
    () => plugin.parseConfig({ dataplane: 'ovs-dpdk', mode: 'client', queues: 0, tenant: 'Bad!' }),
    /dataplane|queues: must be in 1\.\.64.*socketDir: is required.*tenant: must be a DNS label.*ovs: is required.*mode: ovs-dpdk ports are dpdkvhostuserclient/,
  );
});

test('testpmd: the plugin creates the port, testpmd reports it; add twice; check; del twice leaves nothing', async () => {
  const ctx = { containerId: 'vm1', ifName: 'dp0' };
  const cfg = cfgFor({ mode: 'client', queues: 2, mtuBytes: 2000 });
  const r = await plugin.add(ctx, cfg);
  assert.deepEqual(await plugin.add(ctx, cfg), r);
  assert.equal(r.vmMode, 'client');
  assert.ok(r.socketPath.startsWith(join(socketDir, 'acme') + '/'));
  const folder = statSync(join(socketDir, 'acme'));
  assert.equal(folder.mode & 0o777, 0o700);
  assert.equal(folder.uid, 1234);
  assert.ok(statSync(r.socketPath).isSocket(), 'testpmd (server) made the socket');
  const ports = await new TestpmdTelemetry(tp.telemetryPath).ports();
  const port = ports.find((p) => p.name === r.portName);
  assert.ok(port, `testpmd reports ${r.portName}: ${JSON.stringify(ports)}`);
  assert.equal(port.started, true);
  assert.equal(port.mtuBytes, 2000);
  // testpmd's own report of the device: its name and devargs (socket, 2 queue pairs, testpmd as server)
  tp.command('show device info all');
  const want = new RegExp(`Infos for device ${r.portName}[\\s\\S]*Devargs: iface=${r.socketPath},queues=2,client=0`);
  for (let i = 0; i < 100 && !want.test(tp.output()); i++) await new Promise((res) => setTimeout(res, 50));
  assert.match(tp.output(), want);
  await plugin.check(ctx, r);
  await plugin.del(ctx);
  await plugin.del(ctx);
  assert.equal((await new TestpmdTelemetry(tp.telemetryPath).ports()).some((p) => p.name === r.portName), false);
  assert.equal(existsSync(r.socketPath), false);
  assert.equal(existsSync(join(socketDir, 'acme')), false);
  assert.deepEqual(st.leftovers(), []);
});

test('server mode (the VM listens): testpmd reconnects as a client; del without add; del after the netns is gone', async () => {
  await plugin.del({ containerId: 'none', ifName: 'dp0' });
  const ctx = { containerId: 'vm2', ifName: 'dp1', netns: '/var/run/netns/np-gone-netns' };
  const r = await plugin.add(ctx, cfgFor());
  assert.equal(r.vmMode, 'server');
  assert.equal(r.queues, 1);
  await plugin.check(ctx);
  await plugin.del(ctx);
  assert.equal(existsSync(join(socketDir, 'acme')), false);
  assert.deepEqual(st.leftovers(), []);
});

test('a data plane that is not there fails ADD cleanly', async () => {
  const ctx = { containerId: 'vm3', ifName: 'dp0' };
  await assert.rejects(plugin.add(ctx, cfgFor({ testpmd: { controlPath: join(work, 'nope.ctl'), telemetryPath: tp.telemetryPath } })), /testpmd control .* is not open/);
  assert.equal(existsSync(join(socketDir, 'acme')), false);
  assert.deepEqual(st.leftovers(), []);
});

test('VPP and OVS-DPDK back ends issue the documented commands', async () => {
  const calls: string[] = [];
  const fake = (outputs: Record<string, string>) => async (argv: readonly string[]): Promise<ExecResult> => {
    calls.push(argv.join(' '));
    const key = Object.keys(outputs).find((k) => argv.join(' ').includes(k));
    return { code: 0, stdout: key ? outputs[key]! : '', stderr: '' };
  };
  const vpp = new VppBackend(fake({ 'create vhost-user': 'VirtualEthernet0/0/0\n' }));
  const name = await vpp.createPort({ portName: 'x', socketPath: '/run/t/a.sock', vmMode: 'client', queues: 2, mtuBytes: 9000 });
  assert.equal(name, 'VirtualEthernet0/0/0');
  assert.deepEqual(calls, [
    'vppctl show vhost-user',
    'vppctl create vhost-user socket /run/t/a.sock server',
    'vppctl set interface mtu packet 9000 VirtualEthernet0/0/0',
    'vppctl set interface state VirtualEthernet0/0/0 up',
  ]);
  calls.length = 0;
  const ovs = new OvsDpdkBackend({ bridge: 'br-int', vlan: 100, db: 'unix:/run/t/db.sock' }, fake({}));
  await ovs.createPort({ portName: 'vhu1', socketPath: '/run/t/b.sock', vmMode: 'server', queues: 4 });
  await ovs.deletePort('vhu1');
  const untagged = new OvsDpdkBackend({ bridge: 'br-int' }, fake({}));
  await untagged.createPort({ portName: 'vhu2', socketPath: '/run/t/c.sock', vmMode: 'server', queues: 1 });
  assert.deepEqual(calls, [
    'ovs-vsctl --db=unix:/run/t/db.sock --timeout=30 --may-exist add-port br-int vhu1 -- set Interface vhu1 type=dpdkvhostuserclient options:vhost-server-path="/run/t/b.sock" options:n_rxq=4 -- set Port vhu1 tag=100',
    `ovs-ofctl del-flows unix:/run/t/br-int.mgmt cookie=${portCookie('vhu1')}/-1`, // its anti-spoofing flows (none here)
    'ovs-vsctl --db=unix:/run/t/db.sock --timeout=30 --if-exists del-port br-int vhu1',
    'ovs-vsctl --timeout=30 --may-exist add-port br-int vhu2 -- set Interface vhu2 type=dpdkvhostuserclient options:vhost-server-path="/run/t/c.sock" -- clear Port vhu2 tag',
  ]);
});
