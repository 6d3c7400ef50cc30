/** `npm run test:chaos`: the chaos run at full size; the last line is its JSON summary. */
import { runChaos } from './chaos.js';

const r = await runChaos({
  jobs: Number(process.env.EDGENFV_CHAOS_JOBS ?? 24),
  nodes: 4,
  realNodes: Number(process.env.EDGENFV_CHAOS_REAL_NODES ?? 2),
  graceMs: 10_000,
  log: (l) => console.error(l),
});
console.error(`faults: ${JSON.stringify(r.faultsByKind)}; op occurrences not final: ${r.notFinal}; waited in FAILED_TEMP (then failed): ${r.failedTemp}`);
if (r.realProblems.length) console.error(`real-VM faults that did not go as expected: ${r.realProblems.join('; ')}`);
console.log(JSON.stringify({ realNodes: r.nodeIds.real, simulatedNodes: r.nodeIds.simulated, realVms: r.realVms }));
console.log(JSON.stringify({ faults: r.faults, requests: r.requests, lost: r.lost, answeredTwice: r.answeredTwice, doubleBooked: r.doubleBooked, orphans: r.orphans, realVms: r.realVms }));
process.exit(r.lost || r.answeredTwice || r.doubleBooked || r.orphans || r.notFinal || r.realProblems.length ? 1 : 0);
