import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readdirSync, readlinkSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, basename } from 'node:path';
import { AppError, InvalidArgumentError } from '@edgenfv/contracts';
import { FakeSysfs, FakeVfNetlink } from '../src/sriov/fake.js';
import { SysfsPciBind } from '../src/sriov/pci-bind.js';
import { SriovPlugin, defaultClaimsDir } from '../src/sriov/sriov.js';
import { discoverPfs } from '../src/sriov/pools.js';
import { tempState } from './helpers.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function setup(opts: { sharedGroup?: boolean; totalVfs?: number; noVfio?: boolean } = {}) {
  const root = mkdtempSync(join(tmpdir(), 'np-sysfs-'));
  dirs.push(root);
  const sysfs = FakeSysfs.build(root, [
    { bdf: '0000:03:00.0', ifName: 'enp3s0f0', totalVfs: opts.totalVfs ?? 4, numaNode: 1, ...(opts.sharedGroup ? { sharedGroup: true } : {}) },
  ], { noVfio: opts.noVfio ?? false });
  const st = tempState();
  dirs.push(st.dir);
  const netlink = new FakeVfNetlink(root);
  const plugin = new SriovPlugin({
    sysfs, pciBind: new SysfsPciBind(sysfs, 2000), netlink, records: st.records, locks: st.locks, claimsDir: defaultClaimsDir(st.dir),
  });
  const drv = (bdf: string) => {
    const p = join(root, 'bus/pci/devices', bdf, 'driver');
    return existsSync(p) ? basename(readlinkSync(p)) : null;
  };
  const claims = () => (existsSync(defaultClaimsDir(st.dir)) ? readdirSync(defaultClaimsDir(st.dir)) : []);
  return { root, sysfs, st, netlink, plugin, drv, claims };
}
const base = { pfs: [{ pf: 'enp3s0f0', physnet: 'physnet1', numVfs: 2 }] };

test('parseConfig: VLAN 4095, qos without vlan, unknown physnet, bad PCI address: all in one error', () => {
  const { plugin } = setup();
  assert.throws(
    () => plugin.parseConfig({ ...base, physnet: 'nope', vlan: 4095, vlanQos: 3, deviceID: 'zz:00.0', trust: 'yes' }),
    (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.deepEqual(e.issues.map((i) => i.field).sort(), ['deviceID', 'physnet', 'trust', 'vlan', 'vlanQos']);
      assert.match(e.message, /vlan: must be in 0\.\.4094 \(got 4095\)/);
      assert.match(e.message, /physnet: unknown physnet "nope"/);
      return true;
    },
  );
  assert.throws(() => plugin.parseConfig({}), /physnet: is required \(or deviceID\)/);
});

