/**
 * The placement pipeline: node-independent filters once, then nodes in a seeded order through the filters;
 * feasible nodes are scored, and the search stops after `candidateLimit` feasible nodes (Nomad's limit of
 * ceil(log2(n)), at least 2), so a decision over 10,000 nodes looks at a few dozen of them when most fit.
 * When nothing fits, every node was visited and the explanation counts every rejection.
 */
import { assign } from './fit.js';
import { DEFAULT_FILTERS, runFilters } from './filters.js';
import { mulberry32, seededOrder } from './rng.js';
import { DEFAULT_SCORERS, totalScore } from './scorers.js';
import type { Explanation, Filter, NodeView, PlaceResult, PlacementRequest, Rejection, Scorer } from './types.js';

export interface PlaceOptions {
  seed: number;
  filters?: readonly Filter[];
  scorers?: readonly Scorer[];
  /** Stop after this many feasible nodes; default max(2, ceil(log2(nodes))). Infinity scores every node. */
  candidateLimit?: number;
  /** Nodes to evaluate before the shuffled sweep (e.g. those that already run the tenant's VM). */
  first?: Iterable<NodeView>;
}

export function defaultCandidateLimit(n: number): number {
  return Math.max(2, Math.ceil(Math.log2(Math.max(1, n))));
}

class RejectionCounter {
  private readonly byFilter = new Map<string, Map<string, Rejection>>();
  add(filter: string, reason: string, n = 1): void {
    let m = this.byFilter.get(filter);
    if (!m) this.byFilter.set(filter, (m = new Map<string, Rejection>()));
    const r = m.get(reason);
    if (r) r.nodes += n;
    else m.set(reason, { filter, reason, nodes: n });
  }
  list(filterOrder: readonly Filter[]): Rejection[] {
    const rank = new Map(filterOrder.map((f, i) => [f.name, i]));
    return [...this.byFilter.values()]
      .flatMap((m) => [...m.values()])
      .sort((a, b) => (rank.get(a.filter) ?? 99) - (rank.get(b.filter) ?? 99) || b.nodes - a.nodes || a.reason.localeCompare(b.reason));
  }
}

/** "0/12 nodes fit: 7 nodes: no NUMA node with ... (numa); 5 nodes: node is cordoned (cordon)". */
export function explain(nodes: number, rejected: Rejection[]): Explanation {
  const parts = rejected.map((r) => `${r.nodes} node${r.nodes === 1 ? '' : 's'}: ${r.reason} (${r.filter})`);
  const message = nodes === 0 ? 'no nodes registered' : `0/${nodes} nodes fit: ${parts.join('; ')}`;
  return { nodes, rejected, message };
}

export function place(req: PlacementRequest, nodes: readonly NodeView[], opts: PlaceOptions): PlaceResult {
  const filters = opts.filters ?? DEFAULT_FILTERS;
  const scorers = opts.scorers ?? DEFAULT_SCORERS;
  const counter = new RejectionCounter();
  const perNode: Filter[] = [];
  for (const f of filters) {
    if (!f.nodeIndependent) {
      perNode.push(f);
      continue;
    }
    const v = f.filter(req, nodes[0]);
    if (!v.ok) {
      counter.add(f.name, v.reason, nodes.length);
      return { ok: false, explanation: explain(nodes.length, counter.list(filters)) };
    }
  }
  const limit = opts.candidateLimit ?? defaultCandidateLimit(nodes.length);
  const rng = mulberry32(opts.seed);
  let best: NodeView | undefined;
  let bestScore = -1;
  let evaluated = 0;
  let feasible = 0;
  const visited = new Set<NodeView>();
  const consider = (node: NodeView): boolean => {
    evaluated++;
    const rej = runFilters(perNode, req, node);
    if (rej) {
      counter.add(rej.filter, rej.reason);
      return false;
    }
    feasible++;
    const s = totalScore(scorers, req, node);
    if (s > bestScore) {
      best = node;
      bestScore = s;
    }
    return feasible >= limit;
  };
  let done = false;
  if (opts.first) {
    for (const node of opts.first) {
      if (visited.has(node)) continue;
      visited.add(node);
      if (consider(node)) {
        done = true;
        break;
      }
    }
  }
  if (!done) {
    for (const i of seededOrder(nodes.length, rng)) {
      const node = nodes[i];
      if (visited.size > 0 && visited.has(node)) continue;
      if (consider(node)) break;
    }
  }
  if (best) {
    const assignment = assign(req, best);
    if (assignment) return { ok: true, nodeId: best.nodeId, node: best, assignment, score: bestScore, evaluated, feasible };
    // The filters and assign() disagree: a bug, but say so truthfully rather than place badly.
    counter.add('assign', 'filters passed but no concrete assignment was found');
  }
  return { ok: false, explanation: explain(nodes.length, counter.list(filters)) };
}
