/**
 * The node's OVS-DPDK switch, owned by the node agent: `ovsdb-server` and the DPDK build of `ovs-vswitchd` run as
 * the agent's own children (no systemd; their run/db/log folder is `<stateDir>/ovs`; `setpriv --pdeathsig` ties
 * them to the agent), optionally inside their own network namespace.
 *
 * Every (re)start is the same declarative pass on a fresh database: reserve hugepages, start ovsdb-server, write
 * the DPDK settings dpdk-config renders (`dpdk-socket-mem`, `pmd-cpu-mask`, lcore on the switch's NUMA node),
 * start ovs-vswitchd, wait for DPDK, create one netdev bridge per network that asks for the switch (with its
 * uplink trunking the network's VLAN), then re-create every tenant port netplugins' vhost-user records hold.
 * When either process dies the pair is restarted with backoff; a start that fails is a node-level error in the
 * log and in the inventory (`state: failed`, `error`), and is retried.
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { DataplaneInfo, NetworkConfig } from '@edgenfv/contracts';
import { spawnTied } from '@edgenfv/nats-launcher';
import { ovsAddBridgeArgs, ovsAddUplinkArgs, ovsSetOtherConfigArgs, ovsVsctl, parseDataplanePlan, type DataplanePlan } from '@edgenfv/dpdk-config';
import type { DataplaneConfig, OvsSwitchConfig, UplinkConfig } from '../config.js';
import { parseCpuList } from '../inventory.js';
import { reserveHugepages } from './hugepages.js';
import type { DataplaneSwitch, SwitchBridge, SwitchHealth } from './switch.js';

export const OVS_SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';

/** Re-creates the recorded tenant ports of this switch (netplugins' VhostUserPlugin.restorePorts). */
export type PortRestorer = (db: string) => Promise<{ restored: string[]; failed: { portName: string; error: string }[] }>;

export interface OvsDpdkSwitchOptions {
  dataplane: Readonly<DataplaneConfig> & { ovs: OvsSwitchConfig };
  networks: readonly NetworkConfig[];
  stateDir: string;
  sysfsRoot: string;
  logger: Logger;
  restorePorts?: PortRestorer;
}

/** First and longest pause between two starts of the switch. */
const BACKOFF_MS = { first: 1000, max: 30_000 };

interface BridgePlan {
  network: string;
  bridge: string;
  vlan?: number;
  uplink?: UplinkConfig & { port: string };
}

function short(s: string, n: number): string {
  return createHash('sha256').update(s).digest('hex').slice(0, n);
}

/** `br-<network>` (or `br-<hash>` when the name would pass Linux's 15 characters): the bridge's tap has that name. */
export function bridgeName(network: string): string {
  return `br-${network}`.length <= 15 ? `br-${network}` : `br-${short(network, 12)}`;
}
/** The switch-side link of a network's uplink veth. */
export function uplinkPortName(network: string): string {
  return `up-${network}`.length <= 15 ? `up-${network}` : `up-${short(network, 12)}`;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

class CommandError extends Error {}

function run(argv: readonly string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(argv[0]!, argv.slice(1), { timeout: timeoutMs, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new CommandError(`${argv.join(' ')}: ${(stderr || err.message).trim()}`));
      else resolve(stdout);
    });
  });
}

/** The last lines of an OVS log that say what went wrong (EMER/ERR), else its last line. */
function logTail(path: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  const lines = text.trim().split('\n').slice(-200);
  const bad = lines.filter((l) => /\|(EMER|ERR)\|/.test(l)).slice(-3);
  const pick = bad.length ? bad : lines.slice(-1);
  return pick.map((l) => l.replace(/^\S+\|\d+\|/, '')).join(' / ') || undefined;
}

export class OvsDpdkSwitch implements DataplaneSwitch {
  readonly kind = 'ovs-dpdk' as const;
  readonly socketDir: string;
  readonly runDir: string;
  readonly db: string;
  private readonly cfg: OvsSwitchConfig;
  private readonly bridges: ReadonlyMap<string, BridgePlan>;
  private readonly log: Logger;
  private state: SwitchHealth = { state: 'starting' };
  private children: { name: string; child: ChildProcess; exited: Promise<string> }[] = [];
  private stopping = false;
  private loop?: Promise<void>;
  private firstAttempt?: Promise<void>;
  private wake?: () => void;
  /** Namespaces and links the agent made for the switch (kept in `<runDir>/made.json`, so an agent killed -9 and started again still removes them at its stop). */
  private madeNetns: string[] = [];
  private madeLinks: string[] = [];
  private readyAt = 0;

