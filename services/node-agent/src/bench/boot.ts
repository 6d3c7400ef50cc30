/**
 * `npm run bench:boot`: boot figures of one tenant VM (median of BENCH_RUNS, default 3, runs alternating):
 *  (a) QEMU started directly (same kernel, initramfs, devices, command line) until the guest agent answers health;
 *  (b) the node agent's sandbox manager from the placement command (ensureReplica) to the guest agent ready;
 *  (c) from the command to the QEMU exec; plus QEMU RSS and the guest agent's RSS once ready.
 * The last line is one JSON object.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@edgenfv/telemetry';
import { AGENT_PORT_NAME } from '@edgenfv/contracts';
import { buildGuestImage, connectAgent } from '../guest/index.js';
import { parseConfig } from '../config.js';
import { hostCpuKHz } from '../app.js';
import { QemuDriver } from '../hypervisor/qemu.js';
import { buildQemuArgs } from '../hypervisor/qemu-args.js';
import { probeKvm } from '../hypervisor/kvm-probe.js';
import { findBinary } from '../inventory.js';
import { procRssBytes, killQuiet, waitGone } from '../proc.js';
import { Cgroups } from '../sandbox/cgroup.js';
import { NetpluginsAttachments } from '../sandbox/attachments.js';
import { GrpcGuestPort } from '../sandbox/grpc-guest.js';
import { SandboxManager } from '../sandbox/manager.js';
import type { VmSpec } from '../hypervisor/types.js';

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;

async function main(): Promise<void> {
  const runs = Number(process.env.BENCH_RUNS ?? 3);
  const log = silentLogger();
  const qemu = findBinary('qemu-system-x86_64');
  if (!qemu) throw new Error('qemu-system-x86_64 not found (npm run setup)');
  const image = await buildGuestImage({ log });
  const accel = (await probeKvm({ qemuBinary: qemu, kernelPath: image.kernelPath })).ok ? 'kvm' : 'tcg';
  const cpuKHz = hostCpuKHz();
  const dir = mkdtempSync(join(tmpdir(), 'edgenfv-bench-'));
  const stateDir = join(dir, 'state');
  const cfg = parseConfig({ nodeId: 'bench', stateDir, qemu: { accel, maxVcpus: 2, maxMemoryMiB: 1024 }, isolation: { cgroupParent: `edgenfv-bench${process.pid}` }, guest: { bootTimeoutMs: 300_000 } });
  const events: { exec?: bigint; ready?: bigint } = {};
  const cgroups = new Cgroups(cfg.isolation.cgroupRoot, cfg.isolation.cgroupParent, log);
  const manager = new SandboxManager({
    cfg,
    driver: new QemuDriver({ logger: log, binary: qemu }),
    accel,
    guest: new GrpcGuestPort(log),
    attachments: new NetpluginsAttachments({ stateDir, sysfsRoot: '/sys', physnets: {}, logger: log }),
    cgroups,
    logger: log,
    image: { kernelPath: image.kernelPath, initrdPath: image.initrdPath },
    kernelArgs: image.kernelArgs,
    ...(cpuKHz ? { hostCpuKHz: cpuKHz } : {}),
    events: { onExec: () => (events.exec = process.hrtime.bigint()), onGuestReady: () => (events.ready = process.hrtime.bigint()) },
  });
  await manager.init();
  const a: number[] = [];
  const b: number[] = [];
  const c: number[] = [];
  const qemuRss: number[] = [];
  const agentRss: number[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      // (b) + (c): through the node agent's sandbox manager
      const t0 = process.hrtime.bigint();
      const r = await manager.ensureReplica({
        allocId: `bench${i}`, nodeId: 'bench', epoch: 1, tenantId: 'bench', vnfId: 'bench', replica: 0,
        resources: { vcpus: 1, memoryMiB: 64 }, image: { ref: 'builtin:vrouter' }, interfaces: [], createdAt: new Date().toISOString(),
      });
      b.push(Number(events.ready! - t0) / 1e6);
      c.push(Number(events.exec! - t0) / 1e6);
      const rec = manager.sandboxes()[0]!;
      qemuRss.push(procRssBytes(manager.vmOf(r.sandboxId)!.pid) ?? 0);
      agentRss.push((await (await manager.guestSession(r.sandboxId)).metrics()).agentRssBytes);
      const spec = rec.spec!;
      await manager.removeReplica('bench', `bench${i}`);

      // (a): the same command line, QEMU spawned directly, until the guest agent answers health
      const runDir = join(dir, `direct${i}`);
      const direct: VmSpec = { ...spec, sandboxId: `direct${i}`, runDir, devices: [{ kind: 'agent-channel', id: 'agent', socketPath: join(runDir, 'agent.sock'), name: AGENT_PORT_NAME }] };
      delete direct.cgroupDir;
      delete direct.netnsPath;
      delete direct.runAs;
      const cmd = buildQemuArgs(direct);
      rmSync(runDir, { recursive: true, force: true });
      const { mkdirSync } = await import('node:fs');
      mkdirSync(runDir, { recursive: true });
      const t1 = process.hrtime.bigint();
      const child = spawn(qemu, cmd.args, { stdio: 'ignore' });
      try {
        const conn = await connectAgent({ chardevPath: cmd.agentSocket!, timeoutMs: 300_000, log });
        a.push(ms(t1));
        await conn.close();
      } finally {
        killQuiet(child.pid!, 'SIGKILL');
        await waitGone(child.pid!, undefined, 5000);
      }
    }
  } finally {
    await manager.stopAll().catch(() => undefined);
    await manager.close();
    await cgroups.destroy('x').catch(() => undefined);
    try {
      const { rmdirSync } = await import('node:fs');
      if (cgroups.parentDir) rmdirSync(cgroups.parentDir);
    } catch {
      /* in use or gone */
    }
    rmSync(dir, { recursive: true, force: true });
  }
  const out = {
    runs,
    accel,
    directToHealthMs: Math.round(median(a)),
    agentToReadyMs: Math.round(median(b)),
    commandToExecMs: Math.round(median(c) * 10) / 10,
    ratioBOverA: Math.round((median(b) / median(a)) * 1000) / 1000,
    qemuRssMiB: Math.round(median(qemuRss) / 1048576),
    guestAgentRssMiB: Math.round((median(agentRss) / 1048576) * 10) / 10,
  };
  console.log(`(a) QEMU direct -> guest agent health: ${out.directToHealthMs} ms; (b) node agent command -> guest ready: ${out.agentToReadyMs} ms; (c) command -> QEMU exec: ${out.commandToExecMs} ms`);
  console.log(JSON.stringify(out));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
