/**
 * The chaos run (test/src/chaos.ts) in its CI size: faults under a steady workload, invariants at the end. One real
 * node agent with real VMs (TCG: the two tenants' VMs and the one booted again after its QEMU is killed; the guest
 * agent killed in one of them is healed onto a simulated node) besides three simulated nodes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runChaos } from '../src/chaos.js';

test('chaos (CI size): leader kill -9, paused nodes (simulated and real) past the grace, nats-server restart, node agent, QEMU and guest agent kill -9 under load; invariants hold', { timeout: 30 * 60_000 }, async () => {
  const r = await runChaos({ jobs: 8, nodes: 3, realNodes: 1, graceMs: 10_000, log: (l) => console.error(l) });
  console.log(JSON.stringify({ realNodes: r.nodeIds.real, simulatedNodes: r.nodeIds.simulated, realProblems: r.realProblems, faultsByKind: r.faultsByKind }));
  console.log(JSON.stringify({ faults: r.faults, requests: r.requests, lost: r.lost, answeredTwice: r.answeredTwice, doubleBooked: r.doubleBooked, orphans: r.orphans, realVms: r.realVms }));
  assert.equal(r.faults, 7, JSON.stringify(r.faultsByKind));
  assert.equal(r.faultsByKind['real-guest-agent-kill9'], 1);
  assert.deepEqual(r.realProblems, []);
  assert.ok(r.realVms >= 2, 'the real VM and the one booted after its QEMU was killed');
  assert.equal(r.notFinal, 0, 'every op occurrence final');
  assert.equal(r.lost, 0);
  assert.equal(r.answeredTwice, 0);
  assert.equal(r.doubleBooked, 0);
  assert.equal(r.orphans, 0);
});
