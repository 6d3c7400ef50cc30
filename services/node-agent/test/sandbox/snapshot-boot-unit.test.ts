/**
 * Snapshot boot's templates without a VM (snapshot-boot.ts): the key follows what the guest's state depends on (image
 * files, QEMU, boot shape, kernel command line) and not a sandbox's own paths, uid, netns, cgroup or niceness; the
 * restore spec names the template; pruning keeps the configured keys' templates only; a failed restore deletes the
 * template and the key boots cold after two in a row. The VM side is warm-pool.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@edgenfv/telemetry';
import { SnapshotTemplates, templateKey } from '../../src/sandbox/snapshot-boot.js';
import { buildQemuArgs } from '../../src/hypervisor/qemu-args.js';
import type { VmSpec } from '../../src/hypervisor/types.js';

function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'snap-unit-'));
  for (const f of ['vmlinuz', 'initrd', 'system.erofs', 'qemu']) writeFileSync(join(dir, f), f);
  const spec = (id: string, over: Partial<VmSpec> = {}): VmSpec => ({
    sandboxId: id,
    vcpus: 1,
    maxVcpus: 2,
    memoryMiB: 576,
    maxMemoryMiB: 1024,
    memory: { kind: 'memfd' },
    kernelPath: join(dir, 'vmlinuz'),
    initrdPath: join(dir, 'initrd'),
    systemDisk: { path: join(dir, 'system.erofs'), serial: 'edgenfv-system' },
    kernelArgs: 'quiet',
    devices: [{ kind: 'agent-channel', id: 'agent', socketPath: join(dir, id, 'agent.sock'), name: 'edgenfv.agent.0' }],
    runDir: join(dir, id),
    runAs: { uid: 420000 + id.length, gid: 420000 + id.length },
    chrootDir: join(dir, 'vm', id),
    netnsPath: `/var/run/netns/${id}`,
    cgroupDir: `/sys/fs/cgroup/x/${id}`,
    machine: 'q35',
    accel: 'tcg',
    sandbox: true,
    hotplugSlots: 4,
    nice: 10,
    ...over,
  });
  return { dir, spec, qemu: join(dir, 'qemu'), done: () => rmSync(dir, { recursive: true, force: true }) };
}

test('templateKey: the same for two sandboxes of one shape; another for another shape, image or QEMU', () => {
  const s = setup();
  try {
    const k = templateKey(s.spec('sb-warm-aaaaaa'), s.qemu);
    assert.equal(templateKey(s.spec('sb-warm-bbbbbbbb', { nice: 0 }), s.qemu), k, "a sandbox's own paths, uid, netns, cgroup, niceness are not in the key");
    assert.notEqual(templateKey(s.spec('a', { memoryMiB: 640 }), s.qemu), k);
    assert.notEqual(templateKey(s.spec('a', { maxVcpus: 4 }), s.qemu), k);
    assert.notEqual(templateKey(s.spec('a', { kernelArgs: 'quiet x=1' }), s.qemu), k);
    assert.notEqual(templateKey(s.spec('a', { machine: 'microvm', hostCpuKHz: 1 }), s.qemu), k);
    const debug = s.spec('a');
    debug.devices = [{ ...(debug.devices[0] as Extract<VmSpec['devices'][number], { kind: 'agent-channel' }>), debugConsoleSocket: join(s.dir, 'a', 'debug.sock') }];
    assert.notEqual(templateKey(debug, s.qemu), k, 'a debug console port is another device');
    writeFileSync(join(s.dir, 'initrd'), 'another initrd');
    assert.notEqual(templateKey(s.spec('a'), s.qemu), k, 'another image');
  } finally {
    s.done();
  }
});

test('restoreSpec: QEMU started with -incoming file:<template> and mapped-ram; other incoming URIs refused as before', () => {
  const s = setup();
  try {
    const t = new SnapshotTemplates({ stateDir: s.dir, qemuBinary: s.qemu, logger: silentLogger() });
    const spec = t.restoreSpec(s.spec('sb-warm-aaaaaa'), 'k1');
    const args = buildQemuArgs(spec).args;
    assert.equal(args[args.indexOf('-incoming') + 1], `file:${join(s.dir, 'snapshots', 'k1.mig')}`);
    assert.equal(args[args.indexOf('-global') + 1], 'migration.mapped-ram=on');
    assert.throws(() => buildQemuArgs({ ...spec, incoming: 'exec:cat /x' }), /incoming/);
    assert.ok(!buildQemuArgs({ ...spec, incoming: 'unix:/run/x.sock' }).args.includes('-global'), 'a live migration has no mapped-ram');
  } finally {
    s.done();
  }
});

test('prune keeps the configured keys\' templates only; a failed restore deletes its template, two in a row turn the key off', () => {
  const s = setup();
  try {
    const t = new SnapshotTemplates({ stateDir: s.dir, qemuBinary: s.qemu, logger: silentLogger() });
    mkdirSync(t.dir, { recursive: true });
    for (const f of ['k1.mig', 'k2.mig', 'k3.mig.tmp']) writeFileSync(join(t.dir, f), 'x');
    assert.deepEqual(t.prune(new Set(['k1'])).sort(), ['k2.mig', 'k3.mig.tmp']);
    assert.deepEqual(readdirSync(t.dir), ['k1.mig']);
    assert.equal(t.usable('k1'), true);
    t.failed('k1', new Error('load failed'));
    assert.equal(existsSync(t.path('k1')), false);
    assert.equal(t.usable('k1'), false);
    assert.equal(t.makeable('k1'), true, 'the next refill boots cold and makes a new template');
    writeFileSync(t.path('k1'), 'x');
    t.failed('k1', new Error('load failed again'));
    assert.equal(t.makeable('k1'), false, 'after two failures in a row the key boots cold');
    writeFileSync(t.path('k1'), 'x');
    assert.equal(t.usable('k1'), false);
    assert.deepEqual(t.prune(new Set()), ['k1.mig']);
  } finally {
    s.done();
  }
});
