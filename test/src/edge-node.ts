/**
 * An emulated edge node (docs/sriov.md "The emulated edge node"): a TCG q35 machine (L1) with an emulated VT-d
 * (`intel-iommu`) and QEMU's igb SR-IOV NIC as its PF, running **our node agent from the built tree**, registered
 * over NATS (JWT auth, the node principal of packages/nats-launcher's credentials model) with a scheduler on this
 * host. Tenant VMs the agent starts in it are nested (L2: TCG inside TCG).
 *
 * How L1 gets the product: its initramfs is tiny (busybox + the generic kernel's modules for 9p, virtio, igb and
 * vfio); /init mounts this host's root file system **read-only over 9p** (`-virtfs local,readonly=on`) and chroots
 * into it, with its own /proc, /sys, /dev, cgroup2, and tmpfs on /run and /tmp. So Node.js, QEMU, iproute2 and the
 * built dist are this host's own files, nothing is copied, and a rebuilt tree is what the next boot runs.
 * (Measured against copying Node.js + the dist into the initramfs: see docs/sriov.md.)
 *
 * The host reaches L1 over a tap (`<prefix>t`, a /30 of 10.2xx.x.x): nats-server listens on the tap's host address;
 * L1 runs a small control server on its address (`exec`, `spawn`, `kill` of processes in L1: harness only, the
 * product never listens there) through which the harness starts and SIGKILLs the node agent and reads the PF's VF
 * table. Needs root and QEMU >= 8 (igb). `teardown()` stops everything it made and removes the tap and folders.
 */
import type { ChildProcess } from 'node:child_process';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { dirname, join } from 'node:path';
import { connect, credsAuthenticator, type NatsConnection } from 'nats';
import { createTrust, issueRole, issuerConfig, spawnTied, startNatsServer, type NatsServerHandle, type Role } from '@edgenfv/nats-launcher';
import { buildGuestImage, defaultCacheDir, type GuestImage } from '@edgenfv/node-agent/internal/guest/image-builder';
import { Api, REPO_ROOT, startScheduler, type SchedulerProc } from './harness.js';

export const NODE_AGENT_MAIN = join(REPO_ROOT, 'services/node-agent/dist/src/main.js');
/** Where L1's igb PF sits (root port rp0 -> bus 01). */
export const EDGE_PF_PCI = '0000:01:00.0';
const CTL_PORT = 7070;
/** L1's kernel modules (with their dependencies from modules.dep), loaded in this order by its /init. */
const L1_MODULES = [
  'virtio_pci', 'virtio_net', '9pnet_virtio', '9p', 'igb', 'igbvf', 'vfio_iommu_type1 allow_unsafe_interrupts=1', 'vfio_pci',
  'tun', 'veth', 'bridge', 'macvtap',
];

export interface EdgeNodeOptions {
  prefix?: string;
  /** The deployment's networks (scheduler and node agent), e.g. one on physnet1 for the VF. */
  networks: unknown[];
  /** PF -> physnet in the node's config (default {<EDGE_PF_PCI>: physnet1}). */
  physnets?: Record<string, string>;
  /** VFs the "operator" creates on the PF at L1's boot (default 2). */
  numVfs?: number;
  /** An address (CIDR) on the PF inside L1, for pinging a VF's tenant from the PF side. */
  pfAddress?: string;
  /** L1 RAM in MiB (default 2048: above 2 GiB L1 places the VF BARs above 4 GiB, where the emulated VF is dead). */
  memMiB?: number;
  /** L1 vCPUs and the node agent's vCPUs per VM (default 1; a VNF with a DPDK data plane needs 2: a main and a forwarding lcore). */
  cpus?: number;
  /** Guest RAM of a tenant VM before its replicas (node agent `vmBaseMemoryMiB`, default 512). */
  vmBaseMemoryMiB?: number;
  /** The guest agent's boot timeout in the node agent (nested TCG is slow). */
  guestBootTimeoutMs?: number;
  heartbeatGraceMs?: number;
  /** Start the node agent once L1 is up (default true). */
  startAgent?: boolean;
  /** Guest image options (default: generic kernel, with builtin:testpmd). */
  testpmd?: boolean;
  /** More node agent config (e.g. `warmPool`); its `guest` keys are merged into the harness's `guest`. */
  nodeConfig?: Record<string, unknown> & { guest?: Record<string, unknown> };
  log?: (m: string) => void;
  echo?: boolean;
}

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface VfTableEntry {
  vf: number;
  pciAddress: string;
  mac: string;
  vlan: number;
  spoofchk?: boolean;
  trust?: boolean;
  driver: string | null;
}

