/** Placing a workload on a node (workload.ts) and reading a rendered VPP startup.conf back (vpp-parse.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { InvalidArgumentError } from '@edgenfv/contracts';
import {
  parseCpuList,
  formatCpuList,
  parseDataplanePlan,
  placeWorkload,
  readVppStartupConf,
  parseVppConf,
  renderVppStartupConf,
  renderHugepages,
  socketMemMiB,
  type DataplanePlan,
} from '../src/index.js';
import { noHugeVhost, ovsTwoNodes, vppNode1 } from './fixtures.js';

const EXAMPLES = new URL('../../examples/', import.meta.url);
const example = (name: string): unknown => JSON.parse(readFileSync(new URL(name, EXAMPLES), 'utf8'));

function refused(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof InvalidArgumentError, String(err));
    return err.issues.map((i) => `${i.field}: ${i.message}`);
  }
  assert.fail('expected an InvalidArgumentError');
}

test('a workload with PCI NICs lands on their NUMA node, skipping reserved CPUs', () => {
  const { plan } = placeWorkload(example('dual-socket-node.json'), example('vrouter-pci-workload.json'));
  assert.equal(plan.homeNumaNode, 1);
  assert.deepEqual(plan.mainCpu, { cpu: 9, numaNode: 1 }); // CPU 8 is reserved
  assert.deepEqual(plan.workerCpus.map((w) => w.cpu), [10]);
  assert.deepEqual(socketMemMiB(plan), [0, 512]);
  assert.deepEqual(plan.nics.map((n) => (n.kind === 'pci' ? n.pciAddress : '')), ['0000:81:00.0', '0000:81:00.1']);
  assert.deepEqual(renderHugepages(plan), [
    { numaNode: 1, sizeKiB: 2048, count: 256, path: '/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages' },
  ]);
});

test('--no-huge and --no-pci placements: ordinary memory, PCI NICs left out and listed', () => {
  const { plan, droppedPciNics } = placeWorkload(example('edge-2cpu-node.json'), example('mixed-workload.json'), { noHuge: true, noPci: true });
  assert.deepEqual(plan.memory, { kind: 'no-huge', memoryMiB: 256 });
  assert.deepEqual(droppedPciNics, ['uplink']);
  assert.deepEqual(plan.nics.map((n) => n.kind), ['vhost-user']);
});

test('bad node or workload files are refused, every issue naming its field', () => {
  const node = example('edge-2cpu-node.json') as Record<string, unknown>;
  const wl = example('testpmd-vhost-workload.json') as Record<string, unknown>;
  const cases: Array<[string, unknown, unknown, RegExp]> = [
    ['too many workers', node, { ...wl, workers: 4 }, /^workload\.workers: needs 5 CPUs/],
    ['hugepages beyond the free ones', node, { ...wl, memory: { hugepagesMiB: 4096 } }, /^workload\.memory\.hugepagesMiB: needs 2048 free 2048 KiB hugepages/],
    ['unknown NIC', node, { ...wl, nics: [{ kind: 'pci', name: 'eth9' }] }, /^workload\.nics\[0\]\.name: node edge-2cpu has no NIC "eth9"/],
    ['bad socket path (from the plan checks)', node, { ...wl, nics: [{ kind: 'vhost-user', name: 'v', socketPath: 'rel.sock' }] }, /^workload\.nics\[0\]\.socketPath: must be an absolute path/],
    ['bad name', node, { ...wl, name: 'a b' }, /^workload\.name: /],
    ['memory both ways', node, { ...wl, memory: { hugepagesMiB: 1, noHugeMiB: 1 } }, /^workload\.memory: /],
    ['unknown NUMA node', node, { ...wl, numaNode: 3 }, /^workload\.numaNode: node edge-2cpu has no NUMA node 3/],
    ['bad node PCI address', { ...node, nics: [{ name: 'x', pciAddress: 'zz' }] }, wl, /^node\.nics\[0\]\.pciAddress: not a PCI address/],
    ['CPU on two NUMA nodes', { ...node, numaNodes: [{ id: 0, cpus: [0, 1] }, { id: 1, cpus: [1] }] }, wl, /^node\.numaNodes\[1\]\.cpus\[0\]: CPU 1 is already/],
  ];
  for (const [name, n, w, re] of cases) {
    const issues = refused(() => placeWorkload(n, w));
    assert.ok(issues.some((i) => re.test(i)), `${name}: ${issues.join('; ')}`);
  }
});

test('parseCpuList inverts formatCpuList', () => {
  for (const cpus of [[0], [2, 3, 4, 6, 8, 9], [1, 3, 5], [0, 1, 2, 3, 64, 65]]) assert.deepEqual(parseCpuList(formatCpuList(cpus)), cpus);
  assert.throws(() => parseCpuList('3-1'), /backwards/);
});

/** What the reader must find again in a startup.conf rendered from the plan. */
function assertRoundTrip(plan: DataplanePlan, name: string): void {
  const conf = readVppStartupConf(renderVppStartupConf(plan, { uioDriver: 'vfio-pci', noTxChecksumOffload: true }));
  assert.equal(conf.apiPrefix, plan.filePrefix, name);
  assert.equal(conf.mainCore, plan.mainCpu.cpu, name);
  assert.deepEqual(conf.workers, plan.workerCpus.map((w) => w.cpu), name);
  const pci = plan.nics.filter((n) => n.kind === 'pci');
  assert.deepEqual(
    conf.devs,
    pci.map((n) => ({
      pciAddress: n.pciAddress,
      name: n.name,
      rxQueues: n.rxQueues,
      txQueues: n.txQueues,
      ...(n.rxDescriptors !== undefined ? { rxDescriptors: n.rxDescriptors } : {}),
      ...(n.txDescriptors !== undefined ? { txDescriptors: n.txDescriptors } : {}),
    })),
    name,
  );
  assert.deepEqual(
    conf.vdevs,
    plan.nics.filter((n) => n.kind === 'vhost-user').map((n, i) => ({
      name: `net_vhost${i}`,
      args: { iface: n.socketPath, queues: String(n.queues), client: n.client ? '1' : '0' },
    })),
    name,
  );
  assert.equal(conf.noPci, pci.length === 0, name);
  assert.equal(conf.noHugetlb, plan.memory.kind === 'no-huge', name);
  if (plan.memory.kind === 'hugepages') {
    assert.deepEqual(conf.socketMemMiB, socketMemMiB(plan), name);
    assert.equal(conf.hugeDir, plan.memory.hugeDir, name);
  }
  assert.equal(conf.iovaMode, plan.iovaMode, name);
  assert.equal(conf.uioDriver, 'vfio-pci');
  assert.equal(conf.noMultiSeg, true);
  assert.equal(conf.noTxChecksumOffload, true);
  assert.deepEqual(conf.plugins, { defaultDisabled: true, enabled: ['dpdk_plugin.so'], disabled: [] });
}

