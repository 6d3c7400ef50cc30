import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import type { Vnf, Vnfd } from '@edgenfv/contracts';
import { Ipam } from '@edgenfv/netplugins/internal/ipam';
import { ClusterState, simulatedInventory, type SchedulerBuckets } from '../../src/placement/index.js';
import { LedgerPlacement } from '../../src/placement/port.js';
import { NodeRegistry } from '../../src/nodes/index.js';
import { buckets, natsFixture, waitFor, type NatsFixture } from './nats-helpers.js';
import { SimAgent } from '../nodes/sim-agent.js';

let fx: NatsFixture;
let nc: NatsConnection;
let b: SchedulerBuckets;
before(async () => {
  fx = await natsFixture();
  nc = await fx.connect();
  b = await buckets(nc);
});
after(async () => {
  await fx.close();
});

const descriptor: Vnfd = {
  name: 'vr',
  replicas: 2,
  image: { ref: 'builtin:vr' },
  placement: { antiAffinity: 'node' },
  resources: { vcpus: 2, memoryMiB: 1024, cpuPolicy: 'dedicated', numa: 'strict' },
  interfaces: [
    { name: 'mgmt', type: 'tap', network: 'mgmt' },
    { name: 'up', type: 'sriov', physnet: 'physnet1', vlan: 100 },
  ],
};
function vnf(id: string, replicas: Vnf['replicas'] = []): Vnf {
  const at = new Date().toISOString();
  return { id, tenantId: 'tp', name: id, descriptor, instantiationState: 'NOT_INSTANTIATED', desiredReplicas: 2, replicas, createdAt: at, updatedAt: at };
}

test('LedgerPlacement: the ops engine port over ClusterState, with IP leases held while fenced', async () => {
  const ipam = await Ipam.open(nc, [{ name: 'mgmt', cidr: '10.77.0.0/24', gateway: '10.77.0.1' }]);
  const registry = new NodeRegistry(nc, b, { graceMs: 1000, checkIntervalMs: 100 });
  await registry.start();
  const cluster = new ClusterState(b, { nc, seed: 9 });
  await cluster.start();
  const port = new LedgerPlacement(cluster, { ipam, registry });
  const agents = ['p-a', 'p-b'].map((id) => new SimAgent(nc, b, simulatedInventory({ nodeId: id, pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 2 }] }), 100));
  try {
    for (const a of agents) await a.start();
    registry.setActive(true);
    await waitFor('both nodes in view', () => (cluster.nodes().filter((n) => n.health === 'Ready').length === 2 ? true : undefined));
    const a0 = await port.placeReplica({ tenantId: 'tp', vnf: vnf('vr1'), replica: 0, allocId: 'vr1-r0' });
    assert.equal(a0.interfaces[0]!.ips![0]!.startsWith('10.77.0.'), true);
    assert.equal(a0.interfaces[0]!.gateway, '10.77.0.1');
    const vf = a0.interfaces[1]!;
    assert.equal(vf.type === 'sriov' ? vf.sriov.vlan : vf.type, 100);
    assert.equal(a0.resources.numaNode, 0);
    assert.deepEqual(await port.findAllocation('vr1-r0'), a0);
    assert.equal(await port.findAllocation('nope'), null);
    assert.deepEqual(await port.placeReplica({ tenantId: 'tp', vnf: vnf('vr1'), replica: 0, allocId: 'vr1-r0' }), a0, 'idempotent');
    // replica 1: anti-affinity sends it to the other node
    const v = vnf('vr1', [{ index: 0, state: 'SCHEDULED', nodeId: a0.nodeId, allocId: 'vr1-r0', interfaces: [], updatedAt: '' }]);
    const a1 = await port.placeReplica({ tenantId: 'tp', vnf: v, replica: 1, allocId: 'vr1-r1' });
    assert.notEqual(a1.nodeId, a0.nodeId);
    // avoidNodeIds (heal/drain) is honoured whatever the VNFD says
    await assert.rejects(
      port.placeReplica({ tenantId: 'tp', vnf: vnf('vr2'), replica: 0, allocId: 'vr2-r0', avoidNodeIds: ['p-a', 'p-b'] }),
      (err: Error & { code?: string; details?: { rejected: unknown } }) => {
        assert.equal(err.code, 'UNSCHEDULABLE');
        assert.deepEqual(err.details?.rejected, [{ filter: 'exclude', reason: 'the operation moves replicas away from this node', nodes: 2 }]);
        return true;
      },
    );
    // release on a live node frees the VF and the lease
    await port.releaseAllocation(a1);
    assert.equal((await ipam.leases('mgmt')).filter((l) => l.owner === 'vr1-r1.mgmt').length, 0);
    // release on a lost node keeps both until the node confirms the teardown
    const lostNode = a0.nodeId;
    const agent = agents.find((a) => a.nodeId === lostNode)!;
    agent.partition();
    await waitFor('node lost', () => (cluster.node(lostNode)?.health === 'NotReady' ? true : undefined));
    assert.equal(await port.nodeReady(lostNode), false);
    await port.releaseAllocation(a0);
    assert.equal((await ipam.leases('mgmt')).filter((l) => l.owner === 'vr1-r0.mgmt').length, 1, 'lease held while fenced');
    await agent.register();
    await agent.reconcile();
    agent.resumeHeartbeats();
    await waitFor('lease freed after the node confirmed', async () =>
      (await ipam.leases('mgmt')).some((l) => l.owner === 'vr1-r0.mgmt') ? undefined : true,
    );
    await waitFor('VFs free again', () => (cluster.node(lostNode)?.freeVfs.get('physnet1') === 2 ? true : undefined));
  } finally {
    for (const a of agents) a.stop();
    await cluster.stop();
    await registry.stop();
  }
});

