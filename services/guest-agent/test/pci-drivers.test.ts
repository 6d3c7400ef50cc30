import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IprouteIp } from '../src/net/ip.js';
import { LinuxNetSysfs } from '../src/net/sysfs.js';
import { PciDrivers } from '../src/net/pci-drivers.js';
import { updateInterfaces } from '../src/net/interfaces.js';
import { makeNetns } from './netns-helper.js';

// A guest's view: a VF at 0000:00:06.0 (igbvf's 8086:10ca) without a driver, so without a netdev; the kernel's
// modules.alias (a few real lines of the generic 6.1 kernel); modprobe stands in for the kernel: it "probes" the VF
// by creating its netdev (a veth in the test's netns) with the sysfs links the real driver would make.
const VF = '0000:00:06.0';
const MODALIAS = 'pci:v00008086d000010CAsv00001AF4sd00001100bc02sc00i00';
const ALIASES = [
  'alias pci:v00008086d000010CAsv*sd*bc*sc*i* igbvf',
  'alias pci:v00008086d0000152Esv*sd*bc*sc*i* igbvf',
  'alias pci:v00008086d00001889sv*sd*bc*sc*i* iavf',
  'alias pci:v00008086d000010EDsv*sd*bc*sc*i* ixgbevf',
  'alias pci:v000015B3d0000101[0-F]sv*sd*bc*sc*i* mlx5_core',
  'alias pci:v00008086d*sv*sd*bc02sc00i* e1000e_nonsense_should_not_win',
].join('\n');

const dirs: string[] = [];
const ns = makeNetns('pcidrv');
after(() => {
  ns.remove();
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
});

function guestTree(): { sys: string; mods: string } {
  const sys = mkdtempSync(join(tmpdir(), 'ga-pcidrv-'));
  const mods = mkdtempSync(join(tmpdir(), 'ga-mods-'));
  dirs.push(sys, mods);
  const dev = join(sys, 'devices', 'pci0000:00', VF);
  mkdirSync(dev, { recursive: true });
  writeFileSync(join(dev, 'modalias'), `${MODALIAS}\n`);
  writeFileSync(join(dev, 'class'), '0x020000\n');
  mkdirSync(join(sys, 'bus', 'pci', 'devices'), { recursive: true });
  symlinkSync(`../../../devices/pci0000:00/${VF}`, join(sys, 'bus', 'pci', 'devices', VF));
  writeFileSync(join(mods, 'modules.alias'), `${ALIASES}\n`);
  return { sys, mods };
}

test('modules.alias patterns: the VF families match their modules, ranges included; no match is null', async () => {
  const { sys, mods } = guestTree();
  const d = new PciDrivers({ sysRoot: sys, modulesDir: mods, modprobe: async () => undefined });
  assert.equal(await d.moduleFor(MODALIAS), 'igbvf');
  assert.equal(await d.moduleFor('pci:v00008086d00001889sv00008086sd00000000bc02sc00i00'), 'iavf');
  assert.equal(await d.moduleFor('pci:v000015B3d0000101Esv000015B3sd00000000bc02sc00i00'), 'mlx5_core');
  assert.equal(await d.moduleFor('pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00'), null);
});

test('a NIC wanted by PCI address whose VF has no driver: the guest agent loads igbvf once, waits for the netdev, configures it', async () => {
  const { sys, mods } = guestTree();
  const loaded: string[] = [];
  const modprobe = async (m: string) => {
    loaded.push(m);
    // the driver's probe, a moment later: driver link, netdev with a random MAC
    setTimeout(() => {
      const dev = join(sys, 'devices', 'pci0000:00', VF);
      mkdirSync(join(sys, 'bus', 'pci', 'drivers', m), { recursive: true });
      symlinkSync(`../../../bus/pci/drivers/${m}`, join(dev, 'driver'));
      ns.ip('link', 'add', 'eth9', 'type', 'veth', 'peer', 'name', 'peth9');
      // the kernel renames the sysfs entry with the link; the fake tree has both names
      for (const n of ['eth9', 'data0']) {
        mkdirSync(join(sys, 'class', 'net', n), { recursive: true });
        symlinkSync(`../../../devices/pci0000:00/${VF}`, join(sys, 'class', 'net', n, 'device'));
      }
    }, 300);
  };
  const drivers = new PciDrivers({ sysRoot: sys, modulesDir: mods, modprobe });
  const deps = { ip: new IprouteIp({ netns: ns.name }), sysfs: new LinuxNetSysfs(sys), drivers };
  // no hotplug wait asked: loading a driver gives the probe its own time
  const nics = await updateInterfaces(deps, { interfaces: [{ pciAddress: VF, mac: '02:11:22:33:44:55', name: 'data0', addresses: ['10.9.0.2/24'] }] });
  assert.deepEqual(loaded, ['igbvf']);
  assert.deepEqual(nics.map((n) => [n.name, n.mac, n.pciAddress, n.driver, n.addresses]), [['data0', '02:11:22:33:44:55', VF, 'igbvf', ['10.9.0.2/24']]]);
  // bound now: a repeat or a scan loads nothing more
  await updateInterfaces(deps, { interfaces: [{ pciAddress: VF, mac: '02:11:22:33:44:55', name: 'data0', addresses: ['10.9.0.2/24'] }] });
  assert.deepEqual(await new PciDrivers({ sysRoot: sys, modulesDir: mods, modprobe }).scan(), []);
  assert.deepEqual(loaded, ['igbvf']);
});