export interface EdgeNode {
  prefix: string;
  dir: string;
  nodeId: string;
  tap: string;
  hostAddr: string;
  nodeAddr: string;
  natsUrl: string;
  nats: NatsServerHandle;
  scheduler: SchedulerProc;
  nc: NatsConnection;
  api: Api;
  image: GuestImage;
  /** nats-server's log lines (the last 400). */
  natsLog: string[];
  /** L1's console (the node agent's log is in L1's /run/edge/agent.log: `agentLog()`). */
  console: string[];
  /** Milliseconds from L1's QEMU start: control server up, node agent ready (first start). */
  marks: Record<string, number>;
  /** Runs argv in L1 (no shell). */
  exec(argv: string[], timeoutMs?: number): Promise<ExecResult>;
  startAgent(timeoutMs?: number): Promise<void>;
  /** SIGKILL the node agent in L1 (its tenant VMs keep running). */
  killAgent(): Promise<void>;
  agentLog(lines?: number): Promise<string>;
  /** The PF's VF table (`ip -j -d link show`) with each VF's PCI address and driver, read in L1. */
  vfTable(): Promise<VfTableEntry[]>;
  waitReady(timeoutMs?: number): Promise<void>;
  teardown(): Promise<{ clean: boolean; leftovers: string[] }>;
}

function sh(cmd: string, args: string[], mayFail = false): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0 && !mayFail) throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.stdout || '').trim()}`);
  return r.stdout ?? '';
}

function writePrivate(path: string, text: string): void {
  writeFileSync(path, text, { mode: 0o600 });
  chmodSync(path, 0o600);
}

function linkExists(name: string): boolean {
  return spawnSync('ip', ['link', 'show', 'dev', name], { stdio: 'ignore' }).status === 0;
}

export function qemuMajor(): number {
  const v = execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
  return Number(/version (\d+)\./.exec(v)?.[1] ?? 0);
}

/** The unpacked kernel package behind a guest image (the image builder's cache), for L1's modules. */
function kernelRootOf(image: GuestImage, cacheDir: string): string {
  const kdir = join(cacheDir, 'guest-image', 'kernels');
  const hit = readdirSync(kdir).find((d) => d.startsWith(`${image.kernelPackage}_`) && existsSync(join(kdir, d, '.complete')));
  if (!hit) throw new Error(`the unpacked kernel ${image.kernelPackage} is not in ${kdir}`);
  return join(kdir, hit);
}

/**
 * The kernel uncompressed (vmlinux, booted through PVH): ~35 s less per nested boot than the bzImage
 * (ENVIRONMENT.md). Cached beside the image.
 */
export function vmlinuxOf(image: GuestImage): string {
  const out = join(image.dir, '..', `vmlinux-${image.kernelRelease}`);
  if (existsSync(out)) return out;
  const bz = readFileSync(image.kernelPath);
  const at = bz.indexOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])); // the xz stream inside the bzImage
  if (at < 0) throw new Error(`${image.kernelPath}: no xz payload (Debian's amd64 kernels are xz-compressed)`);
  const tmp = `${out}.tmp${process.pid}`;
  execFileSync('sh', ['-c', 'tail -c +"$1" "$2" | xz -dc > "$3" 2>/dev/null; test -s "$3"', 'sh', String(at + 1), image.kernelPath, tmp]);
  renameSync(tmp, out);
  return out;
}

