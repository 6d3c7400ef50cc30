import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError } from '@edgenfv/contracts';
import { parseDataplanePlan, renderEalArgs, type EalOptions, type DataplanePlanInput } from '../src/index.js';
import { noHugeVhost, ovsTwoNodes, vppNode1 } from './fixtures.js';

const cases: Array<{ name: string; input: DataplanePlanInput; opts?: EalOptions; want: string[] }> = [
  {
    name: 'strict NUMA node 1: lcores, socket-mem with node 0 empty, allow-list, vhost client',
    input: vppNode1,
    opts: { memoryChannels: 4 },
    want: [
      '-l', '8-10,12', '--main-lcore', '8', '-n', '4', '--file-prefix', 'vrouter-0', '--socket-mem', '0,1024',
      '--iova-mode', 'va', '-a', '0000:81:10.2', '-a', '0000:82:00.1',
      '--vdev', 'net_vhost0,iface=/run/edgenfv/vhost/t1-vrouter-0-dp0.sock,queues=2,client=1',
    ],
  },
  {
    name: 'no hugepages, no PCI, vhost server',
    input: noHugeVhost,
    want: ['-l', '0-1', '--main-lcore', '0', '--file-prefix', 'tp1', '--no-huge', '-m', '256', '--no-pci',
      '--vdev', 'net_vhost0,iface=/tmp/vhost0.sock,queues=1,client=0'],
  },
  {
    name: 'virtio-user role',
    input: noHugeVhost,
    opts: { vhostUserRole: 'virtio-user' },
    want: ['-l', '0-1', '--main-lcore', '0', '--file-prefix', 'tp1', '--no-huge', '-m', '256', '--no-pci',
      '--vdev', 'net_virtio_user0,path=/tmp/vhost0.sock,queues=1,server=1'],
  },
  {
    name: 'two NUMA nodes, 1G pages, huge-dir, socket-limit, in-memory, lcores remapped (CPU 66)',
    input: ovsTwoNodes,
    opts: { lcores: 'remap', socketLimit: true },
    want: ['--lcores', '0@1,1@2,2@66', '--main-lcore', '0', '--file-prefix', 'ovs', '--socket-mem', '1024,1024',
      '--socket-limit', '1024,1024', '--huge-dir', '/dev/hugepages1G', '--in-memory', '-a', '0000:01:00.0'],
  },
];

for (const c of cases) {
  test(`EAL args: ${c.name}`, () => {
    assert.deepEqual(renderEalArgs(parseDataplanePlan(c.input), c.opts), c.want);
  });
}

test('identity lcores refuse a CPU at or above RTE_MAX_LCORE and point at remap', () => {
  const plan = parseDataplanePlan(ovsTwoNodes);
  assert.throws(() => renderEalArgs(plan, { maxLcore: 64 }), (err: unknown) => {
    assert.ok(err instanceof InvalidArgumentError);
    assert.equal(err.issues[0]!.field, 'lcores');
    assert.match(err.message, /CPU 66 is at or above RTE_MAX_LCORE \(64\): use lcores "remap"/);
    return true;
  });
  assert.deepEqual(renderEalArgs(plan).slice(0, 2), ['-l', '1-2,66'], 'below the default 128 identity works');
});
