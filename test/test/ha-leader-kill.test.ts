/**
 * High availability under load: a real nats-server, 3 scheduler processes (one leads), 4 simulated edge nodes
 * (inventory from each node's own fake sysfs tree through the node agent's inventory code, the real node
 * protocol). 200 instantiates; the leader is killed with SIGKILL mid-way. Every op occurrence ends COMPLETED or a
 * truthful FAILED, no replica is placed twice, and no CPU or VF is booked twice on any node.
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

const N_VNFS = 200;
let dir: string;
let nats: NatsServerHandle;
let nc: NatsConnection;
let api: Api;
const schedulers = new Map<string, SchedulerProc>();
const nodes: SimNode[] = [];
const cleanups: (() => void)[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgenfv-ha-'));
  nats = await startNatsServer({ storeDir: join(dir, 'js') });
  const config = join(dir, 'scheduler.json');
  writeFileSync(config, JSON.stringify({ networks: [] }));
  for (const id of ['sched-a', 'sched-b', 'sched-c']) {
    schedulers.set(id, await startScheduler({ EDGENFV_NATS_URL: nats.url, EDGENFV_CONFIG: config, EDGENFV_INSTANCE_ID: id, EDGENFV_START_TIMEOUT_MS: '120000' }));
  }
  nc = await connect({ servers: nats.url });
  api = new Api(nc);
  for (let i = 0; i < 4; i++) {
    const { inventory, cleanup } = await simulatedNodeInventory(`edge-${i}`, { numaNodes: 2, cpusPerNuma: 32, isolatedPerNuma: 24, vfsPerNuma: 16, physnet: 'physnet1' });
    cleanups.push(cleanup);
    const node = new SimNode(nc, inventory);
    await node.start();
    nodes.push(node);
  }
});

after(async () => {
  for (const n of nodes) n.stop();
  await nc?.close();
  for (const s of schedulers.values()) await s.stop('SIGKILL');
  await nats?.stop();
  for (const c of cleanups) c();
  rmSync(dir, { recursive: true, force: true });
});

async function leaderId(): Promise<string> {
  const kv = await nc.jetstream().views.kv('edgenfv_leader');
  for (let i = 0; i < 100; i++) {
    const e = await kv.get('scheduler');
    if (e && e.operation === 'PUT') return JSON.parse(e.string()).holder as string;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('no leader');
}

function vnfdFor(i: number): Record<string, unknown> {
  // half NUMA-strict with a pinned CPU and an SR-IOV VF, half shared
  return i % 2 === 0
    ? { name: `dp-${i}`, replicas: 1, resources: { vcpus: 1, memoryMiB: 256, cpuPolicy: 'dedicated', numa: 'strict' }, image: { ref: 'builtin:vrouter' }, interfaces: [{ name: 'up', type: 'sriov', physnet: 'physnet1', vlan: 100 }] }
    : { name: `cp-${i}`, replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:vrouter' } };
}

test(`kill -9 of the leader mid-way through ${N_VNFS} instantiates: all end COMPLETED or truthfully FAILED, nothing booked twice`, async (t) => {
  for (const n of nodes) await waitNodeKnown(nc, n.nodeId);
  const tenants = ['t0', 't1', 't2', 't3', 't4'];
  for (const t of tenants) await api.ok('nfv.v1.admin.tenants.create', { id: t });
  const firstLeader = await leaderId();

  const accepted: { tenant: string; vnfId: string; opOccId: string }[] = [];
  let killed = false;
  for (let batch = 0; batch < N_VNFS / 20; batch++) {
    const replies = await Promise.all(
      Array.from({ length: 20 }, (_, k) => {
        const i = batch * 20 + k;
        const tenant = tenants[i % tenants.length]!;
        return api.call(`nfv.v1.tenant.${tenant}.vnfs.instantiate`, { descriptor: vnfdFor(i), requestId: `ha-${i}` }, 30_000).then((r) => ({ r, tenant }));
      }),
    );
    for (const { r, tenant } of replies) {
      assert.equal(r.ok, true, JSON.stringify(r));
      accepted.push({ tenant, vnfId: r.result.vnfId, opOccId: r.result.opOccId });
    }
    if (!killed && accepted.length >= N_VNFS / 2) {
      schedulers.get(firstLeader)!.child.kill('SIGKILL');
      await schedulers.get(firstLeader)!.exited;
      killed = true;
    }
  }
  assert.ok(killed);

  // every operation ends; the new leader finishes what the old one had in flight
  const ops = [];
  for (const a of accepted) ops.push(await api.waitOp(a.tenant, a.opOccId, 120_000));
  const newLeader = await leaderId();
  assert.notEqual(newLeader, firstLeader, 'another replica took over');

  const completed = ops.filter((o) => o.operationState === 'COMPLETED');
  const failed = ops.filter((o) => o.operationState !== 'COMPLETED');
  t.diagnostic(`${completed.length} COMPLETED, ${failed.length} FAILED: ${JSON.stringify(failed.map((o) => [o.error?.code, o.error?.message?.slice(0, 200)]))}`);
  for (const o of failed) {
    assert.ok(o.operationState === 'FAILED' || o.operationState === 'FAILED_TEMP', JSON.stringify(o));
    assert.ok(o.error?.code && o.error.message, `a FAILED op says why: ${JSON.stringify(o)}`);
  }
  assert.ok(completed.length >= N_VNFS * 0.9, `${completed.length} completed; failures: ${JSON.stringify(failed.slice(0, 3).map((o) => o.error))}`);

  // the API's view: each completed VNF has its one replica RUNNING on a node
  for (const a of accepted) {
    const v = await api.ok(`nfv.v1.tenant.${a.tenant}.vnfs.get`, { id: a.vnfId });
    const op = ops.find((o) => o.id === a.opOccId);
    if (op.operationState === 'COMPLETED') {
      assert.equal(v.instantiationState, 'INSTANTIATED');
      assert.equal(v.replicas[0].state, 'RUNNING');
      assert.ok(nodes.some((n) => n.nodeId === v.replicas[0].nodeId));
    }
    const placements = op.steps.filter((s: any) => /placed on node/.test(s.message));
    assert.ok(placements.length <= 1, `replica placed once: ${JSON.stringify(op.steps)}`);
  }

  // the nodes' view: one allocation per replica, no CPU or VF held twice
  for (const n of nodes) assert.deepEqual(n.conflicts, [], `node ${n.nodeId}`);
  const running = nodes.flatMap((n) => [...n.running.values()]);
  assert.equal(running.length, completed.length, `as many replicas run as operations completed; failed: ${JSON.stringify(failed.map((o) => [o.vnfId, o.error?.code, o.error?.message?.slice(0, 160), o.steps.map((s: any) => s.message).join(' | ').slice(0, 400)]))}`);
  assert.equal(new Set(running.map((r) => `${r.vnfId}/${r.replica}`)).size, running.length, 'no replica runs twice');
  const kv = await nc.jetstream().views.kv('edgenfv_allocs');
  const listed: string[] = [];
  for await (const k of await kv.keys()) listed.push(k);
  const allocKeys = new Set<string>();
  for (const k of listed) if ((await kv.get(k))?.operation === 'PUT') allocKeys.add(k);
  assert.equal(allocKeys.size, completed.length, 'one allocation record per running replica');
});
