// The node agent with its OVS-DPDK switch, seen through the message API: the real scheduler process, a real
// nats-server, the agent built by buildApp from a node config. `nfv.v1.admin.nodes.get` shows the switch's state:
// failed with its reason when OVS will not start (and the agent does not hang), ready with its networks when it
// runs; a crash after registration whose restart fails, and the recovery, reach nodes.get through heartbeats;
// the agent's stop leaves no namespace behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { connect, JSONCodec } from 'nats';
import { spawnTied, startNatsServer } from '@edgenfv/nats-launcher';
import { createRegistry, silentLogger } from '@edgenfv/telemetry';
import type { DataplaneInfo } from '@edgenfv/contracts';
import { parseConfig } from '../../src/config.js';
import { buildApp } from '../../src/app.js';
import { reserveTestHugepages, sh, waitFor } from './helpers.js';

const jc = JSONCodec();
const SCHEDULER_MAIN = fileURLToPath(new URL('../../../../scheduler/dist/src/main.js', import.meta.url));

test('nodes.get shows the node switch: failed with its reason, or ready with its networks (also after a crash)', async (t) => {
  assert.ok(existsSync(SCHEDULER_MAIN), `build the scheduler first: ${SCHEDULER_MAIN}`);
  await reserveTestHugepages();
  const dir = mkdtempSync(join(tmpdir(), 'na-ovs-api-'));
  const id = randomBytes(3).toString('hex');
  const networks = [{ name: 'prov', cidr: '10.76.0.0/24', vlan: 42, dataplane: 'ovs-dpdk' }];
  const nats = await startNatsServer({ storeDir: join(dir, 'nats') });
  const schedCfg = join(dir, 'scheduler.json');
  writeFileSync(schedCfg, JSON.stringify({ networks }));
  const sched = spawnTied(process.execPath, [SCHEDULER_MAIN], {
    env: { ...process.env, EDGENFV_NATS_URL: nats.url, EDGENFV_CONFIG: schedCfg, EDGENFV_SCHEDULER_METRICS_PORT: '0' },
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  const nc = await connect({ servers: nats.url });
  const api = await connect({ servers: nats.url });
  const apps: ReturnType<typeof buildApp>[] = [];
  t.after(async () => {
    for (const a of apps) await a.stop().catch(() => undefined);
    if (sched.exitCode === null) sched.kill('SIGKILL');
    await nc.close();
    await api.close();
    await nats.stop();
    for (const ns of [`enfvt-aovs-${id}`, `enfvt-aprov-${id}`, `enfvt-bovs-${id}`, `enfvt-bprov-${id}`]) await sh(['ip', 'netns', 'del', ns]).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });
  const dataplaneOf = async (nodeId: string): Promise<DataplaneInfo | undefined> => {
    const r = (jc.decode((await api.request('nfv.v1.admin.nodes.get', jc.encode({ id: nodeId }), { timeout: 10_000 })).data)) as {
      ok: boolean;
      result?: { inventory: { dataplanes: DataplaneInfo[] } };
    };
    return r.ok ? r.result!.inventory.dataplanes.find((d) => d.kind === 'ovs-dpdk') : undefined;
  };
  const start = async (nodeId: string, ns: string, ovs: Record<string, unknown>) => {
    const cfg = parseConfig({
      nodeId,
      stateDir: join(dir, nodeId),
      heartbeatIntervalMs: 300,
      networks,
      dataplanes: [{ kind: 'ovs-dpdk', numaNode: 0, ovs: { socketMemMiB: 256, pmdMaxSleepUs: 10_000, netns: `enfvt-${ns}ovs-${id}`, uplinks: { prov: { veth: { netns: `enfvt-${ns}prov-${id}`, name: 'eth0' } } }, ...ovs } }],
    });
    const app = buildApp({ cfg, logger: silentLogger(), registry: createRegistry('node-agent', { defaultMetrics: false }), nc, image: {}, kvm: false });
    apps.push(app);
    await app.start();
    return { app, cfg };
  };

  // OVS will not start (DPDK refuses its EAL arguments): the agent registers anyway, the node says why
  const bad = await start('ovs-bad', 'a', { ealArgs: ['--no-such-eal-option'] });
  const failed = await waitFor('nodes.get to show the failed switch', async () => {
    const d = await dataplaneOf('ovs-bad');
    return d?.state === 'failed' ? d : undefined;
  });
  assert.match(failed.error ?? '', /ovs-vswitchd exited .*Unable to initialize DPDK/);
  assert.deepEqual(failed.networks, ['prov']);
  await bad.app.stop();
  apps.pop();

  // a switch that runs: ready with its networks (its binary a copy this test can take away)
  const vswitchd = join(dir, 'ovs-vswitchd-dpdk');
  copyFileSync('/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk', vswitchd);
  chmodSync(vswitchd, 0o755);
  const good = await start('ovs-good', 'b', { vswitchdBinary: vswitchd });
  const ready = await waitFor('nodes.get to show the ready switch', async () => {
    const d = await dataplaneOf('ovs-good');
    return d?.state === 'ready' ? d : undefined;
  });
  assert.deepEqual(ready.networks, ['prov']);
  assert.equal(ready.error, undefined);
  assert.deepEqual(good.app.dataplane?.bridgeFor('prov'), { bridge: 'br-prov', vlan: 42, db: `unix:${join(good.cfg.stateDir, 'ovs', 'db.sock')}` });

  // after registration: ovs-vswitchd killed and its binary gone, so the restart fails: a heartbeat carries it
  rmSync(vswitchd);
  process.kill(Number(readFileSync(join(good.cfg.stateDir, 'ovs', 'ovs-vswitchd.pid'), 'utf8')), 'SIGKILL');
  const broken = await waitFor('nodes.get to show the switch failed after the crash', async () => {
    const d = await dataplaneOf('ovs-good');
    return d?.state === 'failed' ? d : undefined;
  });
  assert.match(broken.error ?? '', /ovs-vswitchd-dpdk not found/);
  // the binary back: the next retry (backoff) starts it, and a heartbeat says ready again
  copyFileSync('/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk', vswitchd);
  chmodSync(vswitchd, 0o755);
  await waitFor('nodes.get ready again', async () => {
    const d = await dataplaneOf('ovs-good');
    return d?.state === 'ready' && d.error === undefined ? d : undefined;
  });
  await good.app.stop();
  apps.pop();
  assert.doesNotMatch(await sh(['ip', 'netns', 'list']), new RegExp(`enfvt-b(ovs|prov)-${id}`), 'the agent\'s stop removes the switch\'s namespaces');
});
