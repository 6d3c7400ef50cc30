/**
 * `npm run bench:dataplane` (as root): packets per second between two vhost-user ports of the node agent's OVS-DPDK
 * switch — started from a node config as the agent starts it, the ports added through netplugins' vhost-user
 * plugin — against the raw ceiling of the same two front ends on a dpdk-testpmd vhost pair (io forwarding), in
 * one run. The front ends are two DPDK virtio-user ports of one dpdk-testpmd on the host (what QEMU is to the
 * switch: the vhost-user server), no VM, so TCG does not dominate. Each port loops what it receives back out with
 * the MACs swapped, after a first burst of 64-byte frames; the frames circulate A -> middle -> B -> middle -> A, and
 * the figure is the front end's received frames per second (both ports). Two busy-polling cores in all — the front
 * end's on CPU 0, the middle's (OVS PMD thread, or testpmd's forwarding core) on CPU 1 — as many as the machine has.
 * The configurations alternate BENCH_ROUNDS times (default 3) and each figure is the median of its rounds, so that
 * load from other processes hits both alike. Last line: `{"rawMpps":x,"ovsMpps":y,"ratio":y/x}`.
 * Env: BENCH_SECONDS (per configuration and round, default 10); BENCH_PMD_MAXSLEEP_US overrides the switch's
 * pmdMaxSleepUs (default: the node config's default).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { silentLogger } from '@edgenfv/telemetry';
import { DeviceLocks, RecordStore, VhostUserPlugin } from '@edgenfv/netplugins';
import { parseConfig } from '../config.js';
import { createSwitches } from '../dataplane/index.js';
import { reserveHugepages } from '../dataplane/hugepages.js';
import type { OvsDpdkSwitch } from '../dataplane/ovs-dpdk.js';

const MAC_A = '02:00:00:00:0a:0a';
const MAC_B = '02:00:00:00:0b:0b';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

interface Pmd {
  child: ChildProcess;
  out(): string;
  stop(): Promise<void>;
}

/** dpdk-testpmd, unbuffered, its output kept; it ignores SIGTERM with stdin on /dev/null, so stop() kills it. */
function testpmd(eal: string[], app: string[]): Pmd {
  const child = spawn('stdbuf', ['-o0', 'dpdk-testpmd', ...eal, '--in-memory', '--no-pci', '--', ...app], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (b: Buffer) => (out = (out + b.toString()).slice(-200_000));
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    child,
    out: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * The front end: one dpdk-testpmd with two virtio-user ports in server mode (the middle connects to both), each
 * port looping what it receives back out of itself with the MACs swapped (`macswap`, `--port-topology=loop`). A
 * first burst per port (`--tx-first`, BURST frames of 64 bytes, port 0 to port 1's MAC and back) then circulates
 * through the middle in both directions; nothing else is ever sent. One polling core for the front end, one for the
 * middle: as many busy pollers as this machine has CPUs.
 */
function frontEnd(sa: string, sb: string): Pmd {
  rmSync(sa, { force: true });
  rmSync(sb, { force: true });
  const eal = ['-l', '0-1', '--main-lcore', '1', '-m', '64', '--single-file-segments', '--file-prefix=bdpfe',
    `--vdev=net_virtio_user0,path=${sa},server=1,queues=1,queue_size=1024,mac=${MAC_A}`,
    `--vdev=net_virtio_user1,path=${sb},server=1,queues=1,queue_size=1024,mac=${MAC_B}`];
  const app = ['--forward-mode=macswap', '--port-topology=loop', '--nb-cores=1', '--tx-first', `--burst=${BURST}`, '--txpkts=64',
    `--eth-peer=0,${MAC_B}`, `--eth-peer=1,${MAC_A}`, '--rxd=1024', '--txd=1024', '--total-num-mbufs=8192', '--stats-period=1'];
  return testpmd(eal, app);
}

const BURST = 256;

/** Frames per second that crossed the middle: the front end's Rx-pps of both ports, each second; the median after the warm-up. */
async function measure(fe: Pmd, seconds: number): Promise<number> {
  const from = fe.out().length;
  await sleep((seconds + 3) * 1000);
  const per = [...fe.out().slice(from).matchAll(/Rx-pps:\s+(\d+)/g)].map((m) => Number(m[1]));
  const sums: number[] = [];
  for (let i = 0; i + 1 < per.length; i += 2) sums.push(per[i] + per[i + 1]); // port 0 and port 1 of one period
  return median(sums.slice(3));
}

async function waitOutput(p: Pmd, re: RegExp, what: string, ms = 120_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!re.test(p.out())) {
    if (p.child.exitCode !== null) throw new Error(`${what}: testpmd exited: ${p.out().slice(-2000)}`);
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms: ${p.out().slice(-2000)}`);
    await sleep(200);
  }
}

async function rawRun(dir: string, seconds: number): Promise<number> {
  const sa = join(dir, 'raw-a.sock');
  const sb = join(dir, 'raw-b.sock');
  const procs: Pmd[] = [];
  try {
    const fe = frontEnd(sa, sb);
    procs.push(fe);
    await sleep(1000);
    // the raw ceiling: testpmd's vhost PMD, port 0 <-> port 1, io forwarding on CPU 1
    procs.push(testpmd(['-l', '0-1', '--main-lcore', '0', '-m', '128', '--file-prefix=bdppair',
      `--vdev=net_vhost0,iface=${sa},client=1,queues=1`, `--vdev=net_vhost1,iface=${sb},client=1,queues=1`],
    ['--forward-mode=io', '--auto-start', '--nb-cores=1', '--stats-period=3600', '--total-num-mbufs=16384']));
    await waitOutput(fe, /Rx-pps:\s+[1-9]/, 'raw: frames looping');
    return await measure(fe, seconds);
  } finally {
    for (const p of procs.reverse()) await p.stop();
  }
}

async function ovsRun(dir: string, seconds: number): Promise<number> {
  const id = randomBytes(3).toString('hex');
  const stateDir = join(dir, 'node');
  const cfg = parseConfig({
    nodeId: 'bench',
    stateDir,
    networks: [{ name: 'bench', cidr: '10.66.0.0/24', dataplane: 'ovs-dpdk' }],
    dataplanes: [{ kind: 'ovs-dpdk', numaNode: 0, ovs: { lcoreCpu: 0, pmdCpus: [1], netns: `enfvb-ovs-${id}`, ...(process.env.BENCH_PMD_MAXSLEEP_US ? { pmdMaxSleepUs: Number(process.env.BENCH_PMD_MAXSLEEP_US) } : {}) } }],
  });
  const sw = createSwitches(cfg, silentLogger())[0] as OvsDpdkSwitch;
  const base = join(stateDir, 'netplugins');
  const vhu = new VhostUserPlugin({ records: new RecordStore(join(base, 'records')), locks: new DeviceLocks(join(base, 'locks')) });
  const procs: Pmd[] = [];
  const ctxs = [{ containerId: 'bench', ifName: 'a' }, { containerId: 'bench', ifName: 'b' }];
  try {
    await sw.start();
    if (sw.health().state !== 'ready') throw new Error(`OVS-DPDK did not start: ${sw.health().error}`);
    const ovs = sw.bridgeFor('bench')!;
    // macswap sends the frames back with the MACs swapped (another source than the port's): the ports run without
    // anti-spoofing flows, as an operator's L2-forwarding network does (`antispoof: false`)
    const ports = [];
    for (const ctx of ctxs) ports.push(await vhu.add(ctx, vhu.parseConfig({ dataplane: 'ovs-dpdk', mode: 'server', socketDir: sw.socketDir, tenant: 'bench', ovs, antispoof: false })));
    const fe = frontEnd(ports[0].socketPath, ports[1].socketPath);
    procs.push(fe);
    try {
      await waitOutput(fe, /Rx-pps:\s+[1-9]/, 'ovs: frames looping');
    } catch (err) {
      const log = readFileSync(join(sw.runDir, 'ovs-vswitchd.log'), 'utf8').trim().split('\n').slice(-30).join('\n');
      throw new Error(`${(err as Error).message}\novs-vswitchd.log:\n${log}`, { cause: err });
    }
    return await measure(fe, seconds);
  } finally {
    for (const p of procs.reverse()) await p.stop();
    for (const ctx of ctxs) await vhu.del(ctx).catch(() => undefined);
    await sw.stop();
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench:dataplane needs root (hugepages, network namespaces, OVS)');
  const seconds = Number(process.env.BENCH_SECONDS ?? 10);
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const dir = mkdtempSync(join(tmpdir(), 'bench-dp-'));
  try {
    // the front end (32 pages) and the vhost pair (64); the switch reserves its own when it starts
    await reserveHugepages({ sysfsRoot: '/sys', numaNode: 0, pages: 96 });
    const raw: number[] = [];
    const ovs: number[] = [];
    const m = (pps: number) => `${(pps / 1e6).toFixed(3)} Mpps`;
    for (let i = 1; i <= rounds; i++) {
      raw.push(await rawRun(dir, seconds));
      ovs.push(await ovsRun(dir, seconds));
      process.stdout.write(`round ${i}: raw testpmd vhost pair ${m(raw.at(-1)!)}, OVS-DPDK ${m(ovs.at(-1)!)}\n`);
    }
    const [rawPps, ovsPps] = [median(raw), median(ovs)];
    process.stdout.write(`load average: ${readFileSync('/proc/loadavg', 'utf8').trim()} (${cpus().length} CPUs)\n`);
    const r = (x: number) => Math.round(x * 1000) / 1000;
    process.stdout.write(`${JSON.stringify({ rawMpps: r(rawPps / 1e6), ovsMpps: r(ovsPps / 1e6), ratio: rawPps > 0 ? r(ovsPps / rawPps) : 0 })}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:dataplane: ${(err as Error).message}\n`);
  process.exit(1);
});
