/**
 * Host checks: against a fake sysfs/procfs tree (every branch decided by files we wrote) and against this machine
 * itself (whatever it lacks must be a fail with a fix, and `ok` follows what the config requires).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisesFromNodeConfig, runHostChecks, type Exec } from '../src/index.js';

function put(root: string, path: string, content = ''): void {
  mkdirSync(dirname(join(root, path)), { recursive: true });
  writeFileSync(join(root, path), content);
}

const fakeExec: Exec = async (file, args) => {
  if (file.endsWith('qemu-system-x86_64') && args[0] === '--version') return { code: 0, stdout: 'QEMU emulator version 9.2.0\n', stderr: '' };
  if (file.endsWith('qemu-system-x86_64') && args[0] === '-help') return { code: 0, stdout: '-run-with [async-teardown=on|off][,chroot=dir][user=username|uid:gid]\n', stderr: '' };
  if (file.endsWith('qemu-system-x86_64')) return { code: 0, stdout: 'name "igb", bus PCI, desc "Intel 82576"\n', stderr: '' };
  if (file === 'dpkg-query') return { code: 0, stdout: args.slice(3).map((p) => `${p} ii  1.0`).filter((l) => !l.startsWith('crun')).join('\n'), stderr: '' };
  if (file === 'chronyc') return { code: 0, stdout: 'Leap status     : Normal\n', stderr: '' };
  return { code: 1, stdout: '', stderr: `${file}: not here` };
};

test('a fake host: IOMMU with a shared VF group, SR-IOV PF with VFs on physnet1, hugepages, cgroup v2, a missing package', async () => {
  const root = mkdtempSync(join(tmpdir(), 'edgenfv-hostcheck-'));
  try {
    put(root, 'dev/kvm');
    put(root, 'sys/class/iommu/dmar0/x');
    // PF 0000:10:00.0 with 2 VFs: VF0 alone in group 7, VF1 sharing group 8 with another endpoint
    const pf = 'sys/devices/pci0000:00/0000:10:00.0';
    put(root, `${pf}/sriov_totalvfs`, '8\n');
    put(root, `${pf}/sriov_numvfs`, '2\n');
    mkdirSync(join(root, 'sys/class/net/ens1f0'), { recursive: true });
    symlinkSync(join(root, pf), join(root, 'sys/class/net/ens1f0/device'));
    for (const [i, vf] of ['0000:10:10.0', '0000:10:10.1'].entries()) {
      put(root, `sys/bus/pci/devices/${vf}/physfn`, '');
      put(root, `sys/bus/pci/devices/${vf}/class`, '0x020000\n');
      mkdirSync(join(root, 'sys/bus/pci/drivers', i === 0 ? 'vfio-pci' : 'igbvf'), { recursive: true });
      mkdirSync(join(root, `${pf}/virtfn${i}`), { recursive: true });
      symlinkSync(join(root, 'sys/bus/pci/drivers', i === 0 ? 'vfio-pci' : 'igbvf'), join(root, `${pf}/virtfn${i}/driver`));
      put(root, `sys/kernel/iommu_groups/${7 + i}/devices/${vf}`);
    }
    put(root, 'sys/bus/pci/devices/0000:11:00.0/class', '0x010802\n');
    put(root, 'sys/kernel/iommu_groups/8/devices/0000:11:00.0');
    put(root, 'sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages', '512\n');
    put(root, 'sys/devices/system/node/node0/hugepages/hugepages-2048kB/free_hugepages', '500\n');
    put(root, 'sys/devices/system/node/node1/hugepages/hugepages-1048576kB/nr_hugepages', '0\n');
    put(root, 'sys/devices/system/node/node1/hugepages/hugepages-1048576kB/free_hugepages', '0\n');
    put(root, 'proc/mounts', 'nodev /dev/hugepages hugetlbfs rw,pagesize=2M 0 0\n');
    put(root, 'sys/fs/cgroup/cgroup.controllers', 'cpuset cpu io memory pids\n');

    const promises = promisesFromNodeConfig({ qemu: { accel: 'kvm' }, physnets: { '0000:10:00.0': 'physnet1', '0000:20:00.0': 'physnet2' }, dataplanes: [{ kind: 'ovs-dpdk' }] });
    assert.deepEqual(promises.physnets, { physnet1: ['0000:10:00.0'], physnet2: ['0000:20:00.0'] });
    const r = await runHostChecks({ root, promises, exec: fakeExec, kvmProbe: { ok: true, reason: 'probed' } });
    const by = Object.fromEntries(r.checks.map((c) => [c.name, c]));
    assert.equal(by.kvm!.status, 'pass', by.kvm!.detail);
    assert.equal(by.iommu!.status, 'warn', by.iommu!.detail);
    assert.match(by.iommu!.detail, /group 8: 0000:10:10\.1, 0000:11:00\.0/);
    assert.match(by.iommu!.fix, /ACS/);
    assert.equal(by['vfio-pci']!.status, 'pass', by['vfio-pci']!.detail);
    assert.equal(by['sriov physnet1']!.status, 'pass', by['sriov physnet1']!.detail);
    assert.match(by['sriov physnet1']!.detail, /2 VFs on ens1f0 \[1 vfio-pci, 1 igbvf\]/);
    assert.equal(by['sriov physnet2']!.status, 'fail', 'a mapped PF that is not there');
    assert.match(by['sriov physnet2']!.fix, /physnets/);
    assert.equal(by.hugepages!.status, 'pass');
    assert.match(by.hugepages!.detail, /node0 2048kB: 500\/512 free, node1 1048576kB: 0\/0 free; hugetlbfs mounted/);
    assert.equal(by['ovs-dpdk']!.status, 'fail', 'promised, not installed in the fake root');
    assert.equal(by['ovs-dpdk']!.required, true);
    assert.equal(by['cgroup v2']!.status, 'pass');
    assert.equal(by.qemu!.status, 'pass');
    assert.equal(by.qemu!.detail, 'QEMU 9.2.0, igb, -run-with');
    assert.equal(by.packages!.status, 'fail');
    assert.match(by.packages!.fix, /apt-get install crun/);
    assert.equal(by['time sync']!.status, 'pass');
    assert.equal(r.ok, false);
    for (const c of r.checks) assert.equal(c.fix === '', c.status === 'pass', `${c.name}: a fix exactly when it did not pass`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('this machine: what it lacks is a fail with a fix; ok follows what the config requires', async () => {
  const promises = promisesFromNodeConfig({ qemu: { accel: 'kvm' }, physnets: { '0000:99:00.0': 'physnet1' } });
  const r = await runHostChecks({ promises });
  const by = Object.fromEntries(r.checks.map((c) => [c.name, c]));
  for (const name of ['kvm', 'iommu', 'vfio-pci', 'sriov physnet1', 'hugepages', 'ovs-dpdk', 'cgroup v2', 'qemu', 'packages', 'time sync']) assert.ok(by[name], `check ${name}`);
  for (const c of r.checks) {
    assert.ok(['pass', 'warn', 'fail'].includes(c.status));
    assert.ok(c.detail.length > 0);
    if (c.status !== 'pass') assert.ok(c.fix.length > 0, `${c.name} says what to do`);
  }
  const iommuGroups = existsSync('/sys/kernel/iommu_groups') ? readdirSync('/sys/kernel/iommu_groups').length : 0;
  if (iommuGroups === 0) {
    assert.equal(by.iommu!.status, 'fail');
    assert.match(by.iommu!.fix, /intel_iommu=on/);
    assert.equal(r.ok, false, 'physnets promised, no IOMMU');
  }
  if (!existsSync('/dev/kvm')) assert.equal(by.kvm!.status, 'fail');
  assert.equal(by['sriov physnet1']!.status, 'fail', 'no PF 0000:99:00.0 here');
  assert.equal(by.kvm!.required, true);
  // the same host without those promises: KVM/IOMMU still reported, no longer required
  const relaxed = await runHostChecks({ promises: promisesFromNodeConfig({}), kvmProbe: { ok: by.kvm!.status === 'pass', reason: 'as above' } });
  const rk = relaxed.checks.find((c) => c.name === 'kvm')!;
  assert.equal(rk.required, false);
  assert.equal(relaxed.ok, !relaxed.checks.some((c) => c.required && c.status === 'fail'));
});