test('add: creates VFs, claims one, sets MAC/VLAN/spoofchk/trust on the PF, binds vfio-pci; add twice; del restores everything', async () => {
  const { plugin, netlink, drv, claims, st, root } = setup();
  const ctx = { containerId: 'vm1', ifName: 'net1' };
  const cfg = plugin.parseConfig({ ...base, physnet: 'physnet1', vlan: 100, vlanQos: 2, spoofchk: true, trust: false, mac: '02:11:22:33:44:55' });
  const r = await plugin.add(ctx, cfg);
  assert.deepEqual(await plugin.add(ctx, cfg), r);
  assert.equal(r.pciAddress, '0000:03:10.0');
  assert.equal(r.pfPciAddress, '0000:03:00.0');
  assert.equal(r.vfIndex, 0);
  assert.equal(r.mac, '02:11:22:33:44:55');
  assert.equal(r.driver, 'vfio-pci');
  assert.equal(r.numaNode, 1);
  assert.equal(typeof r.iommuGroup, 'number');
  assert.equal(drv('0000:03:10.0'), 'vfio-pci');
  assert.equal(readFileSync(join(root, 'bus/pci/devices/0000:03:10.0/driver_override'), 'utf8').trim(), 'vfio-pci');
  assert.deepEqual((await netlink.vfs('enp3s0f0'))[0], { vf: 0, mac: '02:11:22:33:44:55', vlan: 100, vlanQos: 2, spoofchk: true, trust: false });
  await plugin.check(ctx, r);
  // the second attachment gets the other VF; a third finds none
  const r2 = await plugin.add({ containerId: 'vm2', ifName: 'net1' }, plugin.parseConfig({ ...base, physnet: 'physnet1' }));
  assert.equal(r2.pciAddress, '0000:03:10.2');
  assert.match(r2.mac, /^02:/);
  await assert.rejects(plugin.add({ containerId: 'vm3', ifName: 'net1' }, plugin.parseConfig({ ...base, physnet: 'physnet1' })), /physnet physnet1: no free VF \(2 VFs/);
  await plugin.del(ctx);
  await plugin.del(ctx);
  await plugin.del({ containerId: 'vm2', ifName: 'net1' });
  assert.equal(drv('0000:03:10.0'), 'igbvf');
  assert.equal(drv('0000:03:10.2'), 'igbvf');
  assert.equal(readFileSync(join(root, 'bus/pci/devices/0000:03:10.0/driver_override'), 'utf8').trim(), '(null)');
  assert.deepEqual((await netlink.vfs('enp3s0f0'))[0], { vf: 0, mac: '00:00:00:00:00:00', vlan: 0, vlanQos: 0, spoofchk: true, trust: false });
  assert.deepEqual(claims(), []);
  assert.deepEqual(st.leftovers(), []);
});

test('driver "kernel": the VF keeps igbvf and is re-probed so its netdev takes the MAC set on the PF', async () => {
  const { plugin, drv, root, claims, st } = setup();
  const ctx = { containerId: 'ctr1', ifName: 'net1' };
  const r = await plugin.add(ctx, plugin.parseConfig({ ...base, physnet: 'physnet1', driver: 'kernel', mac: '02:aa:00:00:00:01' }));
  assert.equal(r.driver, 'igbvf');
  assert.equal(drv(r.pciAddress), 'igbvf');
  const netdirs = readdirSync(join(root, 'bus/pci/devices', r.pciAddress, 'net'));
  assert.equal(readFileSync(join(root, 'bus/pci/devices', r.pciAddress, 'net', netdirs[0]!, 'address'), 'utf8').trim(), '02:aa:00:00:00:01');
  await plugin.check(ctx, r);
  await plugin.del(ctx);
  assert.equal(drv(r.pciAddress), 'igbvf');
  assert.deepEqual(claims(), []);
  assert.deepEqual(st.leftovers(), []);
});

test('check notices a VF rebound behind our back', async () => {
  const { plugin, sysfs } = setup();
  const ctx = { containerId: 'vm1', ifName: 'net1' };
  await plugin.add(ctx, plugin.parseConfig({ ...base, physnet: 'physnet1' }));
  await sysfs.write('bus/pci/drivers/vfio-pci/unbind', '0000:03:10.0');
  await assert.rejects(plugin.check(ctx), /bound to no driver, not vfio-pci/);
  await plugin.del(ctx);
});

test('deviceID: a VF that does not exist, a VF already attached, a PF that is not a VF', async () => {
  const { plugin, claims, st } = setup();
  await assert.rejects(plugin.add({ containerId: 'a', ifName: 'n' }, plugin.parseConfig({ ...base, deviceID: '0000:09:00.0' })), /deviceID: PCI device 0000:09:00.0 does not exist/);
  await plugin.add({ containerId: 'vm0', ifName: 'n' }, plugin.parseConfig({ ...base, physnet: 'physnet1' })); // creates the VFs
  await assert.rejects(plugin.add({ containerId: 'b', ifName: 'n' }, plugin.parseConfig({ ...base, deviceID: '0000:03:10.0' })), /already attached to vm0\/n/);
  await assert.rejects(plugin.add({ containerId: 'c', ifName: 'n' }, plugin.parseConfig({ ...base, deviceID: '0000:03:00.0' })), /not an SR-IOV virtual function/);
  const r = await plugin.add({ containerId: 'd', ifName: 'n' }, plugin.parseConfig({ ...base, deviceID: '0000:03:10.2' }));
  assert.equal(r.physnet, 'physnet1');
  await plugin.del({ containerId: 'd', ifName: 'n' });
  await plugin.del({ containerId: 'vm0', ifName: 'n' });
  assert.deepEqual(claims(), []);
  assert.deepEqual(st.leftovers(), []);
});

test('a VF whose IOMMU group holds a device on a host driver is refused, and everything is rolled back', async () => {
  const { plugin, netlink, drv, claims, st } = setup({ sharedGroup: true });
  await assert.rejects(
    plugin.add({ containerId: 'vm1', ifName: 'net1' }, plugin.parseConfig({ ...base, physnet: 'physnet1', vlan: 7, mac: '02:00:00:00:00:07' })),
    /IOMMU group \d+ of 0000:03:10.0 is not viable for vfio: 0000:03:00.0 \(bound to igb\)/,
  );
  assert.equal(drv('0000:03:10.0'), 'igbvf');
  assert.deepEqual((await netlink.vfs('enp3s0f0'))[0]?.vlan, 0);
  assert.deepEqual((await netlink.vfs('enp3s0f0'))[0]?.mac, '00:00:00:00:00:00');
  assert.deepEqual(claims(), []);
  assert.deepEqual(st.leftovers(), []);
});

test('concurrent ADDs never hand one VF to two sandboxes', async () => {
  const { plugin, claims, st } = setup({ totalVfs: 4 });
  const cfg = plugin.parseConfig({ pfs: [{ pf: 'enp3s0f0', physnet: 'p', numVfs: 4 }], physnet: 'p' });
  const res = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => plugin.add({ containerId: `vm${i}`, ifName: 'net1' }, cfg)));
  const ok = res.filter((r) => r.status === 'fulfilled').map((r) => (r as PromiseFulfilledResult<{ pciAddress: string }>).value.pciAddress);
  assert.equal(ok.length, 4);
  assert.equal(new Set(ok).size, 4);
  assert.equal(res.filter((r) => r.status === 'rejected').length, 4);
  for (let i = 0; i < 8; i++) await plugin.del({ containerId: `vm${i}`, ifName: 'net1' });
  assert.deepEqual(claims(), []);
  assert.deepEqual(st.leftovers(), []);
});