  constructor(private readonly o: OvsDpdkSwitchOptions) {
    this.cfg = o.dataplane.ovs;
    this.socketDir = o.dataplane.socketDir;
    this.runDir = join(o.stateDir, 'ovs');
    this.db = `unix:${join(this.runDir, 'db.sock')}`;
    this.log = o.logger.child({ component: 'ovs-dpdk' });
    const bridges = new Map<string, BridgePlan>();
    for (const n of o.networks) {
      if (n.dataplane !== 'ovs-dpdk') continue;
      const b: BridgePlan = { network: n.name, bridge: bridgeName(n.name) };
      if (n.vlan !== undefined) b.vlan = n.vlan;
      const up = this.cfg.uplinks[n.name];
      if (up) b.uplink = { ...up, port: up.kind === 'nic' ? up.nic : uplinkPortName(n.name) };
      bridges.set(n.name, b);
    }
    this.bridges = bridges;
  }

  bridgeFor(network: string): SwitchBridge | undefined {
    const b = this.bridges.get(network);
    if (!b) return undefined;
    return b.vlan !== undefined ? { bridge: b.bridge, vlan: b.vlan, db: this.db } : { bridge: b.bridge, db: this.db };
  }

  health(): SwitchHealth {
    return { ...this.state };
  }

  info(): DataplaneInfo {
    const info: DataplaneInfo = { kind: 'ovs-dpdk', socketDir: this.socketDir, state: this.state.state, networks: [...this.bridges.keys()] };
    if (this.o.dataplane.numaNode !== undefined) info.numaNode = this.o.dataplane.numaNode;
    if (this.state.error && this.state.state !== 'ready') info.error = this.state.error;
    return info;
  }

  /** The DPDK plan of the switch: lcore and PMD CPUs on its NUMA node, its hugepages there. */
  plan(): DataplanePlan {
    const numaNode = this.o.dataplane.numaNode ?? 0;
    let cpus: number[];
    try {
      cpus = parseCpuList(readFileSync(join(this.o.sysfsRoot, `devices/system/node/node${numaNode}/cpulist`), 'utf8'));
    } catch {
      cpus = parseCpuList(readFileSync(join(this.o.sysfsRoot, 'devices/system/cpu/online'), 'utf8'));
    }
    const lcore = this.cfg.lcoreCpu ?? cpus[0] ?? 0;
    const pmds = this.cfg.pmdCpus ?? [cpus[cpus.length - 1] ?? 0];
    return parseDataplanePlan({
      filePrefix: 'ovs',
      numa: 'preferred',
      mainCpu: { cpu: lcore, numaNode },
      workerCpus: pmds.map((cpu) => ({ cpu, numaNode })),
      memory: { kind: 'hugepages', pages: [{ numaNode, sizeKiB: 2048, count: Math.ceil(this.cfg.socketMemMiB / 2) }] },
      nics: [],
    });
  }

  async start(): Promise<void> {
    if (this.loop) return this.firstAttempt;
    let firstDone!: () => void;
    this.firstAttempt = new Promise<void>((r) => (firstDone = r));
    this.loop = this.supervise(firstDone);
    return this.firstAttempt;
  }

  private async supervise(firstDone: () => void): Promise<void> {
    const { first, max } = BACKOFF_MS;
    let backoff = first;
    while (!this.stopping) {
      try {
        // a switch that failed stays failed (with its reason) until a retry succeeds
        if (this.state.state !== 'failed') this.setState('starting', this.state.error);
        await this.attempt();
        this.readyAt = Date.now();
        this.setState('ready');
        firstDone();
        const why = await this.anyExit();
        if (this.stopping) break;
        const msg = `${why}; restarting the switch and re-creating its ports`;
        this.log.error({ runDir: this.runDir }, msg);
        this.setState('starting', msg);
        if (Date.now() - this.readyAt > 60_000) backoff = first;
      } catch (err) {
        if (this.stopping) break;
        const msg = (err as Error).message;
        this.log.error({ runDir: this.runDir, retryInMs: backoff }, `OVS-DPDK will not start: ${msg}`);
        this.setState('failed', msg);
        firstDone();
      }
      await this.killChildren();
      await this.pause(backoff);
      backoff = Math.min(backoff * 2, max);
    }
    firstDone();
  }

