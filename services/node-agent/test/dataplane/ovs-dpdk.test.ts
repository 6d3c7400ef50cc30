// The node agent's OVS-DPDK switch on real parts: ovsdb-server + ovs-vswitchd-dpdk as the agent's children,
// a netdev bridge per network with its VLAN, an uplink veth into a provider namespace, tenant ports through
// netplugins' vhost-user plugin, a killed ovs-vswitchd restarted with the ports re-created from the records,
// and a switch that will not start reported as failed.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { pino } from 'pino';
import { collectInventory } from '../../src/inventory.js';
import { createSwitches } from '../../src/dataplane/index.js';
import type { OvsDpdkSwitch } from '../../src/dataplane/ovs-dpdk.js';
import { reserveHugepages } from '../../src/dataplane/hugepages.js';
import { countFrames, pidFile, sh, startTestSwitch, startVirtioUserSender, waitFor, type TestSwitch } from './helpers.js';

const started: TestSwitch[] = [];
after(async () => {
  for (const t of started) await t.stop();
});

test('the switch starts; bridge per network with its VLAN; ports from the records survive a killed ovs-vswitchd and an agent restart', async () => {
  const t = await startTestSwitch();
  started.push(t);
  await t.sw.start();
  assert.deepEqual(t.sw.health(), { state: 'ready' }, JSON.stringify(t.sw.health()));
  assert.deepEqual(t.sw.bridgeFor('prov'), { bridge: 'br-prov', vlan: 100, db: t.sw.db });
  assert.equal(t.sw.bridgeFor('mgmt'), undefined, 'a network that does not ask for the switch has no bridge');
  assert.deepEqual(t.sw.info(), { kind: 'ovs-dpdk', socketDir: t.cfg.dataplanes[0].socketDir, state: 'ready', networks: ['prov'], numaNode: 0 });

  assert.equal(await t.vsctl('get', 'Open_vSwitch', '.', 'dpdk_initialized'), 'true');
  assert.equal(await t.vsctl('get', 'Bridge', 'br-prov', 'datapath_type'), 'netdev');
  assert.equal(await t.vsctl('get', 'Port', 'up-prov', 'trunks'), '[100]');
  assert.match(await t.vsctl('get', 'Open_vSwitch', '.', 'other_config:dpdk-socket-mem'), /"?256"?/);
  assert.match(await sh(['ip', '-n', t.provider, 'link', 'show', 'eth0']), /state UP|LOWER_UP|UP/);
  assert.ok(t.logs.some((l) => /reserved 128 x 2 MiB hugepages for OVS-DPDK on NUMA node 0/.test(l)), 'the node says which hugepages it reserved');

  // a tenant port through netplugins' vhost-user plugin: dpdkvhostuserclient, VLAN tag, the socket QEMU will serve
  const ctx = { containerId: 'sbx-ovs-1', ifName: 'vhu-net0' };
  const cfg = t.vhostuser.parseConfig({ dataplane: 'ovs-dpdk', mode: 'server', socketDir: t.sw.socketDir, tenant: 'acme', ovs: t.sw.bridgeFor('prov') });
  const res = await t.vhostuser.add(ctx, cfg);
  assert.equal(await t.vhostuser.add(ctx, cfg).then((r) => r.portName), res.portName, 'add twice: the same port');
  assert.equal(await t.vsctl('get', 'Interface', res.portName, 'type'), 'dpdkvhostuserclient');
  assert.equal(await t.vsctl('get', 'Port', res.portName, 'tag'), '100');
  assert.equal(await t.vsctl('get', 'Interface', res.portName, 'options:vhost-server-path'), JSON.stringify(res.socketPath));
  assert.equal(await t.vsctl('port-to-br', res.portName), 'br-prov');

  // kill ovs-vswitchd: the agent restarts the pair on a fresh database and re-creates the port from its record
  const dbBefore = await t.vsctl('get', 'Open_vSwitch', '.', '_uuid');
  process.kill(pidFile(t, 'ovs-vswitchd'), 'SIGKILL');
  await waitFor('the switch to notice', async () => t.sw.health().state !== 'ready' || (await t.vsctl('get', 'Open_vSwitch', '.', '_uuid').catch(() => '')) !== dbBefore);
  await waitFor('the switch to be ready on a new database', async () => t.sw.health().state === 'ready' && (await t.vsctl('get', 'Open_vSwitch', '.', '_uuid')) !== dbBefore);
  assert.equal(await t.vsctl('port-to-br', res.portName), 'br-prov', 'the tenant port is back');
  assert.equal(await t.vsctl('get', 'Port', res.portName, 'tag'), '100');
  assert.equal(await t.vsctl('get', 'Port', 'up-prov', 'trunks'), '[100]', 'the uplink is back');
  assert.ok(t.logs.some((l) => /ovs-vswitchd exited .*restarting the switch/.test(l)), 'the crash is in the log');
  assert.ok(t.logs.some((l) => /re-created 1 tenant port/.test(l)), 'the re-creation is in the log');

  // the agent stops (the switch with it) and starts again: a new switch from the same config re-creates the port
  await t.sw.stop();
  const again = createSwitches(t.cfg, pino({ level: 'silent' }))[0] as OvsDpdkSwitch;
  t.sw = again;
  await again.start();
  assert.equal(again.health().state, 'ready', JSON.stringify(again.health()));
  assert.equal(await t.vsctl('port-to-br', res.portName), 'br-prov', 'the tenant port is back after an agent restart');
  assert.equal(await t.vsctl('get', 'Port', res.portName, 'tag'), '100');

  // DEL from the record, twice; the port is gone from the switch
  await t.vhostuser.del(ctx);
  await t.vhostuser.del(ctx);
  await assert.rejects(t.vsctl('port-to-br', res.portName));
  assert.equal(existsSync(res.socketPath), false);
});

