/**
 * `npm run bench:boot`: boot figures of one tenant VM (median of BENCH_RUNS, default 3, runs alternating):
 *  (a) QEMU started directly (same kernel, initramfs, devices, command line) until the guest agent answers health;
 *  (b) the node agent's sandbox manager from the placement command (ensureReplica) to the guest agent ready;
 *  (c) from the command to the QEMU exec; plus QEMU RSS and the guest agent's RSS once ready;
 *  (floor) the same kernel and command line to a busybox `/init` in a tiny initramfs (`floorMs`: QEMU spawn ->
 *  the init's first line on the console), in the same run;
 *  and where (a)'s time goes, from the guest's own uptime stamps on its console (`breakdown`, below);
 *  (warm) BENCH_WARM_RUNS (default 5; 0 skips) VNFs claiming a warm pool VM through the real node agent, from the
 *  placement's commit to RUNNING (`warmClaimP50Ms`, `warmClaimP95Ms`; boot-warm.ts), and each pool VM restored from
 *  the snapshot boot template, QEMU start to the guest agent ready and reidentified (`restoreToReadyMs`,
 *  `restoreToReadyOverFloor`: over the same run's floorMs).
 * The last line is one JSON object.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@edgenfv/telemetry';
import { AGENT_PORT_NAME } from '@edgenfv/contracts';
import { AgentClient, buildGuestImage, HostChannel } from '../guest/index.js';
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
import { benchWarmClaims, type WarmClaimFigures } from './boot-warm.js';

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
/** Nearest-rank percentile. */
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
};
const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;
const sleep = (n: number) => new Promise((r) => setTimeout(r, n));

/** A tiny initramfs: static busybox and an /init that prints the guest's uptime and powers off. */
function floorInitramfs(dir: string, busybox: string): string {
  const root = join(dir, 'floor-root');
  for (const d of ['bin', 'proc', 'dev']) mkdirSync(join(root, d), { recursive: true });
  execFileSync('cp', [busybox, join(root, 'bin/busybox')]);
  execFileSync('mknod', [join(root, 'dev/console'), 'c', '5', '1']);
  writeFileSync(
    join(root, 'init'),
    '#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\necho "EDGENFV_FLOOR uptime=$(/bin/busybox cut -d\' \' -f1 /proc/uptime)"\n/bin/busybox poweroff -f\n',
  );
  chmodSync(join(root, 'init'), 0o755);
  const out = join(dir, 'floor.cpio');
  execFileSync('sh', ['-c', `find . | sort | cpio -o -H newc --reproducible --quiet > '${out}'`], { cwd: root });
  return out;
}

/** Guest uptime stamps (`<TAG> uptime=<s>`) on a console log, in ms. */
function stamps(consoleLog: string): Record<string, number> {
  const text = existsSync(consoleLog) ? readFileSync(consoleLog, 'utf8') : '';
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/(EDGENFV_[A-Z_]+) uptime=([\d.]+)/g)) if (!(m[1]! in out)) out[m[1]!] = Number(m[2]) * 1000;
  return out;
}

