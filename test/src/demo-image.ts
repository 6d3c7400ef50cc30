/**
 * `npm run demo:image` (as root): a tenant's own VNF image from a registry, and day-2 operations on it.
 * Starts a local registry (Debian's docker-registry on a loopback port), pushes a small VNF image built from a
 * busybox rootfs (skopeo), starts the appliance with that registry in the node config, instantiates the image
 * through the message API, prints a line of its output through `vnfs.logs`, runs `vnfs.exec` in it, OPERATEs it
 * STOPPED and STARTED, terminates it, and prints as its last line
 * `{"image":"...","digest":"sha256:...","state":"RUNNING","logLine":"...","execExitCode":0,"operate":"STOPPED->STARTED"}`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeBusyboxLayout, pushLayout, startRegistry, type TestRegistry } from '@edgenfv/node-agent/internal/testing/registry';
import { freePort, startAppliance } from './appliance.js';

const TENANT = 'demo-img';

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.error('demo:image: needs root (QEMU isolation, network namespaces)');
    return 1;
  }
  const dir = mkdtempSync(join(tmpdir(), 'edgenfv-demo-image-'));
  const log = (m: string): void => console.log(`demo:image: ${m}`);
  let registry: TestRegistry | undefined;
  let appliance: Awaited<ReturnType<typeof startAppliance>> | undefined;
  try {
    registry = await startRegistry(join(dir, 'registry'));
    log(`registry serving on ${registry.host} (plain HTTP, loopback)`);
    const { layout } = makeBusyboxLayout(join(dir, 'image'), '1.0', { '/etc/vnf-release': 'acme vfw 1.0\n' }, [
      '/bin/sh',
      '-c',
      "trap 'echo acme-vfw: stopping; exit 0' TERM; echo acme-vfw 1.0: filtering on $(hostname); while :; do sleep 1; done",
    ]);
    const image = `${registry.host}/acme/vfw:1.0`;
    const pushed = pushLayout(layout, '1.0', registry.host, 'acme/vfw');
    log(`pushed ${image} (${pushed}) with skopeo`);

    const ports = { nats: await freePort(), dashboard: await freePort(), schedulerMetrics: await freePort(), nodeAgentMetrics: await freePort() };
    log('starting the appliance (the first run builds the guest image: a few minutes)');
    appliance = await startAppliance(join(dir, 'home'), {
      ports,
      networks: [],
      nodeAgent: {
        nodeId: 'demo-node',
        heartbeatIntervalMs: 1000,
        isolation: { cgroupParent: 'edgenfv-demo-image' },
        qemu: { maxVcpus: 2, maxMemoryMiB: 2048 },
        registries: [{ host: registry.host, plainHttp: true }],
      },
    });
    const api = appliance.api;
    const t = `nfv.v1.tenant.${TENANT}`;
    await api.ok('nfv.v1.admin.tenants.create', { id: TENANT, quota: { vcpus: 2, vnfs: 2 } });
    const inst = await api.ok(`${t}.vnfs.instantiate`, {
      requestId: 'demo-image-1',
      descriptor: { name: 'vfw', replicas: 1, resources: { vcpus: 1, memoryMiB: 128 }, image: { ref: image } },
    });
    const op = await api.waitOp(TENANT, inst.opOccId, 600_000);
    for (const s of op.steps) log(`  step: ${s.message}`);
    if (op.operationState !== 'COMPLETED') throw new Error(`instantiate ended ${op.operationState}: ${JSON.stringify(op.error)}`);
    const vnf = await api.ok(`${t}.vnfs.get`, { id: inst.vnfId });
    const digest: string = vnf.replicas[0].imageDigest;
    log(`running on ${vnf.replicas[0].nodeId}, image digest ${digest}`);

    let logLine = '';
    for (let i = 0; i < 50 && !logLine; i++) {
      logLine = (await api.ok(`${t}.vnfs.logs`, { id: inst.vnfId, tailLines: 20 })).lines.find((l: string) => l.startsWith('acme-vfw')) ?? '';
      if (!logLine) await new Promise((r) => setTimeout(r, 200));
    }
    log(`vnfs.logs: ${logLine}`);
    const ex = await api.ok(`${t}.vnfs.exec`, { id: inst.vnfId, command: ['cat', '/etc/vnf-release'] });
    log(`vnfs.exec cat /etc/vnf-release -> exit ${ex.exitCode}: ${ex.stdout.trim()}`);

    const states: string[] = [];
    for (const changeStateTo of ['STOPPED', 'STARTED']) {
      const o = await api.ok(`${t}.vnfs.operate`, { id: inst.vnfId, changeStateTo });
      const done = await api.waitOp(TENANT, o.opOccId, 120_000);
      const v = await api.ok(`${t}.vnfs.get`, { id: inst.vnfId });
      log(`OPERATE ${changeStateTo}: ${done.operationState}, replica ${v.replicas[0].state}, node ${v.replicas[0].nodeId}`);
      if (done.operationState !== 'COMPLETED') throw new Error(`OPERATE ${changeStateTo} ended ${done.operationState}`);
      states.push(changeStateTo);
    }
    const state: string = (await api.ok(`${t}.vnfs.get`, { id: inst.vnfId })).replicas[0].state;
    const term = await api.ok(`${t}.vnfs.terminate`, { id: inst.vnfId });
    const termOp = await api.waitOp(TENANT, term.opOccId, 120_000);
    log(`terminate: ${termOp.operationState}`);
    const code = await appliance.stop();
    appliance = undefined;
    log(`appliance stopped (exit ${code})`);
    console.log(JSON.stringify({ image, digest, state, logLine, execExitCode: ex.exitCode, operate: states.join('->') }));
    return digest === pushed && state === 'RUNNING' && ex.exitCode === 0 && termOp.operationState === 'COMPLETED' ? 0 : 1;
  } finally {
    await appliance?.stop();
    await registry?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error('demo:image failed:', err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
