/**
 * Bounded growth (issue 12): every state bucket and the notifications stream have a max_bytes; terminated VNFs and
 * ended op occurrences are kept for the configured retention (EDGENFV_RETENTION_MS) and then purged by the leader.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import { EVENTS_STREAM, KV_BUCKETS } from '@edgenfv/contracts';
import { startCluster, type Api, type Cluster, type SchedulerProc } from '../src/harness.js';
import { startSimNode, type SimNode } from '../src/sim-node.js';

let cluster: Cluster;
let sched: SchedulerProc;
let nc: NatsConnection;
let api: Api;
let node: SimNode;
let cleanupNode: (() => void) | undefined;
const RETENTION_MS = 1500;

before(async () => {
  cluster = await startCluster({
    networks: [],
    config: { bucketMaxBytes: 64 * 1024 * 1024, eventsMaxBytes: 128 * 1024 * 1024 },
    env: { EDGENFV_RETENTION_MS: String(RETENTION_MS) },
  });
  ({ scheduler: sched, nc, api } = cluster);
  ({ node, cleanup: cleanupNode } = await startSimNode(nc, 'gr-a', 500));
}, { timeout: 90_000 });

after(async () => {
  node?.stop();
  await cluster?.close();
  cleanupNode?.();
});

test('every state bucket and the events stream are bounded in bytes', async () => {
  const jsm = await nc.jetstreamManager();
  for (const b of [KV_BUCKETS.tenants, KV_BUCKETS.vnfs, KV_BUCKETS.opoccs, KV_BUCKETS.requests, KV_BUCKETS.nodes, KV_BUCKETS.allocs, KV_BUCKETS.status, 'edgenfv_names', 'edgenfv_ledger']) {
    const info = await jsm.streams.info(`KV_${b}`);
    assert.equal(info.config.max_bytes, 64 * 1024 * 1024, b);
  }
  const ev = await jsm.streams.info(EVENTS_STREAM);
  assert.equal(ev.config.max_bytes, 128 * 1024 * 1024);
  assert.ok(ev.config.max_age > 0);
});

test('a terminated VNF and its op occurrences are purged after the retention; a live one stays', async () => {
  await api.ok('nfv.v1.admin.tenants.create', { id: 'g' });
  const d = (name: string): unknown => ({ descriptor: { name, replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:vrouter' } } });
  const keep = await api.ok('nfv.v1.tenant.g.vnfs.instantiate', d('keep'));
  const gone = await api.ok('nfv.v1.tenant.g.vnfs.instantiate', d('gone'));
  assert.equal((await api.waitOp('g', keep.opOccId, 30_000)).operationState, 'COMPLETED');
  assert.equal((await api.waitOp('g', gone.opOccId, 30_000)).operationState, 'COMPLETED');
  const term = await api.ok('nfv.v1.tenant.g.vnfs.terminate', { id: gone.vnfId });
  assert.equal((await api.waitOp('g', term.opOccId, 30_000)).operationState, 'COMPLETED');
  // still there right after it ended
  assert.equal((await api.tenant('g', 'vnfs.get', { id: gone.vnfId })).ok, true);
  const end = Date.now() + 30_000;
  for (;;) {
    const v = await api.tenant('g', 'vnfs.get', { id: gone.vnfId });
    const o = await api.tenant('g', 'opoccs.get', { id: term.opOccId });
    const i = await api.tenant('g', 'opoccs.get', { id: gone.opOccId });
    if (!v.ok && !o.ok && !i.ok) {
      assert.equal(v.error.code, 'NOT_FOUND');
      break;
    }
    if (Date.now() > end) throw new Error(`not purged: ${JSON.stringify({ v: v.ok, o: o.ok, i: i.ok })}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const k = await api.ok('nfv.v1.tenant.g.vnfs.get', { id: keep.vnfId });
  assert.equal(k.instantiationState, 'INSTANTIATED', 'an instantiated VNF is never purged');
  assert.ok(sched.logs.some((l) => l.includes('purged what ended before the retention')));
});