test('VPP startup.conf round trip: the reader finds every setting the renderer wrote (fixtures and examples)', () => {
  for (const [name, input] of Object.entries({ vppNode1, noHugeVhost, ovsTwoNodes })) assertRoundTrip(parseDataplanePlan(input), name);
  const files = readdirSync(EXAMPLES);
  const workloads = files.filter((f) => f.endsWith('-workload.json'));
  assert.ok(workloads.length >= 4, 'examples/*-workload.json');
  for (const w of workloads) {
    const node = w.startsWith('guest-') ? 'guest-vnf-node.json' : 'dual-socket-node.json';
    assertRoundTrip(placeWorkload(example(node), example(w)).plan, w);
  }
});

test('the VPP parser keeps unknown sections, skips comments, and refuses unbalanced braces naming the line', () => {
  const tree = parseVppConf('# a comment\nunix { nodaemon }\nfoo bar baz { x 1 } # trailing\n');
  assert.deepEqual(tree.map((i) => [i.key, i.args, i.children?.map((c) => [c.key, c.args])]), [
    ['unix', [], [['nodaemon', []]]],
    ['foo', ['bar', 'baz'], [['x', ['1']]]],
  ]);
  assert.deepEqual(refused(() => parseVppConf('dpdk {\n  no-pci\n')), ['line 1: block opened here is never closed']);
  assert.deepEqual(refused(() => parseVppConf('cpu { main-core 1 }\n}\n')), ['line 2: unmatched "}"']);
});
