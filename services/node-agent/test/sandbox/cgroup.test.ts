/**
 * cgroup limits. This host's cgroup v2 has no cpu/memory/cpuset controllers (hybrid mode), so the limit files are
 * checked on a fake cgroup folder; placement itself is real in qemu-driver.test.ts and manager.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@edgenfv/telemetry';
import { Cgroups, cgroupV2Mount } from '../../src/sandbox/cgroup.js';

test('limits: cpu.max, memory.max, cpuset on the pinned CPUs and NUMA node; missing controllers are reported, not faked', () => {
  const root = mkdtempSync(join(tmpdir(), 'na-cg-'));
  try {
    writeFileSync(join(root, 'cgroup.controllers'), 'cpuset cpu io memory pids\n');
    assert.equal(cgroupV2Mount(root), root);
    const cg = new Cgroups(root, 'edgenfv', silentLogger());
    const dir = join(root, 'edgenfv', 'sb-x');
    mkdirSync(dir, { recursive: true });
    for (const f of ['cpu.max', 'memory.max', 'cpuset.cpus', 'cpuset.mems']) writeFileSync(join(dir, f), '');
    const r = cg.apply(dir, { vcpus: 2, memoryMiB: 1024, cpus: [4, 5, 6, 8], numaNode: 1 });
    assert.deepEqual(r, { applied: ['cpu.max', 'memory.max', 'cpuset.cpus', 'cpuset.mems'], skipped: [] });
    assert.equal(readFileSync(join(dir, 'cpu.max'), 'utf8'), '300000 100000');
    assert.equal(readFileSync(join(dir, 'memory.max'), 'utf8'), String(Math.ceil(1024 * 1.25 + 256) * 1048576));
    assert.equal(readFileSync(join(dir, 'cpuset.cpus'), 'utf8'), '4-6,8');
    assert.equal(readFileSync(join(dir, 'cpuset.mems'), 'utf8'), '1');
    const dir2 = join(root, 'edgenfv', 'sb-y');
    mkdirSync(dir2, { recursive: true });
    assert.deepEqual(cg.apply(dir2, { vcpus: 1, memoryMiB: 512 }), { applied: [], skipped: ['cpu.max', 'memory.max'] });
    // the hybrid layout: v2 under <root>/unified
    const hybrid = mkdtempSync(join(tmpdir(), 'na-cg-'));
    mkdirSync(join(hybrid, 'unified'));
    writeFileSync(join(hybrid, 'unified', 'cgroup.controllers'), 'hugetlb\n');
    assert.equal(cgroupV2Mount(hybrid), join(hybrid, 'unified'));
    assert.equal(cgroupV2Mount(join(hybrid, 'none')), null);
    rmSync(hybrid, { recursive: true, force: true });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('fail closed: a limit whose controller exists but cannot be written stops the sandbox from starting', () => {
  const root = mkdtempSync(join(tmpdir(), 'na-cg-'));
  try {
    writeFileSync(join(root, 'cgroup.controllers'), 'cpu memory\n');
    const cg = new Cgroups(root, 'edgenfv', silentLogger());
    const dir = join(root, 'edgenfv', 'sb-z');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'cpu.max'), '');
    mkdirSync(join(dir, 'memory.max')); // present but not writable as a file (EISDIR): a write that fails
    assert.throws(() => cg.apply(dir, { vcpus: 1, memoryMiB: 256 }), (e: Error) => {
      assert.match(e.message, /cgroup limits could not be set in .*: memory\.max \(EISDIR\); the sandbox is not started without them/);
      assert.equal((e as { code?: string }).code, 'UNAVAILABLE');
      return true;
    });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