  private setState(state: SwitchHealth['state'], error?: string): void {
    const changed = state !== this.state.state || error !== this.state.error;
    this.state = error !== undefined ? { state, error } : { state };
    if (changed && state === 'ready') this.log.info({ bridges: [...this.bridges.values()].map((b) => b.bridge), db: this.db }, 'OVS-DPDK ready');
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  private anyExit(): Promise<string> {
    return Promise.race(this.children.map((c) => c.exited.then((how) => `${c.name} exited (${how})${this.tailOf(c.name)}`)));
  }

  private tailOf(name: string): string {
    const t = logTail(join(this.runDir, `${name}.log`));
    return t ? `: ${t}` : '';
  }

  private spawnChild(name: string, argv: string[]): { child: ChildProcess; exited: Promise<string>; stderr: () => string } {
    const cmd = this.cfg.netns ? ['ip', 'netns', 'exec', this.cfg.netns, ...argv] : argv;
    const env = { ...process.env, OVS_RUNDIR: this.runDir, OVS_DBDIR: this.runDir, OVS_LOGDIR: this.runDir, OVS_SYSCONFDIR: this.runDir };
    const child = spawnTied(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env, detached: true });
    let err = '';
    child.stderr?.on('data', (b: Buffer) => (err = (err + b.toString('utf8')).slice(-2000)));
    const exited = new Promise<string>((resolve) => {
      child.once('exit', (code, signal) => resolve(signal ? `signal ${signal}` : `code ${code}`));
      child.once('error', (e) => resolve(`cannot run: ${e.message}`));
    });
    this.children.push({ name, child, exited });
    return { child, exited, stderr: () => err.trim() };
  }

  /** Polls `probe` until it returns true; fails when `exited` settles first or at the deadline. */
  private async until(what: string, deadline: number, exited: Promise<string>, probe: () => Promise<boolean>): Promise<void> {
    let gone: string | undefined;
    void exited.then((w) => (gone = w));
    for (let wait = 50; ; wait = Math.min(wait * 2, 500)) {
      if (gone) throw new Error(`${gone} while waiting for ${what}`);
      if (await probe().catch(() => false)) return;
      if (Date.now() > deadline) throw new Error(`${what} did not happen within ${this.cfg.startTimeoutMs} ms`);
      await sleep(wait);
    }
  }

  private vsctl(...args: string[]): Promise<string> {
    return run([...ovsVsctl(this.db), '--timeout=10', ...args]);
  }

