/**
 * Failure paths of issue 12 around quota and leases, through the real scheduler process, a real nats-server and a
 * simulated node that can be cut off (its VM "keeps running" meanwhile):
 * - a FORCEFUL terminate that supersedes a scale-out gives back the scale's charge too (before: leaked);
 * - a FORCEFUL terminate on a Ready node does not free the replica's IP lease before the node confirms the
 *   sandbox is gone (before: freed at once, a duplicate IP while the VM still ran); the lease goes once it does;
 * - a refund is given once per op occurrence however often the ending is retried (a new leader redoing it).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import { Store } from '@edgenfv/scheduler/internal/state/store';
import { refundOnce } from '@edgenfv/scheduler/internal/ops/quota';
import { startCluster, type Api, type Cluster, until } from '../src/harness.js';
import { startSimNode, type SimNode } from '../src/sim-node.js';

let cluster: Cluster;
let nc: NatsConnection;
let api: Api;
let node: SimNode;
let cleanupNode: (() => void) | undefined;

before(async () => {
  cluster = await startCluster();
  ({ nc, api } = cluster);
  ({ node, cleanup: cleanupNode } = await startSimNode(nc, 'ql-a', 300));
}, { timeout: 90_000 });

after(async () => {
  node?.stop();
  await cluster?.close();
  cleanupNode?.();
});

async function leaseOwners(): Promise<string[]> {
  const kv = await nc.jetstream().views.kv('edgenfv_ipam');
  const out: string[] = [];
  for await (const k of await kv.keys('mgmt.owner.>')) out.push(k.slice('mgmt.owner.'.length));
  return out;
}

test('FORCEFUL terminate over a scale-out: quota all given back, the running VM keeps its lease until the node confirms', async () => {
  await api.ok('nfv.v1.admin.tenants.create', { id: 'q', quota: { vcpus: 10 } });
  const descriptor = { name: 'fw', replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:vrouter' }, interfaces: [{ name: 'm', type: 'tap', network: 'mgmt' }] };
  const inst = await api.ok('nfv.v1.tenant.q.vnfs.instantiate', { descriptor });
  assert.equal((await api.waitOp('q', inst.opOccId, 30_000)).operationState, 'COMPLETED');
  const v = await api.ok('nfv.v1.tenant.q.vnfs.get', { id: inst.vnfId });
  const alloc0 = v.replicas[0].allocId as string;
  assert.ok(node.running.has(alloc0));

  node.partition(); // the node stops seeing changes; its VM keeps running
  const scale = await api.ok('nfv.v1.tenant.q.vnfs.scale', { id: inst.vnfId, replicas: 3 });
  assert.equal((await api.ok('nfv.v1.admin.tenants.get', { id: 'q' })).usage.vcpus, 3);
  const term = await api.ok('nfv.v1.tenant.q.vnfs.terminate', { id: inst.vnfId, mode: 'FORCEFUL' });
  assert.equal((await api.waitOp('q', term.opOccId, 30_000)).operationState, 'COMPLETED');
  const sc = await api.waitOp('q', scale.opOccId, 30_000);
  assert.equal(sc.operationState, 'FAILED');
  assert.equal(sc.error.code, 'CONFLICT');
  const t = await api.ok('nfv.v1.admin.tenants.get', { id: 'q' });
  assert.deepEqual(t.usage, { vcpus: 0, memoryMiB: 0, vfs: 0, vnfs: 0 }, 'the scale-out charge is given back with the rest');
  assert.equal(t.refunded, undefined, 'refund bookkeeping is not part of the API view');

  // the VM of replica 0 still runs on the cut-off node: its address is not free for anyone else
  assert.ok((await leaseOwners()).some((o) => o.startsWith(`${alloc0}.`)), 'lease kept while the node has not confirmed');
  await node.rejoin(); // registers, tears the sandbox down, heartbeats without it
  await until('the lease freed after the node confirmed', async () => !(await leaseOwners()).some((o) => o.startsWith(`${alloc0}.`)));
  assert.deepEqual(node.conflicts, []);
});

test('a refund is given once per op occurrence however often it is retried', async () => {
  const store = await Store.open(nc);
  await api.ok('nfv.v1.admin.tenants.create', { id: 'r' });
  await store.tenants.mutate('r', (cur) => (cur ? { ...cur, usage: { vcpus: 4, memoryMiB: 1024, vfs: 0, vnfs: 2 } } : undefined));
  const give = { vcpus: 2, memoryMiB: 512, vfs: 0, vnfs: 1 };
  const at = new Date().toISOString();
  assert.equal(await refundOnce(store, 'r', 'op-1', give, at), true);
  assert.equal(await refundOnce(store, 'r', 'op-1', give, at), false);
  assert.deepEqual((await api.ok('nfv.v1.admin.tenants.get', { id: 'r' })).usage, { vcpus: 2, memoryMiB: 512, vfs: 0, vnfs: 1 });
});
