/**
 * Live migration on a 2-node virtual site (docs/migration.md; test/src/migrate-scenario.ts), one TCG VM boot:
 * - `vnfs.heal {replica, migrate: true}` moves the `builtin:vrouter` VM from A to B with QEMU migration: the replica
 *   is RUNNING throughout, ends on B with its MACs and addresses, the op occurrence records QEMU's downtime, the
 *   ping from `left` to `right` through the VM goes on, the source VM is gone and A holds nothing;
 * - migrating back, the destination node agent (A's) is SIGKILLed while the destination waits for the state: the
 *   stream it relays breaks, or the switchover is refused (the destination did not confirm); either way the
 *   migration is cancelled on B where the VNF keeps running, the op occurrence ends FAILED_TEMP; A's agent restarted (fenced or not, it drops the stale incoming VM),
 *   `opoccs.retry` completes the migration onto A; exactly one QEMU of the tenant runs at the end;
 * - a second VNF of the tenant (`builtin:busybox` with a NIC in `left`) joins the VM on A (hot-plugged: vCPU,
 *   memory, NIC), then `nodes.drain A`: the tenant VM moves as one (one QEMU started on B from the source's layout),
 *   both VNFs RUNNING throughout and on B (the busybox with its address), one QEMU of the tenant on B and none on
 *   A, the ping through the vrouter goes on.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { NETS, Pinger, pingOnce, startMigrateSite, type MigrateSite } from '../src/migrate-scenario.js';
import { probeUntil } from '../src/harness.js';

let ms: MigrateSite | undefined;

before(async () => {
  ms = await startMigrateSite({ heartbeatGraceMs: 3000, tenant: 'migt' });
});

after(async () => {
  await ms?.site.teardown();
});

/** Live QEMU pids named in a node's sandbox records. */
function qemuPids(stateDir: string): number[] {
  const dir = join(stateDir, 'sandboxes');
  if (!existsSync(dir)) return [];
  const out: number[] = [];
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.json'))) {
    try {
      const pid = JSON.parse(readFileSync(join(dir, f), 'utf8')).vm?.pid as number | undefined;
      if (pid && spawnSync('kill', ['-0', String(pid)]).status === 0) out.push(pid);
    } catch {
      /* being rewritten */
    }
  }
  return out;
}

test('bad migration requests are refused naming the field, and change nothing', async () => {
  const { site, tenant, vnfId, a } = ms!;
  const noReplica = await site.api.tenant(tenant, 'vnfs.heal', { id: vnfId, migrate: true });
  assert.equal(noReplica.ok, false);
  assert.equal(noReplica.error.code, 'INVALID_ARGUMENT');
  assert.match(JSON.stringify(noReplica.error), /replica/);
  for (const bad of [{ maxParallel: 0 }, { deadlineS: 'soon' }, { maxParallel: 1.5 }]) {
    const r = await site.api.admin('nodes.drain', { id: a, ...bad });
    assert.equal(r.ok, false, JSON.stringify(bad));
    assert.equal(r.error.code, 'INVALID_ARGUMENT');
    assert.match(JSON.stringify(r.error), new RegExp(Object.keys(bad)[0]!));
  }
  const node = await site.api.ok('nfv.v1.admin.nodes.get', { id: a });
  assert.equal(node.cordoned, false, 'a refused drain does not cordon');
  const vnf = await site.api.ok(`nfv.v1.tenant.${tenant}.vnfs.get`, { id: vnfId });
  assert.equal(vnf.activeOpOccId, undefined, 'no operation started');
});

