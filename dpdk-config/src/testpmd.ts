/**
 * dpdk-testpmd's argv for a plan: the EAL arguments, `--`, then the application's (forwarding mode, one
 * forwarding core per worker, queues per port, a small mbuf pool). Pure.
 */
import { InvalidArgumentError } from '@edgenfv/contracts';
import { renderEalArgs, type EalOptions } from './eal.js';
import type { DataplanePlan } from './plan.js';
import type { TestpmdSpec } from './workload.js';

export interface TestpmdOptions extends EalOptions, TestpmdSpec {
  /** Extra `net_null` ports (stand-ins for PCI NICs left out of a test run, so the port count stays). */
  nullPorts?: number;
}

/** `[...eal, '--', '--forward-mode=io', '--nb-cores=N', '--rxq=Q', '--txq=Q', '--total-num-mbufs=M']`. */
export function renderTestpmdArgs(plan: DataplanePlan, opts: TestpmdOptions = {}): string[] {
  if (plan.workerCpus.length === 0) {
    throw new InvalidArgumentError([{ field: 'workload.workers', message: 'testpmd forwards on worker lcores: give at least 1 worker' }]);
  }
  const eal = renderEalArgs(plan, opts);
  for (let i = 0; i < (opts.nullPorts ?? 0); i++) eal.push('--vdev', `net_null${i}`);
  const queues = plan.nics.map((n) => (n.kind === 'pci' ? Math.min(n.rxQueues, n.txQueues) : n.queues));
  const q = queues.length > 0 ? Math.min(...queues) : 1;
  const app = [
    `--forward-mode=${opts.forwardMode ?? 'io'}`,
    `--nb-cores=${plan.workerCpus.length}`,
    `--rxq=${q}`,
    `--txq=${q}`,
    `--total-num-mbufs=${opts.mbufs ?? 8192}`,
  ];
  if (opts.burst !== undefined) app.push(`--burst=${opts.burst}`);
  return [...eal, '--', ...app];
}
