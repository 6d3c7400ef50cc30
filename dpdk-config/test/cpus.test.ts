import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpuMask, formatCpuList } from '../src/index.js';

const lists: Array<[number[], string]> = [
  [[], ''],
  [[3], '3'],
  [[2, 3, 4], '2-4'],
  [[9, 8, 10, 12], '8-10,12'],
  [[1, 1, 2], '1-2'],
  [[0, 2, 4, 5, 6, 63, 64], '0,2,4-6,63-64'],
];
for (const [cpus, want] of lists) {
  test(`formatCpuList(${JSON.stringify(cpus)}) = "${want}"`, () => assert.equal(formatCpuList(cpus), want));
}

const masks: Array<[number[], string]> = [
  [[], '0x0'],
  [[0], '0x1'],
  [[1, 2], '0x6'],
  [[8, 9, 10, 12], '0x1700'],
  [[66], '0x40000000000000000'],
  [[53, 54], '0x60000000000000'],
];
for (const [cpus, want] of masks) {
  test(`cpuMask(${JSON.stringify(cpus)}) = ${want}`, () => assert.equal(cpuMask(cpus), want));
}