test('del without add; del after the netns is gone; del after the VFs are gone (sriov_numvfs reset)', async () => {
  const { plugin, sysfs, claims, st, drv } = setup();
  await plugin.del({ containerId: 'never', ifName: 'n' });
  // a VF attachment does not live in the netns: DEL with a netns that no longer exists still restores the VF
  const inNs = { containerId: 'vmns', ifName: 'net1', netns: '/var/run/netns/np-gone-netns' };
  await plugin.add(inNs, plugin.parseConfig({ ...base, physnet: 'physnet1' }));
  await plugin.del(inNs);
  await plugin.del(inNs);
  assert.equal(drv('0000:03:10.0'), 'igbvf');
  const ctx = { containerId: 'vm1', ifName: 'net1' };
  await plugin.add(ctx, plugin.parseConfig({ ...base, physnet: 'physnet1' }));
  await sysfs.write('bus/pci/devices/0000:03:00.0/sriov_numvfs', '0');
  await plugin.del(ctx);
  await plugin.del(ctx);
  assert.deepEqual(claims(), []);
  assert.deepEqual(st.leftovers(), []);
});

test('the fake kernel refuses what the real one refuses; discovery reads the tree', async () => {
  const { sysfs } = setup();
  await assert.rejects(sysfs.write('bus/pci/devices/0000:03:00.0/sriov_numvfs', '9'), /ERANGE/);
  await sysfs.write('bus/pci/devices/0000:03:00.0/sriov_numvfs', '2');
  await assert.rejects(sysfs.write('bus/pci/devices/0000:03:00.0/sriov_numvfs', '1'), /EBUSY/);
  const [pf] = await discoverPfs(sysfs, [{ pf: 'enp3s0f0', physnet: 'physnet1' }]);
  assert.equal(pf?.physnet, 'physnet1');
  assert.equal(pf?.totalVfs, 4);
  assert.deepEqual(pf?.vfs.map((v) => [v.index, v.pciAddress, v.driver]), [[0, '0000:03:10.0', 'igbvf'], [1, '0000:03:10.2', 'igbvf']]);
});

