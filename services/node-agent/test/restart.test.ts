/**
 * kill -9 of the node agent while two tenant VMs run: the VMs keep running, the restarted agent re-adopts both
 * (same QEMU processes, same sandboxes), no VM lost or duplicated; then the allocations go and nothing is left.
 * The agent is the real main.js in its own process; the scheduler is a small in-test one on a real nats-server;
 * the VMs boot the real guest image (TCG here).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, JSONCodec, type KV } from 'nats';
import { spawnTied, startNatsServer } from '@edgenfv/nats-launcher';
import { silentLogger } from '@edgenfv/telemetry';
import { KV_BUCKETS, internalSubjects, type Heartbeat, type RegisterRequest, type ReplicaStatus } from '@edgenfv/contracts';
import { buildGuestImage } from '../src/guest/index.js';
import { processAlive, procCmdline, killQuiet, waitGone } from '../src/proc.js';
import { makeAlloc } from './helpers/alloc.js';
import { removeCgroupParent } from './helpers/cleanup.js';

const jc = JSONCodec();
const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 240_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}
async function status(kv: KV, key: string): Promise<ReplicaStatus | undefined> {
  const e = await kv.get(key);
  return e && e.operation === 'PUT' ? e.json<ReplicaStatus>() : undefined;
}
function qemuPidsOf(prefix: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = procCmdline(Number(p));
    if (cmd.some((a) => a.endsWith('qemu-system-x86_64')) && cmd.some((a) => a.startsWith(`guest=${prefix}`)) && processAlive(Number(p))) out.push(Number(p));
  }
  return out;
}

test('kill -9 of the agent with two VMs running: the restarted agent re-adopts both, none lost or duplicated', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'na-restart-'));
  const stateDir = join(dir, 'state');
  const tag = `${process.pid}`;
  const tenants = [`rt1-${tag}`, `rt2-${tag}`];
  const image = await buildGuestImage({ log: silentLogger() });
  const nats = await startNatsServer({ storeDir: join(dir, 'nats') });
  const sched = await connect({ servers: nats.url });
  let agent: ChildProcess | undefined;
  let agentOut = '';
  t.after(async () => {
    if (agent && agent.exitCode === null) agent.kill('SIGKILL');
    for (const tn of tenants) for (const p of qemuPidsOf(`sb-${tn}-`)) killQuiet(p, 'SIGKILL');
    for (const tn of tenants) for (const p of qemuPidsOf(`sb-${tn}-`)) await waitGone(p, undefined, 5000);
    for (const ns of execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n')) {
      const name = ns.split(' ')[0];
      if (name && existsSync(join(stateDir, 'sandboxes')) && readdirSync(join(stateDir, 'sandboxes')).some((f) => readFileSync(join(stateDir, 'sandboxes', f), 'utf8').includes(`"netns": "${name}"`))) {
        execFileSync('ip', ['netns', 'del', name]);
      }
    }
    await removeCgroupParent(`edgenfv-r${tag}`);
    await sched.close();
    await nats.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const js = sched.jetstream();
  const allocs = await js.views.kv(KV_BUCKETS.allocs);
  const statusKv = await js.views.kv(KV_BUCKETS.status);
  const registers: RegisterRequest[] = [];
  const heartbeats: Heartbeat[] = [];
  sched.subscribe(internalSubjects.register('rn1'), { callback: (_e, m) => { registers.push(jc.decode(m.data) as RegisterRequest); m.respond(jc.encode({ ok: true, result: { epoch: 1 } })); } });
  sched.subscribe(internalSubjects.heartbeat('rn1'), { callback: (_e, m) => { heartbeats.push(jc.decode(m.data) as Heartbeat); m.respond(jc.encode({ ok: true, result: { epoch: 1, reregister: false } })); } });

  const cfgPath = join(dir, 'node.json');
  writeFileSync(cfgPath, JSON.stringify({
    nodeId: 'rn1',
    stateDir,
    nats: { url: nats.url },
    metrics: { port: 0 },
    heartbeatIntervalMs: 300,
    qemu: { accel: 'tcg', maxVcpus: 2, maxMemoryMiB: 1024 },
    guest: { kernelPath: image.kernelPath, initrdPath: image.initrdPath, systemDiskPath: image.systemDisk.path, bootTimeoutMs: 240_000 },
    isolation: { cgroupParent: `edgenfv-r${tag}` },
  }));
  const startAgent = (): ChildProcess => {
    // tied to this test process (pdeathsig), so a killed test run leaves no agent; QEMU (its child) is not tied
    const p = spawnTied(process.execPath, [MAIN, '--config', cfgPath], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, EDGENFV_LOG_LEVEL: 'info' } });
    p.stdout!.on('data', (d: Buffer) => (agentOut += d.toString()));
    p.stderr!.on('data', (d: Buffer) => (agentOut += d.toString()));
    return p;
  };

  agent = startAgent();
  await until('first register', () => (registers.length >= 1 ? true : undefined), 60_000);
  for (const [i, tn] of tenants.entries()) {
    await allocs.create(`rn1.k${i}`, jc.encode(makeAlloc({ allocId: `k${i}`, tenantId: tn, nodeId: 'rn1', epoch: 1, image: { ref: 'builtin:vrouter' }, resources: { vcpus: 1, memoryMiB: 64 } })));
  }
  const before = [];
  for (const i of [0, 1]) {
    const st = await until(`k${i} RUNNING`, async () => {
      const s = await status(statusKv, `rn1.k${i}`);
      if (s?.state === 'FAILED') throw new Error(`k${i} FAILED: ${JSON.stringify(s.error)}\n${agentOut.slice(-3000)}`);
      return s?.state === 'RUNNING' ? s : undefined;
    });
    before.push(st);
  }
  const pids = tenants.map((tn) => qemuPidsOf(`sb-${tn}-`));
  assert.deepEqual(pids.map((p) => p.length), [1, 1]);

  // kill -9 the agent: the VMs live on
  agent.kill('SIGKILL');
  await new Promise((r) => agent!.once('exit', r));
  for (const p of pids.flat()) assert.ok(processAlive(p), `QEMU ${p} survived the agent`);

  const nRegisters = registers.length;
  const nHeartbeats = heartbeats.length;
  agent = startAgent();
  const reg = await until('register after restart', () => registers[nRegisters], 60_000);
  assert.deepEqual([...reg.running].sort(), ['k0', 'k1']);
  // a heartbeat from the restarted agent listing both (its reconcile has run)
  await until('heartbeat after restart', () => heartbeats.slice(nHeartbeats).find((h) => (h.running ?? []).length === 2), 60_000);
  await sleep(0);
  const procState = (p: number): string => { try { return readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.slice(0, 1); } catch { return 'gone'; } };
  const qlogs = (): string => readdirSync(join(stateDir, 'tenants')).map((tn) => { try { const sb = readdirSync(join(stateDir, 'tenants', tn))[0]!; return tn + ': ' + readFileSync(join(stateDir, 'tenants', tn, sb, 'console.log'), 'utf8').slice(-1200); } catch (e) { return tn + ': ' + String(e); } }).join('\n');
  const logTail = (): string => pids.flat().map((p) => `${p}:${procState(p)}`).join(' ') + '\n' + qlogs() + '\n' + agentOut.split('\n').filter((l) => /adopt|gone|clean|teardown|warn|error|"level":[45]0/.test(l)).slice(-15).join('\n');
  assert.deepEqual(tenants.map((tn) => qemuPidsOf(`sb-${tn}-`)), pids, `same QEMU processes, none duplicated\n${logTail()}`);
  for (const i of [0, 1]) {
    const s = await status(statusKv, `rn1.k${i}`);
    assert.equal(s?.state, 'RUNNING');
    assert.equal(s?.sandboxId, before[i]!.sandboxId);
  }

  // the allocations go: the restarted agent tears both VMs down completely
  for (const i of [0, 1]) await allocs.delete(`rn1.k${i}`);
  for (const i of [0, 1]) await until(`k${i} STOPPED`, async () => ((await status(statusKv, `rn1.k${i}`))?.state === 'STOPPED' ? true : undefined));
  for (const p of pids.flat()) assert.equal(processAlive(p), false);
  assert.deepEqual(readdirSync(join(stateDir, 'sandboxes')), []);
  agent.kill('SIGTERM');
  await new Promise((r) => agent!.once('exit', r));
});
