/**
 * The QEMU driver against real QEMU (TCG here). No guest kernel: the VM idles in its firmware, which is enough for
 * spawn, QMP, hotplug, privilege drop, cgroup placement, stop and re-adoption. Booting a guest is tested with the
 * guest image in sandbox-boot.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { parseMacAddress } from '@edgenfv/contracts';
import { silentLogger } from '@edgenfv/telemetry';
import { QemuDriver } from '../../src/hypervisor/qemu.js';
import { withQmp } from '../../src/hypervisor/qmp.js';
import type { VmSpec } from '../../src/hypervisor/types.js';
import { killQuiet, processAlive, waitGone } from '../../src/proc.js';
import { VM_ROOT_DISKS, prepareVmRoot } from '../../src/hypervisor/vm-root.js';
import { cgroupV2Mount } from '../../src/sandbox/cgroup.js';
import { buildGuestImage } from '../../src/guest/index.js';

function spec(runDir: string, over: Partial<VmSpec> = {}): VmSpec {
  return {
    sandboxId: `sb-drv-${process.pid}`,
    vcpus: 1,
    maxVcpus: 3,
    memoryMiB: 128,
    maxMemoryMiB: 512,
    memory: { kind: 'memfd' },
    kernelArgs: '',
    devices: [],
    runDir,
    machine: 'q35',
    accel: 'tcg',
    sandbox: true,
    ...over,
  };
}

test('spawn, QMP, vCPU + memory + NIC hotplug, stop', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'na-qemu-'));
  const driver = new QemuDriver({ logger: silentLogger() });
  let vm: Awaited<ReturnType<QemuDriver['start']>> | undefined;
  const tap = `tqd${process.pid % 100000}`;
  t.after(async () => {
    if (vm) {
      killQuiet(vm.pid, 'SIGKILL');
      await waitGone(vm.pid, undefined, 5000);
    }
    try {
      execFileSync('ip', ['link', 'del', tap], { stdio: 'ignore' });
    } catch {
      /* gone */
    }
    rmSync(dir, { recursive: true, force: true });
  });
  vm = await driver.start(spec(dir, { hotplugSlots: 1 }), new AbortController().signal);
  assert.ok(driver.alive(vm));
  const st = await withQmp(vm.apiSocket, (q) => q.queryStatus());
  assert.equal(st.status, 'running');

  await driver.resize(vm, { vcpus: 3, memoryMiB: 384 }, { memory: { kind: 'memfd' } });
  const cpus = await withQmp(vm.apiSocket, (q) => q.queryCpusFast());
  assert.equal(cpus.length, 3);
  const mem = await withQmp(vm.apiSocket, (q) => q.queryMemorySizeSummary());
  assert.equal(mem['plugged-memory'], 256 * 1024 * 1024);
  assert.equal(vm.vcpus, 3);
  assert.equal(vm.memoryMiB, 384);

  execFileSync('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap']);
  await driver.addNic(vm, { kind: 'tap', id: 'hot0', ifName: tap, mac: parseMacAddress('02:00:00:00:10:01') }, { machine: 'q35' });
  const periph = await withQmp(vm.apiSocket, (q) => q.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' }));
  assert.ok(periph.some((p) => p.name === 'hot0-nic'));
  assert.equal(vm.slots.rp0, 'hot0');

  // the record survives JSON and a fresh driver re-adopts it
  const rec = driver.record(vm);
  const again = await new QemuDriver({ logger: silentLogger() }).adopt(JSON.parse(JSON.stringify(rec)));
  assert.ok(again);
  assert.equal(again.pid, vm.pid);

  await driver.stop(vm, { graceMs: 0 });
  assert.equal(driver.alive(vm), false);
  await driver.stop(vm, { graceMs: 0 }); // no-op when stopped
  assert.equal(await driver.adopt(rec), null);
  vm = undefined;
});

