import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildNodeView, resourcesFilter, simulatedInventory, warmPoolHeld, warmPoolScorer, type NodeView } from '../../src/placement/index.js';
import { occupy, request, vnfd } from './helpers.js';

const overhead = { guestBaseMiB: 512, hypervisorMiB: 128 };

function view(ready: number, booting = 0): NodeView {
  const inventory = {
    ...simulatedInventory({ nodeId: 'n1', numaNodes: 1, cpusPerNuma: 4, isolatedPerNuma: 0, memoryMiBPerNuma: 4096, hugepages2MPerNuma: 0 }),
    vmOverhead: overhead,
    warmPool: [{ vcpus: 1, memoryMiB: 256, count: 2, ready, booting, readyVms: [] }],
  };
  return buildNodeView({ nodeId: 'n1', epoch: 1, health: 'Ready', cordoned: false, inventory });
}

test('warm pool VMs (ready and booting) hold their flavour plus the VM overhead', () => {
  assert.deepEqual(warmPoolHeld(view(1, 1).inventory), { vcpus: 2, memoryMiB: 2 * (256 + 640) });
  const v = view(1, 1);
  assert.equal(v.sharedVcpusUsed, 2);
  assert.equal(v.memoryMiBUsed, 2 * 896);
  assert.deepEqual(warmPoolHeld(simulatedInventory({ nodeId: 'x' })), { vcpus: 0, memoryMiB: 0 });
});

test('placement sees the capacity pool VMs hold: a replica that fit without them is refused with them', () => {
  const req = request(vnfd({ resources: { vcpus: 1, memoryMiB: 2048 } }));
  assert.equal(resourcesFilter.filter(req, view(0)).ok, true);
  const v = resourcesFilter.filter(req, view(2));
  assert.equal(v.ok, false);
  assert.match((v as { reason: string }).reason, /free memory/);
});

test('warm-pool scorer: a ready VM of exactly the flavour, for a tenant without a VM on the node', () => {
  const fits = request(vnfd({ resources: { vcpus: 1, memoryMiB: 256 } }));
  assert.equal(warmPoolScorer.score(fits, view(1)), 100);
  assert.equal(warmPoolScorer.score(fits, view(0, 1)), 0, 'booting VMs cannot be claimed yet');
  assert.equal(warmPoolScorer.score(request(vnfd({ resources: { vcpus: 1, memoryMiB: 512 } })), view(1)), 0, 'other memory');
  const v = view(1);
  occupy(v, { tenantId: 't1', vnfId: 'other' });
  assert.equal(warmPoolScorer.score(fits, v), 0, 'the tenant has its VM there: the replica joins it');
});
