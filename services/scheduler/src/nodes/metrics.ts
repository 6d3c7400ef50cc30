/** Node registry metrics (prom-client, on the service's own registry). */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { NodeRegistry } from './registry.js';

export function nodeMetrics(registry: Registry, nodes: NodeRegistry): { lost: Counter } {
  new Gauge({
    name: 'edgenfv_nodes',
    help: 'Registered nodes by health, cordoned ones counted apart.',
    labelNames: ['health', 'cordoned'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const health of ['Ready', 'NotReady', 'Unknown'])
        for (const cordoned of ['true', 'false']) this.set({ health, cordoned }, 0);
      for (const n of nodes.list()) this.inc({ health: n.health, cordoned: String(n.cordoned) });
    },
  });
  const lost = new Counter({
    name: 'edgenfv_nodes_lost_total',
    help: 'Nodes declared NotReady because their heartbeats stopped for longer than the grace.',
    registers: [registry],
  });
  nodes.onNodeLost(() => lost.inc());
  return { lost };
}