test('vnfs.heal {migrate: true}: the VM moves A -> B with QEMU migration, RUNNING throughout, the ping goes on', async () => {
  const { site, tenant, vnfId, a, b, leftNs } = ms!;
  const target = `${NETS.right}.2`;
  assert.ok(pingOnce(leftNs, target), 'left reaches right through the vrouter on A');
  const before = await site.api.ok(`nfv.v1.tenant.${tenant}.vnfs.get`, { id: vnfId });
  const pinger = new Pinger(leftNs, target);
  pinger.start();
  const states = new Set<string>();
  const watch = setInterval(() => {
    void site.api.ok(`nfv.v1.tenant.${tenant}.vnfs.get`, { id: vnfId }).then((v) => states.add(v.replicas[0].state), () => undefined);
  }, 200);
  const heal = await site.api.ok<{ opOccId: string }>(`nfv.v1.tenant.${tenant}.vnfs.heal`, { id: vnfId, replica: 0, migrate: true });
  const op = await site.api.waitOp(tenant, heal.opOccId, 10 * 60_000);
  clearInterval(watch);
  const steps = (op.steps as { message: string }[]).map((s) => s.message).join('\n');
  assert.equal(op.operationState, 'COMPLETED', steps);
  assert.match(steps, /switched over to node .*QEMU reported downtime \d+ ms/);
  assert.match(steps, /waits for the VM's state \(tcp:10\.\d+\.\d+\.\d+:\d+\)/, 'the stream went over TCP between the nodes\' uplinks');
  assert.equal(typeof op.params.qemuDowntimeMs, 'number');
  const vnf = await site.api.ok(`nfv.v1.tenant.${tenant}.vnfs.get`, { id: vnfId });
  const r = vnf.replicas[0];
  assert.equal(r.nodeId, b);
  assert.equal(r.state, 'RUNNING');
  assert.deepEqual([...states], ['RUNNING'], 'RUNNING throughout');
  assert.deepEqual(
    r.interfaces.map((i: { mac: string; ips: string[] }) => [i.mac, i.ips]),
    before.replicas[0].interfaces.map((i: { mac: string; ips: string[] }) => [i.mac, i.ips]),
    'the same MACs and addresses',
  );
  // the ping goes on through the VM on B
  const n = pinger.replies.length;
  await probeUntil('ping replies through B', 30_000, async () => (pinger.replies.length > n + 5 ? true : undefined));
  const p = await pinger.stop();
  assert.ok(p.received > 0);
  // A holds nothing: its source VM is gone, its ledger empty
  await probeUntil(`${a} empty`, 120_000, async () => ((await site.api.ok('nfv.v1.admin.nodes.get', { id: a })).allocated.replicas === 0 && qemuPids(site.node(a).stateDir).length === 0 ? true : undefined));
  assert.equal(qemuPids(site.node(b).stateDir).length, 1, 'one QEMU of the tenant, on B');
});

