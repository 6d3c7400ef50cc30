/**
 * Issue 12, disk full: the node's state folder on a small tmpfs that is filled up. A teardown still stops QEMU and
 * frees the netns (before: the first record write threw and QEMU kept running); a spawn whose record cannot be
 * written kills the QEMU it started (before: a VM no record knew of). Real QEMU (TCG, no guest kernel).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@edgenfv/telemetry';
import { parseConfig } from '../../src/config.js';
import { QemuDriver } from '../../src/hypervisor/qemu.js';
import { Cgroups } from '../../src/sandbox/cgroup.js';
import { NetpluginsAttachments } from '../../src/sandbox/attachments.js';
import { SandboxManager } from '../../src/sandbox/manager.js';
import { processAlive, procCmdline, waitGone, killQuiet } from '../../src/proc.js';
import { makeAlloc } from '../helpers/alloc.js';
import { RecordingGuest } from '../helpers/recording-guest.js';
import { removeCgroupParent } from '../helpers/cleanup.js';

function fill(dir: string): void {
  const fd = openSync(join(dir, 'filler'), 'w');
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
}

function qemuOf(sandboxPrefix: string): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map(Number)
    .filter((p) => procCmdline(p).some((a) => a.startsWith(`guest=${sandboxPrefix}`)) && processAlive(p));
}

function setup(t: import('node:test').TestContext, tag: string): { m: SandboxManager; stateDir: string; onExec: { fn?: () => void } } {
  const mnt = mkdtempSync(join(tmpdir(), `na-full-${tag}-`));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
  const stateDir = join(mnt, 'state');
  const cgParent = `edgenfv-full${tag}${process.pid}`;
  const cfg = parseConfig({ nodeId: 'n1', stateDir, vmBaseMemoryMiB: 128, qemu: { accel: 'tcg', maxVcpus: 2, maxMemoryMiB: 512 }, isolation: { cgroupParent: cgParent } });
  const log = silentLogger();
  const onExec: { fn?: () => void } = {};
  const m = new SandboxManager({
    cfg,
    driver: new QemuDriver({ logger: log }),
    accel: 'tcg',
    guest: new RecordingGuest(),
    attachments: new NetpluginsAttachments({ stateDir, sysfsRoot: '/sys', physnets: {}, logger: log }),
    cgroups: new Cgroups(cfg.isolation.cgroupRoot, cgParent, log),
    logger: log,
    image: {},
    events: { onExec: () => onExec.fn?.() },
  });
  t.after(async () => {
    for (const p of qemuOf(`sb-full${tag}`)) killQuiet(p, 'SIGKILL');
    rmSync(join(mnt, 'filler'), { force: true });
    await m.stopAll().catch(() => undefined);
    await removeCgroupParent(cgParent);
    try {
      execFileSync('umount', [mnt]);
    } catch {
      execFileSync('umount', ['-l', mnt]);
    }
    rmSync(mnt, { recursive: true, force: true });
  });
  return { m, stateDir: mnt, onExec };
}

test('disk full: the teardown still stops QEMU and removes the netns', async (t) => {
  const { m, stateDir } = setup(t, 'a');
  await m.init();
  await m.ensureReplica(makeAlloc({ allocId: 'd1', tenantId: 'fulla' }));
  const rec = m.sandboxes()[0]!;
  const pid = m.vmOf(rec.sandboxId)!.pid;
  assert.ok(processAlive(pid));
  fill(stateDir);
  await m.removeReplica('fulla', 'd1');
  await waitGone(pid, undefined, 10_000);
  assert.equal(processAlive(pid), false, 'QEMU stopped although no record could be written');
  assert.equal(existsSync(`/var/run/netns/${rec.netns}`), false);
});

test('disk full at spawn: the VM whose record cannot be written is killed', async (t) => {
  const { m, stateDir, onExec } = setup(t, 'b');
  await m.init();
  onExec.fn = () => fill(stateDir);
  await assert.rejects(m.ensureReplica(makeAlloc({ allocId: 'e1', tenantId: 'fullb' })), /ENOSPC|no space/i);
  for (let i = 0; i < 100 && qemuOf('sb-fullb').length; i++) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(qemuOf('sb-fullb'), [], 'no QEMU left running');
  rmSync(join(stateDir, 'filler'), { force: true });
  assert.deepEqual(m.sandboxes().filter((s) => s.tenantId === 'fullb' && s.state !== 'failed'), []);
});