test('unprivileged uid via -run-with, seccomp on, placed in its cgroup before exec; kill -9 -> adopt says gone', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'na-qemu-'));
  const mount = cgroupV2Mount('/sys/fs/cgroup');
  assert.ok(mount, 'this test needs a writable cgroup v2 hierarchy');
  const cg = join(mount, `edgenfv-test-${process.pid}`);
  mkdirSync(cg);
  const driver = new QemuDriver({ logger: silentLogger() });
  let pid = 0;
  t.after(async () => {
    if (pid) {
      killQuiet(pid, 'SIGKILL');
      await waitGone(pid, undefined, 5000);
    }
    try {
      rmSync(cg, { recursive: false, force: true });
    } catch {
      /* rmdir below */
    }
    try {
      execFileSync('rmdir', [cg], { stdio: 'ignore' });
    } catch {
      /* gone */
    }
    rmSync(dir, { recursive: true, force: true });
  });
  // a secret in the agent's environment (as a NATS password once was) must not reach the VMM
  process.env.EDGENFV_TEST_SECRET = 's3cret-of-the-agent';
  const vm = await driver.start(spec(dir, { runAs: { uid: 420777, gid: 420777 }, cgroupDir: cg }), new AbortController().signal);
  delete process.env.EDGENFV_TEST_SECRET;
  pid = vm.pid;
  const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
  assert.ok(environ.some((e) => e.startsWith('PATH=')), environ.join(' '));
  assert.deepEqual(environ.filter((e) => /s3cret|^EDGENFV_|^HOME=|^USER=/.test(e)), [], `QEMU's environment: ${environ.join(' ')}`);
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  assert.match(status, /^Uid:\s+420777\s+420777\s+420777\s+420777/m);
  assert.match(status, /^Seccomp:\s+2/m);
  assert.match(readFileSync(`/proc/${pid}/cgroup`, 'utf8'), new RegExp(`^0::/edgenfv-test-${process.pid}$`, 'm'));
  assert.ok(readFileSync(join(cg, 'cgroup.procs'), 'utf8').split('\n').includes(String(pid)));
  const rec = driver.record(vm);
  process.kill(pid, 'SIGKILL');
  await waitGone(pid, undefined, 5000);
  assert.equal(processAlive(pid), false);
  assert.equal(await driver.adopt(rec), null);
  pid = 0;
  assert.ok(existsSync(dir));
});

