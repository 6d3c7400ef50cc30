/** Guest logs are bounded: past the cap the file is copied to `.1` and truncated; an appending writer carries on. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rotateGuestLogs } from '../src/console-log.js';
import { buildQemuArgs } from '../src/hypervisor/qemu-args.js';

test('a console log over the cap is rotated; the appending writer (QEMU append=on) continues at the new end', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edgenfv-conlog-'));
  try {
    const path = join(dir, 'console.log');
    const fd = openSync(path, 'a'); // O_APPEND, as QEMU opens it with append=on
    for (let i = 0; i < 2000; i++) writeSync(fd, `boot line ${i}\n`);
    assert.ok(statSync(path).size > 4096);
    assert.deepEqual(rotateGuestLogs([dir], 4096), [path]);
    writeSync(fd, 'after rotation\n');
    closeSync(fd);
    assert.equal(readFileSync(path, 'utf8'), 'after rotation\n');
    assert.match(readFileSync(`${path}.1`, 'utf8'), /boot line 1999\n$/);
    assert.deepEqual(rotateGuestLogs([dir], 4096), [], 'under the cap: left alone');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('QEMU writes the console with append=on, so that a rotation does not leave a hole', () => {
  const cmd = buildQemuArgs({
    sandboxId: 'sb-x', machine: 'microvm', accel: 'tcg', vcpus: 1, maxVcpus: 1, memoryMiB: 256, maxMemoryMiB: 256,
    memory: { kind: 'anonymous' }, kernelArgs: '', devices: [], runDir: '/run/x', sandbox: false, hostCpuKHz: 2000000,
  } as never);
  const chardev = cmd.args[cmd.args.findIndex((a, i) => cmd.args[i - 1] === '-chardev' && a.includes('id=console'))];
  assert.match(chardev ?? '', /append=on/);
});
