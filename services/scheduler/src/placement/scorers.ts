/** Weighted scorers, each 0..100. */
import { alignedNuma, numaConstrained } from './fit.js';
import { memoryNeeded } from './overhead.js';
import type { NodeView, PlacementRequest, Scorer } from './types.js';

/** One VM per tenant per node: a node that already runs the tenant's VM takes the replica into that VM. */
export const tenantPackingScorer: Scorer = {
  name: 'tenant-packing',
  weight: 10,
  score: (req, node) => (node.tenants.has(req.tenantId) ? 100 : 0),
};

/**
 * Warm pools: a node with a ready idle VM of exactly the replica's flavour (its tenant has no VM there yet, no
 * hugepages) starts the replica in about a second instead of a boot (docs/node-agent.md "Warm pools").
 */
export const warmPoolScorer: Scorer = {
  name: 'warm-pool',
  weight: 6,
  score: (req, node) => {
    if (node.tenants.has(req.tenantId) || req.hugepages) return 0;
    const fits = (node.inventory.warmPool ?? []).some((p) => p.ready > 0 && p.vcpus === req.vcpus && p.memoryMiB === req.memoryMiB);
    return fits ? 100 : 0;
  },
};

/** numa: preferred/none: a node that can align CPUs, hugepages and VFs on one NUMA node beats one that cannot. */
export const numaAlignmentScorer: Scorer = {
  name: 'numa-alignment',
  weight: 5,
  score: (req, node) => (!numaConstrained(req) || alignedNuma(req, node) ? 100 : 0),
};

/** Nomad's default binpack: the fuller the node after placement (CPU and memory), the better. */
export const binpackScorer: Scorer = {
  name: 'binpack',
  weight: 1,
  score: (req, node) => {
    const cpuUsed = node.pinnedCount + node.sharedVcpusUsed / node.cpuAllocationRatio + req.vcpus / (req.cpuPolicy === 'dedicated' ? 1 : node.cpuAllocationRatio);
    const cpu = node.cpuCount > 0 ? Math.min(1, cpuUsed / node.cpuCount) : 1;
    const memUsed = node.memoryMiBUsed + memoryNeeded(req, node);
    const mem = node.memoryMiBCapacity > 0 ? Math.min(1, memUsed / node.memoryMiBCapacity) : 1;
    return ((cpu + mem) / 2) * 100;
  },
};

export const DEFAULT_SCORERS: readonly Scorer[] = [tenantPackingScorer, warmPoolScorer, numaAlignmentScorer, binpackScorer];

export function totalScore(scorers: readonly Scorer[], req: PlacementRequest, node: NodeView): number {
  let sum = 0;
  let weights = 0;
  for (const s of scorers) {
    sum += s.weight * Math.max(0, Math.min(100, s.score(req, node)));
    weights += s.weight;
  }
  return weights > 0 ? sum / weights : 0;
}
