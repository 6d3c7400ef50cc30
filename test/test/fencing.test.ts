/**
 * A partitioned node fences itself (issue 12 item 4), with a real node agent and real QEMU VMs (TCG): the virtual
 * site's one real node runs two tenants' VMs, one VNF with `onPartition: stop` (the default), one with `keep`; a
 * simulated node (cordoned until then) is where they are healed. The real node's uplink is cut (its link on the
 * site's switch set down: the agent's TCP connection to NATS hangs, nothing closes it). The scheduler declares the
 * node lost after its grace and heals both replicas onto the simulated node; the agent, out of NATS's reach past
 * the grace, fences itself and, `fencing.stopAfterMs` after its last contact, stops the `stop` VNF's VM and keeps the
 * `keep` one's. The link comes back: the agent registers, learns its new epoch and tears down the kept VM that was
 * healed elsewhere. Then exactly one copy of each replica runs (on the simulated node), and the real node holds none.
 * Two VM boots.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { startSite, type VirtualSite } from '../src/site.js';
import { startSimNode, type SimNode } from '../src/sim-node.js';
import { probeUntil } from '../src/harness.js';

const GRACE_MS = 4000;
const STOP_AFTER_MS = 12_000;
const tag = String(process.pid % 100000);
const TS = `fs${tag}`; // tenant whose VNF stops when fenced
const TK = `fk${tag}`; // tenant whose VNF is kept
const SIM = `fence-sim-${tag}`;
let site: VirtualSite | undefined;
let sim: { node: SimNode; cleanup: () => void } | undefined;

before(async () => {
  site = await startSite({ nodes: 1, heartbeatGraceMs: GRACE_MS, nodeConfig: { fencing: { stopAfterMs: STOP_AFTER_MS } } });
  await site.waitReady();
  sim = await startSimNode(site.nc, SIM, 500);
  await site.api.ok('nfv.v1.admin.nodes.cordon', { id: SIM });
});

after(async () => {
  const s = site;
  if (s) spawnSync('ip', ['link', 'set', s.nodes[0]!.hostVeth, 'up']);
  sim?.node.stop();
  sim?.cleanup();
  await s?.teardown();
});

/** The pids of the QEMU processes running sandbox `sandboxId` (`-name guest=<id>,...`). */
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

/** The node agent's JSON log lines whose msg matches. */
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

