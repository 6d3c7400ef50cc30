/**
 * Warm pools end to end through the message API: real nats-server, the real scheduler process, the node agent
 * (buildApp, everything real) with a warm pool of one VM, QEMU booting the guest image. The pool VM shows in
 * nodes.get and /metrics; tenant A's VNF claims it (its sandbox is the pool VM, its NIC hot-plugged); the pool
 * refills with another VM; tenant B's VNF claims that one: a different VM (QEMU process, uid, netns, cgroup), and
 * nothing of A's in it (B's container sees only B's NIC; the VM's record holds only B's replica). Terminating A
 * removes A's VM: it never returns to the pool.
 *
 * Snapshot boot (guest.snapshotBoot, on by default): the first pool VM boots cold, is saved as the template and
 * restored from it; the refill is restored from the same template. Both restored VMs have their own guest agent
 * instance id and their own kernel RNG output (Reidentify reseeded each), a clock set to the host's, and run the
 * tenants' VNFs; the template is root's, outside every VM's root. Then two tenants at once with one ready pool VM:
 * one claims it, the other gets a VM restored from the template for its claim (not a cold boot).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, JSONCodec } from 'nats';
import { spawnTied, startNatsServer } from '@edgenfv/nats-launcher';
import { createRegistry, silentLogger } from '@edgenfv/telemetry';
import { buildGuestImage } from '../../src/guest/index.js';
import { probeKvm } from '../../src/hypervisor/kvm-probe.js';
import { parseConfig } from '../../src/config.js';
import { buildApp } from '../../src/app.js';
import { procCmdline, processAlive } from '../../src/proc.js';
import { removeCgroupParent } from '../helpers/cleanup.js';

const jc = JSONCodec();
const SCHEDULER_MAIN = fileURLToPath(new URL('../../../../scheduler/dist/src/main.js', import.meta.url));

test('warm pool: tenant A claims the warm VM, the pool refills, tenant B gets a different VM with nothing of A in it', async (t) => {
  assert.ok(existsSync(SCHEDULER_MAIN), `build the scheduler first: ${SCHEDULER_MAIN}`);
  const dir = mkdtempSync(join(tmpdir(), 'na-warm-'));
  const stateDir = join(dir, 'state');
  const cgParent = `edgenfv-w${process.pid}`;
  const suffix = process.pid % 100000;
  const net = `wp${process.pid % 10000}`;
  const [tA, tB] = [`warma${suffix}`, `warmb${suffix}`];
  const nats = await startNatsServer({ storeDir: join(dir, 'nats') });
  const schedCfg = join(dir, 'scheduler.json');
  writeFileSync(schedCfg, JSON.stringify({ networks: [{ name: net, cidr: '10.87.0.0/24', gateway: '10.87.0.1', range: { start: '10.87.0.10', end: '10.87.0.200' } }] }));
  const schedLogs: string[] = [];
  const sched = spawnTied(process.execPath, [SCHEDULER_MAIN], {
    env: { ...process.env, EDGENFV_NATS_URL: nats.url, EDGENFV_CONFIG: schedCfg, EDGENFV_SCHEDULER_METRICS_PORT: '0', EDGENFV_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const onLog = (d: Buffer): void => void schedLogs.push(...d.toString().split('\n').filter(Boolean));
  sched.stdout!.on('data', onLog);
  sched.stderr!.on('data', onLog);
  const nc = await connect({ servers: nats.url });
  const api = await connect({ servers: nats.url });
  const registry = createRegistry('node-agent', { defaultMetrics: false });
  let app: ReturnType<typeof buildApp> | undefined;
  t.after(async () => {
    // the agent first (no reconcile may boot B's replica again once its VM is gone), then every VM
    await app?.stop({ stopVms: true }).catch(() => undefined);
    await app?.manager.stopAll().catch(() => undefined);
    if (sched.exitCode === null) sched.kill('SIGKILL');
    await nc.close();
    await api.close();
    await nats.stop();
    try {
      execFileSync('ip', ['link', 'del', `enfv-${net}`], { stdio: 'ignore' });
    } catch {
      /* gone */
    }
    await removeCgroupParent(cgParent);
    rmSync(dir, { recursive: true, force: true });
  });
  const call = async (subject: string, body: unknown): Promise<any> => jc.decode((await api.request(subject, jc.encode(body), { timeout: 10_000 })).data);
  const ok = async (subject: string, body: unknown): Promise<any> => {
    const r = await call(subject, body);
    assert.ok(r.ok, `${subject}: ${JSON.stringify(r.error)}\n${schedLogs.slice(-10).join('\n')}`);
    return r.result;
  };
  const waitOp = async (tenant: string, opOccId: string): Promise<any> => {
    const end = Date.now() + 300_000;
    for (;;) {
      const r = await call(`nfv.v1.tenant.${tenant}.opoccs.get`, { id: opOccId });
      if (r.ok && ['COMPLETED', 'FAILED', 'ROLLED_BACK'].includes(r.result.operationState)) return r.result;
      if (Date.now() > end) throw new Error(`op ${opOccId} not terminal: ${JSON.stringify(r)}`);
      await sleep(250);
    }
  };
  /** nodes.get until the pool shows a ready VM other than `not`; its id. */
  const readyPoolVm = async (not?: string): Promise<{ id: string; pool: any }> => {
    const end = Date.now() + 600_000;
    for (;;) {
      const n = await ok('nfv.v1.admin.nodes.get', { id: 'warm-node' }).catch(() => undefined);
      const pool = n?.inventory?.warmPool?.[0];
      const id = pool?.readyVms?.find((v: string) => v !== not);
      if (id) return { id, pool };
      if (Date.now() > end) throw new Error(`no ready warm VM in nodes.get: ${JSON.stringify(n?.inventory?.warmPool)}`);
      await sleep(500);
    }
  };

  const image = await buildGuestImage({ log: silentLogger() });
  const kvm = (await probeKvm({ qemuBinary: 'qemu-system-x86_64', kernelPath: image.kernelPath })).ok;
  const cfg = parseConfig({
    nodeId: 'warm-node',
    stateDir,
    heartbeatIntervalMs: 500,
    qemu: { maxVcpus: 2, maxMemoryMiB: 1024 },
    isolation: { cgroupParent: cgParent },
    guest: { bootTimeoutMs: 300_000 },
    warmPool: [{ vcpus: 1, memoryMiB: 64, count: 1 }],
    warmPoolCpuBudgetPercent: 100, // the shared test host is always busy: refill at once
  });
  // the node stands for a 4-CPU host: the pool VM, A's and B's VM hold 3 shared vCPUs (this machine has 2, and the
  // scheduler counts the pool's vCPUs as used)
  const inventoryDeps = { system: async () => ({ cpuCount: 4, memoryMiB: 16_384, hostname: 'warm-node' }) };
  app = buildApp({ cfg, logger: silentLogger(), registry, nc, image, kvm, inventoryDeps });
  await app.start();
  const m = app.manager;

  // the pool VM: in nodes.get (with what it holds) and in /metrics
  const w1 = await readyPoolVm();
  assert.deepEqual({ ...w1.pool, readyVms: undefined }, { vcpus: 1, memoryMiB: 64, count: 1, ready: 1, booting: 0, readyVms: undefined });
  const poolLines = (await registry.metrics()).split('\n').filter((l) => l.startsWith('edgenfv_warm_pool_vms{'));
  assert.ok(poolLines.some((l) => /flavour="1c-64m-numaany",state="ready"[^}]*\} 1$/.test(l)), poolLines.join('\n'));
  const poolRec = m.sandboxes().find((s) => s.sandboxId === w1.id)!;
  assert.equal(poolRec.tenantId, '', 'a pool VM belongs to no tenant');
  assert.deepEqual(poolRec.replicas, {});
  assert.equal(poolRec.spec!.devices.filter((d) => d.kind !== 'agent-channel').length, 0, 'no NIC or disk of anyone in a pool VM');

  // snapshot boot: one template, root's and 0600, in the snapshots folder (not in the VM's root); the VM restored
  const snaps = readdirSync(join(stateDir, 'snapshots'));
  assert.equal(snaps.length, 1, `one template: ${snaps.join(', ')}`);
  assert.match(snaps[0]!, /^[0-9a-f]{24}\.mig$/);
  const snapSt = statSync(join(stateDir, 'snapshots', snaps[0]!));
  assert.equal(snapSt.uid, 0);
  assert.equal(snapSt.mode & 0o777, 0o600);
  assert.equal(existsSync(join(poolRec.vmRoot!, 'snap')), false, "nothing of the template in the VM's root");
  assert.ok(procCmdline(m.vmOf(w1.id)!.pid).includes(`file:${join(stateDir, 'snapshots', snaps[0]!)}`), 'the pool VM was restored from the template');
  const id1 = (await (await m.guestSession(w1.id)).health(10_000)).instanceId;

  await ok('nfv.v1.admin.tenants.create', { id: tA });
  await ok('nfv.v1.admin.tenants.create', { id: tB });
  const vnfd = (name: string) => ({ name, replicas: 1, resources: { vcpus: 1, memoryMiB: 64 }, image: { ref: 'builtin:vrouter' }, interfaces: [{ name: 'mgmt', type: 'tap', network: net }] });

  // tenant A claims the warm VM
  const iA = await ok(`nfv.v1.tenant.${tA}.vnfs.instantiate`, { descriptor: vnfd('vra') });
  const opA = await waitOp(tA, iA.opOccId);
  assert.equal(opA.operationState, 'COMPLETED', JSON.stringify(opA));
  const vA = await ok(`nfv.v1.tenant.${tA}.vnfs.get`, { id: iA.vnfId });
  assert.equal(vA.replicas[0].state, 'RUNNING');
  assert.equal(vA.replicas[0].sandboxId, w1.id, "A's replica runs in the warm VM");
  const macA: string = vA.replicas[0].interfaces[0].mac;
  const recA = m.sandboxes().find((s) => s.sandboxId === w1.id)!;
  assert.equal(recA.tenantId, tA);
  assert.equal(recA.warm, undefined);
  assert.ok(recA.claimedAt);
  const pidA = m.vmOf(w1.id)!.pid;
  const outA = await ok(`nfv.v1.tenant.${tA}.vnfs.exec`, { id: iA.vnfId, command: ['sh', '-c', 'cat /sys/class/net/*/address'] });
  assert.ok(outA.stdout.includes(macA), `A's hot-plugged NIC in A's VM: ${outA.stdout}`);

  // the pool refills with another VM
  const w2 = await readyPoolVm(w1.id);
  assert.notEqual(w2.id, w1.id);

  // the refill: restored from the same template, with its own agent instance id
  assert.ok(procCmdline(m.vmOf(w2.id)!.pid).includes(`file:${join(stateDir, 'snapshots', snaps[0]!)}`), 'the refill was restored from the template');
  const s2 = await m.guestSession(w2.id);
  const id2 = (await s2.health(10_000)).instanceId;
  assert.notEqual(id2, id1, 'two VMs restored from one template: two guest agent instance ids');
  assert.equal(s2.instanceIdAtConnect, id2, "the liveness watch's reference is the restored VM's own id");
  const restores = (await registry.metrics()).split('\n').find((l) => l.startsWith('edgenfv_warm_pool_restore_duration_seconds_count'));
  assert.ok(restores && Number(restores.split(' ').pop()) >= 2, `two restores counted: ${restores}`);

  // tenant B claims the new one: a different VM, nothing of A's in it
  const iB = await ok(`nfv.v1.tenant.${tB}.vnfs.instantiate`, { descriptor: vnfd('vrb') });
  const opB = await waitOp(tB, iB.opOccId);
  assert.equal(opB.operationState, 'COMPLETED', JSON.stringify(opB));
  const vB = await ok(`nfv.v1.tenant.${tB}.vnfs.get`, { id: iB.vnfId });
  assert.equal(vB.replicas[0].sandboxId, w2.id, "B's replica runs in the refilled warm VM");
  assert.notEqual(vB.replicas[0].sandboxId, vA.replicas[0].sandboxId);
  const recB = m.sandboxes().find((s) => s.sandboxId === w2.id)!;
  assert.equal(recB.tenantId, tB);
  assert.deepEqual(Object.values(recB.replicas).map((r) => r.alloc.tenantId), [tB], "only B's replica in B's VM");
  assert.notEqual(m.vmOf(w2.id)!.pid, pidA, 'another QEMU process');
  assert.notEqual(recB.uid, recA.uid, 'another uid');
  assert.notEqual(recB.netns, recA.netns, 'another network namespace');
  assert.notEqual(recB.cgroupDir ?? 'b', recA.cgroupDir ?? 'a', 'another cgroup');
  const macB: string = vB.replicas[0].interfaces[0].mac;
  const outB = await ok(`nfv.v1.tenant.${tB}.vnfs.exec`, { id: iB.vnfId, command: ['sh', '-c', 'cat /sys/class/net/*/address'] });
  assert.ok(outB.stdout.includes(macB), `B's NIC in B's VM: ${outB.stdout}`);
  assert.ok(!outB.stdout.includes(macA), `A's NIC is not in B's VM: ${outB.stdout}`);
  const guestB = await (await m.guestSession(w2.id)).details();
  assert.deepEqual(guestB.nics.map((n) => n.mac).filter((x) => x === macA), [], "the guest agent of B's VM knows no NIC of A's");

  // the two restored VMs' kernel RNGs give different bytes (each reseeded with the host's entropy); clocks are now's
  const rng = async (tenant: string, id: string): Promise<string> => (await ok(`nfv.v1.tenant.${tenant}.vnfs.exec`, { id, command: ['sh', '-c', 'od -An -tx1 -N32 /dev/urandom | tr -d " \\n"'] })).stdout.trim();
  const [rngA, rngB] = [await rng(tA, iA.vnfId), await rng(tB, iB.vnfId)];
  assert.match(rngA, /^[0-9a-f]{64}$/);
  assert.notEqual(rngA, rngB, 'different RNG output in two VMs restored from one template');
  const guestNow = Number((await ok(`nfv.v1.tenant.${tB}.vnfs.exec`, { id: iB.vnfId, command: ['date', '+%s'] })).stdout.trim());
  assert.ok(Math.abs(guestNow - Date.now() / 1000) < 120, `the restored guest's clock was set to the host's: ${guestNow} vs ${Math.round(Date.now() / 1000)}`);

  // A's VM goes with A's last replica: it never returns to the pool
  const trA = await ok(`nfv.v1.tenant.${tA}.vnfs.terminate`, { id: iA.vnfId });
  assert.equal((await waitOp(tA, trA.opOccId)).operationState, 'COMPLETED');
  for (let i = 0; i < 200 && processAlive(pidA); i++) await sleep(50);
  assert.equal(processAlive(pidA), false, "A's QEMU is gone");
  await app.agent.idle();
  assert.equal(m.sandboxes().some((s) => s.sandboxId === w1.id), false);
  assert.ok(!(app.manager.warm!.info()[0]!.readyVms.includes(w1.id)), "A's VM is not in the pool");

  // two tenants at once with one ready pool VM: one claims it, the other's VM is restored from the template for its
  // claim (snapshot boot for a start that finds the pool empty) instead of booting cold
  const trB = await ok(`nfv.v1.tenant.${tB}.vnfs.terminate`, { id: iB.vnfId });
  assert.equal((await waitOp(tB, trB.opOccId)).operationState, 'COMPLETED');
  const w3 = await readyPoolVm(w2.id);
  const [tC, tD] = [`warmc${suffix}`, `warmd${suffix}`];
  await ok('nfv.v1.admin.tenants.create', { id: tC });
  await ok('nfv.v1.admin.tenants.create', { id: tD });
  const [iC, iD] = await Promise.all([ok(`nfv.v1.tenant.${tC}.vnfs.instantiate`, { descriptor: vnfd('vrc') }), ok(`nfv.v1.tenant.${tD}.vnfs.instantiate`, { descriptor: vnfd('vrd') })]);
  for (const [tn, i] of [[tC, iC], [tD, iD]] as const) assert.equal((await waitOp(tn, i.opOccId)).operationState, 'COMPLETED');
  const sbs = [(await ok(`nfv.v1.tenant.${tC}.vnfs.get`, { id: iC.vnfId })).replicas[0].sandboxId as string, (await ok(`nfv.v1.tenant.${tD}.vnfs.get`, { id: iD.vnfId })).replicas[0].sandboxId as string];
  assert.ok(sbs.includes(w3.id.toString()), `one of C and D claimed the ready pool VM ${w3.id}: ${sbs.join(', ')}`);
  const other = sbs.find((x) => x !== w3.id)!;
  assert.ok(other.startsWith('sb-warm-') && other !== w1.id && other !== w2.id, `the other got a VM restored for it: ${other}`);
  assert.ok(procCmdline(m.vmOf(other)!.pid).includes(`file:${join(stateDir, 'snapshots', snaps[0]!)}`), 'restored from the template');
  const ids = await Promise.all(sbs.map(async (sb) => (await (await m.guestSession(sb)).health(10_000)).instanceId));
  assert.equal(new Set([...ids, id1, id2]).size, 4, `four restored VMs, four agent instance ids: ${ids.join(', ')}`);
  const [rngC, rngD] = [await rng(tC, iC.vnfId), await rng(tD, iD.vnfId)];
  assert.equal(new Set([rngA, rngB, rngC, rngD]).size, 4, 'four restored VMs, four different RNG outputs');
});
