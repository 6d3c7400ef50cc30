import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pinPlan, vmCores } from '../../src/sandbox/pinning.js';

const R = (cpus?: number[]) => ({ alloc: { resources: cpus ? { cpus } : {} } });

test('a VM\'s cores are its replicas\' dedicated cores in replica order; shared replicas add none', () => {
  assert.deepEqual(vmCores([R([3]), R(), R([1, 2])]), [3, 1, 2]);
  assert.deepEqual(vmCores([R(), R()]), []);
});

test('pin plan: vCPU i on core i, every other thread on all the cores', () => {
  const p = pinPlan([101, 102], [100, 101, 102, 103], [3, 1]);
  assert.deepEqual([...p.threads], [[101, [3]], [102, [1]], [100, [3, 1]], [103, [3, 1]]]);
});

test('pin plan: vCPUs beyond the dedicated cores, and vCPUs sharing one thread (single-threaded TCG), float over the cores', () => {
  assert.deepEqual([...pinPlan([11, 12, 13], [10, 11, 12, 13], [5, 6]).threads.get(13)!], [5, 6]);
  const rr = pinPlan([11, 11], [10, 11], [5, 6]);
  assert.deepEqual(rr.threads.get(11), [5, 6]);
});