test('a node cut from NATS fences itself: stops the `stop` VNF\'s VM, keeps the `keep` one; after healing one copy serves', { timeout: 30 * 60_000 }, async () => {
  const s = site!;
  const real = s.nodes[0]!;
  for (const t of [TS, TK]) await s.api.ok('nfv.v1.admin.tenants.create', { id: t });
  const descriptor = (onPartition?: string) => ({
    name: 'web',
    replicas: 1,
    resources: { vcpus: 1, memoryMiB: 128 },
    image: { ref: 'builtin:busybox' },
    command: ['sleep', '86400'],
    ...(onPartition ? { onPartition } : {}),
  });
  // an unknown policy is refused by name
  const bad = await s.api.tenant(TS, 'vnfs.instantiate', { descriptor: descriptor('pause') });
  assert.equal(bad.ok, false);
  assert.match(JSON.stringify(bad.error), /onPartition/);

  const stopInst = await s.api.ok<{ vnfId: string; opOccId: string }>(`nfv.v1.tenant.${TS}.vnfs.instantiate`, { descriptor: descriptor() });
  const keepInst = await s.api.ok<{ vnfId: string; opOccId: string }>(`nfv.v1.tenant.${TK}.vnfs.instantiate`, { descriptor: descriptor('keep') });
  // two TCG boots at once on a shared machine
  assert.equal((await s.api.waitOp(TS, stopInst.opOccId, 15 * 60_000)).operationState, 'COMPLETED');
  assert.equal((await s.api.waitOp(TK, keepInst.opOccId, 15 * 60_000)).operationState, 'COMPLETED');
  const before = {
    stop: await s.api.ok(`nfv.v1.tenant.${TS}.vnfs.get`, { id: stopInst.vnfId }),
    keep: await s.api.ok(`nfv.v1.tenant.${TK}.vnfs.get`, { id: keepInst.vnfId }),
  };
  for (const v of Object.values(before)) assert.equal(v.replicas[0].nodeId, real.id);
  const stopSandbox = before.stop.replicas[0].sandboxId as string;
  const keepSandbox = before.keep.replicas[0].sandboxId as string;
  assert.equal(qemuPids(stopSandbox).length, 1, 'the stop VNF\'s VM runs');
  assert.equal(qemuPids(keepSandbox).length, 1, 'the keep VNF\'s VM runs');
  const stopAllocId = before.stop.replicas[0].allocId as string;

  // the partition: the real node's link on the site switch goes down; the simulated node may take the heals
  await s.api.ok('nfv.v1.admin.nodes.uncordon', { id: SIM });
  assert.equal(spawnSync('ip', ['link', 'set', real.hostVeth, 'down']).status, 0);

  // the scheduler heals both onto the simulated node
  for (const [t, id] of [[TS, stopInst.vnfId], [TK, keepInst.vnfId]] as const) {
    await probeUntil(`${t}'s replica healed onto ${SIM}`, 5 * 60_000, async () => {
      const v = await s.api.ok(`nfv.v1.tenant.${t}.vnfs.get`, { id });
      return v.replicas[0].nodeId === SIM && v.replicas[0].state === 'RUNNING' ? true : undefined;
    });
  }
  // the fenced agent stops the `stop` VM after fencing.stopAfterMs; the `keep` VM stays
  await probeUntil('the stop VNF\'s VM stopped by the fenced node', 5 * 60_000, async () =>
    qemuPids(stopSandbox).length === 0 && logged(real.logs, /replica removed \(onPartition: stop\)/).length > 0 ? true : undefined,
  );
  assert.equal(qemuPids(keepSandbox).length, 1, 'the keep VNF\'s VM still runs while the node is fenced');
  const fencedLines = logged(real.logs, /fenced \(no allocation change/);
  assert.equal(fencedLines.length, 1, 'the agent fenced itself once');
  // the agent fences once silent for more than the grace; the log rounds it (4000.3 ms is logged 4000)
  assert.ok((fencedLines[0]!.silentMs as number) >= GRACE_MS, `fenced after the grace: ${JSON.stringify(fencedLines[0])}`);
  const removed = logged(real.logs, /replica removed \(onPartition: stop\)/);
  assert.deepEqual(removed.map((l) => l.allocId), [stopAllocId], 'only the stop VNF\'s replica was removed');
  assert.ok((removed[0]!.silentMs as number) >= STOP_AFTER_MS, `removed only past stopAfterMs: ${JSON.stringify(removed[0])}`);

  // the partition heals: the agent registers, learns it was fenced, and tears down the kept VM (healed elsewhere)
  assert.equal(spawnSync('ip', ['link', 'set', real.hostVeth, 'up']).status, 0);
  await probeUntil('the kept VM torn down after the node came back', 5 * 60_000, async () => (qemuPids(keepSandbox).length === 0 ? true : undefined));
  await probeUntil(`${real.id} Ready with nothing allocated`, 2 * 60_000, async () => {
    const n = await s.api.ok('nfv.v1.admin.nodes.get', { id: real.id });
    return n.health === 'Ready' && n.allocated.replicas === 0 ? true : undefined;
  });
  assert.equal(logged(real.logs, /^unfenced$/).length, 1, 'unfenced once');
  assert.deepEqual(readdirSync(`${real.stateDir}/sandboxes`).filter((f) => f.endsWith('.json')), [], 'no sandbox record left on the real node');

  // exactly one copy of each replica serves: on the simulated node
  for (const [t, id] of [[TS, stopInst.vnfId], [TK, keepInst.vnfId]] as const) {
    const v = await s.api.ok(`nfv.v1.tenant.${t}.vnfs.get`, { id });
    assert.deepEqual(v.replicas.map((r: { nodeId: string; state: string }) => [r.nodeId, r.state]), [[SIM, 'RUNNING']]);
    const copies = [...sim!.node.running.values()].filter((r) => r.vnfId === id);
    assert.equal(copies.length, 1, `${t}: one copy on ${SIM}`);
  }
  console.log(JSON.stringify({ fencedAfterMs: fencedLines[0]!.silentMs, stoppedAfterMs: removed[0]!.silentMs, graceMs: GRACE_MS, stopAfterMs: STOP_AFTER_MS, copiesAfterHealing: 1 }));

  for (const [t, id] of [[TS, stopInst.vnfId], [TK, keepInst.vnfId]] as const) {
    const term = await s.api.ok(`nfv.v1.tenant.${t}.vnfs.terminate`, { id });
    assert.equal((await s.api.waitOp(t, term.opOccId, 5 * 60_000)).operationState, 'COMPLETED');
  }
});

test('teardown leaves no netns, veth, bridge, cgroup or process', async () => {
  const s = site!;
  site = undefined;
  spawnSync('ip', ['link', 'set', s.nodes[0]!.hostVeth, 'up']); // if the test above failed while cut off
  sim?.node.stop();
  const t = await s.teardown();
  assert.deepEqual(t.leftovers, []);
});
