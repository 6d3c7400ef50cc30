/**
 * A tenant's own image from a registry, end to end (one VM boot): a real docker-registry on a loopback port, an
 * image pushed with skopeo, instantiated through the message API (real nats-server, the scheduler's main.js, the
 * node agent with everything real, QEMU). The op occurrence shows the pull, the replica records the digest, the
 * container runs in the guest from the image's own files; a second image of the same tenant arrives by disk
 * hotplug into the running VM; a pinned digest that does not match is refused naming the image; a scale-out of the
 * OPERATEd-STOPPED VNF joins the VM without starting its container; terminate leaves nothing behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
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
import { processAlive } from '../../src/proc.js';
import { removeCgroupParent } from '../helpers/cleanup.js';
import { makeBusyboxLayout, pushLayout, startRegistry } from '../../src/testing/registry.js';

const jc = JSONCodec();
const SCHEDULER_MAIN = fileURLToPath(new URL('../../../../scheduler/dist/src/main.js', import.meta.url));
const TERMINAL = ['COMPLETED', 'FAILED', 'FAILED_TEMP', 'ROLLED_BACK'];

test('registry image -> API -> node pull -> disk -> running in the guest; hotplugged second image; wrong digest refused', async (t) => {
  assert.ok(existsSync(SCHEDULER_MAIN), `build the scheduler first: ${SCHEDULER_MAIN}`);
  const dir = mkdtempSync(join(tmpdir(), 'na-reg-e2e-'));
  chmodSync(dir, 0o711); // the VM's unprivileged uid opens hotplugged image disks below it
  const stateDir = join(dir, 'state');
  const cgParent = `edgenfv-r${process.pid}`;
  const tenant = `img${process.pid % 100000}`;
  const reg = await startRegistry(join(dir, 'registry'));
  const v1 = makeBusyboxLayout(join(dir, 'vfw1'), '1.2', { '/etc/vfw-version': 'vfw 1.2\n' }, ['/bin/sh', '-c', "trap 'echo vfw 1.2 stopping; exit 0' TERM; echo vfw 1.2 up; while :; do sleep 1; done"]);
  const v2 = makeBusyboxLayout(join(dir, 'vfw2'), '2.0', { '/etc/vfw-version': 'vfw 2.0\n' }, ['/bin/sh', '-c', 'echo vfw 2.0 up; exec sleep 3600']);
  const d1 = pushLayout(v1.layout, '1.2', reg.host, 'acme/vfw');
  const d2 = pushLayout(v2.layout, '2.0', reg.host, 'acme/vfw');
  const nats = await startNatsServer({ storeDir: join(dir, 'nats') });
  const schedCfg = join(dir, 'scheduler.json');
  writeFileSync(schedCfg, JSON.stringify({}));
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
  let app: ReturnType<typeof buildApp> | undefined;
  t.after(async () => {
    await app?.manager.stopAll().catch(() => undefined);
    await app?.stop().catch(() => undefined);
    if (sched.exitCode === null) sched.kill('SIGKILL');
    await nc.close();
    await api.close();
    await nats.stop();
    await reg.stop();
    await removeCgroupParent(cgParent);
    rmSync(dir, { recursive: true, force: true });
  });
  const call = async (subject: string, body: unknown): Promise<any> => jc.decode((await api.request(subject, jc.encode(body), { timeout: 10_000 })).data);
  const ok = async (subject: string, body: unknown): Promise<any> => {
    const r = await call(subject, body);
    assert.ok(r.ok, `${subject}: ${JSON.stringify(r.error)}\n${schedLogs.slice(-10).join('\n')}`);
    return r.result;
  };
  const waitOp = async (opOccId: string): Promise<any> => {
    const end = Date.now() + 400_000;
    for (;;) {
      const r = await call(`nfv.v1.tenant.${tenant}.opoccs.get`, { id: opOccId });
      if (r.ok && TERMINAL.includes(r.result.operationState)) return r.result;
      if (Date.now() > end) throw new Error(`op ${opOccId} not terminal: ${JSON.stringify(r)}\n${schedLogs.slice(-10).join('\n')}`);
      await sleep(250);
    }
  };

  const image = await buildGuestImage({ log: silentLogger() });
  const kvm = (await probeKvm({ qemuBinary: 'qemu-system-x86_64', kernelPath: image.kernelPath })).ok;
  const cfg = parseConfig({
    nodeId: 'reg-node',
    stateDir,
    heartbeatIntervalMs: 500,
    qemu: { maxVcpus: 2, maxMemoryMiB: 1024 },
    isolation: { cgroupParent: cgParent },
    guest: { bootTimeoutMs: 240_000 },
    registries: [{ host: reg.host, plainHttp: true }],
  });
  app = buildApp({ cfg, logger: silentLogger(), registry: createRegistry('node-agent', { defaultMetrics: false }), nc, image, kvm });
  await app.start();
  await ok('nfv.v1.admin.tenants.create', { id: tenant });
  const vnfd = (name: string, ref: string) => ({ name, replicas: 1, resources: { vcpus: 1, memoryMiB: 64 }, image: { ref } });

  // 1. the image by tag: pulled, delivered, running from its own files
  const ref1 = `${reg.host}/acme/vfw:1.2`;
  const i1 = await ok(`nfv.v1.tenant.${tenant}.vnfs.instantiate`, { descriptor: vnfd('vfw', ref1) });
  const op1 = await waitOp(i1.opOccId);
  assert.equal(op1.operationState, 'COMPLETED', JSON.stringify(op1));
  assert.ok(op1.steps.some((s: any) => s.message.includes(`pulled ${ref1}: ${d1}`)), `pull in the steps: ${JSON.stringify(op1.steps)}`);
  const vnf1 = await ok(`nfv.v1.tenant.${tenant}.vnfs.get`, { id: i1.vnfId });
  assert.equal(vnf1.replicas[0].state, 'RUNNING');
  assert.equal(vnf1.replicas[0].imageDigest, d1);
  const [sb] = app.manager.sandboxes();
  assert.ok(sb);
  const pid = app.manager.vmOf(sb.sandboxId)!.pid;
  const session = await app.manager.guestSession(sb.sandboxId);
  const c1 = Object.values(sb.replicas)[0]!.containerId;
  assert.deepEqual(await session.exec(c1, ['cat', '/etc/vfw-version']), { exitCode: 0, stdout: 'vfw 1.2\n', stderr: '' });

  // day-2 on the real node: logs and exec through the API (scheduler -> node agent -> guest agent), OPERATE
  const t1 = `nfv.v1.tenant.${tenant}`;
  const logs1 = await ok(`${t1}.vnfs.logs`, { id: i1.vnfId });
  assert.ok(logs1.lines.includes('vfw 1.2 up'), JSON.stringify(logs1));
  assert.deepEqual(await ok(`${t1}.vnfs.exec`, { id: i1.vnfId, command: ['cat', '/etc/vfw-version'] }), { exitCode: 0, stdout: 'vfw 1.2\n', stderr: '' });
  assert.equal((await ok(`${t1}.vnfs.exec`, { id: i1.vnfId, command: ['sh', '-c', 'exit 3'] })).exitCode, 3);
  const stop = await ok(`${t1}.vnfs.operate`, { id: i1.vnfId, changeStateTo: 'STOPPED' });
  assert.equal((await waitOp(stop.opOccId)).operationState, 'COMPLETED');
  const stopped = await ok(`${t1}.vnfs.get`, { id: i1.vnfId });
  assert.equal(stopped.replicas[0].state, 'STOPPED');
  assert.equal(stopped.replicas[0].sandboxId, vnf1.replicas[0].sandboxId, 'the VM is kept');
  assert.equal(app.manager.vmOf(sb.sandboxId)!.pid, pid);
  assert.equal((await call(`${t1}.vnfs.exec`, { id: i1.vnfId, command: ['true'] })).error.code, 'CONFLICT');
  assert.ok((await ok(`${t1}.vnfs.logs`, { id: i1.vnfId })).lines.includes('vfw 1.2 stopping'), 'logs of a stopped container');
  const start = await ok(`${t1}.vnfs.operate`, { id: i1.vnfId, changeStateTo: 'STARTED' });
  assert.equal((await waitOp(start.opOccId)).operationState, 'COMPLETED');
  assert.equal((await ok(`${t1}.vnfs.get`, { id: i1.vnfId })).replicas[0].state, 'RUNNING');
  assert.equal((await ok(`${t1}.vnfs.logs`, { id: i1.vnfId })).lines.filter((l: string) => l === 'vfw 1.2 up').length, 2, 'started again');

  // 2. a second image for the same tenant: its disk is hotplugged into the running VM
  const i2 = await ok(`nfv.v1.tenant.${tenant}.vnfs.instantiate`, { descriptor: vnfd('vfw2', `${reg.host}/acme/vfw@${d2}`) });
  const op2 = await waitOp(i2.opOccId);
  assert.equal(op2.operationState, 'COMPLETED', JSON.stringify(op2));
  assert.equal(app.manager.vmOf(sb.sandboxId)!.pid, pid, 'same VM');
  const rec = app.manager.sandboxes()[0]!;
  assert.equal(rec.disks?.length, 2);
  const c2 = Object.values(rec.replicas).find((r) => r.alloc.vnfId === i2.vnfId)!.containerId;
  assert.equal((await session.exec(c2, ['cat', '/etc/vfw-version'])).stdout, 'vfw 2.0\n');

  const tr2 = await ok(`nfv.v1.tenant.${tenant}.vnfs.terminate`, { id: i2.vnfId });
  assert.equal((await waitOp(tr2.opOccId)).operationState, 'COMPLETED'); // this host has 2 CPUs: room for the next

  // 3. a tag pinned to a digest it does not have (1.2 pinned to 2.0's): FAILED_TEMP naming the image; fail releases it
  const bad = `${reg.host}/acme/vfw:1.2@${d2}`;
  const i3 = await ok(`nfv.v1.tenant.${tenant}.vnfs.instantiate`, { descriptor: vnfd('vfw3', bad) });
  const op3 = await waitOp(i3.opOccId);
  assert.equal(op3.operationState, 'FAILED_TEMP', JSON.stringify(op3));
  assert.equal(op3.error.code, 'UNAVAILABLE');
  assert.ok(op3.error.message.includes(`image ${bad}: digest mismatch`), op3.error.message);
  const failed = await ok(`nfv.v1.tenant.${tenant}.opoccs.fail`, { id: i3.opOccId });
  assert.equal(failed.operationState, 'FAILED');
  assert.equal((await ok(`nfv.v1.tenant.${tenant}.vnfs.get`, { id: i3.vnfId })).instantiationState, 'NOT_INSTANTIATED');

  // 4. a scale-out of a STOPPED VNF: the new replica joins the VM with its container created, never started
  // (once the failed replica's CPU is free: its release waits for the node's next heartbeat to confirm it is gone)
  for (let i = 0; i < 200; i++) {
    const node = await ok('nfv.v1.admin.nodes.get', { id: 'reg-node' });
    if (!(node.reservations ?? []).some((r: any) => r.vnfId === i3.vnfId)) break;
    await sleep(100);
  }
  const stop2 = await ok(`${t1}.vnfs.operate`, { id: i1.vnfId, changeStateTo: 'STOPPED' });
  assert.equal((await waitOp(stop2.opOccId)).operationState, 'COMPLETED');
  const out = await ok(`${t1}.vnfs.scale`, { id: i1.vnfId, replicas: 2 });
  const outOp = await waitOp(out.opOccId);
  assert.equal(outOp.operationState, 'COMPLETED', JSON.stringify(outOp.steps));
  assert.deepEqual((await ok(`${t1}.vnfs.get`, { id: i1.vnfId })).replicas.map((r: any) => r.state), ['STOPPED', 'STOPPED']);
  assert.equal(app.manager.vmOf(sb.sandboxId)!.pid, pid, 'it joined the same VM');
  assert.deepEqual((await ok(`${t1}.vnfs.logs`, { id: i1.vnfId, replica: 1 })).lines, [], 'replica 1 never ran');
  const start2 = await ok(`${t1}.vnfs.operate`, { id: i1.vnfId, changeStateTo: 'STARTED' });
  assert.equal((await waitOp(start2.opOccId)).operationState, 'COMPLETED');
  assert.deepEqual((await ok(`${t1}.vnfs.get`, { id: i1.vnfId })).replicas.map((r: any) => r.state), ['RUNNING', 'RUNNING']);
  assert.ok((await ok(`${t1}.vnfs.logs`, { id: i1.vnfId, replica: 1 })).lines.includes('vfw 1.2 up'), 'STARTED starts it');

  const tr1 = await ok(`nfv.v1.tenant.${tenant}.vnfs.terminate`, { id: i1.vnfId });
  assert.equal((await waitOp(tr1.opOccId)).operationState, 'COMPLETED');
  for (let i = 0; i < 200 && processAlive(pid); i++) await sleep(50);
  assert.equal(processAlive(pid), false, 'QEMU gone');
  await app.agent.idle();
  assert.deepEqual(app.manager.sandboxes(), []);
  assert.deepEqual(readdirSync(join(stateDir, 'sandboxes')), []);
  assert.equal(existsSync(sb.runDir), false);
  assert.equal(existsSync(`${sb.runDir}.disks`), false, "the image disks go with the sandbox");
});