test('chrooted QEMU (-run-with chroot=): the host\'s / is out of its reach; tap and disk hotplug work from inside its root', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'na-qemu-'));
  const root = join(dir, 'vm', 'root0');
  const uid = 420000 + (process.pid % 700);
  const tap = `tqc${process.pid % 100000}`;
  const driver = new QemuDriver({ logger: silentLogger() });
  let pid = 0;
  t.after(async () => {
    if (pid) {
      killQuiet(pid, 'SIGKILL');
      await waitGone(pid, undefined, 5000);
    }
    try {
      execFileSync('ip', ['link', 'del', tap], { stdio: 'ignore' });
    } catch {
      /* gone */
    }
    rmSync(dir, { recursive: true, force: true });
  });
  await prepareVmRoot(root, uid);
  mkdirSync(join(root, VM_ROOT_DISKS), { mode: 0o750 });
  chownSync(join(root, VM_ROOT_DISKS), 0, uid);
  const disk = join(root, VM_ROOT_DISKS, 'img0.img');
  writeFileSync(disk, Buffer.alloc(1 << 20));
  chownSync(disk, 0, uid);
  chmodSync(disk, 0o440);
  const vm = await driver.start(spec(dir, { runAs: { uid, gid: uid }, chrootDir: root, hotplugSlots: 2 }), new AbortController().signal);
  pid = vm.pid;
  // the kernel's view: QEMU's / is its root folder, and what it holds is all it can find there
  assert.equal(readlinkSync(`/proc/${pid}/root`), root);
  assert.deepEqual(readdirSync(`/proc/${pid}/root`).sort(), ['dev', 'disks']);
  assert.match(readFileSync(`/proc/${pid}/status`, 'utf8'), new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}`, 'm'));
  assert.equal((driver.record(vm) as { chrootDir?: string }).chrootDir, root, 'recorded: a re-adopted VM still hotplugs by paths in its root');
  // QEMU asked over QMP to open host files: gone from its world
  for (const host of ['/etc/hostname', dir, join(dir, 'qmp.sock')]) {
    await assert.rejects(
      withQmp(vm.apiSocket, (q) => q.execute('blockdev-add', { driver: 'raw', 'node-name': 'peek', 'read-only': true, file: { driver: 'file', filename: host, 'read-only': true } })),
      /No such file or directory|Could not open/,
      host,
    );
  }
  // the driver refuses a path outside the root instead of handing QEMU a path it cannot resolve
  await assert.rejects(driver.addDisk(vm, { kind: 'disk', id: 'img-out', path: '/etc/hostname', serial: 'out' }, { machine: 'q35' }), /outside the VM's root/);
  // hotplug by paths in the root: the image disk, a tap through <root>/dev/net/tun (the tap is the uid's)
  await driver.addDisk(vm, { kind: 'disk', id: 'img-0', path: disk, serial: 'img0' }, { machine: 'q35' });
  execFileSync('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap', 'user', String(uid), 'group', String(uid)]);
  await driver.addNic(vm, { kind: 'tap', id: 'hot0', ifName: tap, mac: parseMacAddress('02:00:00:00:10:02') }, { machine: 'q35' });
  const periph = await withQmp(vm.apiSocket, (q) => q.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' }));
  assert.ok(periph.some((p) => p.name === 'hot0-nic'), JSON.stringify(periph));
  assert.ok(periph.some((p) => p.name === 'img-0-blk'), JSON.stringify(periph));
  await driver.stop(vm, { graceMs: 0 });
  pid = 0;
});

test('grow after shrink (guest image, chrooted, TCG): vCPU + memory added, removed, added again; QEMU lives, the devices are there', async (t) => {
  // QEMU 10 under TCG aborted here (`tcg_register_thread: assertion failed: (n < tcg_max_ctxs)`: a re-plugged vCPU
  // took a context beyond maxcpus) and the second DIMM's backend id collided with the unplugged first one's
  const image = await buildGuestImage({ log: silentLogger() });
  const dir = mkdtempSync(join(tmpdir(), 'na-qemu-'));
  const root = join(dir, 'vm', 'root0');
  const uid = 420000 + ((process.pid + 1) % 700);
  const driver = new QemuDriver({ logger: silentLogger() });
  let pid = 0;
  t.after(async () => {
    if (pid) {
      killQuiet(pid, 'SIGKILL');
      await waitGone(pid, undefined, 5000);
    }
    rmSync(dir, { recursive: true, force: true });
  });
  await prepareVmRoot(root, uid);
  const s = spec(dir, {
    maxVcpus: 2,
    memoryMiB: 512,
    maxMemoryMiB: 768,
    kernelPath: image.kernelPath,
    initrdPath: image.initrdPath,
    systemDisk: image.systemDisk,
    kernelArgs: image.kernelArgs,
    runAs: { uid, gid: uid },
    chrootDir: root,
  });
  const vm = await driver.start(s, new AbortController().signal);
  pid = vm.pid;
  // the guest's kernel must be up to take the hot-unplugs (ACPI eject)
  for (let i = 0; i < 1200 && !/EDGENFV_AGENT_JS/.test(readFileSync(vm.consoleLog, 'utf8')); i++) await new Promise((r) => setTimeout(r, 250));
  assert.match(readFileSync(vm.consoleLog, 'utf8'), /EDGENFV_AGENT_JS/, 'the guest booted');
  const plugged = async (): Promise<{ cpus: number; dimms: string[] }> => ({
    cpus: (await withQmp(vm.apiSocket, (q) => q.queryCpusFast())).length,
    dimms: (await withQmp(vm.apiSocket, (q) => q.execute<{ data: { id: string } }[]>('query-memory-devices'))).map((d) => d.data.id),
  });

  await driver.resize(vm, { vcpus: 2, memoryMiB: 768 }, s);
  assert.deepEqual(await plugged(), { cpus: 2, dimms: ['dimm0'] });
  await driver.resize(vm, { vcpus: 1, memoryMiB: 512 }, s);
  assert.deepEqual([vm.vcpus, vm.memoryMiB], [1, 512]);
  assert.deepEqual((await plugged()).dimms, [], 'the guest released the DIMM (memory onlined movable)');
  assert.equal((await plugged()).cpus, 2, 'under TCG the vCPU stays plugged for the next grow');
  await driver.resize(vm, { vcpus: 2, memoryMiB: 768 }, s);
  assert.ok(driver.alive(vm), `QEMU died: ${readFileSync(join(dir, 'qemu.log'), 'utf8')}`);
  assert.deepEqual(await plugged(), { cpus: 2, dimms: ['dimm0'] });
  const mem = await withQmp(vm.apiSocket, (q) => q.queryMemorySizeSummary());
  assert.equal(mem['plugged-memory'], 256 * 1024 * 1024);
  assert.deepEqual([vm.vcpus, vm.memoryMiB], [2, 768]);
  assert.doesNotMatch(readFileSync(join(dir, 'qemu.log'), 'utf8'), /assertion|ERROR/);
  await driver.stop(vm, { graceMs: 0 });
  pid = 0;
});

test('QEMU exiting while the boot waits for the guest agent ends the start at once, not at the boot timeout', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'na-qemu-'));
  const driver = new QemuDriver({ logger: silentLogger() });
  let pid = 0;
  t.after(async () => {
    if (pid) killQuiet(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  let waitAborted = false;
  // the wait never ends by itself (as a guest agent that never comes); QEMU goes away under it
  const started = driver.start(spec(dir), new AbortController().signal, {
    waitReady: (vm, signal) => {
      pid = vm.pid;
      setTimeout(() => killQuiet(vm.pid, 'SIGKILL'), 300);
      return new Promise<void>((_, reject) => signal.addEventListener('abort', () => {
        waitAborted = true;
        reject(new Error('wait aborted'));
      }));
    },
  });
  await assert.rejects(started, /qemu exited during boot/);
  assert.ok(waitAborted, 'the wait for the guest was aborted');
  assert.ok(pid > 0 && !processAlive(pid), 'QEMU is gone');
});
