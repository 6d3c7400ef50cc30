/**
 * kill -9 of the guest agent inside a real VM (issue 12's chaos fault), with the real node agent of a virtual site
 * and a real QEMU VM (TCG; one boot). The guest's /init starts a new agent, which knows none of the containers its
 * predecessor ran: the node agent's guest liveness watch (sandbox/guest-liveness.ts: Health's instance id and
 * ListContainers every `guest.livenessIntervalMs`) finds the replica's container gone, tears the VM down and reports
 * the replica FAILED (`replicaLost`); the scheduler's engine heals it, here onto a simulated node (the real node is
 * cordoned after the first placement, so the heal costs no second boot). The agent is killed through the
 * operator-only debug console (`guest.debugConsole`: a root shell on a virtio-serial port, host side a root-only
 * socket in the VM's run folder).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startSite, type VirtualSite } from '../src/site.js';
import { startSimNode, type SimNode } from '../src/sim-node.js';
import { debugConsoleSocket, killGuestAgent } from '../src/guest-debug.js';
import { probeUntil } from '../src/harness.js';

const tag = String(process.pid % 100000);
const T = `gk${tag}`;
const SIM = `gk-sim-${tag}`;
let site: VirtualSite | undefined;
let sim: { node: SimNode; cleanup: () => void } | undefined;

before(async () => {
  site = await startSite({ nodes: 1, nodeConfig: { guest: { debugConsole: true, livenessIntervalMs: 2000 } } });
  await site.waitReady();
  sim = await startSimNode(site.nc, SIM, 500);
  await site.api.ok('nfv.v1.admin.nodes.cordon', { id: SIM });
});

after(async () => {
  sim?.node.stop();
  sim?.cleanup();
  await site?.teardown();
});

function qemuPids(sandboxId: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(`guest=${sandboxId},`);
      } catch {
        return false;
      }
    })
    .map(Number);
}

function logged(lines: string[], msg: RegExp): Record<string, unknown>[] {
  return lines.flatMap((l) => {
    try {
      const o = JSON.parse(l) as Record<string, unknown>;
      return typeof o.msg === 'string' && msg.test(o.msg) ? [o] : [];
    } catch {
      return [];
    }
  });
}

test('kill -9 of the guest agent in a VM: the replica goes FAILED, the VM goes, the engine heals it', { timeout: 30 * 60_000 }, async () => {
  const s = site!;
  const real = s.nodes[0]!;
  await s.api.ok('nfv.v1.admin.tenants.create', { id: T });
  const inst = await s.api.ok<{ vnfId: string; opOccId: string }>(`nfv.v1.tenant.${T}.vnfs.instantiate`, {
    descriptor: { name: 'web', replicas: 1, resources: { vcpus: 1, memoryMiB: 128 }, image: { ref: 'builtin:busybox' }, command: ['sleep', '86400'] },
  });
  assert.equal((await s.api.waitOp(T, inst.opOccId, 15 * 60_000)).operationState, 'COMPLETED');
  const before = (await s.api.ok(`nfv.v1.tenant.${T}.vnfs.get`, { id: inst.vnfId })).replicas[0];
  assert.equal(before.nodeId, real.id);
  assert.equal(before.state, 'RUNNING');
  const sandboxId = before.sandboxId as string;
  const rec = JSON.parse(readFileSync(join(real.stateDir, 'sandboxes', `${sandboxId}.json`), 'utf8')) as { runDir: string };
  assert.equal(qemuPids(sandboxId).length, 1, 'the VM runs');
  assert.ok(existsSync(debugConsoleSocket(rec.runDir)), 'the debug console socket is in the VM run folder');

  // the heal goes to the simulated node: no second boot
  await s.api.ok('nfv.v1.admin.nodes.cordon', { id: real.id });
  await s.api.ok('nfv.v1.admin.nodes.uncordon', { id: SIM });

  const pid = await killGuestAgent(rec.runDir);
  assert.ok(pid > 1, `the guest agent's pid in the guest: ${pid}`);

  // the node agent finds the restarted agent without the container, tears the VM down, reports the replica FAILED
  const lost = await probeUntil('the replica found lost by the guest liveness watch', 10 * 60_000, async () => logged(real.logs, /^replicas lost: /)[0]);
  assert.equal(lost.reason, 'restarted', JSON.stringify(lost));
  assert.deepEqual(lost.allocIds, [before.allocId]);
  assert.match(String(lost.msg), /guest agent restarted: container r-[0-9a-f]+ gone/);
  await probeUntil('the VM torn down', 5 * 60_000, async () => (qemuPids(sandboxId).length === 0 && !existsSync(join(real.stateDir, 'sandboxes', `${sandboxId}.json`)) ? true : undefined));

  // the engine heals it: a HEAL for the lost replica, the replica RUNNING on the simulated node
  const healed = await probeUntil(`the replica healed onto ${SIM}`, 5 * 60_000, async () => {
    const r = (await s.api.ok(`nfv.v1.tenant.${T}.vnfs.get`, { id: inst.vnfId })).replicas[0];
    return r.nodeId === SIM && r.state === 'RUNNING' ? r : undefined;
  });
  assert.notEqual(healed.allocId, before.allocId);
  const ops = (await s.api.ok(`nfv.v1.tenant.${T}.opoccs.list`, { vnfId: inst.vnfId })).items as { id: string; operation: string; params: { reason?: string; replicas?: number[] } }[];
  const heals = ops.filter((o) => o.operation === 'HEAL');
  assert.equal(heals.length, 1, JSON.stringify(ops));
  // the replica is RUNNING a moment before its op occurrence is COMPLETED
  assert.equal((await s.api.waitOp(T, heals[0]!.id, 60_000)).operationState, 'COMPLETED');
  assert.equal(heals[0]!.params.reason, 'replica lost');
  assert.deepEqual(heals[0]!.params.replicas, [0]);
  assert.equal([...sim!.node.running.values()].filter((r) => r.vnfId === inst.vnfId).length, 1, 'one copy, on the simulated node');

  // nothing left on the real node; it is Ready with nothing allocated
  await probeUntil(`${real.id} Ready with nothing allocated`, 2 * 60_000, async () => {
    const n = await s.api.ok('nfv.v1.admin.nodes.get', { id: real.id });
    return n.health === 'Ready' && n.allocated.replicas === 0 ? true : undefined;
  });
  assert.deepEqual(readdirSync(join(real.stateDir, 'sandboxes')).filter((f) => f.endsWith('.json')), []);
  console.log(JSON.stringify({ guestAgentKilled: 1, lostReason: lost.reason, healedOnto: SIM, heals: heals.length }));

  const term = await s.api.ok(`nfv.v1.tenant.${T}.vnfs.terminate`, { id: inst.vnfId });
  assert.equal((await s.api.waitOp(T, term.opOccId, 5 * 60_000)).operationState, 'COMPLETED');
});

test('teardown leaves no netns, veth, bridge, cgroup or process', async () => {
  const s = site!;
  site = undefined;
  sim?.node.stop();
  const t = await s.teardown();
  assert.deepEqual(t.leftovers, []);
});
