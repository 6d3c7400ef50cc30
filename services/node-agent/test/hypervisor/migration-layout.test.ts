/**
 * Live migration of a VM with hot-plugged devices between two real QEMUs (TCG) on this host, no guest kernel (the
 * VM idles in its firmware: QEMU migrates its devices all the same). A replica that joins a running tenant VM gets
 * its vCPUs, memory, image disk and NICs hot-plugged wherever they fit then, so a destination started from the
 * device list alone does not match; one started with the source's layout (`vmLayout`: `query-pci`,
 * `query-hotpluggable-cpus`, `query-memory-devices`; qemu-args `spec.layout`) takes the state.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseMacAddress, type MigrationVmLayout } from '@edgenfv/contracts';
import { silentLogger } from '@edgenfv/telemetry';
import { QemuDriver, type QemuVmHandle } from '../../src/hypervisor/qemu.js';
import { withQmp } from '../../src/hypervisor/qmp.js';
import { continueMigration, queryMigrate, startMigration, vmLayout, waitIncomingDone, waitMigration } from '../../src/hypervisor/migration.js';
import type { DiskDevice, NetDevice, VmSpec } from '../../src/hypervisor/types.js';
import { killQuiet, waitGone } from '../../src/proc.js';

const tag = `mgl${process.pid % 100000}`;

function spec(name: string, runDir: string, devices: VmSpec['devices'], over: Partial<VmSpec> = {}): VmSpec {
  return {
    sandboxId: `sb-${tag}-${name}`,
    vcpus: 1,
    maxVcpus: 3,
    memoryMiB: 128,
    maxMemoryMiB: 512,
    memory: { kind: 'memfd' },
    kernelArgs: '',
    devices: [{ kind: 'agent-channel', id: 'agent', socketPath: join(runDir, 'agent.sock'), name: 'edgenfv.agent' }, ...devices],
    runDir,
    machine: 'q35',
    accel: 'tcg',
    sandbox: true,
    hotplugSlots: 3,
    ...over,
  };
}

test('a VM with hot-plugged vCPU, DIMM, disk and NIC migrates into a QEMU started with its layout (and not into one started from its device list)', { timeout: 10 * 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), `${tag}-`));
  const driver = new QemuDriver({ logger: silentLogger() });
  const vms: QemuVmHandle[] = [];
  const taps = ['a0', 'a1', 'b0', 'b1', 'b2', 'c0', 'c1'].map((s) => `${tag}${s}`);
  t.after(async () => {
    for (const vm of vms) {
      killQuiet(vm.pid, 'SIGKILL');
      await waitGone(vm.pid, vm.procStartTicks, 5000);
    }
    for (const tap of taps) {
      try {
        execFileSync('ip', ['link', 'del', tap], { stdio: 'ignore' });
      } catch {
        /* gone */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });
  for (const tap of taps) execFileSync('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap']);
  const disk = (serial: string): DiskDevice => {
    const path = join(dir, `${serial}.img`);
    writeFileSync(path, Buffer.alloc(1024 * 1024));
    return { kind: 'disk', id: `img-${serial}`, path, serial };
  };
  const bootDisk = disk('boot');
  const hotDisk = disk('hot');
  const nic = (id: string, tap: string, mac: string): NetDevice => ({ kind: 'tap', id, ifName: tap, mac: parseMacAddress(mac) });
  const runDir = (n: string): string => {
    const d = join(dir, n);
    mkdirSync(d);
    return d;
  };

  // the source: booted with the first replica's NIC and disk, then a second replica joined (everything hot-plugged)
  const a = await driver.start(spec('a', runDir('a'), [nic('nboot', taps[0]!, '02:00:00:00:20:01'), bootDisk]), new AbortController().signal);
  vms.push(a);
  await driver.resize(a, { vcpus: 2, memoryMiB: 256 }, { memory: { kind: 'memfd' } });
  await driver.addDisk(a, hotDisk, { machine: 'q35' }); // the first free root port: rp1
  await driver.addNic(a, nic('nhot', taps[1]!, '02:00:00:00:20:02'), { machine: 'q35' }); // rp2
  const members = [{ allocId: 'first', guestIfNames: { eth0: 'eth0' } }, { allocId: 'second', guestIfNames: { eth0: 'eth01' } }];
  const bootSpec = spec('a', join(dir, 'a'), []);
  const layout: MigrationVmLayout = await vmLayout(a, bootSpec, members);
  assert.deepEqual(layout.boot, { vcpus: 1, maxVcpus: 3, memoryMiB: 128, maxMemoryMiB: 512 });
  assert.equal(layout.vcpus, 2);
  assert.equal(layout.memoryMiB, 256);
  assert.equal(layout.rootPorts, 4); // 1 boot NIC + 3 spare
  assert.deepEqual(layout.pci['nboot-nic'], { bus: 'rp0', addr: 0 });
  assert.deepEqual(layout.pci['img-hot-blk'], { bus: 'rp1', addr: 0 });
  assert.deepEqual(layout.pci['nhot-nic'], { bus: 'rp2', addr: 0 });
  assert.equal(layout.pci['img-boot-blk']?.bus, 'pcie.0');
  assert.equal(layout.pci.vser0?.bus, 'pcie.0');
  assert.equal(layout.cpus.length, 1);
  assert.deepEqual(layout.dimms.map((d) => [d.id, d.sizeMiB]), [['dimm0', 128]]);
  assert.deepEqual(layout.members, members);
  // the layout travels as JSON (source's check reply -> scheduler -> destination's allocation)
  const travelled = JSON.parse(JSON.stringify(layout)) as MigrationVmLayout;

  // the destination's devices: every member's NICs (its own taps, the source's device ids) and disks
  const destDevices = (x: string, y: string): VmSpec['devices'] => [nic('nboot', x, '02:00:00:00:20:01'), nic('nhot', y, '02:00:00:00:20:02'), bootDisk, hotDisk];

  // control: from the device list alone (as a single replica's destination is made) the state does not load
  const cDir = runDir('c');
  const c = await driver.start({ ...spec('c', cDir, destDevices(taps[5]!, taps[6]!)), incoming: `unix:${join(cDir, 'in.sock')}` }, new AbortController().signal);
  vms.push(c);
  await startMigration(a, `unix:${join(cDir, 'in.sock')}`);
  const failed = await waitMigration(a, ['pre-switchover'], 5 * 60_000, () => driver.alive(a));
  if (failed.status === 'pre-switchover') await continueMigration(a);
  const end = await waitMigration(a, ['completed', 'failed'], 5 * 60_000, () => driver.alive(a));
  assert.equal(end.status, 'failed', `a destination without the layout took the state: ${JSON.stringify(end)}`);
  await withQmp(a.apiSocket, async (q) => {
    if (!(await q.queryStatus()).running) await q.cont();
  });
  assert.equal((await withQmp(a.apiSocket, (q) => q.queryStatus())).status, 'running');

  // with the layout: one QEMU, the devices where the source has them, the hot-plugged vCPU and DIMM cold-plugged
  const bDir = runDir('b');
  const b = await driver.start({ ...spec('b', bDir, destDevices(taps[2]!, taps[3]!), { layout: travelled }), incoming: `unix:${join(bDir, 'in.sock')}` }, new AbortController().signal);
  vms.push(b);
  assert.deepEqual(b.slots, { rp0: 'nboot', rp1: 'img-hot', rp2: 'nhot', rp3: null });
  assert.deepEqual(b.dimms, { dimm0: 128 });
  assert.deepEqual(b.hotplugged, a.hotplugged);
  await startMigration(a, `unix:${join(bDir, 'in.sock')}`);
  const pre = await waitMigration(a, ['pre-switchover'], 5 * 60_000, () => driver.alive(a));
  assert.equal(pre.status, 'pre-switchover', JSON.stringify(pre));
  await continueMigration(a);
  const done = await waitMigration(a, ['completed'], 5 * 60_000, () => driver.alive(a));
  assert.equal(done.status, 'completed', JSON.stringify(done));
  await waitIncomingDone(b, 5 * 60_000, () => driver.alive(b), () => true);
  assert.equal((await withQmp(b.apiSocket, (q) => q.queryStatus())).status, 'running');
  assert.equal((await queryMigrate(a)).status, 'completed');
  // the destination now is what the source was: its layout reads back the same, and it can migrate on
  const again = await vmLayout(b, bootSpec, members);
  assert.deepEqual({ ...again, hotplugged: [] }, { ...layout, hotplugged: [] });
  const mem = await withQmp(b.apiSocket, (q) => q.queryMemorySizeSummary());
  assert.equal(mem['plugged-memory'], 128 * 1024 * 1024);
  // and it takes the next replica's NIC hot-plugged on a free port, as the source would have
  await driver.addNic(b, nic('nnext', taps[4]!, '02:00:00:00:20:03'), { machine: 'q35' });
  assert.equal(b.slots.rp3, 'nnext');
});
