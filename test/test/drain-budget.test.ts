/**
 * `nodes.drain {id, maxParallel, deadlineS}` through the API, with simulated nodes (no VM; docs/migration.md):
 * - the reply reports per VNF what the drain does (mode migrate for tap/no-NIC VNFs, restart with the reason for an
 *   SR-IOV one); with maxParallel 2 the third HEAL waits for the first (`params.after`), the second does not;
 * - a node agent that does not serve live migration (the simulated one does not answer `nodes.<n>.migrate`) gets its
 *   VNFs restarted instead, and each op occurrence says why (`params.mode: restart`, `restartReason`);
 * - every VNF ends RUNNING on the other node; the drained node holds nothing.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';
import { Api, startScheduler, type SchedulerProc } from '../src/harness.js';
import { SimNode, simulatedNodeInventory } from '../src/sim-node.js';
import { waitNodeKnown } from '../src/state-fixtures.js';

let dir: string;
let nats: NatsServerHandle;
let sched: SchedulerProc;
let nc: NatsConnection;
let api: Api;
const nodes = new Map<string, SimNode>();
const cleanups: (() => void)[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgenfv-drainb-'));
  nats = await startNatsServer({ storeDir: join(dir, 'js') });
  const config = join(dir, 'scheduler.json');
  writeFileSync(config, JSON.stringify({ networks: [] }));
  sched = await startScheduler({ EDGENFV_NATS_URL: nats.url, EDGENFV_CONFIG: config });
  nc = await connect({ servers: nats.url });
  api = new Api(nc);
  for (const id of ['drainb-a', 'drainb-b']) {
    const { inventory, cleanup } = await simulatedNodeInventory(id, { numaNodes: 1, cpusPerNuma: 8, isolatedPerNuma: 4, vfsPerNuma: 4, physnet: 'physnet1' });
    cleanups.push(cleanup);
    const n = new SimNode(nc, inventory, 300);
    await n.start();
    nodes.set(id, n);
  }
});

after(async () => {
  for (const n of nodes.values()) n.stop();
  await nc?.close();
  await sched?.stop();
  await nats?.stop();
  for (const c of cleanups) c();
  rmSync(dir, { recursive: true, force: true });
});

test('drain with a budget: per-VNF report, maxParallel chains, what cannot migrate is restarted and says why', async () => {
  for (const id of nodes.keys()) await waitNodeKnown(nc, id);
  await api.ok('nfv.v1.admin.nodes.cordon', { id: 'drainb-b' });
  const vnfIds: string[] = [];
  for (const t of ['dba', 'dbb', 'dbc']) {
    await api.ok('nfv.v1.admin.tenants.create', { id: t });
    const descriptor = {
      name: 'fn',
      replicas: 1,
      resources: { vcpus: 1, memoryMiB: 128 },
      image: { ref: 'builtin:busybox' },
      ...(t === 'dbc' ? { interfaces: [{ name: 'up', type: 'sriov', physnet: 'physnet1' }] } : {}),
    };
    const inst = await api.ok(`nfv.v1.tenant.${t}.vnfs.instantiate`, { descriptor });
    assert.equal((await api.waitOp(t, inst.opOccId)).operationState, 'COMPLETED');
    vnfIds.push(inst.vnfId);
  }
  await api.ok('nfv.v1.admin.nodes.uncordon', { id: 'drainb-b' });

  const drain = await api.ok('nfv.v1.admin.nodes.drain', { id: 'drainb-a', maxParallel: 2, deadlineS: 600 });
  assert.equal(drain.opOccIds.length, 3);
  const byVnf = new Map<string, any>(drain.vnfs.map((v: any) => [v.vnfId, v]));
  assert.equal(byVnf.get(vnfIds[0]!).mode, 'migrate');
  assert.equal(byVnf.get(vnfIds[1]!).mode, 'migrate');
  assert.equal(byVnf.get(vnfIds[2]!).mode, 'restart');
  assert.match(byVnf.get(vnfIds[2]!).reason, /SR-IOV/);
  const tenants = ['dba', 'dbb', 'dbc'];
  const ops = await Promise.all(drain.vnfs.map((v: any) => api.ok(`nfv.v1.tenant.${v.tenantId}.opoccs.get`, { id: v.opOccId })));
  assert.equal(ops[0].params.after, undefined);
  assert.equal(ops[1].params.after, undefined, 'maxParallel 2: the second moves with the first');
  assert.equal(ops[2].params.after.id, ops[0].id, 'the third waits for the first');
  assert.equal(typeof ops[0].params.deadlineAt, 'string');

  for (const [k, v] of drain.vnfs.entries()) {
    const done = await api.waitOp(v.tenantId, v.opOccId, 60_000);
    assert.equal(done.operationState, 'COMPLETED', `${v.vnfId}: ${done.steps.map((s: any) => s.message).join(' | ')}`);
    assert.equal(done.params.mode, 'restart', 'a node agent without live migration: restarted');
    assert.match(done.params.restartReason, k < 2 ? /does not serve live migration/ : /SR-IOV \(VFIO\) NICs cannot migrate/);
    const vnf = await api.ok(`nfv.v1.tenant.${tenants[vnfIds.indexOf(v.vnfId)]}.vnfs.get`, { id: v.vnfId });
    assert.equal(vnf.replicas[0].nodeId, 'drainb-b');
    assert.equal(vnf.replicas[0].state, 'RUNNING');
  }
  for (let i = 0; ; i++) {
    const a = await api.ok('nfv.v1.admin.nodes.get', { id: 'drainb-a' });
    if (a.allocated.replicas === 0) break;
    assert.ok(i < 100, `drainb-a still holds ${JSON.stringify(a.allocated)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
});
