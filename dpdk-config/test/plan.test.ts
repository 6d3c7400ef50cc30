import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError } from '@edgenfv/contracts';
import { parseDataplanePlan, socketMemMiB, type DataplanePlanInput } from '../src/index.js';
import { noHugeVhost, ovsTwoNodes, vppNode1 } from './fixtures.js';

function issuesOf(input: DataplanePlanInput): Array<{ field: string; message: string }> {
  try {
    parseDataplanePlan(input);
  } catch (err) {
    assert.ok(err instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${String(err)}`);
    assert.equal(err.code, 'INVALID_ARGUMENT');
    return [...err.issues];
  }
  assert.fail('expected the plan to be refused');
}

test('valid plans parse, normalize PCI addresses and freeze', () => {
  const p = parseDataplanePlan(vppNode1);
  assert.equal(p.homeNumaNode, 1);
  assert.equal(p.nics[1]!.kind === 'pci' && p.nics[1]!.pciAddress, '0000:82:00.1');
  assert.equal(p.nics[1]!.kind === 'pci' && p.nics[1]!.numaNode, -1);
  assert.equal(p.nics[0]!.kind === 'pci' && p.nics[0]!.txQueues, 2, 'txQueues defaults to rxQueues');
  assert.ok(Object.isFrozen(p) && Object.isFrozen(p.nics) && Object.isFrozen(p.workerCpus));
  assert.deepEqual(p.warnings, []);
  assert.equal(parseDataplanePlan(noHugeVhost).numa, 'preferred');
  assert.deepEqual(socketMemMiB(parseDataplanePlan(vppNode1)), [0, 1024]);
  assert.deepEqual(socketMemMiB(parseDataplanePlan(ovsTwoNodes)), [1024, 1024]);
  assert.deepEqual(socketMemMiB(parseDataplanePlan(noHugeVhost)), []);
});

const refusals: Array<{ name: string; input: DataplanePlanInput; field: string; match: RegExp }> = [
  {
    name: 'CPUs on two NUMA nodes under strict',
    input: { ...vppNode1, workerCpus: [...vppNode1.workerCpus, { cpu: 2, numaNode: 0 }] },
    field: 'workerCpus[3].numaNode',
    match: /CPU 2 is on NUMA node 0 but the main core \(CPU 8\) is on NUMA node 1; numa is strict/,
  },
  {
    name: 'a main core that is also a worker',
    input: { ...vppNode1, workerCpus: [{ cpu: 9, numaNode: 1 }, { cpu: 8, numaNode: 1 }] },
    field: 'workerCpus[1].cpu',
    match: /CPU 8 is the main core; a main core cannot also be a worker/,
  },
  {
    name: 'a worker listed twice',
    input: { ...vppNode1, workerCpus: [{ cpu: 9, numaNode: 1 }, { cpu: 9, numaNode: 1 }] },
    field: 'workerCpus[1].cpu',
    match: /CPU 9 is listed twice \(also workerCpus\[0\]\)/,
  },
  {
    name: 'zero rx queues',
    input: { ...vppNode1, nics: [{ kind: 'pci', name: 'u', pciAddress: '0000:81:00.0', rxQueues: 0 }] },
    field: 'nics[0].rxQueues',
    match: /integer >= 1/,
  },
  {
    name: 'zero vhost-user queues',
    input: { ...noHugeVhost, nics: [{ kind: 'vhost-user', name: 'v', socketPath: '/tmp/a.sock', queues: 0 }] },
    field: 'nics[0].queues',
    match: /integer >= 1/,
  },
  {
    name: 'hugepages on another NUMA node under strict',
    input: { ...vppNode1, memory: { kind: 'hugepages', pages: [{ numaNode: 1, sizeKiB: 2048, count: 8 }, { numaNode: 0, sizeKiB: 2048, count: 8 }] } },
    field: 'memory.pages[1].numaNode',
    match: /hugepages on NUMA node 0 but the data plane's CPUs are on NUMA node 1; numa is strict/,
  },
  {
    name: 'a NIC on another NUMA node under strict',
    input: { ...vppNode1, nics: [{ kind: 'pci', name: 'u', pciAddress: '0000:03:00.0', numaNode: 0, rxQueues: 1 }] },
    field: 'nics[0].numaNode',
    match: /PCI device 0000:03:00.0 is on NUMA node 0 .* numa is strict/,
  },
  {
    name: 'no hugepages at all',
    input: { ...vppNode1, memory: { kind: 'hugepages', pages: [{ numaNode: 1, sizeKiB: 2048, count: 0 }] } },
    field: 'memory.pages',
    match: /no hugepages requested/,
  },
  {
    name: 'no hugepages on the home node (preferred)',
    input: { ...vppNode1, numa: 'preferred', memory: { kind: 'hugepages', pages: [{ numaNode: 0, sizeKiB: 2048, count: 8 }] } },
    field: 'memory.pages',
    match: /no hugepages on NUMA node 1, where the main core is/,
  },
  {
    name: 'two hugepage sizes',
    input: { ...ovsTwoNodes, memory: { kind: 'hugepages', pages: [{ numaNode: 0, sizeKiB: 1048576, count: 1 }, { numaNode: 1, sizeKiB: 2048, count: 1 }] } },
    field: 'memory.pages[1].sizeKiB',
    match: /one size/,
  },
  {
    name: 'an unknown hugepage size',
    input: { ...vppNode1, memory: { kind: 'hugepages', pages: [{ numaNode: 1, sizeKiB: 4096, count: 8 }] } },
    field: 'memory.pages[0].sizeKiB',
    match: /2048 or 1048576/,
  },
  {
    name: 'in-memory with no-huge',
    input: { ...noHugeVhost, inMemory: true },
    field: 'inMemory',
    match: /--in-memory together with --no-huge/,
  },
  {
    name: 'a bad PCI address',
    input: { ...vppNode1, nics: [{ kind: 'pci', name: 'u', pciAddress: '81:00', rxQueues: 1 }] },
    field: 'nics[0].pciAddress',
    match: /not a PCI address/,
  },
  {
    name: 'the same PCI device twice',
    input: { ...vppNode1, nics: [{ kind: 'pci', name: 'a', pciAddress: '81:00.0', rxQueues: 1 }, { kind: 'pci', name: 'b', pciAddress: '0000:81:00.0', rxQueues: 1 }] },
    field: 'nics[1].pciAddress',
    match: /0000:81:00.0 is already nics\[0\]/,
  },
  {
    name: 'two NICs with one name',
    input: { ...noHugeVhost, nics: [{ kind: 'vhost-user', name: 'v', socketPath: '/tmp/a.sock', queues: 1 }, { kind: 'vhost-user', name: 'v', socketPath: '/tmp/b.sock', queues: 1 }] },
    field: 'nics[1].name',
    match: /already the name of nics\[0\]/,
  },
  {
    name: 'a socket path with a comma',
    input: { ...noHugeVhost, nics: [{ kind: 'vhost-user', name: 'v', socketPath: '/tmp/a,b.sock', queues: 1 }] },
    field: 'nics[0].socketPath',
    match: /must not contain ","/,
  },
  {
    name: 'a relative socket path',
    input: { ...noHugeVhost, nics: [{ kind: 'vhost-user', name: 'v', socketPath: 'a.sock', queues: 1 }] },
    field: 'nics[0].socketPath',
    match: /absolute/,
  },
  {
    name: 'a socket path beyond the unix limit',
    input: { ...noHugeVhost, nics: [{ kind: 'vhost-user', name: 'v', socketPath: '/' + 'x'.repeat(120), queues: 1 }] },
    field: 'nics[0].socketPath',
    match: /107 bytes/,
  },
  {
    name: 'descriptors not a power of two',
    input: { ...vppNode1, nics: [{ kind: 'pci', name: 'u', pciAddress: '0000:81:00.0', numaNode: 1, rxQueues: 1, rxDescriptors: 1000 }] },
    field: 'nics[0].rxDescriptors',
    match: /power of two/,
  },
  {
    name: 'a file prefix with a slash',
    input: { ...vppNode1, filePrefix: '../etc' },
    field: 'filePrefix',
    match: /letters, digits/,
  },
  {
    name: 'a bad iova mode',
    input: { ...vppNode1, iovaMode: 'dc' as never },
    field: 'iovaMode',
    match: /"pa" or "va"/,
  },
  {
    name: 'a negative CPU id',
    input: { ...vppNode1, mainCpu: { cpu: -1, numaNode: 1 } },
    field: 'mainCpu.cpu',
    match: /integer >= 0/,
  },
];

for (const r of refusals) {
  test(`refuses ${r.name}, naming ${r.field}`, () => {
    const issues = issuesOf(r.input);
    const hit = issues.find((i) => i.field === r.field);
    assert.ok(hit, `no issue for ${r.field} in ${JSON.stringify(issues)}`);
    assert.match(hit.message, r.match);
  });
}

test('every issue is reported together, and the error message names each field', () => {
  const input: DataplanePlanInput = {
    ...vppNode1,
    filePrefix: '',
    workerCpus: [{ cpu: 8, numaNode: 1 }],
    nics: [{ kind: 'pci', name: 'u', pciAddress: '0000:81:00.0', numaNode: 1, rxQueues: 0 }],
  };
  let err: unknown;
  try {
    parseDataplanePlan(input);
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof InvalidArgumentError);
  assert.deepEqual(err.issues.map((i) => i.field), ['filePrefix', 'workerCpus[0].cpu', 'nics[0].rxQueues']);
  assert.match(err.message, /filePrefix: .*; workerCpus\[0\]\.cpu: .*; nics\[0\]\.rxQueues: /);
  assert.deepEqual((err.toBody().details as { issues: unknown[] }).issues.length, 3);
});

test('preferred allows cross-NUMA placements and says so in warnings; none says nothing', () => {
  const input: DataplanePlanInput = {
    ...vppNode1,
    numa: 'preferred',
    workerCpus: [{ cpu: 2, numaNode: 0 }],
    nics: [{ kind: 'pci', name: 'u', pciAddress: '0000:03:00.0', numaNode: 0, rxQueues: 1 }],
  };
  const p = parseDataplanePlan(input);
  assert.equal(p.warnings.length, 2);
  assert.match(p.warnings[0]!, /^workerCpus\[0\]: CPU 2 is on NUMA node 0/);
  assert.match(p.warnings[1]!, /^nics\[0\]: PCI device 0000:03:00.0 is on NUMA node 0/);
  assert.deepEqual(parseDataplanePlan({ ...input, numa: 'none' }).warnings, []);
});
