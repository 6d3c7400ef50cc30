/**
 * Metrics the site's alert rules need (deploy/prometheus/edgenfv-rules.yml), read at scrape time:
 * - op occurrences: open ones per operation and the age of the oldest (only the leader drives them), and how they
 *   ended (`edgenfv_opoccs_ended_total{operation,state}`: COMPLETED, FAILED_TEMP, FAILED, ROLLED_BACK);
 * - SR-IOV VF pools: free and total VFs per node and physnet, from the cluster state (what placement sees);
 * - JetStream: bytes, messages and configured max bytes of the events stream and of every KV bucket's stream.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { NatsConnection } from 'nats';
import type { Operation, OperationState, OpOcc } from '@edgenfv/contracts';
import type { ClusterState } from './placement/cluster.js';
import type { NodeRegistry } from './nodes/registry.js';

export interface SiteMetricsSources {
  nc: NatsConnection;
  openOps: () => Iterable<Pick<OpOcc, 'operation' | 'startTime'>>;
  cluster: () => ClusterState | undefined;
  nodes: NodeRegistry;
  now?: () => number;
}

export function siteMetrics(registry: Registry, src: SiteMetricsSources): { opEnded: (operation: Operation, state: OperationState) => void } {
  const now = src.now ?? Date.now;
  const registers = [registry];
  new Gauge({
    name: 'edgenfv_opoccs_open',
    help: 'Operation occurrences not yet terminal, by operation (as the leader drives them; 0 on followers).',
    labelNames: ['operation'] as const,
    registers,
    collect() {
      this.reset();
      for (const operation of ['INSTANTIATE', 'SCALE', 'HEAL', 'TERMINATE']) this.set({ operation }, 0);
      for (const op of src.openOps()) this.inc({ operation: op.operation });
    },
  });
  new Gauge({
    name: 'edgenfv_opocc_oldest_open_seconds',
    help: 'Age of the oldest operation occurrence not yet terminal (0 when none).',
    registers,
    collect() {
      let oldest = 0;
      const t = now();
      for (const op of src.openOps()) oldest = Math.max(oldest, (t - Date.parse(op.startTime)) / 1000);
      this.set(Number.isFinite(oldest) ? oldest : 0);
    },
  });
  const ended = new Counter({
    name: 'edgenfv_opoccs_ended_total',
    help: 'Operation occurrences that ended, by operation and state (COMPLETED, FAILED_TEMP, FAILED, ROLLED_BACK).',
    labelNames: ['operation', 'state'] as const,
    registers,
  });
  for (const operation of ['INSTANTIATE', 'SCALE', 'HEAL', 'TERMINATE']) for (const state of ['COMPLETED', 'FAILED']) ended.inc({ operation, state }, 0);
  new Gauge({
    name: 'edgenfv_node_vfs',
    help: 'SR-IOV VFs per node and physnet: state="total" (enabled on PFs mapped to the physnet) and state="free" (not reserved).',
    labelNames: ['node', 'physnet', 'state'] as const,
    registers,
    collect() {
      this.reset();
      const cluster = src.cluster();
      for (const rec of src.nodes.list()) {
        const totals = new Map<string, number>();
        for (const pf of rec.inventory.sriovPfs) if (pf.physnet) totals.set(pf.physnet, (totals.get(pf.physnet) ?? 0) + pf.numVfs);
        const view = cluster?.node(rec.id);
        for (const [physnet, total] of totals) {
          this.set({ node: rec.id, physnet, state: 'total' }, total);
          this.set({ node: rec.id, physnet, state: 'free' }, view?.freeVfs.get(physnet) ?? total);
        }
      }
    },
  });
  const streamBytes = new Gauge({ name: 'edgenfv_jetstream_stream_bytes', help: 'Bytes held by an edgenfv JetStream stream (the events stream, KV_<bucket> for each state bucket).', labelNames: ['stream'] as const, registers });
  const streamMax = new Gauge({ name: 'edgenfv_jetstream_stream_max_bytes', help: 'Configured max bytes of the stream (-1: unlimited).', labelNames: ['stream'] as const, registers });
  new Gauge({
    name: 'edgenfv_jetstream_stream_messages',
    help: 'Messages held by an edgenfv JetStream stream.',
    labelNames: ['stream'] as const,
    registers,
    async collect() {
      this.reset();
      streamBytes.reset();
      streamMax.reset();
      try {
        const jsm = await src.nc.jetstreamManager();
        for await (const si of jsm.streams.list()) {
          const name = si.config.name;
          if (!/^(EDGENFV_|KV_edgenfv_)/.test(name)) continue;
          this.set({ stream: name }, si.state.messages);
          streamBytes.set({ stream: name }, si.state.bytes);
          streamMax.set({ stream: name }, si.config.max_bytes);
        }
      } catch {
        /* NATS unavailable right now: the series are absent for this scrape */
      }
    },
  });
  return { opEnded: (operation, state) => ended.inc({ operation, state }) };
}