/** Nothing of an attachment is left: VF 0 and 1 on igbvf without override, the PF's VF table as given, no claims, no records. */
async function assertUntouched(s: ReturnType<typeof setup>, table0 = { vf: 0, mac: '00:00:00:00:00:00', vlan: 0, vlanQos: 0, spoofchk: true, trust: false }) {
  for (const vf of ['0000:03:10.0', '0000:03:10.2']) {
    assert.equal(s.drv(vf), 'igbvf', `${vf} driver`);
    assert.equal(readFileSync(join(s.root, 'bus/pci/devices', vf, 'driver_override'), 'utf8').trim(), '(null)');
  }
  assert.deepEqual((await s.netlink.vfs('enp3s0f0'))[0], table0);
  assert.deepEqual(s.claims(), []);
  assert.deepEqual(s.st.leftovers(), []);
}
const code = (c: string, re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof AppError, String(e));
  assert.equal(e.code, c, e.message);
  assert.match(e.message, re);
  return true;
};

test('a NUMA node with no VF of the physnet: UNSCHEDULABLE naming numaNode; deviceID on another node: CONFLICT; nothing changes', async () => {
  const s = setup();
  const { plugin } = s;
  await assert.rejects(
    plugin.add({ containerId: 'vm1', ifName: 'net1' }, plugin.parseConfig({ ...base, physnet: 'physnet1', numaNode: 0 })),
    code('UNSCHEDULABLE', /^numaNode: physnet physnet1 has no free VF on NUMA node 0 \(0 of its 2 VFs are there/),
  );
  await assertUntouched(s);
  await assert.rejects(
    plugin.add({ containerId: 'vm1', ifName: 'net1' }, plugin.parseConfig({ ...base, deviceID: '0000:03:10.2', numaNode: 0 })),
    code('CONFLICT', /deviceID: 0000:03:10.2 is on NUMA node 1, not 0/),
  );
  await assertUntouched(s);
  const r = await plugin.add({ containerId: 'vm1', ifName: 'net1' }, plugin.parseConfig({ ...base, physnet: 'physnet1', numaNode: 1 }));
  assert.equal(r.numaNode, 1);
  // the physnet itself full: the other error names the physnet
  await plugin.add({ containerId: 'vm2', ifName: 'net1' }, plugin.parseConfig({ ...base, physnet: 'physnet1', numaNode: 1 }));
  await assert.rejects(
    plugin.add({ containerId: 'vm3', ifName: 'net1' }, plugin.parseConfig({ ...base, physnet: 'physnet1', numaNode: 1 })),
    code('UNSCHEDULABLE', /^physnet physnet1: no free VF \(2 VFs on enp3s0f0, all claimed\)/),
  );
  await plugin.del({ containerId: 'vm1', ifName: 'net1' });
  await plugin.del({ containerId: 'vm2', ifName: 'net1' });
  await assertUntouched(s);
});

test('vfio-pci not loaded: UNAVAILABLE naming the module, before any VF setting changes', async () => {
  const s = setup({ noVfio: true });
  await assert.rejects(
    s.plugin.add({ containerId: 'vm1', ifName: 'net1' }, s.plugin.parseConfig({ ...base, physnet: 'physnet1', vlan: 9, mac: '02:00:00:00:00:09' })),
    code('UNAVAILABLE', /driver vfio-pci is not loaded on this node \(modprobe vfio-pci\): VF 0000:03:10.0 cannot go to a VM/),
  );
  await assertUntouched(s);
  // driver "kernel" does not need it
  const r = await s.plugin.add({ containerId: 'ctr', ifName: 'net1' }, s.plugin.parseConfig({ ...base, physnet: 'physnet1', driver: 'kernel' }));
  assert.equal(r.driver, 'igbvf');
  await s.plugin.del({ containerId: 'ctr', ifName: 'net1' });
  await assertUntouched(s);
});

test('the bind fails halfway (vfio-pci probe fails after igbvf was unbound): rolled back to igbvf and the original VF settings', async () => {
  const s = setup();
  // VFs exist and the operator left VF 0 with its own settings before: those must come back, not zeros
  await s.sysfs.write('bus/pci/devices/0000:03:00.0/sriov_numvfs', '2');
  const before = { vf: 0, mac: '02:00:00:00:00:99', vlan: 5, vlanQos: 0, spoofchk: false, trust: false };
  await s.netlink.setVf('enp3s0f0', 0, { mac: before.mac, vlan: 5, spoofchk: false });
  (s.sysfs as FakeSysfs).failProbe('vfio-pci');
  const cfg = s.plugin.parseConfig({ ...base, physnet: 'physnet1', vlan: 100, spoofchk: true, mac: '02:11:22:33:44:55' });
  await assert.rejects(s.plugin.add({ containerId: 'vm1', ifName: 'net1' }, cfg), code('UNAVAILABLE', /0000:03:10.0: not bound to vfio-pci after 2000 ms \(now: none\)/));
  await assertUntouched(s, before);
  // the fault gone, the same ADD works and DEL gives back the same original settings
  (s.sysfs as FakeSysfs).failProbe('none');
  const r = await s.plugin.add({ containerId: 'vm1', ifName: 'net1' }, cfg);
  assert.equal(s.drv(r.pciAddress), 'vfio-pci');
  assert.deepEqual((await s.netlink.vfs('enp3s0f0'))[0], { vf: 0, mac: '02:11:22:33:44:55', vlan: 100, vlanQos: 0, spoofchk: true, trust: false });
  await s.plugin.del({ containerId: 'vm1', ifName: 'net1' });
  await assertUntouched(s, before);
});

test('VLAN, spoofchk and trust belong to the operator (the PF entry): another value is PERMISSION_DENIED naming each field; repeating or omitting them gets the operator\'s', async () => {
  const s = setup();
  const operator = { pfs: [{ pf: 'enp3s0f0', physnet: 'physnet1', numVfs: 2, vlan: 100, spoofchk: true }] };
  await assert.rejects(
    s.plugin.add({ containerId: 'vm1', ifName: 'net1' }, s.plugin.parseConfig({ ...operator, physnet: 'physnet1', vlan: 200, trust: true })),
    (e: unknown) => {
      code('PERMISSION_DENIED', /^vlan: is set by the operator for physnet physnet1 \(100\); asked 200; trust: trust on a VF of physnet physnet1 needs the operator's consent/)(e);
      assert.deepEqual(((e as AppError).details as { issues: { field: string }[] }).issues.map((i) => i.field), ['vlan', 'trust']);
      return true;
    },
  );
  await assert.rejects(
    s.plugin.add({ containerId: 'vm1', ifName: 'net1' }, s.plugin.parseConfig({ ...operator, physnet: 'physnet1', spoofchk: false })),
    code('PERMISSION_DENIED', /^spoofchk: is set by the operator for physnet physnet1 \(true\); asked false$/),
  );
  await assertUntouched(s);
  // omitted: the operator's values; repeated: the same
  const r = await s.plugin.add({ containerId: 'vm1', ifName: 'net1' }, s.plugin.parseConfig({ ...operator, physnet: 'physnet1' }));
  assert.equal(r.vlan, 100);
  const r2 = await s.plugin.add({ containerId: 'vm2', ifName: 'net1' }, s.plugin.parseConfig({ ...operator, physnet: 'physnet1', vlan: 100 }));
  const table = await s.netlink.vfs('enp3s0f0');
  assert.deepEqual([table[0]?.vlan, table[0]?.spoofchk, table[1]?.vlan, table[1]?.spoofchk], [100, true, 100, true]);
  await s.plugin.check({ containerId: 'vm1', ifName: 'net1' }, r);
  await s.plugin.check({ containerId: 'vm2', ifName: 'net1' }, r2);
  // the operator grants trust: asking for it is fine then
  const granted = { pfs: [{ ...operator.pfs[0]!, trust: true }] };
  await s.plugin.del({ containerId: 'vm2', ifName: 'net1' });
  await s.plugin.add({ containerId: 'vm2', ifName: 'net1' }, s.plugin.parseConfig({ ...granted, physnet: 'physnet1', trust: true }));
  assert.equal((await s.netlink.vfs('enp3s0f0'))[1]?.trust, true);
  await s.plugin.del({ containerId: 'vm1', ifName: 'net1' });
  await s.plugin.del({ containerId: 'vm2', ifName: 'net1' });
  await assertUntouched(s);
});