test('frames from a DPDK virtio-user peer cross the switch into the provider namespace, tagged; again after a switch restart', async () => {
  const t = await startTestSwitch();
  started.push(t);
  await t.sw.start();
  assert.equal(t.sw.health().state, 'ready', JSON.stringify(t.sw.health()));
  const ctx = { containerId: 'sbx-ovs-2', ifName: 'vhu-net0' };
  const res = await t.vhostuser.add(ctx, t.vhostuser.parseConfig({ dataplane: 'ovs-dpdk', mode: 'server', socketDir: t.sw.socketDir, tenant: 'acme', ovs: t.sw.bridgeFor('prov') }));
  await reserveHugepages({ sysfsRoot: '/sys', numaNode: 0, pages: 32 }); // the sender's 64 MiB
  // the sender sends as the port's own MAC: the port's anti-spoofing flows (on by default) drop any other source
  const sender = startVirtioUserSender(res.socketPath, res.mac);
  try {
    const first = await waitFor('frames in the provider namespace', async () => {
      const c = await countFrames(t.provider, 'eth0', 2);
      return c.total > 0 ? c : undefined;
    });
    assert.ok((first.byVlan['100'] ?? 0) > 0, `frames leave the uplink tagged with the network's VLAN: ${JSON.stringify(first)}`);
    // (a few untagged frames are the kernel's own IPv6 chatter from the uplink veth's switch end)
    assert.ok((first.byVlan['100'] ?? 0) > 10 * (first.byVlan.untagged ?? 0), JSON.stringify(first));

    // ovs-vswitchd dies; the sender (the "VM") keeps running: the port comes back and reconnects to it
    const dbBefore = await t.vsctl('get', 'Open_vSwitch', '.', '_uuid');
    process.kill(pidFile(t, 'ovs-vswitchd'), 'SIGKILL');
    await waitFor('the switch back on a new database', async () => t.sw.health().state === 'ready' && (await t.vsctl('get', 'Open_vSwitch', '.', '_uuid')) !== dbBefore);
    const again = await waitFor('frames again after the restart', async () => {
      const c = await countFrames(t.provider, 'eth0', 2);
      return (c.byVlan['100'] ?? 0) > 0 ? c : undefined;
    });
    assert.ok(again.total > 0);
  } catch (err) {
    throw new Error(`${(err as Error).message}\ntestpmd: ${sender.output().slice(-1500)}`, { cause: err });
  } finally {
    await sender.stop();
  }
  await t.vhostuser.del(ctx);
});

test('a switch that will not start is a clear node-level error in the inventory, not a hang', async () => {
  // DPDK refuses an unknown EAL option: ovs-vswitchd aborts at DPDK init
  const t = await startTestSwitch({ ealArgs: ['--no-such-eal-option'], startTimeoutMs: 60_000 });
  started.push(t);
  await t.sw.start();
  const h = t.sw.health();
  assert.equal(h.state, 'failed');
  assert.match(h.error ?? '', /ovs-vswitchd exited .*Unable to initialize DPDK/);
  // the node inventory (what register/heartbeat carry to nodes.get and the dashboard) says so
  const inv = await collectInventory(t.cfg, { kvm: false, switches: [t.sw], system: async () => ({ cpuCount: 2, memoryMiB: 1024, hostname: 'h' }) });
  const info = inv.dataplanes.find((d) => d.kind === 'ovs-dpdk');
  assert.equal(info?.state, 'failed');
  assert.equal(info?.error, h.error);
  assert.ok(t.logs.some((l) => /OVS-DPDK will not start/.test(l)), 'the failure is in the log');
  await t.stop();
  started.pop();
  // nothing left behind: the switch's namespace is gone
  assert.doesNotMatch(await sh(['ip', 'netns', 'list']), new RegExp(t.netns));
});
