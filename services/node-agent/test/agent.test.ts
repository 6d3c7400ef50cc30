/**
 * The node agent's NATS side against a real nats-server and a small in-test scheduler: it answers register and
 * heartbeats and writes allocations into KV directly. QEMU is real (TCG; no guest kernel here, the VM idles in
 * firmware) and the guest agent is a recording stand-in (the real one: sandbox-boot.test.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, JSONCodec, type KV } from 'nats';
import { startNatsServer } from '@edgenfv/nats-launcher';
import { createLogger, createRegistry } from '@edgenfv/telemetry';
import { KV_BUCKETS, internalSubjects, type Heartbeat, type RegisterRequest, type ReplicaStatus } from '@edgenfv/contracts';
import { parseConfig } from '../src/config.js';
import { buildApp } from '../src/app.js';
import { processAlive, killQuiet } from '../src/proc.js';
import { makeAlloc } from './helpers/alloc.js';
import { removeCgroupParent } from './helpers/cleanup.js';
import { RecordingGuest } from './helpers/recording-guest.js';

const jc = JSONCodec();

async function waitStatus(kv: KV, key: string, pred: (s: ReplicaStatus) => boolean, what: string): Promise<ReplicaStatus> {
  const end = Date.now() + 60_000;
  let last: ReplicaStatus | undefined;
  while (Date.now() < end) {
    const e = await kv.get(key);
    if (e && e.operation === 'PUT') {
      last = e.json<ReplicaStatus>();
      if (pred(last)) return last;
    }
    await sleep(50);
  }
  throw new Error(`status ${key} never became ${what}; last: ${JSON.stringify(last)}`);
}

test('register with inventory, heartbeat, converge on allocations in KV, write status, fence re-check failures', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'na-agent-'));
  const stateDir = join(dir, 'state');
  const cgParent = `edgenfv-a${process.pid}`;
  const bridge = `enfva${process.pid % 100000}`;
  let nats = await startNatsServer({ storeDir: join(dir, 'nats') });
  const nc = await connect({ servers: nats.url });
  const sched = await connect({ servers: nats.url });
  let app: ReturnType<typeof buildApp> | undefined;
  const pids: number[] = [];
  t.after(async () => {
    await app?.stop().catch(() => undefined);
    await app?.manager.stopAll().catch(() => undefined);
    for (const p of pids) killQuiet(p, 'SIGKILL');
    await nc.close();
    await sched.close();
    await nats.stop();
    try {
      execFileSync('ip', ['link', 'del', bridge], { stdio: 'ignore' });
    } catch {
      /* gone */
    }
    await removeCgroupParent(cgParent);
    rmSync(dir, { recursive: true, force: true });
  });

  // the in-test scheduler: buckets, register + heartbeat responders
  const js = sched.jetstream();
  const allocs = await js.views.kv(KV_BUCKETS.allocs);
  const status = await js.views.kv(KV_BUCKETS.status);
  const registers: RegisterRequest[] = [];
  const heartbeats: Heartbeat[] = [];
  const regSub = sched.subscribe(internalSubjects.register('n1'), {
    callback: (_e, m) => {
      registers.push(jc.decode(m.data) as RegisterRequest);
      m.respond(jc.encode({ ok: true, result: { epoch: 3 } }));
    },
  });
  const hbSub = sched.subscribe(internalSubjects.heartbeat('n1'), {
    callback: (_e, m) => {
      heartbeats.push(jc.decode(m.data) as Heartbeat);
      m.respond(jc.encode({ ok: true, result: { epoch: 3, reregister: false } }));
    },
  });
  t.after(() => {
    regSub.unsubscribe();
    hbSub.unsubscribe();
  });

  const cfg = parseConfig({
    nodeId: 'n1',
    stateDir,
    heartbeatIntervalMs: 200,
    vmBaseMemoryMiB: 128,
    qemu: { accel: 'tcg', maxVcpus: 2, maxMemoryMiB: 512 },
    isolation: { cgroupParent: cgParent },
    cpuAllocationRatio: 1.5,
  });
  const registry = createRegistry('node-agent-test', { defaultMetrics: false });
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ service: 'node-agent', level: 'info', destination: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
  const hostChecks = [{ name: 'iommu', status: 'fail' as const, detail: 'no IOMMU', fix: 'intel_iommu=on', required: false }];
  app = buildApp({ cfg, logger, registry, nc, image: {}, guest: new RecordingGuest(), hostChecks });
  await app.start();
  assert.equal(app.agent.currentEpoch, 3);
  assert.equal(registers.length, 1);
  assert.equal(registers[0].inventory.nodeId, 'n1');
  const inv = registers[0].inventory;
  assert.ok(inv.hypervisors.some((h) => h.kind === 'qemu' && h.accel === (inv.kvm ? 'kvm' : 'tcg')));
  assert.deepEqual(registers[0].running, []);
  assert.deepEqual(inv.checks, hostChecks, 'the host checks run at start are published with the inventory (nodes.get)');
  assert.equal(inv.vmMaxVcpus, 2);
  assert.equal(inv.cpuAllocationRatio, 1.5, "the node's shared-vCPU overcommit, for the scheduler");
  // what keeps sandboxes apart here, and what this host leaves unprotected (docs/security.md)
  const prot = new Map((inv.protections ?? []).map((p) => [p.name, p]));
  for (const name of ['cgroup.cpu', 'cgroup.memory', 'cgroup.cpuset', 'vmm.seccomp', 'vmm.env', 'vmm.chroot', 'bridge.antispoof']) assert.ok(prot.has(name), name);
  assert.equal(prot.get('vmm.env')!.enforced, true);
  assert.equal(prot.get('vmm.chroot')!.enforced, true, 'QEMU runs chrooted');

  const a1 = makeAlloc({ allocId: 'a1', tenantId: 'acme', nodeId: 'n1', epoch: 3 }, [
    { name: 'mgmt', type: 'tap', mac: '02:00:00:00:0a:01', bridge, ips: ['10.66.0.5/24'] },
  ]);
  await allocs.create('n1.a1', jc.encode(a1));
  const running = await waitStatus(status, 'n1.a1', (s) => s.state === 'RUNNING' || s.state === 'FAILED', 'RUNNING');
  assert.equal(running.state, 'RUNNING', JSON.stringify(running.error));
  assert.equal(running.tenantId, 'acme');
  assert.equal(running.epoch, 3);
  assert.ok(running.sandboxId);
  assert.deepEqual(running.interfaces, [{ name: 'mgmt', mac: '02:00:00:00:0a:01', ips: ['10.66.0.5/24'] }]);
  const vm = app.manager.vmOf(running.sandboxId)!;
  pids.push(vm.pid);
  assert.ok(processAlive(vm.pid));

  // logs say the accelerator, and carry tenantId / vnfId / sandboxId
  assert.ok(lines.some((l) => /node agent starting \(qemu accel (kvm|tcg)/.test(String(l.msg))), 'start line names the accelerator');
  const booted = lines.find((l) => /^VM booted/.test(String(l.msg)));
  assert.ok(booted, 'a "VM booted" line');
  assert.equal(booted.tenantId, 'acme');
  assert.equal(booted.vnfId, a1.vnfId);
  assert.equal(booted.sandboxId, running.sandboxId);
  assert.equal(booted.accel, app.accel);

  // the node re-checks: a VF it does not have is refused, and says why
  const bad = makeAlloc({ allocId: 'a2', tenantId: 'acme', nodeId: 'n1', epoch: 3 }, [
    { name: 'up', type: 'sriov', mac: '02:00:00:00:0a:02', sriov: { pfPciAddress: '0000:99:00.0', vfPciAddress: '0000:99:10.0', vfIndex: 0, physnet: 'p1' } },
  ]);
  await allocs.create('n1.a2', jc.encode(bad));
  const refused = await waitStatus(status, 'n1.a2', (s) => s.state === 'FAILED', 'FAILED');
  assert.equal(refused.error?.code, 'UNSCHEDULABLE');
  assert.match(refused.error.message, /0000:99:10.0/);

  // heartbeats carry the epoch and what runs
  const hbEnd = Date.now() + 10_000;
  while (!heartbeats.some((h) => h.running?.includes('a1')) && Date.now() < hbEnd) await sleep(50);
  const hb = heartbeats.find((h) => h.running?.includes('a1'));
  assert.ok(hb, 'a heartbeat listing a1');
  assert.equal(hb.epoch, 3);
  assert.equal(hb.sandboxes, 1);

  // metrics page
  const page = await registry.metrics();
  assert.match(page, /edgenfv_vm_boot_duration_seconds_count\{(?=[^}]*hypervisor="qemu")(?=[^}]*accel="tcg")(?=[^}]*result="ok")[^}]*\} 1/);
  assert.match(page, /edgenfv_sandboxes\{(?=[^}]*state="running")[^}]*\} 1/);
  const promtool = spawnSync('promtool', ['check', 'metrics'], { input: page, encoding: 'utf8' });
  assert.equal(promtool.status, 0, `promtool check metrics: ${promtool.stdout}${promtool.stderr}`);
  assert.equal((promtool.stdout + promtool.stderr).trim(), '', `promtool has something to say: ${promtool.stdout}${promtool.stderr}`);
  assert.match(page, /edgenfv_sandbox_hypervisor_rss_bytes\{(?=[^}]*tenant="acme")[^}]*\} \d+/);

  // a nats-server restart (same port and store): the agent reconnects, registers again and re-reads its allocations
  // from a fresh watch (before, its watch went silent after the restart and a deleted allocation's VM ran on)
  const registered = registers.length;
  await nats.stop();
  nats = await startNatsServer({ storeDir: join(dir, 'nats'), port: nats.port });
  const regEnd = Date.now() + 60_000;
  while (registers.length === registered && Date.now() < regEnd) await sleep(100);
  assert.ok(registers.length > registered, 'registered again after the restart');
  assert.ok(processAlive(vm.pid), 'the VM kept running through the restart');

  // allocation deleted -> replica stopped, VM gone, nothing left
  await allocs.delete('n1.a1');
  await waitStatus(status, 'n1.a1', (s) => s.state === 'STOPPED', 'STOPPED');
  assert.equal(processAlive(vm.pid), false);
  assert.deepEqual(app.manager.sandboxes(), []);
  assert.deepEqual(readdirSync(join(stateDir, 'sandboxes')), []);
});