test('a PCI device no module claims: NOT_FOUND after the wait, naming the PCI address; scan loads a driverless VF present at boot', async () => {
  const { sys, mods } = guestTree();
  writeFileSync(join(mods, 'modules.alias'), 'alias pci:v000015B3d00001018sv*sd*bc*sc*i* mlx5_core\n');
  const loaded: string[] = [];
  const drivers = new PciDrivers({ sysRoot: sys, modulesDir: mods, modprobe: async (m) => void loaded.push(m) });
  const deps = { ip: new IprouteIp({ netns: ns.name }), sysfs: new LinuxNetSysfs(sys), drivers };
  await assert.rejects(updateInterfaces(deps, { interfaces: [{ pciAddress: VF, name: 'x0' }], hotplugTimeoutMs: 200 }), /NIC not found: interfaces\[0\] \(pci 0000:00:06.0\)/);
  assert.equal(loaded.length, 0);
  writeFileSync(join(mods, 'modules.alias'), `${ALIASES}\n`);
  const atBoot: string[] = [];
  assert.deepEqual(await new PciDrivers({ sysRoot: sys, modulesDir: mods, modprobe: async (m) => void atBoot.push(m) }).scan(), ['igbvf']);
  assert.deepEqual(atBoot, ['igbvf']);
});

test('a NIC found by PCI path (root port 00:10.0, the device behind it): the guest resolves the bus number itself and reports the address', async () => {
  // the guest numbered the bus behind the root port 05 (the host does not know that)
  const sys = mkdtempSync(join(tmpdir(), 'ga-pcipath-'));
  dirs.push(sys);
  const rp = join(sys, 'devices', 'pci0000:00', '0000:00:10.0');
  const dev = join(rp, '0000:05:00.0');
  mkdirSync(join(dev, 'net'), { recursive: true });
  mkdirSync(join(sys, 'devices', 'pci0000:00', '0000:00:11.0', '0000:06:00.0'), { recursive: true });
  ns.ip('link', 'add', 'eth7', 'type', 'veth', 'peer', 'name', 'peth7');
  for (const n of ['eth7', 'vf7']) {
    mkdirSync(join(sys, 'class', 'net', n), { recursive: true });
    symlinkSync('../../../devices/pci0000:00/0000:00:10.0/0000:05:00.0', join(sys, 'class', 'net', n, 'device'));
  }
  const sysfs = new LinuxNetSysfs(sys);
  assert.equal(await sysfs.resolvePciPath('10.0/00.0'), '0000:05:00.0');
  assert.equal(await sysfs.resolvePciPath('11.0/00.0'), '0000:06:00.0');
  assert.equal(await sysfs.resolvePciPath('12.0/00.0'), '');
  const deps = { ip: new IprouteIp({ netns: ns.name }), sysfs };
  const nics = await updateInterfaces(deps, { interfaces: [{ pciPath: '10.0/00.0', mac: '02:11:22:33:44:77', name: 'vf7', addresses: ['10.9.7.2/24'] }] });
  assert.deepEqual(nics.map((n) => [n.name, n.mac, n.pciAddress, n.addresses]), [['vf7', '02:11:22:33:44:77', '0000:05:00.0', ['10.9.7.2/24']]]);
  // nothing behind a root port: NOT_FOUND naming the path; a malformed path: INVALID_ARGUMENT naming the field
  await assert.rejects(updateInterfaces(deps, { interfaces: [{ pciPath: '12.0/00.0', name: 'x1' }] }), /NIC not found: interfaces\[0\] \(pci path 12\.0\/00\.0: no device there\)/);
  await assert.rejects(updateInterfaces(deps, { interfaces: [{ pciPath: '10.0/../00.0', name: 'x1' }] }), /interfaces\[0\]\.pciPath: not a PCI path/);
});