/** Polls a console log until `tag` appears; the host time it was seen. */
async function seen(consoleLog: string, tag: string, timeoutMs: number, alive: () => boolean): Promise<bigint> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (existsSync(consoleLog) && readFileSync(consoleLog, 'utf8').includes(tag)) return process.hrtime.bigint();
    if (!alive() || Date.now() > until) throw new Error(`${tag} not on ${consoleLog}`);
    await sleep(5);
  }
}

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
    image: { kernelPath: image.kernelPath, initrdPath: image.initrdPath, systemDisk: image.systemDisk },
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
  const floor: number[] = [];
  const floorUptime: number[] = [];
  const codeCache: string[] = [];
  const guest = { helloAck: [] as number[], rpc: [] as number[], init: [] as number[], modules: [] as number[], node: [] as number[], agent: [] as number[], handshake: [] as number[], spawnToUptime0: [] as number[], disk: [] as number[], modprobe: [] as number[], nodeBoot: [] as number[], bundle: [] as number[] };
  const guestB = { qemu: [] as number[], guest: [] as number[], handshake: [] as number[] };
  const busybox = findBinary('busybox');
  if (!busybox) throw new Error('busybox not found (the guest image needs it too)');
  const floorCpio = floorInitramfs(dir, busybox);
  const warmRuns = Number(process.env.BENCH_WARM_RUNS ?? 5);
  let warm: WarmClaimFigures | undefined;
  try {
    for (let i = 0; i < runs; i++) {
      // (b) + (c): through the node agent's sandbox manager
      const t0 = process.hrtime.bigint();
      const booting = manager.ensureReplica({
        allocId: `bench${i}`, nodeId: 'bench', epoch: 1, tenantId: 'bench', vnfId: 'bench', replica: 0,
        resources: { vcpus: 1, memoryMiB: 64 }, image: { ref: 'builtin:vrouter' }, interfaces: [], createdAt: new Date().toISOString(),
      });
      // (b)'s own split from its console: the host until QEMU's exec, QEMU + firmware until the guest's clock starts,
      // the guest to the agent's ready line (its uptime), the handshake (the line seen -> ready)
      let bDone = false;
      void booting.finally(() => (bDone = true)).catch(() => undefined);
      const bReadySeen = (async () => {
        while (!bDone && manager.sandboxes().length === 0) await sleep(5);
        const sb = manager.sandboxes()[0];
        return sb ? seen(join(sb.runDir, 'console.log'), 'EDGENFV_AGENT_READY', 300_000, () => !bDone) : undefined;
      })().catch(() => undefined);
      const r = await booting;
      b.push(Number(events.ready! - t0) / 1e6);
      c.push(Number(events.exec! - t0) / 1e6);
      const bReadyAt = await bReadySeen;
      const bStamps = stamps(join(manager.sandboxes()[0]!.runDir, 'console.log'));
      console.log(`(b) run ${i} guest stamps (uptime ms): ${JSON.stringify(bStamps)}`);
      if (bReadyAt !== undefined && bStamps.EDGENFV_AGENT_READY !== undefined) {
        const toReadyLine = Number(bReadyAt - events.exec!) / 1e6;
        guestB.qemu.push(toReadyLine - bStamps.EDGENFV_AGENT_READY);
        guestB.guest.push(bStamps.EDGENFV_AGENT_READY);
        guestB.handshake.push(Number(events.ready! - bReadyAt) / 1e6);
      }
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
      delete direct.chrootDir; // the sandbox's VM root went with it (and QEMU run by hand has no uid to confine)
      const cmd = buildQemuArgs(direct);
      rmSync(runDir, { recursive: true, force: true });
      const { mkdirSync } = await import('node:fs');
      mkdirSync(runDir, { recursive: true });
      const t1 = process.hrtime.bigint();
      const child = spawn(qemu, cmd.args, { stdio: 'ignore' });
      let exited = false;
      child.once('exit', () => (exited = true));
      try {
        const readySeen = seen(cmd.consoleLog, 'EDGENFV_AGENT_READY', 300_000, () => !exited).catch(() => undefined);
        // what connectAgent does (channel + client until Health and Version answer), with the channel's ack timed
        const listenPath = `${cmd.agentSocket!}.mux`;
        // BENCH_HELLO_MS: the HELLO interval of (a) only (to compare with the old 500 ms); default: the product's
        const helloMs = process.env.BENCH_HELLO_MS ? Number(process.env.BENCH_HELLO_MS) : undefined;
        const channel = new HostChannel({ chardevPath: cmd.agentSocket!, listenPath, log, ...(helloMs ? { helloIntervalMs: helloMs } : {}) });
        await channel.start();
        let ackAt: bigint | undefined;
        void channel.waitReady().then(() => (ackAt = process.hrtime.bigint()), () => undefined);
        const client = new AgentClient(`unix:${listenPath}`);
        let healthAt: bigint;
        try {
          await client.waitReady({ timeoutMs: 300_000 });
          healthAt = process.hrtime.bigint();
          a.push(ms(t1));
        } finally {
          client.close();
          await channel.close();
        }
        const readyAtHost = await readySeen;
        if (readyAtHost !== undefined && ackAt !== undefined) {
          guest.helloAck.push(Math.max(0, Number(ackAt - readyAtHost) / 1e6));
          guest.rpc.push(Number(healthAt - ackAt) / 1e6);
        }
        const st = stamps(cmd.consoleLog);
        console.log(`(a) run ${i} guest stamps (uptime ms): ${JSON.stringify(st)}`);
        const cc = /EDGENFV_AGENT_CACHE (\w+)/.exec(readFileSync(cmd.consoleLog, 'utf8'));
        if (cc) codeCache.push(cc[1]!);
        const readyAt = await readySeen;
        if (st.EDGENFV_INIT !== undefined) guest.init.push(st.EDGENFV_INIT);
        if (st.EDGENFV_INIT !== undefined && st.EDGENFV_AGENT_START !== undefined) guest.modules.push(st.EDGENFV_AGENT_START - st.EDGENFV_INIT);
        if (st.EDGENFV_AGENT_START !== undefined && st.EDGENFV_AGENT_JS !== undefined) guest.node.push(st.EDGENFV_AGENT_JS - st.EDGENFV_AGENT_START);
        if (st.EDGENFV_AGENT_JS !== undefined && st.EDGENFV_AGENT_READY !== undefined) guest.agent.push(st.EDGENFV_AGENT_READY - st.EDGENFV_AGENT_JS);
        // the finer split (deploy/guest-image/init and agent-loader.cjs stamps)
        if (st.EDGENFV_INIT !== undefined && st.EDGENFV_SYSROOT !== undefined) guest.disk.push(st.EDGENFV_SYSROOT - st.EDGENFV_INIT);
        if (st.EDGENFV_SYSROOT !== undefined && st.EDGENFV_AGENT_START !== undefined) guest.modprobe.push(st.EDGENFV_AGENT_START - st.EDGENFV_SYSROOT);
        if (st.EDGENFV_AGENT_START !== undefined && st.EDGENFV_AGENT_LOADER !== undefined) guest.nodeBoot.push(st.EDGENFV_AGENT_LOADER - st.EDGENFV_AGENT_START);
        if (st.EDGENFV_AGENT_LOADER !== undefined && st.EDGENFV_AGENT_JS !== undefined) guest.bundle.push(st.EDGENFV_AGENT_JS - st.EDGENFV_AGENT_LOADER);
        if (readyAt !== undefined) guest.handshake.push(Math.max(0, Number(healthAt - readyAt) / 1e6));
        if (st.EDGENFV_AGENT_READY !== undefined) guest.spawnToUptime0.push(Number(readyAt ?? healthAt) / 1e6 - Number(t1) / 1e6 - st.EDGENFV_AGENT_READY);
      } finally {
        killQuiet(child.pid!, 'SIGKILL');
        await waitGone(child.pid!, undefined, 5000);
      }

      // (floor): the same kernel and command line, a busybox /init in a tiny initramfs
      const floorDir = join(dir, `floor${i}`);
      mkdirSync(floorDir, { recursive: true });
      const floorCmd = buildQemuArgs({ ...direct, sandboxId: `floor${i}`, runDir: floorDir, initrdPath: floorCpio, devices: direct.devices.map((d) => (d.kind === 'agent-channel' ? { ...d, socketPath: join(floorDir, 'agent.sock') } : d)) });
      const t2 = process.hrtime.bigint();
      const fchild = spawn(qemu, floorCmd.args, { stdio: 'ignore' });
      let fexited = false;
      fchild.once('exit', () => (fexited = true));
      try {
        const at = await seen(floorCmd.consoleLog, 'EDGENFV_FLOOR', 300_000, () => !fexited || existsSync(floorCmd.consoleLog));
        floor.push(Number(at - t2) / 1e6);
        const up = stamps(floorCmd.consoleLog).EDGENFV_FLOOR;
        if (up !== undefined) floorUptime.push(up);
      } finally {
        killQuiet(fchild.pid!, 'SIGKILL');
        await waitGone(fchild.pid!, undefined, 5000);
      }
    }
    await manager.stopAll();
    if (warmRuns > 0) {
      warm = await benchWarmClaims({ runs: warmRuns, dir, accel, image: { kernelPath: image.kernelPath, initrdPath: image.initrdPath, systemDisk: image.systemDisk, kernelArgs: image.kernelArgs }, log });
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
  const med = (xs: number[]): number | null => (xs.length ? Math.round(median(xs)) : null);
  const kernel = med(floorUptime);
  const out = {
    runs,
    accel,
    directToHealthMs: Math.round(median(a)),
    agentToReadyMs: Math.round(median(b)),
    commandToExecMs: Math.round(median(c) * 10) / 10,
    ratioBOverA: Math.round((median(b) / median(a)) * 1000) / 1000,
    qemuRssMiB: Math.round(median(qemuRss) / 1048576),
    guestAgentRssMiB: Math.round((median(agentRss) / 1048576) * 10) / 10,
    floorMs: Math.round(median(floor)),
    agentToReadyOverFloor: Math.round((median(b) / median(floor)) * 1000) / 1000,
    initrdBytes: readFileSync(image.initrdPath).length,
    systemDiskBytes: existsSync(image.systemDisk.path) ? readFileSync(image.systemDisk.path).length : 0,
    // (a) split by the guest's uptime stamps: QEMU + firmware until the kernel's clock starts (host time minus the
    // guest's uptime), the kernel to a busybox /init (the floor's uptime), unpacking the big initramfs (the image's
    // /init uptime minus the floor's), /init's own work (mounts, modprobe), Node.js start (agent process exec ->
    // first statement of the bundle), the agent's start (-> its port served), the channel handshake (host: the
    // ready line seen -> health answered; includes up to 5 ms of polling)
    breakdown: {
      qemuAndFirmwareMs: med(guest.spawnToUptime0),
      kernelMs: kernel,
      initramfsUnpackMs: kernel === null || guest.init.length === 0 ? null : Math.round(median(guest.init) - kernel),
      initScriptMs: med(guest.modules),
      nodeStartMs: med(guest.node),
      agentStartMs: med(guest.agent),
      handshakeMs: med(guest.handshake),
      // initScriptMs split: early modules + finding and mounting the system disk; modprobe and the rest of /init
      initDiskMs: med(guest.disk),
      initModprobeMs: med(guest.modprobe),
      // nodeStartMs split: Node.js's own start (exec -> the loader's first statement); the bundle's load (cache, compile)
      nodeBootstrapMs: med(guest.nodeBoot),
      bundleLoadMs: med(guest.bundle),
      // the handshake split: the ready line seen -> the channel's HELLO acknowledged; -> Health + Version answered
      helloAckMs: med(guest.helloAck),
      firstRpcsMs: med(guest.rpc),
    },
    // (b) split: command -> QEMU exec (commandToExecMs), exec -> the guest's clock starts (QEMU + firmware), the
    // guest's uptime at the agent's ready line, that line seen -> ready (handshake, incl. up to 5 ms of polling)
    breakdownB: { qemuAndFirmwareMs: med(guestB.qemu), guestToAgentReadyMs: med(guestB.guest), handshakeMs: med(guestB.handshake) },
    // (warm): placement commit -> RUNNING for a VNF that claims a warm pool VM (nearest-rank percentiles)
    warmClaimP50Ms: warm?.claimMs.length ? Math.round(pct(warm.claimMs, 50)) : null,
    warmClaimP95Ms: warm?.claimMs.length ? Math.round(pct(warm.claimMs, 95)) : null,
    warmClaimRuns: warm?.claimMs.length ?? 0,
    warmClaimMissed: warm?.missed ?? 0,
    warmRefillMs: warm?.refillMs.length ? Math.round(median(warm.refillMs)) : null,
    // snapshot boot (guest.snapshotBoot, the warm pool's path): a pool VM restored from its template, QEMU start ->
    // the guest agent ready and reidentified (RNG reseeded, clock set, new instance id), through the node agent's own
    // code (WarmPool.restore; median over the pool VMs of the warm runs); and over the same run's floor
    restoreToReadyMs: warm?.restoreMs.length ? Math.round(median(warm.restoreMs)) : null,
    restoreToReadyOverFloor: warm?.restoreMs.length && floor.length ? Math.round((median(warm.restoreMs) / median(floor)) * 1000) / 1000 : null,
    restoreRuns: warm?.restoreMs.length ?? 0,
    // what agentToReadyMs measured: a cold boot through the node agent (ensureReplica with no warm pool: a tenant VM
    // that claims no pool VM boots; snapshot boot restores pool VMs only)
    agentToReadyPath: 'cold boot (SandboxManager.ensureReplica, no warm pool)',
    // the guest agent's V8 code cache (deploy/guest-image/agent-loader.cjs): accepted / rejected / none, per run
    agentCodeCache: [...new Set(codeCache)].join(',') || null,
  };
  console.log(`(a) QEMU direct -> guest agent health: ${out.directToHealthMs} ms; (b) node agent command -> guest ready: ${out.agentToReadyMs} ms; (c) command -> QEMU exec: ${out.commandToExecMs} ms; floor (busybox /init): ${out.floorMs} ms`);
  console.log(`(a) breakdown: ${JSON.stringify(out.breakdown)}`);
  if (warm) console.log(`(warm) commit -> RUNNING claiming a warm VM: ${JSON.stringify(warm.claimMs.map(Math.round))} ms; missed ${warm.missed}; refill ${JSON.stringify(warm.refillMs)} ms; restore -> ready ${JSON.stringify(warm.restoreMs.map(Math.round))} ms`);
  console.log(JSON.stringify(out));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
