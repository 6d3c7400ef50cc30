// SR-IOV for real in an emulated edge node: a q35 TCG guest (QEMU >= 8) with intel-iommu and an igb PF, the
// generic Debian kernel, iproute2 and the plugin inside. The plugin's own code creates the VFs, allocates one, sets
// MAC/VLAN/spoofchk/trust on the PF, binds the VF to vfio-pci (IOMMU group checked), reports PCI address + MAC,
// and on DEL restores igbvf and the VF settings; the guest reads it all back from the real kernel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { genericVmlinux, nodeInitramfs, tenantInitramfs } from './emulated/node-image.js';

function qemuMajor(): number {
  const v = execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
  return Number(/version (\d+)\./.exec(v)?.[1] ?? 0);
}

test('SR-IOV plugin in an emulated edge node (q35 + intel-iommu + igb, TCG), and the VF data path into a nested tenant VM', { timeout: 1_500_000 }, async () => {
  assert.ok(qemuMajor() >= 8, 'QEMU >= 8 (the igb SR-IOV model) is needed: apt-get install -t bookworm-backports qemu-system-x86');
  // Stretch: QEMU itself goes into the node too, for a tiny tenant VM given the VF with -device vfio-pci
  const qemuBin = execFileSync('sh', ['-c', 'command -v qemu-system-x86_64'], { encoding: 'utf8' }).trim();
  const { kernel, initrd } = await nodeInitramfs(fileURLToPath(new URL('./emulated/sriov-guest.js', import.meta.url)), // the emulated VT-d runs without interrupt remapping (intremap=off): vfio must be told that is acceptable here
    ['igb', 'igbvf', 'vfio_iommu_type1 allow_unsafe_interrupts=1', 'vfio_pci'], {
    bins: [qemuBin],
    files: [
      ...['qboot.rom', 'kvmvapic.bin', 'linuxboot_dma.bin', 'pvh.bin'].map((f) => [`/usr/share/qemu/${f}`, `/qemu/${f}`] as [string, string]),
      ['/usr/share/seabios/bios-256k.bin', '/qemu/bios-256k.bin'],
      // the nested tenant VM: uncompressed kernel (PVH) and a busybox + igbvf initramfs
      [genericVmlinux(), '/l2/vmlinux'],
      [tenantInitramfs('10.77.0.2/24'), '/l2/initrd.cpio'],
    ],
  });
  const args = [
    '-M', 'q35,accel=tcg', '-cpu', 'max', '-m', '2G', '-smp', '1', '-nographic', '-no-reboot', '-nodefaults', '-serial', 'stdio',
    '-kernel', kernel, '-initrd', initrd,
    '-append', 'console=ttyS0 intel_iommu=on panic=-1 quiet',
    '-device', 'intel-iommu,intremap=off,caching-mode=on',
    '-device', 'pcie-root-port,id=rp0,chassis=1',
    '-netdev', 'user,id=n0', '-device', 'igb,bus=rp0,netdev=n0,mac=52:54:00:12:34:56',
  ];
  const qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  qemu.stdout.on('data', (b: Buffer) => (out += b.toString()));
  qemu.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((r) => qemu.on('exit', (c) => r(c)));
  const timer = setTimeout(() => qemu.kill('SIGKILL'), 1_440_000);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
    if (qemu.exitCode === null) qemu.kill('SIGKILL');
  }
  const marks = new Map<string, unknown>();
  for (const line of out.split(/\r?\n/)) {
    const m = /MARK_JSON (\w+) (.*)$/.exec(line);
    if (m) marks.set(m[1]!, JSON.parse(m[2]!));
  }
  assert.ok(!/MARK_MODPROBE_FAIL/.test(out), `modules failed to load:\n${out.slice(-3000)}`);
  assert.match(out, /MARK_DONE/, `the guest did not finish:\n${out.slice(-4000)}`);
  const pf = marks.get('pf') as { pci: string; totalVfs: number; driver: string };
  assert.equal(pf.driver, 'igb');
  assert.equal(pf.totalVfs, 7);
  const add = marks.get('add') as { pciAddress: string; mac: string; vfIndex: number; vlan: number; driver: string; iommuGroup: number; pfPciAddress: string };
  assert.equal(add.pfPciAddress, pf.pci);
  assert.match(add.pciAddress, /^0000:01:10\.[0-7]$/);
  assert.equal(add.mac, '02:11:22:33:44:55');
  assert.equal(add.driver, 'vfio-pci');
  assert.equal(add.vlan, 100);
  assert.deepEqual(marks.get('addAgain'), { same: true });
  const after = marks.get('afterAdd') as { vf: { address: string; vlan_list?: Array<{ vlan: number }>; vlan?: number; spoofchk: boolean; trust: boolean }; driver: string; iommuGroup: string; groupDevices: string[]; devVfio: boolean; numVfs: number };
  assert.equal(after.numVfs, 2, 'the plugin created 2 VFs');
  assert.equal(after.vf.address, '02:11:22:33:44:55');
  assert.equal(after.vf.vlan_list?.[0]?.vlan ?? after.vf.vlan, 100);
  assert.equal(after.vf.spoofchk, true);
  assert.equal(after.vf.trust, false);
  assert.equal(after.driver, 'vfio-pci');
  assert.equal(Number(after.iommuGroup), add.iommuGroup);
  assert.deepEqual(after.groupDevices, [add.pciAddress]);
  assert.equal(after.devVfio, true, '/dev/vfio/<group> appeared');
  assert.deepEqual(marks.get('check'), { ok: true });
  const del = marks.get('afterDel') as { vf: { address: string; vlan_list?: Array<{ vlan: number }>; vlan?: number }; driver: string; override: string; claims: string[]; records: string[] };
  assert.equal(del.driver, 'igbvf', 'the original driver is back');
  assert.equal(del.override, '(null)');
  const original = marks.get('original') as { driver: string; driverOverride: string | null; settings: { mac: string; vlan: number; spoofchk: boolean; trust: boolean } };
  assert.equal(original.driver, 'igbvf');
  assert.equal(original.driverOverride, null);
  // igb reports no administrative MAC for a fresh VF (the VF picked a random one itself); DEL puts "no MAC" back,
  // and the re-probed igbvf gets a new random MAC from the PF: the attachment's MAC is gone either way
  assert.equal(original.settings.mac, '00:00:00:00:00:00');
  assert.equal(original.settings.vlan, 0);
  assert.notEqual(del.vf.address, '02:11:22:33:44:55', 'the attachment MAC is gone');
  assert.equal((del.vf as { spoofchk?: boolean }).spoofchk, original.settings.spoofchk);
  assert.equal((del.vf as { trust?: boolean }).trust, original.settings.trust);
  assert.equal(del.vf.vlan_list?.[0]?.vlan ?? del.vf.vlan ?? 0, 0, 'the VLAN is gone');
  assert.ok((marks.get('afterDel') as { vfNetdevs: string[] }).vfNetdevs.length > 0, 'igbvf gave the VF its netdev back');
  assert.deepEqual(del.claims, []);
  assert.deepEqual(del.records, []);
  // the data path: the nested tenant VM found the VF by its PCI path, the PF's pings were answered, the VF came back
  const dp = marks.get('datapath') as { vfPciAddress: string; l2: { foundBy: string; guestPciAddress: string; mac: string } | null; pingsSent: number; pingsReceived: number; restored: boolean; l2InitMs: number; l2VfReadyMs: number; console: string };
  console.log(`nested tenant VM: at /init ${dp?.l2InitMs} ms, VF configured ${dp?.l2VfReadyMs} ms after its QEMU started`);
  console.log(JSON.stringify({ vfPciAddress: dp?.vfPciAddress, guestPciAddress: dp?.l2?.guestPciAddress, foundBy: dp?.l2?.foundBy, pingsSent: dp?.pingsSent, pingsReceived: dp?.pingsReceived, restored: dp?.restored }));
  assert.ok(dp?.l2, `the nested tenant VM reported its VF:\n${dp?.console}`);
  assert.equal(dp.l2.foundBy, 'pci');
  assert.match(dp.l2.guestPciAddress, /^0000:[0-9a-f]{2}:00\.0$/);
  assert.equal(dp.l2.mac, '02:11:22:33:44:66', 'the VF has the MAC set on the PF');
  assert.equal(dp.pingsSent, 5);
  assert.ok(dp.pingsReceived >= 4, `pings from the PF answered by the tenant VM: ${dp.pingsReceived}/5`);
  assert.equal(dp.restored, true);
});
