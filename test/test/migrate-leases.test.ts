/**
 * IP leases follow a live-migrated replica through node losses (issue 16: "fencing and the ledger hold at every
 * step"), with the real scheduler process and simulated nodes that serve `nodes.<n>.migrate` (no VM; seconds):
 * - the source node is lost while its paused VM waits to be torn down: its reservation is fenced, and when the node
 *   comes back and confirms the teardown, the fenced reservation is freed without the addresses, which moved with
 *   the replica (before: freed with it, the running replica's address given back to the pool);
 * - the migrated replica's node is lost later: the replica is healed elsewhere (new addresses); once that node
 *   confirms its sandbox is gone, the migrated replica's addresses (held under the source's lease owners) are freed
 *   (before: the fenced reservation named owners that hold nothing, and the addresses leaked).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import { startCluster, type Api, type Cluster, until } from '../src/harness.js';
import { startMigratingSimNodes, type SimNode } from '../src/sim-node.js';

let cluster: Cluster;
let nc: NatsConnection;
let api: Api;
let nodes = new Map<string, SimNode>();
let stopNodes = (): void => undefined;

before(async () => {
  cluster = await startCluster({ env: { EDGENFV_HEARTBEAT_GRACE_MS: '2000' } });
  ({ nc, api } = cluster);
  ({ nodes, stop: stopNodes } = await startMigratingSimNodes(nc, ['ml-a', 'ml-b', 'ml-c'], 8));
}, { timeout: 90_000 });

after(async () => {
  stopNodes();
  await cluster?.close();
});

/** IPAM lease owners on the mgmt network. */
async function leaseOwners(): Promise<string[]> {
  const kv = await nc.jetstream().views.kv('edgenfv_ipam');
  const out: string[] = [];
  for await (const k of await kv.keys('mgmt.owner.>')) out.push(k.slice('mgmt.owner.'.length));
  return out.sort();
}

const steps = (op: any): string => op.steps.map((s: any) => s.message).join(' | ');