function moduleClosure(kroot: string, release: string, names: string[]): string[] {
  const dep = readFileSync(join(kroot, 'lib/modules', release, 'modules.dep'), 'utf8');
  const deps = new Map<string, string[]>();
  const byName = new Map<string, string>();
  for (const line of dep.split('\n')) {
    const [p, rest] = line.split(':');
    if (!p) continue;
    deps.set(p, (rest ?? '').trim().split(/\s+/).filter(Boolean));
    byName.set(p.replace(/^.*\//, '').replace(/\.ko(\.[a-z]+)?$/, '').replace(/-/g, '_'), p);
  }
  const files = new Set<string>();
  const add = (p: string): void => {
    if (files.has(p)) return;
    files.add(p);
    for (const d of deps.get(p) ?? []) add(d);
  };
  for (const n of names) {
    const p = byName.get(n.split(' ')[0]!.replace(/-/g, '_'));
    if (!p) throw new Error(`module ${n} is not in the kernel at ${kroot}`);
    add(p);
  }
  return [...files].sort();
}

const L1_INIT = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /host
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "EDGE_INIT $(cut -d' ' -f1 /proc/uptime)"
while read -r m args; do modprobe $m $args || echo "EDGE_MODPROBE_FAIL $m"; done < /etc/modules
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 hostroot /host || { echo EDGE_9P_FAIL; poweroff -f; }
mount -t proc proc /host/proc; mount -t sysfs sys /host/sys; mount -t devtmpfs dev /host/dev
REPO=$(sed -n 's/.*edge\\.repo=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
# a tree checked out under /tmp (a CI clone) would vanish under L1's own /tmp: it is bound back over it
case "$REPO" in /tmp/*) mkdir -p /repo; mount --bind "/host$REPO" /repo || { echo EDGE_REPO_FAIL; poweroff -f; };; *) REPO= ;; esac
mount -t tmpfs -o mode=755 run /host/run; mount -t tmpfs -o mode=1777 tmp /host/tmp
if [ -n "$REPO" ]; then mkdir -p "/host$REPO"; mount --bind /repo "/host$REPO" || { echo EDGE_REPO_FAIL; poweroff -f; }; fi
DIR=$(sed -n 's/.*edge\\.dir=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
echo "EDGE_CHROOT $(cut -d' ' -f1 /proc/uptime)"
exec chroot /host /bin/sh "$DIR/l1-init.sh"
`;

/** L1's initramfs: busybox, the modules, /init (cached by content). */
function l1Initramfs(kroot: string, release: string, cacheDir: string): string {
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((b) => existsSync(b));
  if (!busybox) throw new Error('busybox is missing: apt-get install busybox-static');
  const files = moduleClosure(kroot, release, L1_MODULES);
  const h = createHash('sha256').update(L1_INIT).update(L1_MODULES.join('\n')).update(release).update(String(statSync(busybox).size));
  for (const f of files) h.update(f);
  const out = join(cacheDir, 'edge-node', `l1-${h.digest('hex').slice(0, 16)}.cpio`);
  if (existsSync(out)) return out;
  mkdirSync(dirname(out), { recursive: true });
  const stage = mkdtempSync(join(dirname(out), '.stage-'));
  try {
    mkdirSync(join(stage, 'bin'), { recursive: true });
    copyFileSync(busybox, join(stage, 'bin/busybox'));
    chmodSync(join(stage, 'bin/busybox'), 0o755);
    const mdir = join(stage, 'lib/modules', release);
    for (const f of files) {
      mkdirSync(join(mdir, dirname(f)), { recursive: true });
      copyFileSync(join(kroot, 'lib/modules', release, f), join(mdir, f));
    }
    for (const f of ['modules.order', 'modules.builtin', 'modules.builtin.modinfo']) {
      if (existsSync(join(kroot, 'lib/modules', release, f))) copyFileSync(join(kroot, 'lib/modules', release, f), join(mdir, f));
    }
    execFileSync(busybox, ['depmod', '-b', stage, release]);
    mkdirSync(join(stage, 'etc'));
    writeFileSync(join(stage, 'etc/modules'), L1_MODULES.join('\n') + '\n');
    writeFileSync(join(stage, 'init'), L1_INIT, { mode: 0o755 });
    execFileSync('sh', ['-c', 'cd "$1" && find . | cpio -o -H newc --quiet > "$2"', 'sh', stage, `${out}.tmp`]);
    renameSync(`${out}.tmp`, out);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  return out;
}

/** L1's second stage, run chrooted into the host's root (read-only 9p): network, VFs, the control server. */
function l1InitScript(o: { dir: string; nodeAddr: string; numVfs: number; pfAddress?: string }): string {
  return `set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/run/edge
mkdir -p /run/edge /dev/pts /dev/shm /sys/fs/cgroup /run/netns
mount -t devpts devpts /dev/pts; mount -t tmpfs shm /dev/shm; mount -t cgroup2 none /sys/fs/cgroup
echo "+cpu +cpuset +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
ip link set lo up
for n in /sys/class/net/*; do
  [ "$(cat $n/address)" = "52:54:00:ee:00:02" ] && UP=$(basename $n)
done
ip addr add ${o.nodeAddr}/30 dev "$UP"; ip link set "$UP" up
PF=$(ls /sys/bus/pci/devices/${EDGE_PF_PCI}/net)
ip link set "$PF" up
echo ${o.numVfs} > /sys/bus/pci/devices/${EDGE_PF_PCI}/sriov_numvfs
i=0; while [ $i -lt ${o.numVfs} ]; do ip link set "$PF" vf $i mac 02:ed:00:00:00:$(printf %02x $((i+1))); i=$((i+1)); done
${o.pfAddress ? `ip addr add ${o.pfAddress} dev "$PF"` : ''}
echo "EDGE_NET $(cut -d' ' -f1 /proc/uptime) uplink=$UP pf=$PF"
${process.execPath} ${join(o.dir, 'ctl.cjs')} ${o.nodeAddr} ${CTL_PORT} &
wait
echo EDGE_CTL_EXIT
poweroff -f
`;
}

/**
 * The control server in L1 (harness only): newline-delimited JSON requests on TCP, one answer per line.
 * {op:'exec', argv, timeoutMs} -> {code, stdout, stderr}; {op:'spawn', name, argv, env} (output to
 * /run/edge/<name>.log); {op:'kill', name, signal}; {op:'alive', name}.
 */
const CTL_JS = `'use strict';
const net = require('node:net'); const cp = require('node:child_process'); const fs = require('node:fs');
const [host, port] = process.argv.slice(2);
const procs = new Map();
function handle(req, reply) {
  if (req.op === 'exec') {
    cp.execFile(req.argv[0], req.argv.slice(1), { timeout: req.timeoutMs || 60000, maxBuffer: 16 << 20, encoding: 'utf8' }, (err, stdout, stderr) =>
      reply({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr: stderr || (err && !stderr ? String(err.message) : '') }));
  } else if (req.op === 'spawn') {
    const fd = fs.openSync('/run/edge/' + req.name + '.log', 'a');
    const c = cp.spawn(req.argv[0], req.argv.slice(1), { env: { ...process.env, ...(req.env || {}) }, stdio: ['ignore', fd, fd], detached: true });
    fs.closeSync(fd);
    procs.set(req.name, c);
    c.once('exit', (code, sig) => fs.appendFileSync('/run/edge/' + req.name + '.log', 'EDGE_EXIT ' + (code ?? sig) + '\\n'));
    reply({ pid: c.pid });
  } else if (req.op === 'kill') {
    const c = procs.get(req.name);
    if (!c || c.exitCode !== null || c.signalCode !== null) return reply({ killed: false });
    c.once('exit', () => reply({ killed: true }));
    c.kill(req.signal || 'SIGTERM');
  } else if (req.op === 'alive') {
    const c = procs.get(req.name);
    reply({ alive: !!c && c.exitCode === null && c.signalCode === null });
  } else reply({ error: 'unknown op' });
}
net.createServer((s) => {
  let buf = '';
  s.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\\n')) >= 0) {
      const line = buf.slice(0, nl); buf = buf.slice(nl + 1);
      let req; try { req = JSON.parse(line); } catch { s.write(JSON.stringify({ error: 'bad json' }) + '\\n'); continue; }
      handle(req, (r) => s.write(JSON.stringify({ id: req.id, ...r }) + '\\n'));
    }
  });
  s.on('error', () => {});
}).listen(Number(port), host, () => console.log('EDGE_CTL_READY ' + fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]));
`;

async function ctlCall(host: string, req: Record<string, unknown>, timeoutMs: number): Promise<any> {
  return new Promise((resolve, reject) => {
    const s = tcpConnect(CTL_PORT, host);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`L1 control: no answer to ${JSON.stringify(req).slice(0, 200)} in ${timeoutMs} ms`));
    }, timeoutMs);
    s.on('connect', () => s.write(JSON.stringify(req) + '\n'));
    s.on('data', (d) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        // destroy, not end(): a half-closed socket whose peer (L1) is killed before it closes its side never ends,
        // and kept the test file's process alive after its tests passed
        s.destroy();
        resolve(JSON.parse(buf.slice(0, nl)));
      }
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

export async function startEdgeNode(opts: EdgeNodeOptions): Promise<EdgeNode> {
  if (process.getuid?.() !== 0) throw new Error('an emulated edge node needs root (a tap, QEMU, nats-server on its address)');
  if (qemuMajor() < 8) throw new Error('QEMU >= 8 (the igb SR-IOV model) is needed: apt-get install -t bookworm-backports qemu-system-x86');
  const prefix = opts.prefix ?? `en${randomBytes(2).toString('hex')}`;
  if (!/^[a-z][a-z0-9]{0,7}$/.test(prefix)) throw new Error(`prefix: 1-8 lower-case letters and digits, starting with a letter (${JSON.stringify(prefix)})`);
  const log = opts.log ?? ((): void => undefined);
  const numVfs = opts.numVfs ?? 2;
  // on the host's root (L1 sees it read-only through 9p at the same path), not under /tmp (L1 mounts its own)
  const base = '/var/tmp';
  const dir = mkdtempSync(join(base, `edgenfv-edge-${prefix}-`));
  chmodSync(dir, 0o700);
  const tap = `${prefix}t`;
  const net = `10.${200 + (randomBytes(1)[0]! % 50)}.${randomBytes(1)[0]!}.${(randomBytes(1)[0]! % 63) * 4}`;
  const [a, b, c, d] = net.split('.').map(Number) as [number, number, number, number];
  const hostAddr = `${a}.${b}.${c}.${d + 1}`;
  const nodeAddr = `${a}.${b}.${c}.${d + 2}`;
  const nodeId = `${prefix}-edge1`;
  const cacheDir = defaultCacheDir();
  const consoleLines: string[] = [];
  const natsLog: string[] = [];
  const marks: Record<string, number> = {};
  let qemu: ChildProcess | undefined;
  let qemuExited: Promise<unknown> | undefined;
  let nats: NatsServerHandle | undefined;
  let scheduler: SchedulerProc | undefined;
  let nc: NatsConnection | undefined;
  let t0 = Date.now();

  const exec = async (argv: string[], timeoutMs = 120_000): Promise<ExecResult> => ctlCall(nodeAddr, { op: 'exec', argv, timeoutMs }, timeoutMs + 30_000);

  const agentLog = async (lines = 200): Promise<string> => (await exec(['tail', '-n', String(lines), '/run/edge/agent.log'])).stdout;

  // a node agent that cannot reach NATS at start exits (TIMEOUT; on a real node its service manager restarts it):
  // seen once or twice in L1 on a loaded host; started again like a service manager would
  const startAgent = async (timeoutMs = 900_000): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await startAgentOnce(timeoutMs);
      } catch (err) {
        if (attempt >= 8 || !/TIMEOUT/.test((err as Error).message)) throw err;
        const why = natsLog.filter((l) => /\[ERR\]|Timeout|timeout|Authorization/.test(l)).slice(-3).join(' | ');
        log(`node agent exited while connecting (attempt ${attempt}): starting it again${why ? ` (nats-server: ${why})` : ''}`);
      }
    }
  };

  const startAgentOnce = async (timeoutMs: number): Promise<void> => {
    const before = (await exec(['sh', '-c', 'cat /run/edge/agent.log 2>/dev/null | wc -l'])).stdout.trim();
    await ctlCall(nodeAddr, { op: 'spawn', name: 'agent', argv: [process.execPath, NODE_AGENT_MAIN], env: { EDGENFV_NODE_CONFIG: join(dir, 'node.json') } }, 30_000);
    const until = Date.now() + timeoutMs;
    for (;;) {
      const tail = (await exec(['sh', '-c', `tail -n +${Number(before) + 1} /run/edge/agent.log`])).stdout;
      if (tail.includes('node agent ready')) break;
      if (/EDGE_EXIT/.test(tail)) throw new Error(`the node agent in L1 exited while starting:\n${tail.split('\n').slice(-20).join('\n')}`);
      if (Date.now() > until) throw new Error(`the node agent in L1 was not ready after ${timeoutMs} ms:\n${tail.split('\n').slice(-20).join('\n')}`);
      await new Promise((r) => setTimeout(r, 2000));
    }
    if (!marks.agentReady) marks.agentReady = Date.now() - t0;
  };

  const teardown = async (): Promise<{ clean: boolean; leftovers: string[] }> => {
    const leftovers: string[] = [];
    if (qemu && qemu.exitCode === null && qemu.signalCode === null) {
      // the node is a VM: its tenant VMs, netns and VF bindings go with it
      qemu.kill('SIGKILL');
      await qemuExited;
    }
    await nc?.close().catch(() => undefined);
    await scheduler?.stop().catch(() => undefined);
    await nats?.stop().catch(() => undefined);
    if (linkExists(tap)) sh('ip', ['link', 'del', tap], true);
    rmSync(dir, { recursive: true, force: true });
    if (linkExists(tap)) leftovers.push(`tap ${tap}`);
    if (qemu?.pid && qemu.exitCode === null && qemu.signalCode === null) leftovers.push(`QEMU (L1) pid ${qemu.pid}`);
    if (existsSync(dir)) leftovers.push(`folder ${dir}`);
    return { clean: leftovers.length === 0, leftovers };
  };

  try {
    // the guest image the node's tenant VMs boot (generic kernel: VF drivers), built on this host
    log('guest image (generic kernel; the first build downloads a kernel package)');
    const image = await buildGuestImage({ kernelFlavor: 'generic', ...(opts.testpmd === false ? { testpmd: false } : {}) });
    const kroot = kernelRootOf(image, cacheDir);
    const vmlinux = vmlinuxOf(image);
    const initrd = l1Initramfs(kroot, image.kernelRelease, cacheDir);

    // the host end: a tap with the host's address; nats-server (JWT) listens there
    sh('ip', ['tuntap', 'add', tap, 'mode', 'tap']);
    sh('ip', ['addr', 'add', `${hostAddr}/30`, 'dev', tap]);
    sh('ip', ['link', 'set', tap, 'up']);
    const auth = join(dir, 'nats-auth');
    mkdirSync(auth, { mode: 0o700 });
    const trust = await createTrust();
    const creds = async (file: string, role: Role): Promise<{ credsFile: string; inboxPrefix: string }> => {
      const u = await issueRole(trust, role);
      writePrivate(join(auth, file), u.creds);
      return { credsFile: join(auth, file), inboxPrefix: u.inboxPrefix };
    };
    const operator = await creds('operator.creds', { kind: 'operator' });
    const schedulerCreds = await creds('scheduler.creds', { kind: 'scheduler', id: prefix });
    const nodeCreds = await creds('node.creds', { kind: 'node', nodeId });
    const issuerFile = join(auth, 'issuer.json');
    writePrivate(issuerFile, JSON.stringify(await issuerConfig(trust)));
    nats = await startNatsServer({
      storeDir: join(dir, 'nats'), host: hostAddr, jwtAuth: trust, serverName: `edgenfv-${prefix}`,
      // the node agent in L1 signs its JWT nonce in TCG on a loaded host: more than nats-server's 2 s (EPIPE after
      // CONNECT, then `node-agent: TIMEOUT`, seen up to 4 starts in a row)
      authTimeoutS: 60,
      onLog: (line) => {
        natsLog.push(line);
        if (natsLog.length > 500) natsLog.splice(0, 100);
      },
    });
    log(`nats-server ${nats.url} (JWT auth) on tap ${tap}`);
    const schedConfig = join(dir, 'scheduler.json');
    writePrivate(
      schedConfig,
      JSON.stringify({
        networks: opts.networks,
        nats: { servers: [nats.url], ...schedulerCreds },
        credentials: { issuerFile },
        heartbeatGraceMs: opts.heartbeatGraceMs ?? 60_000,
        startTimeoutMs: 7_200_000, // a nested TCG boot, then the container (demo:sriov: 40 min to CreateContainer)
        // removing a replica from a nested tenant VM (container, vCPU/memory unplug, VF back to igbvf) took minutes on a
        // loaded host: with the default 60 s the scheduler released the allocation unconfirmed ("stop not confirmed in
        // time") and terminate COMPLETED before the node gave the VF back
        stopTimeoutMs: 1_800_000,
      }),
    );
    scheduler = await startScheduler({ EDGENFV_CONFIG: schedConfig });
    if (opts.echo) scheduler.child.stdout?.on('data', (x: Buffer) => process.stderr.write(x));
    log('scheduler serving');

    writePrivate(
      join(dir, 'node.json'),
      JSON.stringify({
        nodeId,
        labels: { 'edgenfv.io/emulated': 'true' },
        stateDir: '/run/edge/node-agent',
        physnets: opts.physnets ?? { [EDGE_PF_PCI]: 'physnet1' },
        networks: opts.networks,
        nats: { url: nats.url, ...nodeCreds },
        metrics: { host: '127.0.0.1', port: 9464 },
        heartbeatIntervalMs: 5000,
        qemu: { accel: 'tcg', machine: 'q35', maxVcpus: opts.cpus ?? 1, maxMemoryMiB: 1024, ...((opts.cpus ?? 1) === 1 ? { tcgTbSizeMiB: 32 } : {}) }, // a small TB cache only without vCPU hotplug (config rule)
        vmBaseMemoryMiB: opts.vmBaseMemoryMiB ?? 512,
        ...opts.nodeConfig,
        guest: { kernelPath: vmlinux, initrdPath: image.initrdPath, systemDiskPath: image.systemDisk.path, bootTimeoutMs: opts.guestBootTimeoutMs ?? 7_200_000, keepaliveTimeoutMs: 300_000, rpcTimeoutScale: 60, livenessFailAfterMs: 900_000, extraKernelArgs: 'cryptomgr.notests edgenfv.agent_args=--command-timeout-ms=1800000', ...opts.nodeConfig?.guest }, // one `ip` in the nested guest outlived the agent's default 30 s
      }),
    );
    writeFileSync(join(dir, 'ctl.cjs'), CTL_JS);
    writeFileSync(join(dir, 'l1-init.sh'), l1InitScript({ dir, nodeAddr, numVfs, ...(opts.pfAddress ? { pfAddress: opts.pfAddress } : {}) }));

    const args = [
      '-M', 'q35,accel=tcg', '-cpu', 'max', '-smp', String(opts.cpus ?? 1), '-m', `${opts.memMiB ?? 2048}M`,
      '-nographic', '-no-reboot', '-nodefaults', '-serial', 'stdio', '-name', `edgenfv-edge-${prefix}`,
      '-kernel', vmlinux, '-initrd', initrd,
      '-append', `console=ttyS0 intel_iommu=on panic=-1 quiet cryptomgr.notests edge.dir=${dir} edge.repo=${REPO_ROOT.replace(/\/+$/, '')}`,
      '-device', 'intel-iommu,intremap=off,caching-mode=on',
      '-device', 'pcie-root-port,id=rp0,chassis=1',
      '-netdev', 'user,id=pf0,restrict=on', '-device', 'igb,bus=rp0,netdev=pf0,mac=52:54:00:12:34:56',
      '-netdev', `tap,id=up0,ifname=${tap},script=no,downscript=no`, '-device', 'virtio-net-pci,netdev=up0,mac=52:54:00:ee:00:02',
      '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
    ];
    log(`L1: booting the emulated edge node (q35 TCG, intel-iommu, igb PF with ${numVfs} VFs)`);
    t0 = Date.now();
    qemu = spawnTied('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    qemuExited = new Promise((r) => qemu!.once('exit', r));
    let buf = '';
    let ctlReady: () => void = () => undefined;
    const ctlUp = new Promise<void>((r) => (ctlReady = r));
    const onData = (x: Buffer): void => {
      if (opts.echo) process.stderr.write(x);
      buf += x.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        consoleLines.push(line);
        if (consoleLines.length > 5000) consoleLines.splice(0, 1000);
        for (const m of ['EDGE_INIT', 'EDGE_CHROOT', 'EDGE_NET', 'EDGE_CTL_READY']) if (line.includes(m) && !marks[m]) marks[m] = Date.now() - t0;
        if (line.includes('EDGE_CTL_READY')) ctlReady();
      }
    };
    qemu.stdout!.on('data', onData);
    qemu.stderr!.on('data', onData);
    let bootTimer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        ctlUp,
        qemuExited.then(() => {
          throw new Error(`L1 exited while booting:\n${consoleLines.slice(-30).join('\n')}`);
        }),
        new Promise((_, rej) => (bootTimer = setTimeout(() => rej(new Error(`L1 not up after 15 min:\n${consoleLines.slice(-30).join('\n')}`)), 900_000))),
      ]);
    } finally {
      clearTimeout(bootTimer); // a pending timer would keep the test file's process alive
    }
    log(`L1 up in ${marks.EDGE_CTL_READY} ms (at /init ${marks.EDGE_INIT} ms, chroot ${marks.EDGE_CHROOT} ms)`);
    nc = await connect({ servers: nats.url, authenticator: credsAuthenticator(readFileSync(operator.credsFile)), inboxPrefix: operator.inboxPrefix });
    const node: EdgeNode = {
      prefix, dir, nodeId, tap, hostAddr, nodeAddr, natsUrl: nats.url, nats, scheduler, nc, api: new Api(nc), image,
      console: consoleLines, natsLog, marks, exec, startAgent, agentLog,
      async killAgent() {
        const r = await ctlCall(nodeAddr, { op: 'kill', name: 'agent', signal: 'SIGKILL' }, 60_000);
        if (!r.killed) throw new Error('the node agent in L1 was not running');
      },
      async vfTable() {
        const script = `PF=$(ls /sys/bus/pci/devices/${EDGE_PF_PCI}/net); ip -j -d link show "$PF"; echo; for v in /sys/bus/pci/devices/${EDGE_PF_PCI}/virtfn*; do n=\${v##*virtfn}; a=$(basename $(readlink $v)); dr=$(basename "$(readlink /sys/bus/pci/devices/$a/driver 2>/dev/null)" 2>/dev/null); echo "VF $n $a \${dr:--}"; done`;
        const r = await exec(['sh', '-c', script]);
        const [json, ...rest] = r.stdout.split('\n');
        const info = JSON.parse(json!)[0] as { vfinfo_list?: Array<{ vf: number; address: string; vlan_list?: Array<{ vlan: number }>; vlan?: number; spoofchk?: boolean; trust?: boolean }> };
        const pci = new Map<number, { a: string; dr: string | null }>();
        for (const l of rest) {
          const m = /^VF (\d+) (\S+) (\S+)/.exec(l);
          if (m) pci.set(Number(m[1]), { a: m[2]!, dr: m[3] === '-' ? null : m[3]! });
        }
        return (info.vfinfo_list ?? []).map((v) => ({
          vf: v.vf, pciAddress: pci.get(v.vf)?.a ?? '', mac: v.address, vlan: v.vlan_list?.[0]?.vlan ?? v.vlan ?? 0,
          ...(v.spoofchk !== undefined ? { spoofchk: v.spoofchk } : {}), ...(v.trust !== undefined ? { trust: v.trust } : {}),
          driver: pci.get(v.vf)?.dr ?? null,
        }));
      },
      async waitReady(timeoutMs = 300_000) {
        const until = Date.now() + timeoutMs;
        for (;;) {
          const r = await node.api.call('nfv.v1.admin.nodes.list', {});
          if (r.ok && r.result.items.some((n: { id: string; health: string }) => n.id === nodeId && n.health === 'Ready')) return;
          if (Date.now() > until) throw new Error(`node ${nodeId} not Ready after ${timeoutMs} ms: ${JSON.stringify(r)}`);
          await new Promise((res) => setTimeout(res, 1000));
        }
      },
      teardown,
    };
    if (opts.startAgent !== false) {
      log('node agent: starting in L1 from the built tree');
      await startAgent();
      log(`node agent ready ${marks.agentReady} ms after L1's QEMU started`);
    }
    return node;
  } catch (err) {
    const t = await teardown();
    if (!t.clean) log(`teardown after a failed start left: ${t.leftovers.join(', ')}`);
    throw err;
  }
}