test('LedgerPlacement.allocationLive: a node declared lost and back already (a short partition) is Ready, but its allocations of the older epoch are not live', async () => {
  const registry = new NodeRegistry(nc, b, { graceMs: 1000, checkIntervalMs: 100 });
  await registry.start();
  const cluster = new ClusterState(b, { nc, seed: 3 });
  await cluster.start();
  const port = new LedgerPlacement(cluster, { registry });
  const agent = new SimAgent(nc, b, simulatedInventory({ nodeId: 'p-e', pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 2 }] }), 100);
  const plain: Vnfd = { name: 'e', replicas: 1, image: { ref: 'builtin:e' }, resources: { vcpus: 1, memoryMiB: 256 } };
  const at = new Date().toISOString();
  const v = (id: string): Vnf => ({ id, tenantId: 'te', name: id, descriptor: plain, instantiationState: 'NOT_INSTANTIATED', desiredReplicas: 1, replicas: [], createdAt: at, updatedAt: at });
  try {
    await agent.start();
    registry.setActive(true);
    await waitFor('node in view', () => (cluster.node('p-e')?.health === 'Ready' ? true : undefined));
    // the nodes of the test above are still in the buckets: onlyNodeId keeps these replicas on p-e
    const a = await port.placeReplica({ tenantId: 'te', vnf: v('e1'), replica: 0, allocId: 'e1-r0', onlyNodeId: 'p-e' });
    assert.equal(await port.allocationLive('p-e', 'e1-r0'), true, 'placed on a Ready node in its epoch');
    const epoch = cluster.node('p-e')!.epoch;
    agent.partition();
    await waitFor('node lost', () => (cluster.node('p-e')?.health === 'NotReady' ? true : undefined));
    assert.equal(await port.allocationLive('p-e', 'e1-r0'), false, 'not Ready');
    await agent.register();
    agent.resumeHeartbeats();
    await waitFor('node back at a newer epoch', () => (cluster.node('p-e')?.health === 'Ready' && cluster.node('p-e')!.epoch > epoch ? true : undefined));
    assert.equal(await port.nodeReady('p-e'), true);
    assert.equal(await port.allocationLive('p-e', 'e1-r0'), false, `allocation of epoch ${a.epoch}, node now at ${cluster.node('p-e')!.epoch}`);
    await port.placeReplica({ tenantId: 'te', vnf: v('e2'), replica: 0, allocId: 'e2-r0', onlyNodeId: 'p-e' });
    assert.equal(await port.allocationLive('p-e', 'e2-r0'), true, 'a new allocation in the new epoch');
    assert.equal(await port.allocationLive('p-e', 'nope'), false, 'an allocation that does not exist');
  } finally {
    agent.stop();
    await cluster.stop();
    await registry.stop();
  }
});