  private async attempt(): Promise<void> {
    const deadline = Date.now() + this.cfg.startTimeoutMs;
    const numaNode = this.o.dataplane.numaNode ?? 0;
    if (!existsSync(this.cfg.vswitchdBinary)) {
      throw new Error(`${this.cfg.vswitchdBinary} not found: install openvswitch-switch-dpdk, or set dataplanes[].ovs.vswitchdBinary`);
    }
    const plan = this.plan();
    const pages = Math.ceil(this.cfg.socketMemMiB / 2);
    const r = await reserveHugepages({ sysfsRoot: this.o.sysfsRoot, numaNode, pages });
    const raised = r.after > r.before ? `raised nr_hugepages ${r.before} -> ${r.after}` : `nr_hugepages ${r.before} already had ${r.free} free`;
    this.log.info(
      { pages, numaNode, pool: r.pool, before: r.before, after: r.after, mountPoint: r.mountPoint, mounted: r.mounted },
      `reserved ${pages} x 2 MiB hugepages for OVS-DPDK on NUMA node ${numaNode} (${raised}${r.mounted ? `; mounted hugetlbfs on ${r.mountPoint}` : ''})`,
    );
    await this.ensureNetns();

    // a fresh database on every start: the agent's config and netplugins' records are the truth
    mkdirSync(this.runDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.socketDir, { recursive: true, mode: 0o755 });
    for (const f of ['conf.db', '.conf.db.~lock~', 'db.sock', 'ovsdb-server.ctl', 'ovs-vswitchd.ctl']) rmSync(join(this.runDir, f), { force: true });
    await run(['ovsdb-tool', 'create', join(this.runDir, 'conf.db'), OVS_SCHEMA]);
    const f = (n: string) => join(this.runDir, n);
    const ovsdb = this.spawnChild('ovsdb-server', [
      'ovsdb-server', f('conf.db'), `--remote=punix:${f('db.sock')}`, `--pidfile=${f('ovsdb-server.pid')}`,
      `--unixctl=${f('ovsdb-server.ctl')}`, `--log-file=${f('ovsdb-server.log')}`, '-vconsole:err',
    ]);
    const ovsdbGone = ovsdb.exited.then((how) => `ovsdb-server exited (${how})${ovsdb.stderr() ? `: ${ovsdb.stderr()}` : this.tailOf('ovsdb-server')}`);
    await this.until('ovsdb-server to answer', deadline, ovsdbGone, async () => existsSync(f('db.sock')) && (await this.vsctl('--no-wait', 'init'), true));
    const other = ovsSetOtherConfigArgs(plan, { socketLimit: true, extraEalArgs: ['--no-pci', ...this.cfg.ealArgs], pmdMaxSleepUs: this.cfg.pmdMaxSleepUs, db: this.db });
    await run([...other.slice(0, 2), '--timeout=10', ...other.slice(2)]);
    // vhost-iommu-support: a tenant VM with a virtual IOMMU gives its vhost-user NICs iommu_platform (DPDK on vfio-pci
    // in the guest); the switch then translates the guest's addresses through vhost IOTLB messages. Read at DPDK init.
    await this.vsctl('--no-wait', 'set', 'Open_vSwitch', '.', `other_config:vhost-sock-dir=${this.socketDir}`, 'other_config:vhost-iommu-support=true');

    const vswitchd = this.spawnChild('ovs-vswitchd', [
      this.cfg.vswitchdBinary, this.db, `--pidfile=${f('ovs-vswitchd.pid')}`, `--unixctl=${f('ovs-vswitchd.ctl')}`,
      `--log-file=${f('ovs-vswitchd.log')}`, '-vconsole:err',
    ]);
    const vswitchdGone = Promise.race([
      ovsdbGone,
      vswitchd.exited.then((how) => `ovs-vswitchd exited (${how})${this.tailOf('ovs-vswitchd') || (vswitchd.stderr() ? `: ${vswitchd.stderr()}` : '')}`),
    ]);
    await this.until('DPDK to initialise in ovs-vswitchd', deadline, vswitchdGone, async () => (await this.vsctl('get', 'Open_vSwitch', '.', 'dpdk_initialized')).trim() === 'true');

    for (const b of this.bridges.values()) {
      const add = ovsAddBridgeArgs(b.bridge, this.db);
      await run([...add.slice(0, 2), '--timeout=30', ...add.slice(2)]);
      if (b.uplink) {
        await this.ensureUplink(b);
        const up = ovsAddUplinkArgs(b.vlan !== undefined ? { bridge: b.bridge, port: b.uplink.port, vlan: b.vlan } : { bridge: b.bridge, port: b.uplink.port }, this.db);
        await run([...up.slice(0, 2), '--timeout=30', ...up.slice(2)]);
      }
    }
    if (this.o.restorePorts) {
      const { restored, failed } = await this.o.restorePorts(this.db);
      if (restored.length || failed.length) this.log.info({ restored, failed }, `re-created ${restored.length} tenant port(s) from their records`);
      for (const x of failed) this.log.error({ port: x.portName }, `tenant port ${x.portName} could not be re-created: ${x.error}`);
    }
  }

  private ip(args: string[], netns?: string): Promise<string> {
    return run(netns ? ['ip', '-n', netns, ...args] : ['ip', ...args]);
  }

  private async netnsExists(ns: string): Promise<boolean> {
    return existsSync(`/run/netns/${ns}`);
  }

  private loadMade(): void {
    try {
      const m = JSON.parse(readFileSync(join(this.runDir, 'made.json'), 'utf8')) as { netns?: string[]; links?: string[] };
      for (const n of m.netns ?? []) if (!this.madeNetns.includes(n)) this.madeNetns.push(n);
      for (const l of m.links ?? []) if (!this.madeLinks.includes(l)) this.madeLinks.push(l);
    } catch {
      /* none yet */
    }
  }

