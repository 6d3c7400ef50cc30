// The vhost-user plugin's OVS-DPDK back end against a real ovs-vswitchd-dpdk: dpdkvhostuserclient ports with the
// network's VLAN and the server path, add twice, a changed VLAN converges, CHECK sees a port removed behind its
// back, restorePorts re-creates it from the record, DEL from the record twice leaves nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhostUserPlugin } from '../src/vhostuser/vhostuser.js';
import { OvsDpdkBackend } from '../src/vhostuser/backends.js';
import { tempState } from './helpers.js';
import { startTestOvs, type TestOvs } from './ovs-dpdk-helper.js';

const work = mkdtempSync(join(tmpdir(), 'np-vhu-ovs-'));
const st = tempState();
const plugin = new VhostUserPlugin({ records: st.records, locks: st.locks });
let ovs: TestOvs;

before(async () => {
  ovs = await startTestOvs();
});
after(async () => {
  await ovs?.stop();
  rmSync(work, { recursive: true, force: true });
  st.cleanup();
});

test('the OVS back end: port type, server path and VLAN tag; repeats converge; delete twice', async () => {
  const be = new OvsDpdkBackend({ bridge: ovs.bridge, vlan: 100, db: ovs.db });
  const spec = { portName: 'vhunp1', socketPath: join(work, 'a.sock'), vmMode: 'server' as const, queues: 1 };
  assert.equal(await be.createPort(spec), 'vhunp1');
  assert.equal(await be.createPort(spec), 'vhunp1');
  assert.equal(ovs.vsctl('get', 'Interface', 'vhunp1', 'type'), 'dpdkvhostuserclient');
  assert.equal(ovs.vsctl('get', 'Interface', 'vhunp1', 'options:vhost-server-path'), JSON.stringify(spec.socketPath));
  assert.equal(ovs.vsctl('get', 'Port', 'vhunp1', 'tag'), '100');
  assert.equal(await be.hasPort('vhunp1'), true);
  assert.equal(await new OvsDpdkBackend({ bridge: 'br-other', db: ovs.db }).hasPort('vhunp1'), false, 'a port on another bridge is not this one');
  // the network's VLAN changed (or was dropped): the same create converges on it
  await new OvsDpdkBackend({ bridge: ovs.bridge, vlan: 200, db: ovs.db }).createPort(spec);
  assert.equal(ovs.vsctl('get', 'Port', 'vhunp1', 'tag'), '200');
  await new OvsDpdkBackend({ bridge: ovs.bridge, db: ovs.db }).createPort(spec);
  assert.equal(ovs.vsctl('get', 'Port', 'vhunp1', 'tag'), '[]');
  await be.deletePort('vhunp1');
  await be.deletePort('vhunp1');
  assert.equal(await be.hasPort('vhunp1'), false);
});

test('the plugin on OVS: ADD records first, CHECK sees a lost port, restorePorts brings it back, DEL from the record', async () => {
  const ctx = { containerId: 'sbxnp1', ifName: 'net0' };
  const cfg = plugin.parseConfig({ dataplane: 'ovs-dpdk', mode: 'server', socketDir: join(work, 'sockets'), tenant: 'acme', ovs: { bridge: ovs.bridge, vlan: 7, db: ovs.db } });
  const res = await plugin.add(ctx, cfg);
  assert.deepEqual(await plugin.add(ctx, cfg), res, 'add twice: the same result');
  assert.equal(ovs.vsctl('get', 'Port', res.portName, 'tag'), '7');
  await plugin.check(ctx, res);

  // the switch lost the port (restarted on an empty database): CHECK says so, the record restores it
  ovs.vsctl('del-port', ovs.bridge, res.portName);
  await assert.rejects(plugin.check(ctx, res), /has no port/);
  const { restored, failed } = await plugin.restorePorts((c) => c.dataplane === 'ovs-dpdk' && c.ovs?.db === ovs.db);
  assert.deepEqual(restored, [res.portName]);
  assert.deepEqual(await plugin.restorePorts((c) => c.ovs?.db === 'unix:/another/switch.sock'), { restored: [], failed: [] }, 'only the records `match` selects');
  assert.deepEqual(failed, []);
  assert.equal(ovs.vsctl('get', 'Port', res.portName, 'tag'), '7');
  await plugin.check(ctx, res);

  await plugin.del(ctx);
  await plugin.del(ctx);
  assert.throws(() => ovs.vsctl('port-to-br', res.portName));
  assert.equal(existsSync(join(work, 'sockets', 'acme')), false, 'the tenant folder goes with its last socket');
});
