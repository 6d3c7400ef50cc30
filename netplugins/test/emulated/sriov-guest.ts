// Runs INSIDE the emulated edge node (q35 TCG guest with an igb PF, see ../sriov-emulated.test.ts): the SR-IOV
// plugin's own code against the real kernel, and independent read-backs (`ip -j`, sysfs links) printed as
// `MARK_JSON <name> <json>` lines on the console for the host test to check.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, readdirSync } from 'node:fs';
import { basename } from 'node:path';
import { createAttachments, discoverPfs, RealSysfs, IpNetlink } from '../../src/index.js';

const out = (name: string, v: unknown) => console.log(`MARK_JSON ${name} ${JSON.stringify(v)}`);
const ipj = (...a: string[]) => JSON.parse(execFileSync('ip', ['-j', '-d', ...a], { encoding: 'utf8' }));
const link = (p: string) => (existsSync(p) ? basename(readlinkSync(p)) : null);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const sysfs = new RealSysfs('/sys');
  const [pf] = await discoverPfs(sysfs);
  if (!pf?.ifName) throw new Error('no SR-IOV PF with a netdev found');
  out('pf', { pci: pf.pciAddress, ifName: pf.ifName, totalVfs: pf.totalVfs, numVfs: pf.numVfs, driver: pf.driver });
  execFileSync('ip', ['link', 'set', pf.ifName, 'up']);
  const { sriov } = createAttachments({ stateDir: '/run/netplugins', netlink: new IpNetlink() });
  const ctx = { containerId: 'tenant-vm1', ifName: 'uplink' };
  const cfg = sriov.parseConfig({
    pfs: [{ pf: pf.ifName, physnet: 'physnet1', numVfs: 2 }],
    physnet: 'physnet1', vlan: 100, spoofchk: true, trust: false, mac: '02:11:22:33:44:55',
  });
  const res = await sriov.add(ctx, cfg);
  out('add', res);
  // what ADD recorded of the host before changing it (the VF came up with igbvf and its own random MAC)
  out('original', JSON.parse(readFileSync('/run/netplugins/records/sriov/tenant-vm1~uplink.json', 'utf8')).original);
  const again = await sriov.add(ctx, cfg);
  out('addAgain', { same: JSON.stringify(again) === JSON.stringify(res) });
  const vfDir = `/sys/bus/pci/devices/${res.pciAddress}`;
  const group = link(`${vfDir}/iommu_group`);
  out('afterAdd', {
    vf: ipj('link', 'show', pf.ifName)[0].vfinfo_list.find((v: { vf: number }) => v.vf === res.vfIndex),
    driver: link(`${vfDir}/driver`),
    iommuGroup: group,
    groupDevices: group ? readdirSync(`/sys/kernel/iommu_groups/${group}/devices`) : [],
    devVfio: group ? existsSync(`/dev/vfio/${group}`) : false,
    numVfs: readdirSync(`/sys/bus/pci/devices/${pf.pciAddress}`).filter((n) => n.startsWith('virtfn')).length,
  });
  await sriov.check(ctx, res);
  out('check', { ok: true });
  if (existsSync('/usr/bin/qemu-system-x86_64')) out('nested', await nestedVm(res.pciAddress));
  await sriov.del(ctx);
  await sriov.del(ctx);
  let driver = link(`${vfDir}/driver`);
  for (let i = 0; i < 50 && driver !== 'igbvf'; i++) {
    await sleep(100);
    driver = link(`${vfDir}/driver`);
  }
  out('afterDel', {
    vf: ipj('link', 'show', pf.ifName)[0].vfinfo_list.find((v: { vf: number }) => v.vf === res.vfIndex),
    driver,
    override: execFileSync('cat', [`${vfDir}/driver_override`], { encoding: 'utf8' }).trim(),
    vfNetdevs: existsSync(`${vfDir}/net`) ? readdirSync(`${vfDir}/net`) : [],
    claims: existsSync('/run/netplugins/sriov-claims') ? readdirSync('/run/netplugins/sriov-claims') : [],
    records: existsSync('/run/netplugins/records/sriov') ? readdirSync('/run/netplugins/records/sriov') : [],
  });
}

/** A tiny tenant VM (QEMU, paused before its firmware runs) given the VF with `-device vfio-pci,host=<VF>`. */
function nestedVm(pci: string): Promise<{ exit: number | null; sawVf: boolean; info: string }> {
  return new Promise((resolve) => {
    const q = spawn('/usr/bin/qemu-system-x86_64', [
      '-M', 'q35', '-accel', 'tcg', '-m', '32M', '-nodefaults', '-display', 'none', '-S', '-L', '/qemu', '-bios', '/qemu/qboot.rom',
      '-device', `vfio-pci,host=${pci},id=vf0`, '-monitor', 'stdio',
    ], { stdio: ['pipe', 'pipe', 'pipe'] });
    let info = '';
    q.stdout.on('data', (b: Buffer) => (info += b.toString()));
    q.stderr.on('data', (b: Buffer) => (info += b.toString()));
    const t = setTimeout(() => q.kill('SIGKILL'), 240_000);
    q.stdin.write('info pci\n');
    const poll = setInterval(() => {
      if (/id "vf0"/.test(info)) {
        clearInterval(poll);
        q.stdin.end('quit\n');
      }
    }, 100);
    q.on('exit', (code) => {
      clearTimeout(t);
      clearInterval(poll);
      resolve({ exit: code, sawVf: /Ethernet controller: PCI device 8086:10ca[\s\S]*id "vf0"/.test(info), info: info.slice(-1500) });
    });
  });
}

main().then(
  () => console.log('MARK_DONE'),
  (err: unknown) => {
    console.log(`MARK_FAIL ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
