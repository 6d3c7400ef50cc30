/**
 * Quota under concurrency: 50 parallel instantiates against a tenant whose quota allows 10 VNFs -> exactly 10
 * accepted, 40 QUOTA_EXCEEDED (the tenant's usage is a compare-and-set on its KV entry).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startCluster, vnfd, type Cluster } from '../src/harness.js';
import { putNode } from '../src/state-fixtures.js';

let c: Cluster;
before(async () => {
  c = await startCluster();
  // a node with room for all of them, whose agent never reports: accepted VNFs stay in progress (holding quota)
  await putNode(c.nc, 'edge-big', { cpuCount: 128, memoryMiB: 1 << 20, numaNodes: [{ id: 0, cpus: Array.from({ length: 128 }, (_, i) => i), memoryMiB: 1 << 20, hugepages: [] }] });
});
after(async () => {
  await c?.close();
});

test('50 parallel instantiates against a quota of 10 VNFs: exactly 10 accepted, 40 QUOTA_EXCEEDED', async () => {
  await c.api.ok('nfv.v1.admin.tenants.create', { id: 'racer', quota: { vnfs: 10 } });
  const replies = await Promise.all(
    Array.from({ length: 50 }, (_, i) => c.api.call('nfv.v1.tenant.racer.vnfs.instantiate', { descriptor: vnfd(`vnf-${i}`) }, 30_000)),
  );
  const accepted = replies.filter((r) => r.ok);
  const refused = replies.filter((r) => !r.ok);
  if (accepted.length !== 10) {
    const ops = await Promise.all(accepted.map((r) => c.api.ok('nfv.v1.tenant.racer.opoccs.get', { id: r.result.opOccId })));
    assert.fail(`${accepted.length} accepted: ${JSON.stringify(ops.map((o) => [o.operationState, o.error, o.steps.map((s: any) => s.message)]))}`);
  }
  assert.equal(refused.length, 40);
  for (const r of refused) {
    assert.equal(r.error.code, 'QUOTA_EXCEEDED');
    assert.equal(r.error.details.resource, 'vnfs');
  }
  const tenant = await c.api.ok('nfv.v1.admin.tenants.get', { id: 'racer' });
  assert.equal(tenant.usage.vnfs, 10);
  const list = await c.api.ok('nfv.v1.tenant.racer.vnfs.list', {});
  assert.equal(list.items.length, 10, JSON.stringify(list.items.filter((v: any) => !accepted.some((a) => a.result.vnfId === v.id))));
  assert.equal(new Set(accepted.map((r) => r.result.vnfId)).size, 10);
  // none of the accepted ones ended (an ended instantiate gives its quota back, which would let an 11th in)
  for (const r of accepted) {
    const op = await c.api.ok('nfv.v1.tenant.racer.opoccs.get', { id: r.result.opOccId });
    assert.ok(['STARTING', 'PROCESSING'].includes(op.operationState), JSON.stringify(op));
  }
});

test('vCPU quota: parallel requests never take more than the quota', async () => {
  await c.api.ok('nfv.v1.admin.tenants.create', { id: 'cpus', quota: { vcpus: 7 } });
  const replies = await Promise.all(
    Array.from({ length: 12 }, (_, i) =>
      c.api.call('nfv.v1.tenant.cpus.vnfs.instantiate', { descriptor: vnfd(`c-${i}`, { resources: { vcpus: 2, memoryMiB: 256 } }) }, 30_000),
    ),
  );
  assert.equal(replies.filter((r) => r.ok).length, 3); // 3 x 2 = 6 <= 7 < 8
  const tenant = await c.api.ok('nfv.v1.admin.tenants.get', { id: 'cpus' });
  assert.equal(tenant.usage.vcpus, 6);
});
