/**
 * The product's end-to-end test: `npm start`'s appliance (embedded nats-server, scheduler, node agent, dashboard),
 * two host namespaces, a tenant VNF `builtin:vrouter` with a tap interface in each network instantiated through the
 * message API; a ping from left to right crosses the tenant's VM and comes back. Terminate: the path is gone and
 * nothing is left (no QEMU, sandbox netns, cgroup, record, IP lease, tap on the network bridges).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startAppliance, type RunningAppliance } from '../src/appliance.js';
import { runVrouterScenario, scenarioNetworks, setupHost, teardownHost, type ScenarioNames } from '../src/vrouter-scenario.js';

const tag = String(process.pid % 100000);
const names: ScenarioNames = {
  tenant: `e2e${tag}`,
  leftNs: `e2e-left-${tag}`,
  rightNs: `e2e-right-${tag}`,
  leftBridge: `enfvl${tag}`,
  rightBridge: `enfvr${tag}`,
  leftNet: { name: 'left', prefix: '10.62.1' },
  rightNet: { name: 'right', prefix: '10.62.2' },
};
const cgroupParent = `edgenfv-e2e${tag}`;
let appliance: RunningAppliance | undefined;
let home: string | undefined;

after(async () => {
  await appliance?.stop();
  teardownHost(names);
  if (home) rmSync(home, { recursive: true, force: true });
});

function qemuPidsOf(sandboxId: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(`guest=${sandboxId}`);
      } catch {
        return false;
      }
    })
    .map(Number);
}

test('ping from left to right crosses the tenant VM running builtin:vrouter; terminate leaves nothing', async () => {
  home = mkdtempSync(join(tmpdir(), 'edgenfv-e2e-'));
  setupHost(names);
  appliance = await startAppliance(home, {
    ports: { nats: await freePort(), dashboard: await freePort(), schedulerMetrics: await freePort(), nodeAgentMetrics: await freePort() },
    networks: scenarioNetworks(names),
    nodeAgent: { nodeId: `e2e-node-${tag}`, heartbeatIntervalMs: 1000, isolation: { cgroupParent }, qemu: { maxVcpus: 2, maxMemoryMiB: 2048 } },
  });
  const r = await runVrouterScenario(appliance.api, names, { pings: 5 });
  assert.equal(r.opStates[0], 'COMPLETED');
  assert.match(r.vrouterIps.left, /^10\.62\.1\.\d+$/);
  assert.match(r.vrouterIps.right, /^10\.62\.2\.\d+$/);
  assert.ok(r.pingsReceived >= 4, `pings received ${r.pingsReceived}/${r.pingsSent}`);
  assert.equal(r.opStates[1], 'COMPLETED', 'terminate completed');
  assert.equal(r.pingsAfterTerminate, 0, 'the path is gone after terminate');

  const vnf = await appliance.api.ok(`nfv.v1.tenant.${names.tenant}.vnfs.get`, { id: r.vnfId });
  assert.equal(vnf.instantiationState, 'NOT_INSTANTIATED');
  assert.ok(vnf.replicas.every((x: any) => x.state === 'STOPPED'));
  const node = await appliance.api.ok('nfv.v1.admin.nodes.get', { id: r.nodeId });
  assert.deepEqual(node.allocated, { vcpus: 0, memoryMiB: 0, vfs: 0, replicas: 0 }, 'the node holds nothing for it');
  const tenant = await appliance.api.ok('nfv.v1.admin.tenants.get', { id: names.tenant });
  assert.deepEqual(tenant.usage, { vcpus: 0, memoryMiB: 0, vfs: 0, vnfs: 0 });

  // nothing left: wait for the node agent to finish tearing down, then look
  const sandboxes = join(home, 'node', 'sandboxes');
  for (let i = 0; i < 300 && (qemuPidsOf(r.sandboxId).length || (existsSync(sandboxes) && readdirSync(sandboxes).length)); i++) {
    await new Promise((res) => setTimeout(res, 100));
  }
  assert.deepEqual(qemuPidsOf(r.sandboxId), [], 'no QEMU of the sandbox');
  assert.deepEqual(existsSync(sandboxes) ? readdirSync(sandboxes) : [], [], 'no sandbox record');
  assert.equal(existsSync(join('/sys/fs/cgroup', cgroupParent, r.sandboxId)), false, 'no cgroup');
  const kv = await appliance.nc.jetstream().views.kv('edgenfv_ipam');
  const leases: string[] = [];
  for await (const k of await kv.keys()) if ((await kv.get(k))?.operation === 'PUT') leases.push(k);
  assert.deepEqual(leases, [], `no IP lease: ${JSON.stringify(await Promise.all(leases.map(async (k) => (await kv.get(k))?.string())))}`);
  for (const br of [names.leftBridge, names.rightBridge]) {
    const members = execFileSync('ip', ['-o', 'link', 'show', 'master', br], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
    assert.equal(members.length, 1, `only the test's own veth on ${br}: ${members.join(' | ')}`);
  }
  const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  assert.ok(!netns.includes(r.sandboxId), 'no sandbox netns');

  assert.equal(await appliance.stop(), 0, 'the appliance stops cleanly');
  appliance = undefined;
});
