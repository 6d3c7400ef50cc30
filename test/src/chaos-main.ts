/** `npm run test:chaos`: the chaos run at full size; the last line is its JSON summary. */
import { runChaos } from './chaos.js';

const r = await runChaos({ jobs: Number(process.env.EDGENFV_CHAOS_JOBS ?? 24), nodes: 4, graceMs: 3000, log: (l) => console.error(l) });
console.error(`faults: ${JSON.stringify(r.faultsByKind)}; nodes: ${r.simulatedNodes} simulated, real VMs: ${r.realVms}; op occurrences not final: ${r.notFinal}; waited in FAILED_TEMP (then failed): ${r.failedTemp}`);
console.log(JSON.stringify({ faults: r.faults, requests: r.requests, lost: r.lost, answeredTwice: r.answeredTwice, doubleBooked: r.doubleBooked, orphans: r.orphans, realVms: r.realVms }));
process.exit(r.lost || r.answeredTwice || r.doubleBooked || r.orphans || r.notFinal ? 1 : 0);