  private saveMade(): void {
    mkdirSync(this.runDir, { recursive: true, mode: 0o700 });
    writeFileSync(join(this.runDir, 'made.json'), JSON.stringify({ netns: this.madeNetns, links: this.madeLinks }));
  }

  private async ensureNetns(): Promise<void> {
    this.loadMade();
    const want = [this.cfg.netns, ...Object.values(this.cfg.uplinks).map((u) => (u.kind === 'veth' ? u.netns : undefined))];
    for (const ns of want) {
      if (!ns || (await this.netnsExists(ns))) continue;
      await run(['ip', 'netns', 'add', ns]);
      this.madeNetns.push(ns);
      this.saveMade();
      await this.ip(['link', 'set', 'lo', 'up'], ns);
      this.log.info({ netns: ns }, `created network namespace ${ns}`);
    }
  }

  private async linkExists(name: string, netns?: string): Promise<boolean> {
    return this.ip(['link', 'show', 'dev', name], netns).then(
      () => true,
      () => false,
    );
  }

  /** The uplink link exists in the switch's namespace and is up (a veth is created; a NIC is moved in). */
  private async ensureUplink(b: BridgePlan): Promise<void> {
    const u = b.uplink!;
    const ns = this.cfg.netns;
    if (u.kind === 'veth') {
      if (!(await this.linkExists(u.port, ns))) {
        if (await this.linkExists(u.peerName, u.netns)) throw new Error(`uplink of ${b.network}: ${u.peerName} already exists in netns ${u.netns}`);
        const tmp = `vp${short(`${b.bridge}${this.runDir}`, 10)}`;
        await run(['ip', 'link', 'add', u.port, ...(ns ? ['netns', ns] : []), 'type', 'veth', 'peer', 'name', tmp, 'netns', u.netns]);
        await this.ip(['link', 'set', tmp, 'name', u.peerName], u.netns);
        await this.ip(['link', 'set', u.peerName, 'up'], u.netns);
        this.madeLinks.push(u.port);
        this.saveMade();
        this.log.info({ network: b.network, port: u.port, peer: `${u.netns}/${u.peerName}` }, 'uplink veth created');
      }
    } else if (ns && !(await this.linkExists(u.port, ns))) {
      if (!(await this.linkExists(u.port))) throw new Error(`uplink of ${b.network}: no interface ${u.port} on this node`);
      await this.ip(['link', 'set', u.port, 'netns', ns]);
      this.log.info({ network: b.network, nic: u.port, netns: ns }, 'uplink NIC moved into the switch namespace');
    } else if (!ns && !(await this.linkExists(u.port))) {
      throw new Error(`uplink of ${b.network}: no interface ${u.port} on this node`);
    }
    await this.ip(['link', 'set', u.port, 'up'], ns);
  }

  private async killChildren(): Promise<void> {
    const kids = this.children;
    this.children = [];
    const ctl = (n: string) => join(this.runDir, `${n}.ctl`);
    // ovs-vswitchd first, with --cleanup so it removes its taps; then the database
    for (const name of ['ovs-vswitchd', 'ovsdb-server']) {
      const k = kids.find((c) => c.name === name);
      if (!k || k.child.exitCode !== null || k.child.signalCode !== null) continue;
      await run(['ovs-appctl', '-t', ctl(name), '--timeout=5', 'exit', ...(name === 'ovs-vswitchd' ? ['--cleanup'] : [])], 8000).catch(() => undefined);
      const done = await Promise.race([k.exited.then(() => true), sleep(5000).then(() => false)]);
      if (!done) {
        k.child.kill('SIGKILL');
        await k.exited;
      }
    }
    for (const k of kids) {
      if (k.child.exitCode === null && k.child.signalCode === null) {
        k.child.kill('SIGKILL');
        await k.exited;
      }
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.killChildren();
    await this.loop?.catch(() => undefined);
    await this.killChildren();
    this.loadMade();
    for (const l of this.madeLinks.splice(0)) await this.ip(['link', 'del', l], this.cfg.netns).catch(() => undefined);
    for (const ns of this.madeNetns.splice(0).reverse()) await run(['ip', 'netns', 'del', ns]).catch(() => undefined);
    rmSync(join(this.runDir, 'made.json'), { force: true });
    this.log.info({ runDir: this.runDir }, 'OVS-DPDK stopped');
  }
}
