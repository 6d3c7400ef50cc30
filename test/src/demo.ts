/**
 * `npm run demo`: starts the appliance (its own home and free ports), creates the host namespaces `left` and
 * `right`, instantiates the `builtin:vrouter` VNF with one tap interface in each network through the message API,
 * pings from left to right through the tenant's VM, terminates, tears everything down, and prints as its last line
 * `{"pingsSent":N,"pingsReceived":M,"bootMs":...,"rttMsMedian":...}`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startAppliance } from './appliance.js';
import { runVrouterScenario, scenarioNetworks, setupHost, teardownHost, type ScenarioNames } from './vrouter-scenario.js';

const names: ScenarioNames = {
  tenant: 'demo',
  leftNs: 'left',
  rightNs: 'right',
  leftBridge: 'enfv-demo-l',
  rightBridge: 'enfv-demo-r',
  leftNet: { name: 'left', prefix: '10.61.1' },
  rightNet: { name: 'right', prefix: '10.61.2' },
};

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.error('demo: needs root (network namespaces, taps, QEMU isolation)');
    return 1;
  }
  const home = process.env.EDGENFV_DEMO_HOME ?? mkdtempSync(join(tmpdir(), 'edgenfv-demo-'));
  const log = (m: string): void => console.log(`demo: ${m}`);
  log(`appliance home ${home}`);
  const ports = { nats: await freePort(), dashboard: await freePort(), schedulerMetrics: await freePort(), nodeAgentMetrics: await freePort() };
  setupHost(names);
  let appliance: Awaited<ReturnType<typeof startAppliance>> | undefined;
  try {
    log('starting the appliance (the first run builds the guest image: a few minutes)');
    appliance = await startAppliance(home, {
      ports,
      networks: scenarioNetworks(names),
      nodeAgent: { nodeId: 'demo-node', heartbeatIntervalMs: 1000, isolation: { cgroupParent: 'edgenfv-demo' }, qemu: { maxVcpus: 2, maxMemoryMiB: 2048 } },
    });
    log(`serving: NATS ${appliance.info.servers[0]}, dashboard ${appliance.info.dashboardUrl ?? '-'}`);
    const r = await runVrouterScenario(appliance.api, names, { pings: 10, log });
    if (r.pingsAfterTerminate !== 0) log(`WARNING: ${r.pingsAfterTerminate} pings crossed after terminate`);
    const code = await appliance.stop();
    appliance = undefined;
    log(`appliance stopped (exit ${code})`);
    console.log(JSON.stringify({ pingsSent: r.pingsSent, pingsReceived: r.pingsReceived, bootMs: r.bootMs, rttMsMedian: r.rttMsMedian }));
    return r.pingsReceived > 0 && r.pingsAfterTerminate === 0 ? 0 : 1;
  } finally {
    await appliance?.stop();
    teardownHost(names);
    if (!process.env.EDGENFV_DEMO_HOME) rmSync(home, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error('demo failed:', err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
