import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  binpackScorer,
  numaAlignmentScorer,
  tenantPackingScorer,
  totalScore,
  type NodeView,
  type PlacementRequest,
  type Scorer,
} from '../../src/placement/index.js';
import { nodeView, occupy, pinAll, request, vnfd } from './helpers.js';

interface Case {
  name: string;
  req: () => PlacementRequest;
  node: () => NodeView;
  score: number;
}

function table(scorer: Scorer, cases: Case[]): void {
  for (const c of cases) {
    test(`${scorer.name}: ${c.name}`, () => {
      const s = scorer.score(c.req(), c.node());
      assert.ok(s >= 0 && s <= 100, `score ${s} within 0..100`);
      assert.equal(Math.round(s * 1000) / 1000, c.score);
    });
  }
}

table(tenantPackingScorer, [
  { name: 'node without the tenant VM', req: () => request(vnfd()), node: () => nodeView({}), score: 0 },
  {
    name: 'node already running the tenant VM',
    req: () => request(vnfd(), { tenantId: 't1', vnfId: 'v2' }),
    node: () => {
      const v = nodeView({});
      occupy(v, { tenantId: 't1', vnfId: 'v1' });
      return v;
    },
    score: 100,
  },
  {
    name: 'another tenant VM does not count',
    req: () => request(vnfd(), { tenantId: 't1' }),
    node: () => {
      const v = nodeView({});
      occupy(v, { tenantId: 't2' });
      return v;
    },
    score: 0,
  },
]);

const sriovDed = (numa: 'strict' | 'preferred' | 'none') =>
  vnfd({ resources: { vcpus: 2, cpuPolicy: 'dedicated', numa }, interfaces: [{ name: 'u', type: 'sriov', physnet: 'physnet1' }] });
table(numaAlignmentScorer, [
  { name: 'unconstrained request', req: () => request(vnfd()), node: () => nodeView({}), score: 100 },
  {
    name: 'preferred, alignable',
    req: () => request(sriovDed('preferred')),
    node: () => nodeView({ pfs: [{ physnet: 'physnet1', numaNode: 1, vfs: 2 }] }),
    score: 100,
  },
  {
    name: 'preferred, not alignable (CPUs of the VF NUMA node all pinned)',
    req: () => request(sriovDed('preferred')),
    node: () => {
      const v = nodeView({ pfs: [{ physnet: 'physnet1', numaNode: 1, vfs: 2 }] });
      pinAll(v, 1);
      return v;
    },
    score: 0,
  },
]);

// 1 NUMA node, 4 CPUs, 4096 MiB, no hugepages.
const small = () => nodeView({ numaNodes: 1, cpusPerNuma: 4, memoryMiBPerNuma: 4096, hugepages2MPerNuma: 0 });
table(binpackScorer, [
  { name: 'empty node: the request alone (2/4 CPUs, 1024/4096 MiB)', req: () => request(vnfd()), node: small, score: 37.5 },
  {
    name: 'half-full node scores higher',
    req: () => request(vnfd()),
    node: () => {
      const v = small();
      occupy(v, { vcpus: 2, memoryMiB: 2048 });
      return v;
    },
    score: 87.5,
  },
  {
    name: 'pinned CPUs count as used',
    req: () => request(vnfd({ resources: { vcpus: 1, memoryMiB: 0 } })),
    node: () => {
      const v = small();
      occupy(v, { numaNode: 0, cpus: [1, 2] });
      return v;
    },
    score: 37.5,
  },
]);


test('totalScore is the weighted mean, clamped to 0..100', () => {
  const a: Scorer = { name: 'a', weight: 3, score: () => 100 };
  const b: Scorer = { name: 'b', weight: 1, score: () => 0 };
  const c: Scorer = { name: 'c', weight: 1, score: () => 250 };
  assert.equal(totalScore([a, b], request(vnfd()), small()), 75);
  assert.equal(totalScore([c], request(vnfd()), small()), 100);
});
