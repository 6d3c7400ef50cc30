/**
 * Nothing is lost: tenants, VNFs and op occurrences created, then every process (nats-server included) killed
 * with SIGKILL and restarted on the same store -> all state is back and the API answers as before.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'nats';
import { startNatsServer } from '@edgenfv/nats-launcher';
import { Api, startCluster, startScheduler, vnfd, type Cluster } from '../src/harness.js';
import { putNode } from '../src/state-fixtures.js';

let c: Cluster;
before(async () => {
  c = await startCluster();
});
after(async () => {
  await c?.close();
});

test('SIGKILL of nats-server and scheduler loses nothing', async () => {
  await putNode(c.nc, 'edge-r');
  await c.api.ok('nfv.v1.admin.tenants.create', { id: 'keep', displayName: 'Kept', quota: { vnfs: 5, vcpus: 16 } });
  await c.api.ok('nfv.v1.admin.tenants.create', { id: 'keep2' });
  const made = [];
  for (const name of ['fw', 'lb', 'dpi']) made.push(await c.api.ok('nfv.v1.tenant.keep.vnfs.instantiate', { descriptor: vnfd(name), requestId: `r-${name}` }));
  // wait until each is placed (PROCESSING, replica SCHEDULED on edge-r): from then on nothing changes by itself
  for (const m of made) {
    for (let i = 0; ; i++) {
      const v = await c.api.ok('nfv.v1.tenant.keep.vnfs.get', { id: m.vnfId });
      if (v.replicas[0].state === 'SCHEDULED') break;
      assert.ok(i < 200, `VNF ${m.vnfId} never placed: ${JSON.stringify(v.replicas)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  await c.api.ok('nfv.v1.admin.nodes.cordon', { id: 'edge-r' });

  const tenantsBefore = await c.api.ok('nfv.v1.admin.tenants.list', {});
  const vnfsBefore = await c.api.ok('nfv.v1.tenant.keep.vnfs.list', {});
  const opsBefore = await Promise.all(made.map((m) => c.api.ok('nfv.v1.tenant.keep.opoccs.get', { id: m.opOccId })));

  // kill -9 everything
  await c.nc.close();
  c.scheduler.child.kill('SIGKILL');
  c.nats.kill('SIGKILL');
  await Promise.all([c.scheduler.exited, c.nats.exited]);

  // restart on the same port and store
  c.nats = await startNatsServer({ storeDir: c.nats.storeDir, port: c.nats.port });
  c.scheduler = await startScheduler(c.env);
  c.nc = await connect({ servers: c.nats.url });
  c.api = new Api(c.nc);

  const tenantsAfter = await c.api.ok('nfv.v1.admin.tenants.list', {});
  assert.deepEqual(tenantsAfter, tenantsBefore);
  const vnfsAfter = await c.api.ok('nfv.v1.tenant.keep.vnfs.list', {});
  assert.deepEqual(vnfsAfter, vnfsBefore);
  for (const [i, m] of made.entries()) {
    const op = await c.api.ok('nfv.v1.tenant.keep.opoccs.get', { id: m.opOccId });
    assert.deepEqual(op, opsBefore[i]);
  }
  const node = await c.api.ok('nfv.v1.admin.nodes.get', { id: 'edge-r' });
  assert.equal(node.cordoned, true);
  // requestId memory survived too: the same request returns the first reply
  const again = await c.api.ok('nfv.v1.tenant.keep.vnfs.instantiate', { descriptor: vnfd('fw'), requestId: 'r-fw' });
  assert.deepEqual(again, made[0]);
  // and the quota usage is what it was: 3 VNFs held, 2 more allowed, the 6th refused
  assert.equal(tenantsAfter.items.find((t: any) => t.id === 'keep').usage.vnfs, 3);
});