test('the destination agent killed mid-migration: the VNF keeps running on the source, FAILED_TEMP, retry completes it', async () => {
  const { site, tenant, vnfId, a, b, leftNs } = ms!;
  const heal = await site.api.ok<{ opOccId: string }>(`nfv.v1.tenant.${tenant}.vnfs.heal`, { id: vnfId, replica: 0, migrate: true });
  // the destination (A) waits for the state: kill its agent before the switchover
  await probeUntil('the destination waiting', 5 * 60_000, async () => {
    const op = await site.api.ok(`nfv.v1.tenant.${tenant}.opoccs.get`, { id: heal.opOccId });
    return (op.steps as { message: string }[]).some((s) => /waits for the VM's state/.test(s.message)) ? true : undefined;
  });
  await site.killAgent(a);
  const op = await site.api.waitOp(tenant, heal.opOccId, 10 * 60_000);
  const steps = (op.steps as { message: string }[]).map((s) => s.message).join('\n');
  assert.equal(op.operationState, 'FAILED_TEMP', steps);
  // killed while the RAM is copied (its relay carries the stream: the source's migration fails and is cancelled)
  // or while the source waits before the switchover (the fence: the destination does not confirm)
  assert.match(steps, /did not confirm the incoming VM: migration cancelled|sending the VM from node .* failed/);
  const vnf = await site.api.ok(`nfv.v1.tenant.${tenant}.vnfs.get`, { id: vnfId });
  assert.equal(vnf.replicas[0].nodeId, b, 'still on the source');
  assert.equal(vnf.replicas[0].state, 'RUNNING');
  assert.ok(pingOnce(leftNs, `${NETS.right}.2`), 'the VNF forwards on the source');

  // the destination's agent comes back: it drops the incoming VM nobody wants; retry completes the migration
  await site.startAgent(a);
  await site.waitReady([a], 120_000);
  await probeUntil(`${a} has no VM`, 120_000, async () => (qemuPids(site.node(a).stateDir).length === 0 ? true : undefined));
  await site.api.ok(`nfv.v1.tenant.${tenant}.opoccs.retry`, { id: heal.opOccId });
  const done = await site.api.waitOp(tenant, heal.opOccId, 10 * 60_000);
  assert.equal(done.operationState, 'COMPLETED', (done.steps as { message: string }[]).map((s) => s.message).join('\n'));
  const moved = await site.api.ok(`nfv.v1.tenant.${tenant}.vnfs.get`, { id: vnfId });
  assert.equal(moved.replicas[0].nodeId, a);
  assert.equal(moved.replicas[0].state, 'RUNNING');
  await probeUntil(`${b} empty`, 120_000, async () => (qemuPids(site.node(b).stateDir).length === 0 ? true : undefined));
  assert.equal(qemuPids(site.node(a).stateDir).length, 1, 'exactly one running copy');
  assert.ok(pingOnce(leftNs, `${NETS.right}.2`), 'the VNF forwards on A again');
});

test('two VNFs in one tenant VM: nodes.drain moves the VM as one, both RUNNING throughout, the ping goes on', async () => {
  const { site, tenant, vnfId, leftNs } = ms!;
  // on the node the vrouter runs on (A after the test before; B if that one left it there): "A" below
  const at = (await site.api.ok(`nfv.v1.tenant.${tenant}.vnfs.get`, { id: vnfId })).replicas[0].nodeId as string;
  const [a, b] = at === ms!.a ? [ms!.a, ms!.b] : [ms!.b, ms!.a];
  // the second VNF joins the tenant's VM on A (B cordoned meanwhile): its vCPU, memory and NIC are hot-plugged
  await site.api.ok('nfv.v1.admin.nodes.cordon', { id: b });
  const descriptor = { name: 'bb', replicas: 1, resources: { vcpus: 1, memoryMiB: 128 }, image: { ref: 'builtin:busybox' }, interfaces: [{ name: 'eth0', type: 'tap', network: 'left' }] };
  const inst = await site.api.ok<{ vnfId: string; opOccId: string }>(`nfv.v1.tenant.${tenant}.vnfs.instantiate`, { descriptor });
  assert.equal((await site.api.waitOp(tenant, inst.opOccId, 10 * 60_000)).operationState, 'COMPLETED');
  await site.api.ok('nfv.v1.admin.nodes.uncordon', { id: b });
  const ids = [vnfId, inst.vnfId];
  const get = (id: string): Promise<{ replicas: { nodeId: string; state: string; interfaces: { ips: string[] }[] }[] }> => site.api.ok(`nfv.v1.tenant.${tenant}.vnfs.get`, { id });
  const placed = await Promise.all(ids.map(get));
  assert.deepEqual(placed.map((v) => v.replicas[0]!.nodeId), [a, a], 'both in the tenant VM on A');
  assert.equal(qemuPids(site.node(a).stateDir).length, 1, 'one QEMU of the tenant on A');
  const bbAddr = String(placed[1]!.replicas[0]!.interfaces[0]!.ips[0]).split('/')[0]!;

  const target = `${NETS.right}.2`;
  const pinger = new Pinger(leftNs, target);
  pinger.start();
  const states = new Set<string>();
  const watch = setInterval(() => {
    for (const id of ids) void get(id).then((v) => states.add(v.replicas[0]!.state), () => undefined);
  }, 200);
  const drain = await site.api.ok<{ vnfs: { vnfId: string; opOccId: string; mode: string; reason?: string }[] }>('nfv.v1.admin.nodes.drain', { id: a });
  assert.deepEqual(drain.vnfs.map((v) => [v.vnfId, v.mode]).sort(), ids.map((id) => [id, 'migrate']).sort(), JSON.stringify(drain.vnfs));
  const ops = await Promise.all(drain.vnfs.map((v) => site.api.waitOp(tenant, v.opOccId, 15 * 60_000)));
  clearInterval(watch);
  for (const op of ops) assert.equal(op.operationState, 'COMPLETED', (op.steps as { message: string }[]).map((x) => x.message).join('\n'));
  const moved = await Promise.all(ids.map(get));
  assert.deepEqual(moved.map((v) => [v.replicas[0]!.nodeId, v.replicas[0]!.state]), [[b, 'RUNNING'], [b, 'RUNNING']]);
  assert.deepEqual([...states], ['RUNNING'], 'both RUNNING throughout');
  assert.equal(String(moved[1]!.replicas[0]!.interfaces[0]!.ips[0]).split('/')[0], bbAddr, 'the busybox keeps its address');
  const n = pinger.replies.length;
  await probeUntil('ping replies through B', 30_000, async () => (pinger.replies.length > n + 5 ? true : undefined));
  const p = await pinger.stop();
  assert.ok(p.received > 0);
  await probeUntil(`${a} empty`, 120_000, async () => ((await site.api.ok('nfv.v1.admin.nodes.get', { id: a })).allocated.replicas === 0 && qemuPids(site.node(a).stateDir).length === 0 ? true : undefined));
  assert.equal(qemuPids(site.node(b).stateDir).length, 1, 'one QEMU of the tenant, on B');
  console.log(JSON.stringify({ from: a, to: b, vnfs: 2, pingsSent: p.sent, pingsLost: p.lost, gapMs: p.gapMs, qemuDowntimeMs: Math.max(...ops.map((o) => Number(o.params.qemuDowntimeMs ?? 0))) }));

  for (const id of ids) {
    const term = await site.api.ok<{ opOccId: string }>(`nfv.v1.tenant.${tenant}.vnfs.terminate`, { id });
    assert.equal((await site.api.waitOp(tenant, term.opOccId, 5 * 60_000)).operationState, 'COMPLETED');
  }
});

test('teardown leaves nothing', async () => {
  const s = ms!.site;
  ms = undefined;
  const t = await s.teardown();
  assert.deepEqual(t.leftovers, []);
});
