import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onlineOfflineCpus } from '../src/cpu-hotplug.js';

test('hotplugged (offline) vCPUs are onlined; online ones and cpu0 without an online file are left alone', async () => {
  const root = mkdtempSync(join(tmpdir(), 'cpu-hotplug-'));
  try {
    const cpu = (n: number, online?: string): void => {
      mkdirSync(join(root, 'devices/system/cpu', `cpu${n}`), { recursive: true });
      if (online !== undefined) writeFileSync(join(root, 'devices/system/cpu', `cpu${n}`, 'online'), online);
    };
    cpu(0);
    cpu(1, '1\n');
    cpu(2, '0\n');
    cpu(10, '0\n');
    mkdirSync(join(root, 'devices/system/cpu/cpufreq'), { recursive: true });
    assert.deepEqual(await onlineOfflineCpus(root), [2, 10]);
    for (const n of [1, 2, 10]) assert.equal(readFileSync(join(root, 'devices/system/cpu', `cpu${n}`, 'online'), 'utf8').trim(), '1');
    assert.deepEqual(await onlineOfflineCpus(root), [], 'a second pass finds nothing to do');
    assert.deepEqual(await onlineOfflineCpus(join(root, 'missing')), []);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
