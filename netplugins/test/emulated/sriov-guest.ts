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
  if (existsSync('/usr/bin/qemu-system-x86_64')) out('datapath', await dataPath(pf.ifName, sriov));
}

/**
 * The VF data path through a nested tenant VM: a second attachment (no VLAN: the PF side pings untagged), a minimal
 * tenant VM (PVH vmlinux + busybox + igbvf) given the VF on a root port at 00:10.0, as the node agent places it; the
 * tenant finds the VF by that PCI path and takes 10.77.0.2/24; the PF (10.77.0.1/24) pings it; DEL gives the VF back.
 */
async function dataPath(pfIf: string, sriov: ReturnType<typeof createAttachments>['sriov']): Promise<Record<string, unknown>> {
  const ctx = { containerId: 'tenant-vm2', ifName: 'uplink' };
  const res = await sriov.add(ctx, sriov.parseConfig({ pfs: [{ pf: pfIf, physnet: 'physnet1', numVfs: 2 }], physnet: 'physnet1', mac: '02:11:22:33:44:66' }));
  execFileSync('ip', ['addr', 'add', '10.77.0.1/24', 'dev', pfIf]);
  const t0 = Date.now();
  const q = spawn('/usr/bin/qemu-system-x86_64', [
    '-M', 'q35', '-accel', 'tcg', '-cpu', 'max', '-smp', '1', '-m', '256M', '-nodefaults', '-nographic', '-no-reboot', '-serial', 'stdio', '-L', '/qemu',
    '-kernel', '/l2/vmlinux', '-initrd', '/l2/initrd.cpio', '-append', 'console=ttyS0 quiet panic=-1 cryptomgr.notests mitigations=off',
    '-device', 'pcie-root-port,id=rp0,chassis=1,slot=1,addr=0x10', '-device', `vfio-pci,host=${res.pciAddress},id=vf0,bus=rp0`,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let con = '';
  const seen: Record<string, number> = {};
  const got = new Promise<Record<string, unknown> | null>((resolve) => {
    const onData = (b: Buffer) => {
      con += b.toString();
      if (!seen.init && /MARK_L2_INIT/.test(con)) seen.init = Date.now() - t0;
      const m = /MARK_L2 (\{.*\})/.exec(con);
      if (m && !seen.vf) {
        seen.vf = Date.now() - t0;
        try {
          resolve(JSON.parse(m[1]!) as Record<string, unknown>);
        } catch {
          resolve({ unparsed: m[1] });
        }
      }
    };
    q.stdout.on('data', onData);
    q.stderr.on('data', onData);
    q.on('exit', () => resolve(null));
  });
  const timer = setTimeout(() => q.kill('SIGKILL'), 1_200_000);
  const l2 = await got;
  let ping = '';
  if (l2) {
    try {
      ping = execFileSync('busybox', ['ping', '-c', '5', '-W', '10', '10.77.0.2'], { encoding: 'utf8' });
    } catch (e) {
      ping = String((e as { stdout?: string }).stdout ?? e);
    }
  }
  const pinged = Date.now() - t0;
  q.kill('SIGKILL');
  clearTimeout(timer);
  await new Promise((r) => (q.exitCode !== null ? r(null) : q.once('exit', r)));
  const m = /(\d+) packets transmitted, (\d+) packets received/.exec(ping);
  await sriov.del(ctx);
  const vfDir = `/sys/bus/pci/devices/${res.pciAddress}`;
  let driver = link(`${vfDir}/driver`);
  for (let i = 0; i < 50 && driver !== 'igbvf'; i++) {
    await sleep(100);
    driver = link(`${vfDir}/driver`);
  }
  const vf = ipj('link', 'show', pfIf)[0].vfinfo_list.find((v: { vf: number }) => v.vf === res.vfIndex);
  return {
    vfPciAddress: res.pciAddress, l2, pingsSent: Number(m?.[1] ?? 0), pingsReceived: Number(m?.[2] ?? 0),
    restored: driver === 'igbvf' && vf?.address !== '02:11:22:33:44:66',
    l2InitMs: seen.init ?? null, l2VfReadyMs: seen.vf ?? null, pingDoneMs: pinged, console: l2 ? '' : con.slice(-2000),
  };
}

main().then(
  () => console.log('MARK_DONE'),
  (err: unknown) => {
    console.log(`MARK_FAIL ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