test('leases follow a migrated replica: a lost source frees none of them, a lost destination frees them once it confirms', async () => {
  const a = nodes.get('ml-a')!;
  const b = nodes.get('ml-b')!;
  await api.ok('nfv.v1.admin.nodes.cordon', { id: 'ml-b' });
  await api.ok('nfv.v1.admin.nodes.cordon', { id: 'ml-c' });
  await api.ok('nfv.v1.admin.tenants.create', { id: 'ml' });
  const descriptor = { name: 'fw', replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:vrouter' }, interfaces: [{ name: 'm', type: 'tap', network: 'mgmt' }] };
  const inst = await api.ok('nfv.v1.tenant.ml.vnfs.instantiate', { descriptor });
  assert.equal((await api.waitOp('ml', inst.opOccId, 30_000)).operationState, 'COMPLETED');
  const v0 = await api.ok('nfv.v1.tenant.ml.vnfs.get', { id: inst.vnfId });
  assert.equal(v0.replicas[0].nodeId, 'ml-a');
  const alloc0 = v0.replicas[0].allocId as string;
  const ips0 = v0.replicas[0].interfaces[0].ips as string[];
  assert.equal(ips0.length, 1);
  assert.deepEqual(await leaseOwners(), [`${alloc0}.m`]);
  await api.ok('nfv.v1.admin.nodes.uncordon', { id: 'ml-b' });

  // 1. migrate to B; A's teardown of the paused source VM hangs, and A is lost meanwhile
  a.holdStops = true;
  const heal = await api.ok('nfv.v1.tenant.ml.vnfs.heal', { id: inst.vnfId, replica: 0, migrate: true });
  await until('the source asked to tear down its VM', async () => /asked to tear down/.test(steps(await api.ok('nfv.v1.tenant.ml.opoccs.get', { id: heal.opOccId }))));
  a.partition();
  const healed = await api.waitOp('ml', heal.opOccId, 60_000);
  assert.equal(healed.operationState, 'COMPLETED', steps(healed));
  assert.equal(healed.params.mode, 'migrate', steps(healed));
  assert.match(steps(healed), /released \(stop not confirmed\)/);
  const v1 = await api.ok('nfv.v1.tenant.ml.vnfs.get', { id: inst.vnfId });
  assert.equal(v1.replicas[0].nodeId, 'ml-b');
  assert.equal(v1.replicas[0].state, 'RUNNING');
  assert.deepEqual(v1.replicas[0].interfaces[0].ips, ips0, 'the guest keeps its address');
  const alloc1 = v1.replicas[0].allocId as string;
  assert.notEqual(alloc1, alloc0);
  await until('A declared lost', async () => (await api.ok('nfv.v1.admin.nodes.get', { id: 'ml-a' })).health === 'NotReady');

  await a.rejoin(); // A comes back, tears the source VM down; its fenced reservation is freed
  assert.ok(a.tornDown.includes(alloc0), `A tore down ${JSON.stringify(a.tornDown)}`);
  await until('the fenced source reservation freed', async () => {
    const rec = await api.ok('nfv.v1.admin.nodes.get', { id: 'ml-a' });
    return rec.health === 'Ready' && rec.allocated.replicas === 0;
  });
  await new Promise((r) => setTimeout(r, 500)); // the registry's hook frees leases right after the ledger write
  assert.deepEqual(await leaseOwners(), [`${alloc0}.m`], 'the migrated replica still holds its address');

  // 2. B (where the replica now runs) is lost: healed on C with a new address; the old one goes once B confirms
  await api.ok('nfv.v1.admin.nodes.uncordon', { id: 'ml-c' });
  await api.ok('nfv.v1.admin.nodes.cordon', { id: 'ml-a' });
  b.partition();
  let v2: any;
  await until(
    'replica 0 healed on C',
    async () => {
      v2 = await api.ok('nfv.v1.tenant.ml.vnfs.get', { id: inst.vnfId });
      return v2.replicas[0].nodeId === 'ml-c' && v2.replicas[0].state === 'RUNNING';
    },
    60_000,
  );
  const alloc2 = v2.replicas[0].allocId as string;
  assert.notDeepEqual(v2.replicas[0].interfaces[0].ips, ips0, 'a new address: the old one is held while B may still run the VM');
  assert.deepEqual(await leaseOwners(), [`${alloc0}.m`, `${alloc2}.m`].sort(), 'the old address held until B confirms');

  await b.rejoin();
  assert.ok(b.tornDown.includes(alloc1), `B tore down ${JSON.stringify(b.tornDown)}`);
  await until('the migrated replica\'s old address freed once B confirmed', async () => JSON.stringify(await leaseOwners()) === JSON.stringify([`${alloc2}.m`]));
  for (const n of nodes.values()) assert.deepEqual(n.conflicts, []);
});

test('an aborted migration whose destination node is lost: the destination\'s fenced reservation frees none of the source\'s leases', async () => {
  const b = nodes.get('ml-b')!;
  await api.ok('nfv.v1.admin.nodes.uncordon', { id: 'ml-a' });
  await api.ok('nfv.v1.admin.nodes.cordon', { id: 'ml-b' });
  await api.ok('nfv.v1.admin.nodes.cordon', { id: 'ml-c' });
  await api.ok('nfv.v1.admin.tenants.create', { id: 'ml2' });
  const descriptor = { name: 'fw', replicas: 1, resources: { vcpus: 1, memoryMiB: 256 }, image: { ref: 'builtin:vrouter' }, interfaces: [{ name: 'm', type: 'tap', network: 'mgmt' }] };
  const inst = await api.ok('nfv.v1.tenant.ml2.vnfs.instantiate', { descriptor });
  assert.equal((await api.waitOp('ml2', inst.opOccId, 30_000)).operationState, 'COMPLETED');
  const v0 = await api.ok('nfv.v1.tenant.ml2.vnfs.get', { id: inst.vnfId });
  assert.equal(v0.replicas[0].nodeId, 'ml-a');
  const alloc0 = v0.replicas[0].allocId as string;
  await api.ok('nfv.v1.admin.nodes.uncordon', { id: 'ml-b' });

  // B takes the incoming allocation and gets stuck preparing it; then B is lost: the migration is given up
  b.holdIncoming = true;
  const runningBefore = new Set(b.running.keys());
  const heal = await api.ok('nfv.v1.tenant.ml2.vnfs.heal', { id: inst.vnfId, replica: 0, migrate: true });
  await until('B took the incoming allocation', async () => [...b.running.keys()].some((k) => !runningBefore.has(k)));
  const incoming = [...b.running.keys()].find((k) => !runningBefore.has(k))!;
  b.partition();
  const ended = await api.waitOp('ml2', heal.opOccId, 60_000);
  assert.equal(ended.operationState, 'FAILED_TEMP', steps(ended));
  assert.match(steps(ended), /stopped answering/);
  const v1 = await api.ok('nfv.v1.tenant.ml2.vnfs.get', { id: inst.vnfId });
  assert.equal(v1.replicas[0].allocId, alloc0, 'the replica stays on A');
  assert.equal(v1.replicas[0].state, 'RUNNING');

  b.holdIncoming = false;
  await b.rejoin(); // tears the stale incoming VM down; its fenced reservation is freed
  assert.ok(b.tornDown.includes(incoming), `B tore down ${JSON.stringify(b.tornDown)}`);
  await until('the fenced destination reservation freed', async () => {
    const rec = await api.ok('nfv.v1.admin.nodes.get', { id: 'ml-b' });
    return rec.health === 'Ready' && rec.allocated.replicas === 0;
  });
  await new Promise((r) => setTimeout(r, 500)); // the registry's hook frees leases right after the ledger write
  assert.ok((await leaseOwners()).includes(`${alloc0}.m`), 'the replica on A keeps its address');
});
