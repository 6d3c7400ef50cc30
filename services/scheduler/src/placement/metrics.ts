/** Placement metrics (prom-client, on the service's own registry; bounded labels only). */
import { Counter, Histogram, type Registry } from 'prom-client';
import type { ClusterState } from './cluster.js';

export interface PlacementMetrics {
  decisions: Counter<'result'>;
  decisionSeconds: Histogram<'result'>;
  /** For ClusterStateOptions.onDecision. */
  onDecision: (ms: number, ok: boolean) => void;
}

export function placementMetrics(registry: Registry): PlacementMetrics {
  const decisions = new Counter({
    name: 'edgenfv_placement_decisions_total',
    help: 'Placement decisions, by result (placed or unschedulable).',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  const decisionSeconds = new Histogram({
    name: 'edgenfv_placement_decision_duration_seconds',
    help: 'Time to choose a node (filters, scorers), without the commit.',
    labelNames: ['result'] as const,
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
    registers: [registry],
  });
  return {
    decisions,
    decisionSeconds,
    onDecision: (ms, ok) => {
      const result = ok ? 'placed' : 'unschedulable';
      decisions.inc({ result });
      decisionSeconds.observe({ result }, ms / 1000);
    },
  };
}

/** Ledger counters read from a ClusterState at scrape time. */
export function ledgerMetrics(registry: Registry, cluster: () => ClusterState | undefined): void {
  const stat = (name: string, help: string, key: keyof ClusterState['stats']) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        const v = cluster()?.stats[key] ?? 0;
        this.reset();
        this.inc(v);
      },
    });
  stat('edgenfv_ledger_writes_total', 'Ledger compare-and-set writes (one per node batch).', 'ledgerWrites');
  stat('edgenfv_ledger_conflicts_total', 'Ledger writes refused because another writer changed the ledger first.', 'ledgerConflicts');
  stat('edgenfv_reservations_committed_total', 'Reservations committed to node ledgers.', 'reservationsCommitted');
}
