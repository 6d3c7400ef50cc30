/** The chaos run (test/src/chaos.ts) in its CI size: faults under a steady workload, invariants at the end. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runChaos } from '../src/chaos.js';

test('chaos (CI size): leader kill -9, paused node past the grace, nats-server restart under load; invariants hold', { timeout: 600_000 }, async () => {
  const r = await runChaos({ jobs: 8, nodes: 3, graceMs: 2000 });
  console.log(JSON.stringify({ faults: r.faults, requests: r.requests, lost: r.lost, answeredTwice: r.answeredTwice, doubleBooked: r.doubleBooked, orphans: r.orphans, realVms: r.realVms }));
  assert.equal(r.faults, 3, JSON.stringify(r.faultsByKind));
  assert.equal(r.notFinal, 0, 'every op occurrence final');
  assert.equal(r.lost, 0);
  assert.equal(r.answeredTwice, 0);
  assert.equal(r.doubleBooked, 0);
  assert.equal(r.orphans, 0);
});
