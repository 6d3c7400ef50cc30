/** Plans shared by the tests (inputs to parseDataplanePlan). */
import type { DataplanePlanInput } from '../src/index.js';
import { readFileSync, writeFileSync } from 'node:fs';
import assert from 'node:assert/strict';

/** A VPP router on NUMA node 1: 2 PCI NICs (one NUMA-unknown), one vhost-user port, 1 GiB of 2M pages. */
export const vppNode1: DataplanePlanInput = {
  filePrefix: 'vrouter-0',
  numa: 'strict',
  mainCpu: { cpu: 8, numaNode: 1 },
  workerCpus: [
    { cpu: 9, numaNode: 1 },
    { cpu: 10, numaNode: 1 },
    { cpu: 12, numaNode: 1 },
  ],
  memory: { kind: 'hugepages', pages: [{ numaNode: 1, sizeKiB: 2048, count: 512 }] },
  iovaMode: 'va',
  nics: [
    { kind: 'pci', name: 'uplink', pciAddress: '0000:81:10.2', numaNode: 1, rxQueues: 2, rxDescriptors: 1024, txDescriptors: 1024 },
    { kind: 'pci', name: 'downlink', pciAddress: '82:00.1', rxQueues: 1, txQueues: 3 },
    { kind: 'vhost-user', name: 'dp0', socketPath: '/run/edgenfv/vhost/t1-vrouter-0-dp0.sock', queues: 2, client: true },
  ],
};

/** testpmd-like: no hugepages, vhost-user only, no PCI. */
export const noHugeVhost: DataplanePlanInput = {
  filePrefix: 'tp1',
  mainCpu: { cpu: 0, numaNode: 0 },
  workerCpus: [{ cpu: 1, numaNode: 0 }],
  memory: { kind: 'no-huge', memoryMiB: 256 },
  nics: [{ kind: 'vhost-user', name: 'v0', socketPath: '/tmp/vhost0.sock', queues: 1 }],
};

/** OVS-DPDK on node 0 with 1G pages on both nodes (numa preferred), PMDs on high CPU ids. */
export const ovsTwoNodes: DataplanePlanInput = {
  filePrefix: 'ovs',
  numa: 'none',
  mainCpu: { cpu: 1, numaNode: 0 },
  workerCpus: [
    { cpu: 2, numaNode: 0 },
    { cpu: 66, numaNode: 0 },
  ],
  memory: {
    kind: 'hugepages',
    pages: [
      { numaNode: 0, sizeKiB: 1048576, count: 1 },
      { numaNode: 1, sizeKiB: 1048576, count: 1 },
    ],
    hugeDir: '/dev/hugepages1G',
  },
  inMemory: true,
  nics: [{ kind: 'pci', name: 'dpdk0', pciAddress: '0000:01:00.0', numaNode: 0, rxQueues: 4 }],
};

const goldenDir = new URL('../../test/golden/', import.meta.url);

/** Compares text with test/golden/<name>; `UPDATE_GOLDEN=1` rewrites the file instead. */
export function assertGolden(name: string, actual: string): void {
  const url = new URL(name, goldenDir);
  if (process.env.UPDATE_GOLDEN === '1') writeFileSync(url, actual);
  const expected = readFileSync(url, 'utf8');
  assert.equal(actual, expected, `golden file test/golden/${name} differs (UPDATE_GOLDEN=1 rewrites it after review)`);
}

/** argv vectors as shell-quoted lines, one per command (the golden form of OVS commands). */
export function shellLines(vectors: string[][]): string {
  const q = (s: string): string => (/^[A-Za-z0-9_.,:=/@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  return vectors.map((v) => v.map(q).join(' ')).join('\n') + '\n';
}
