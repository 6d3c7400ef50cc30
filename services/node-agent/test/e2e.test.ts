/**
 * End to end through the message API: real nats-server, the real scheduler (its main.js in its own process), the
 * node agent (buildApp, everything real), QEMU booting the guest image. Instantiate a VNF -> op COMPLETED, replica
 * RUNNING, vnfs.get shows node, MAC and IP; a second VNF of the same tenant lands in the same VM; terminate both
 * -> QEMU gone, nothing left on the host.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, JSONCodec } from 'nats';
import { spawnTied, startNatsServer } from '@edgenfv/nats-launcher';
import { createRegistry, silentLogger } from '@edgenfv/telemetry';
import { buildGuestImage } from '../src/guest/index.js';
import { probeKvm } from '../src/hypervisor/kvm-probe.js';
import { parseConfig } from '../src/config.js';
import { buildApp } from '../src/app.js';
import { processAlive } from '../src/proc.js';
import { removeCgroupParent } from './helpers/cleanup.js';

const jc = JSONCodec();
const SCHEDULER_MAIN = fileURLToPath(new URL('../../../scheduler/dist/src/main.js', import.meta.url));

test('message API -> scheduler -> node agent -> tenant VM, two VNFs in one VM, terminate leaves nothing', async (t) => {
  assert.ok(existsSync(SCHEDULER_MAIN), `build the scheduler first: ${SCHEDULER_MAIN}`);
  const dir = mkdtempSync(join(tmpdir(), 'na-e2e-'));
  const stateDir = join(dir, 'state');
  const cgParent = `edgenfv-e${process.pid}`;
  const tenant = `e2e${process.pid % 100000}`;
  const nats = await startNatsServer({ storeDir: join(dir, 'nats') });
  const schedCfg = join(dir, 'scheduler.json');
  writeFileSync(schedCfg, JSON.stringify({ networks: [{ name: 'mgmt', cidr: '10.79.0.0/24', gateway: '10.79.0.1', range: { start: '10.79.0.10', end: '10.79.0.200' } }] }));
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
    try {
      execFileSync('ip', ['link', 'del', 'enfv-mgmt'], { stdio: 'ignore' });
    } catch {
      /* gone */
    }
    await removeCgroupParent(cgParent);
    rmSync(dir, { recursive: true, force: true });
  });
  const call = async (subject: string, body: unknown): Promise<any> => {
    const m = await api.request(subject, jc.encode(body), { timeout: 10_000 });
    return jc.decode(m.data);
  };
  const ok = async (subject: string, body: unknown): Promise<any> => {
    const r = await call(subject, body);
    assert.ok(r.ok, `${subject}: ${JSON.stringify(r.error)}\n${schedLogs.slice(-10).join('\n')}`);
    return r.result;
  };
  const waitOp = async (opOccId: string): Promise<any> => {
    const end = Date.now() + 300_000;
    for (;;) {
      const r = await call(`nfv.v1.tenant.${tenant}.opoccs.get`, { id: opOccId });
      if (r.ok && ['COMPLETED', 'FAILED', 'ROLLED_BACK'].includes(r.result.operationState)) return r.result;
      if (Date.now() > end) throw new Error(`op ${opOccId} not terminal: ${JSON.stringify(r)}\n${schedLogs.slice(-10).join('\n')}`);
      await sleep(200);
    }
  };

  const image = await buildGuestImage({ log: silentLogger() });
  const kvm = (await probeKvm({ qemuBinary: 'qemu-system-x86_64', kernelPath: image.kernelPath })).ok;
  const cfg = parseConfig({ nodeId: 'e2e-node', stateDir, heartbeatIntervalMs: 500, qemu: { maxVcpus: 2, maxMemoryMiB: 1024 }, isolation: { cgroupParent: cgParent }, guest: { bootTimeoutMs: 240_000 } });
  app = buildApp({ cfg, logger: silentLogger(), registry: createRegistry('node-agent', { defaultMetrics: false }), nc, image, kvm });
  await app.start();

  await ok('nfv.v1.admin.tenants.create', { id: tenant });
  const vnfd = (name: string) => ({ name, replicas: 1, resources: { vcpus: 1, memoryMiB: 64 }, image: { ref: 'builtin:vrouter' }, interfaces: [{ name: 'mgmt', type: 'tap', network: 'mgmt' }] });

  const i1 = await ok(`nfv.v1.tenant.${tenant}.vnfs.instantiate`, { descriptor: vnfd('vr1') });
  const op1 = await waitOp(i1.opOccId);
  assert.equal(op1.operationState, 'COMPLETED', JSON.stringify(op1));
  const v1 = await ok(`nfv.v1.tenant.${tenant}.vnfs.get`, { id: i1.vnfId });
  const rep1 = v1.replicas[0];
  assert.equal(rep1.state, 'RUNNING', JSON.stringify(v1));
  assert.equal(rep1.nodeId, 'e2e-node');
  const if1 = rep1.interfaces.find((i: any) => i.name === 'mgmt');
  assert.match(if1.mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
  assert.match(if1.ips[0], /^10\.79\.0\.\d+/);
  const [sb] = app.manager.sandboxes();
  assert.ok(sb);
  const pid = app.manager.vmOf(sb.sandboxId)!.pid;

  const i2 = await ok(`nfv.v1.tenant.${tenant}.vnfs.instantiate`, { descriptor: vnfd('vr2') });
  assert.equal((await waitOp(i2.opOccId)).operationState, 'COMPLETED');
  const v2 = await ok(`nfv.v1.tenant.${tenant}.vnfs.get`, { id: i2.vnfId });
  assert.equal(v2.replicas[0].state, 'RUNNING');
  assert.equal(app.manager.sandboxes().length, 1, 'the second VNF of the tenant is in the same VM');
  assert.equal(Object.keys(app.manager.sandboxes()[0]!.replicas).length, 2);
  assert.equal(app.manager.vmOf(sb.sandboxId)!.pid, pid);

  for (const id of [i1.vnfId, i2.vnfId]) {
    const tr = await ok(`nfv.v1.tenant.${tenant}.vnfs.terminate`, { id });
    assert.equal((await waitOp(tr.opOccId)).operationState, 'COMPLETED');
  }
  for (let i = 0; i < 200 && processAlive(pid); i++) await sleep(50);
  assert.equal(processAlive(pid), false, 'QEMU gone');
  await app.agent.idle();
  assert.deepEqual(app.manager.sandboxes(), []);
  assert.deepEqual(readdirSync(join(stateDir, 'sandboxes')), []);
  assert.equal(existsSync(`/var/run/netns/${sb.netns}`), false);
  assert.equal(existsSync(sb.runDir), false);
});
