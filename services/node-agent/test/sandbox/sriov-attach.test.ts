/**
 * The node agent's SR-IOV attachment on a fake SR-IOV host (this machine has no SR-IOV NIC; the emulated edge node
 * runs the same path for real): the VF's VLAN, spoofchk and trust come from the operator's network config, a tenant
 * asking for other values is PERMISSION_DENIED naming the field, and DEL gives the VF back.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { AppError, type AllocInterface } from '@edgenfv/contracts';
import { FakeSysfs, FakeVfNetlink } from '@edgenfv/netplugins';
import { silentLogger } from '@edgenfv/telemetry';
import { NetpluginsAttachments } from '../../src/sandbox/attachments.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

test('VF settings from the operator\'s network; a tenant\'s other VLAN or trust is PERMISSION_DENIED; DEL restores', async () => {
  const root = mkdtempSync(join(tmpdir(), 'na-sriov-sys-'));
  const stateDir = mkdtempSync(join(tmpdir(), 'na-sriov-st-'));
  dirs.push(root, stateDir);
  const sysfs = FakeSysfs.build(root, [{ bdf: '0000:03:00.0', ifName: 'enp3s0f0', totalVfs: 2, numVfs: 2 }]);
  const vfNetlink = new FakeVfNetlink(root);
  const att = new NetpluginsAttachments({
    stateDir, sysfsRoot: root, logger: silentLogger(), physnets: { enp3s0f0: 'physnet1' }, sriovHost: { sysfs, vfNetlink },
    networks: [{ name: 'radio', cidr: '10.40.0.0/24', vlan: 100, spoofchk: true }],
  });
  const iface = (extra: Partial<{ vlan: number; trust: boolean }> = {}): AllocInterface => ({
    name: 'up', type: 'sriov', mac: '02:00:00:00:40:01', network: 'radio', ips: ['10.40.0.5/24'],
    sriov: { pfPciAddress: '0000:03:00.0', vfPciAddress: '0000:03:10.0', vfIndex: 0, physnet: 'physnet1', ...extra },
  });
  const req = (i: AllocInterface) => ({ sandboxId: 'sb1', tenantId: 'acme', hostIfName: 'nvf0', netns: 'enfv-none', iface: i });
  await assert.rejects(att.add(req(iface({ vlan: 200, trust: true }))), (e: unknown) => {
    assert.ok(e instanceof AppError && e.code === 'PERMISSION_DENIED', String(e));
    assert.match(e.message, /^vlan: is set by the operator for physnet physnet1 \(100\); asked 200; trust: /);
    return true;
  });
  assert.equal(basename(readlinkSync(join(root, 'bus/pci/devices/0000:03:10.0/driver'))), 'igbvf');
  const r = await att.add(req(iface()));
  assert.equal(r.kind, 'sriov');
  assert.equal(basename(readlinkSync(join(root, 'bus/pci/devices/0000:03:10.0/driver'))), 'vfio-pci');
  assert.deepEqual((await vfNetlink.vfs('enp3s0f0'))[0], { vf: 0, mac: '02:00:00:00:40:01', vlan: 100, vlanQos: 0, spoofchk: true, trust: false });
  await att.del(req(iface()));
  await att.del(req(iface())); // again: already gone
  assert.equal(basename(readlinkSync(join(root, 'bus/pci/devices/0000:03:10.0/driver'))), 'igbvf');
  assert.deepEqual((await vfNetlink.vfs('enp3s0f0'))[0], { vf: 0, mac: '00:00:00:00:00:00', vlan: 0, vlanQos: 0, spoofchk: true, trust: false });
});
