/**
 * A virtual edge site on one machine (docs/site.md): N real node agents, each in its own network namespace standing
 * in for a host (own node id, state folder, cgroup parent, uid range, NATS credentials), each with an uplink veth
 * into one Linux bridge on the host that stands for the site's switch (no VLAN filtering: tagged frames pass
 * through), and nats-server (JWT auth, a principal per role) plus one scheduler on the host. NATS listens on the
 * bridge's address, which every namespace reaches over its uplink.
 *
 * Used by `npm run demo:site` (demo-site.ts) and by the end-to-end tests where more than one real node matters
 * (test/test/site.test.ts). Needs root. `teardown()` removes every netns, veth, bridge, cgroup, process and folder
 * it made, also after a node agent was SIGKILLed (its tenant VMs are found from its sandbox records).
 */
import type { ChildProcess } from 'node:child_process';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, credsAuthenticator, type NatsConnection } from 'nats';
import { createTrust, issueRole, issuerConfig, spawnTied, startNatsServer, type NatsServerHandle, type Role, type TrustBundle } from '@edgenfv/nats-launcher';
import { buildGuestImage } from '@edgenfv/node-agent/internal/guest/image-builder';
import { Api, REPO_ROOT, startScheduler, type SchedulerProc } from './harness.js';

export const NODE_AGENT_MAIN = join(REPO_ROOT, 'services/node-agent/dist/src/main.js');
const CGROUP_ROOTS = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'];

export interface SiteOptions {
  nodes: number;
  /** Names of everything the site makes start with it (default `es` + 4 random hex digits; at most 8 characters). */
  prefix?: string;
  /** The scheduler's heartbeat grace (how long a silent node stays Ready). */
  heartbeatGraceMs?: number;
  heartbeatIntervalMs?: number;
  /** Merged into every node agent's config (its `guest` into the site's guest image settings). */
  nodeConfig?: Record<string, unknown>;
  /** Progress lines. */
  log?: (m: string) => void;
  /** Copy the services' logs to stderr. */
  echo?: boolean;
  /**
   * Tenant networks carried across the site's nodes (docs/site.md "Tenant networks"): each gets a provider bridge on
   * the host, and in every node namespace the network's bridge with an uplink into it; the scheduler gets them as
   * its `networks`. `prefix`: a /24 (`10.61.1` -> 10.61.1.0/24, pool .10-.99, hosts on .2-.9).
   */
  networks?: SiteNetwork[];
}

export interface SiteNetwork {
  name: string;
  prefix: string;
}

export interface SiteNode {
  id: string;
  index: number;
  netns: string;
  /** The host end of its uplink (a port of the site bridge); the namespace's end is `uplink0`. */
  hostVeth: string;
  addr: string;
  stateDir: string;
  cgroupParent: string;
  uidBase: number;
  configFile: string;
  child?: ChildProcess;
  logs: string[];
}

export interface VirtualSite {
  prefix: string;
  dir: string;
  bridge: string;
  hostAddr: string;
  natsUrl: string;
  nodes: SiteNode[];
  nats: NatsServerHandle;
  scheduler: SchedulerProc;
  /** Connected as the operator principal. */
  nc: NatsConnection;
  api: Api;
  /** The operator's connect file content (`edgenfv` CLI: `EDGENFV_CONNECT=<file>`): servers, creds text, inbox prefix. */
  connect: { servers: string[]; creds: string; inboxPrefix: string };
  node(id: string): SiteNode;
  /** The host-side provider bridge of each tenant network (the site switch's segment for it). */
  providerBridges: Record<string, string>;
  /**
   * A provider host on a tenant network: namespace `<prefix>-<name>` with `eth0` at `<net prefix>.<hostNo>/24` on the
   * network's provider bridge (removed by teardown). Returns the namespace.
   */
  addHost(name: string, network: string, hostNo?: number): string;
  /** Waits until nodes.list shows every (or the given) node Ready. */
  waitReady(ids?: string[], timeoutMs?: number): Promise<void>;
  /** SIGKILL the node agent's process (its VMs keep running, as on a host whose agent crashed). */
  killAgent(id: string): Promise<void>;
  /** Starts the node agent again (same config: it re-adopts or, once fenced, tears down what it no longer owns). */
  startAgent(id: string): Promise<void>;
  /** Stops nats-server (SIGTERM) and, `downMs` later, starts it again on the same address, trust and store. */
  restartNats(downMs: number): Promise<void>;
  /** Starts one more scheduler replica on the site's scheduler config (HA); the caller stops it. */
  startScheduler(instanceId: string): Promise<SchedulerProc>;
  /** Stops everything; `clean` is true when nothing the site made is left (`leftovers` names what is). */
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

function netnsList(): string[] {
  return sh('ip', ['netns', 'list'], true)
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter(Boolean);
}

function linkExists(name: string): boolean {
  return spawnSync('ip', ['link', 'show', 'dev', name], { stdio: 'ignore' }).status === 0;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The tenant VMs (QEMU pid, sandbox netns) a node agent's records name. */
function sandboxLeftovers(stateDir: string): { pids: number[]; netns: string[] } {
  const dir = join(stateDir, 'sandboxes');
  const out = { pids: [] as number[], netns: [] as string[] };
  if (!existsSync(dir)) return out;
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.json'))) {
    try {
      const r = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { netns?: unknown; vm?: { pid?: unknown } };
      if (typeof r.vm?.pid === 'number') out.pids.push(r.vm.pid);
      if (typeof r.netns === 'string') out.netns.push(r.netns);
    } catch {
      /* being rewritten */
    }
  }
  return out;
}

function cgroupDirs(parent: string): string[] {
  return CGROUP_ROOTS.map((r) => join(r, parent)).filter((d) => existsSync(d));
}

/** Kills every process left in a cgroup subtree (cgroup v2 `cgroup.kill`) and removes its folders bottom-up. */
function removeCgroup(dir: string): void {
  try {
    if (existsSync(join(dir, 'cgroup.kill'))) writeFileSync(join(dir, 'cgroup.kill'), '1');
  } catch {
    /* older kernel */
  }
  const rm = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) rm(join(d, e.name));
    for (let i = 0; i < 50; i++) {
      try {
        rmdirSync(d);
        return;
      } catch {
        spawnSync('sleep', ['0.1']);
      }
    }
  };
  try {
    rm(dir);
  } catch {
    /* reported as a leftover */
  }
}

/**
 * Sends 802.1Q frames (VLAN `vid`) out of one node namespace's uplink and says which VLAN id they arrived with on
 * another's (raw AF_PACKET sockets through Debian's python3: this kernel may have no 8021q module for VLAN
 * devices). Resolves with the VLAN id seen, or null when nothing arrived within 5 s.
 */
export async function vlanProbe(fromNs: string, toNs: string, vid: number): Promise<number | null> {
  const marker = randomBytes(8).toString('hex');
  const recv = `
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(('uplink0', 0))
s.setsockopt(263, 8, 1)  # SOL_PACKET, PACKET_AUXDATA
s.settimeout(0.5)
print('ready', flush=True)
end = time.time() + 5
while time.time() < end:
    try:
        data, anc, _, _ = s.recvmsg(2048, socket.CMSG_SPACE(20))
    except socket.timeout:
        continue
    if ${JSON.stringify(marker)}.encode() not in data:
        continue
    vid = None
    for lvl, typ, d in anc:
        if lvl == 263 and typ == 8 and len(d) >= 16:
            status, _, _, _, _, tci = struct.unpack('IIIHHH', d[:18])
            if status & 0x10:
                vid = tci & 0xfff
    if vid is None and data[12:14] == b'\\x81\\x00':
        vid = struct.unpack('!H', data[14:16])[0] & 0xfff
    print('vid', vid if vid is not None else 0, flush=True)
    sys.exit(0)
print('none', flush=True)
`;
  const send = `
import socket, struct
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('uplink0', 0))
src = s.getsockname()[4]
frame = b'\\xff' * 6 + src + struct.pack('!HHH', 0x8100, ${vid}, 0x88b5) + ${JSON.stringify(marker)}.encode() + b'\\x00' * 30
for _ in range(3):
    s.send(frame)
`;
  const rx = spawn('ip', ['netns', 'exec', toNs, '/usr/bin/python3', '-c', recv], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const done = new Promise<void>((r) => rx.once('exit', () => r()));
  await new Promise<void>((resolve) => {
    rx.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    void done.then(() => resolve());
  });
  sh('ip', ['netns', 'exec', fromNs, '/usr/bin/python3', '-c', send]);
  await done;
  const m = /vid (\d+)/.exec(out);
  return m ? Number(m[1]) : null;
}

export async function startSite(opts: SiteOptions): Promise<VirtualSite> {
  if (process.getuid?.() !== 0) throw new Error('a virtual site needs root (network namespaces, veths, a bridge, QEMU isolation)');
  if (!Number.isInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > 16) throw new Error(`nodes: an integer from 1 to 16, not ${opts.nodes}`);
  const prefix = opts.prefix ?? `es${randomBytes(2).toString('hex')}`;
  if (!/^[a-z][a-z0-9]{0,7}$/.test(prefix)) throw new Error(`prefix: 1-8 lower-case letters and digits, starting with a letter (${JSON.stringify(prefix)})`);
  const log = opts.log ?? ((): void => undefined);
  const dir = mkdtempSync(join(tmpdir(), `edgenfv-site-${prefix}-`));
  chmodSync(dir, 0o711); // the tenant VMs' QEMUs (own uids) go through to their run folders
  const bridge = `${prefix}-br`;
  // a /24 of 10.200-249.x picked at random, so that sites of different sessions do not overlap
  const net = `10.${200 + randomBytes(1)[0]! % 50}.${randomBytes(1)[0]!}`;
  const hostAddr = `${net}.1`;
  const nodes: SiteNode[] = [];
  for (let i = 1; i <= opts.nodes; i++) {
    nodes.push({
      id: `${prefix}-node${i}`,
      index: i,
      netns: `${prefix}-n${i}`,
      hostVeth: `${prefix}-h${i}`,
      addr: `${net}.${10 + i}`,
      stateDir: join(dir, `node${i}`),
      cgroupParent: `edgenfv-${prefix}-n${i}`,
      uidBase: 430_000 + (parseInt(randomBytes(2).toString('hex'), 16) % 500) * 1000 + i * 100,
      configFile: join(dir, `node${i}.json`),
      logs: [],
    });
  }
  let nats: NatsServerHandle | undefined;
  let trustForRestart: TrustBundle | undefined;
  let scheduler: SchedulerProc | undefined;
  let nc: NatsConnection | undefined;
  let operatorCreds: { credsFile: string; inboxPrefix: string };
  const networks = opts.networks ?? [];
  for (const n of networks) if (!/^[a-z][a-z0-9-]{0,9}$/.test(n.name) || !/^\d+\.\d+\.\d+$/.test(n.prefix)) throw new Error(`networks: bad network ${JSON.stringify(n)}`);
  /** network name -> host provider bridge; the network's bridge in each node namespace is `enfv-<name>`. */
  const providerBridges: Record<string, string> = Object.fromEntries(networks.map((n, k) => [n.name, `${prefix}-p${k}`]));
  const nodeBridge = (name: string): string => `enfv-${name}`.slice(0, 15);
  const hosts: string[] = [];

  const teardown = async (): Promise<{ clean: boolean; leftovers: string[] }> => {
    const leftovers: string[] = [];
    // node agents: stop each with its VMs (EDGENFV_STOP_VMS_ON_EXIT); one that was killed is started again first,
    // so that it tears down its sandboxes from its own records
    for (const n of nodes) {
      if (!n.child || n.child.exitCode !== null || n.child.signalCode !== null) {
        if (sandboxLeftovers(n.stateDir).pids.some(alive) && nats) await startAgent(n).catch(() => undefined);
      }
    }
    await Promise.all(nodes.map((n) => stopAgent(n, 180_000)));
    await nc?.close().catch(() => undefined);
    await scheduler?.stop().catch(() => undefined);
    await nats?.stop().catch(() => undefined);
    for (const n of nodes) {
      // whatever a crashed agent left: its VMs and their namespaces, by its records
      const rest = sandboxLeftovers(n.stateDir);
      for (const pid of rest.pids.filter(alive)) {
        leftovers.push(`QEMU pid ${pid} of ${n.id} (killed)`);
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      for (const d of cgroupDirs(n.cgroupParent)) removeCgroup(d);
      for (const ns of rest.netns) if (netnsList().includes(ns)) sh('ip', ['netns', 'del', ns], true);
      const pids = sh('ip', ['netns', 'pids', n.netns], true).split('\n').filter(Boolean).map(Number);
      for (const pid of pids) {
        leftovers.push(`pid ${pid} in ${n.netns} (killed)`);
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      sh('ip', ['netns', 'del', n.netns], true);
      if (linkExists(n.hostVeth)) sh('ip', ['link', 'del', n.hostVeth], true);
    }
    if (linkExists(bridge)) sh('ip', ['link', 'del', bridge], true);
    for (const ns of hosts) sh('ip', ['netns', 'del', ns], true);
    for (const b of Object.values(providerBridges)) if (linkExists(b)) sh('ip', ['link', 'del', b], true);
    rmSync(dir, { recursive: true, force: true });
    // verify
    const nsNow = netnsList();
    for (const n of nodes) {
      if (nsNow.includes(n.netns)) leftovers.push(`netns ${n.netns}`);
      if (linkExists(n.hostVeth)) leftovers.push(`veth ${n.hostVeth}`);
      for (const d of cgroupDirs(n.cgroupParent)) leftovers.push(`cgroup ${d}`);
      if (n.child?.pid && alive(n.child.pid)) leftovers.push(`node agent pid ${n.child.pid}`);
    }
    for (const ns of nsNow) if (ns.startsWith(`${prefix}-`)) leftovers.push(`netns ${ns}`);
    if (linkExists(bridge)) leftovers.push(`bridge ${bridge}`);
    for (const b of Object.values(providerBridges)) if (linkExists(b)) leftovers.push(`bridge ${b}`);
    for (const l of sh('ip', ['-o', 'link'], true).split('\n')) {
      const m = /^\d+: ([^:@]+)/.exec(l);
      if (m && m[1]!.startsWith(`${prefix}-`)) leftovers.push(`link ${m[1]}`);
    }
    if (nats && alive(nats.pid)) leftovers.push(`nats-server pid ${nats.pid}`);
    if (scheduler?.child.pid && alive(scheduler.child.pid)) leftovers.push(`scheduler pid ${scheduler.child.pid}`);
    if (existsSync(dir)) leftovers.push(`folder ${dir}`);
    return { clean: leftovers.length === 0, leftovers };
  };

  const startAgent = async (n: SiteNode): Promise<void> => {
    n.logs.length = 0;
    // nsenter, not `ip netns exec`: the agent keeps the host's mount namespace, so the sandbox namespaces it adds
    // (`ip netns add`) stay visible to the host and to its own next start
    const child = spawnTied('nsenter', [`--net=/run/netns/${n.netns}`, '--', process.execPath, NODE_AGENT_MAIN], {
      env: { ...process.env, EDGENFV_NODE_CONFIG: n.configFile, EDGENFV_STOP_VMS_ON_EXIT: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    n.child = child;
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      const onData = (d: Buffer): void => {
        if (opts.echo) process.stderr.write(d);
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          n.logs.push(line);
          if (n.logs.length > 2000) n.logs.splice(0, 1000);
          if (line.includes('node agent ready')) resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code, signal) => reject(new Error(`node agent ${n.id} exited (${code ?? signal}) while starting:\n${n.logs.slice(-15).join('\n')}`)));
    });
  };

  const stopAgent = async (n: SiteNode, graceMs: number): Promise<void> => {
    const child = n.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };

  try {
    log(`site ${prefix}: bridge ${bridge} ${hostAddr}/24, ${opts.nodes} node namespace(s), state under ${dir}`);
    // the site's switch: a plain Linux bridge (no vlan_filtering: 802.1Q frames pass through untouched)
    sh('ip', ['link', 'add', bridge, 'type', 'bridge']);
    sh('ip', ['addr', 'add', `${hostAddr}/24`, 'dev', bridge]);
    sh('ip', ['link', 'set', bridge, 'up']);
    for (const n of nodes) {
      sh('ip', ['netns', 'add', n.netns]);
      sh('ip', ['-n', n.netns, 'link', 'set', 'lo', 'up']);
      sh('ip', ['link', 'add', n.hostVeth, 'type', 'veth', 'peer', 'name', 'uplink0', 'netns', n.netns]);
      sh('ip', ['link', 'set', n.hostVeth, 'master', bridge]);
      sh('ip', ['link', 'set', n.hostVeth, 'up']);
      sh('ip', ['-n', n.netns, 'addr', 'add', `${n.addr}/24`, 'dev', 'uplink0']);
      sh('ip', ['-n', n.netns, 'link', 'set', 'uplink0', 'up']);
      sh('ip', ['-n', n.netns, 'route', 'add', 'default', 'via', hostAddr]);
    }
    // tenant networks: a provider bridge per network on the host (this kernel has no 8021q, no bridge VLAN filtering
    // and no tc classifiers, so a network is its own segment rather than a VLAN of the site bridge); in each node
    // namespace the network's bridge, with a veth uplink into the provider bridge
    networks.forEach((net, k) => {
      const pb = providerBridges[net.name]!;
      sh('ip', ['link', 'add', pb, 'type', 'bridge']);
      sh('ip', ['link', 'set', pb, 'up']);
      for (const n of nodes) {
        const br = nodeBridge(net.name);
        const hostEnd = `${prefix}-${n.index}p${k}`;
        sh('ip', ['-n', n.netns, 'link', 'add', br, 'type', 'bridge']);
        sh('ip', ['-n', n.netns, 'link', 'set', br, 'up']);
        sh('ip', ['link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', `prov${k}`, 'netns', n.netns]);
        sh('ip', ['link', 'set', hostEnd, 'master', pb, 'up']);
        sh('ip', ['-n', n.netns, 'link', 'set', `prov${k}`, 'master', br, 'up']);
      }
    });

    // NATS trust and a principal per role: the operator (this process), the scheduler, one per node agent
    const auth = join(dir, 'nats-auth');
    mkdirSync(auth, { mode: 0o700 });
    const trust: TrustBundle = await createTrust();
    trustForRestart = trust;
    const creds = async (file: string, role: Role): Promise<{ credsFile: string; inboxPrefix: string }> => {
      const u = await issueRole(trust, role);
      writePrivate(join(auth, file), u.creds);
      return { credsFile: join(auth, file), inboxPrefix: u.inboxPrefix };
    };
    const operator = await creds('operator.creds', { kind: 'operator' });
    operatorCreds = operator;
    const schedulerCreds = await creds('scheduler.creds', { kind: 'scheduler', id: prefix });
    const issuerFile = join(auth, 'issuer.json');
    writePrivate(issuerFile, JSON.stringify(await issuerConfig(trust)));

    nats = await startNatsServer({ storeDir: join(dir, 'nats'), host: hostAddr, jwtAuth: trust, serverName: `edgenfv-${prefix}` });
    log(`nats-server ${nats.url} (JWT auth)`);
    const schedConfig = join(dir, 'scheduler.json');
    writePrivate(
      schedConfig,
      JSON.stringify({
        networks: networks.map((n) => ({ name: n.name, cidr: `${n.prefix}.0/24`, range: { start: `${n.prefix}.10`, end: `${n.prefix}.99` }, bridge: nodeBridge(n.name) })),
        nats: { servers: [nats.url], ...schedulerCreds },
        credentials: { issuerFile },
        heartbeatGraceMs: opts.heartbeatGraceMs ?? 5000,
        // several TCG boots at once on a small machine
        startTimeoutMs: 900_000,
      }),
    );
    scheduler = await startScheduler({ EDGENFV_CONFIG: schedConfig });
    if (opts.echo) scheduler.child.stdout?.on('data', (d: Buffer) => process.stderr.write(d));
    log('scheduler serving');

    // the guest image, built (or found in the cache) once for every node
    log('guest image (the first build downloads a kernel package: minutes)');
    const image = await buildGuestImage({});
    for (const n of nodes) {
      mkdirSync(n.stateDir, { recursive: true, mode: 0o711 });
      const nodeCreds = await creds(`node-${n.id}.creds`, { kind: 'node', nodeId: n.id });
      writePrivate(
        n.configFile,
        JSON.stringify({
          nodeId: n.id,
          labels: { 'edgenfv.io/site': prefix, 'edgenfv.io/host': `host${n.index}` },
          stateDir: n.stateDir,
          nats: { url: nats.url, ...nodeCreds },
          // its own loopback: the same port in every namespace
          metrics: { host: '127.0.0.1', port: 9464 },
          heartbeatIntervalMs: opts.heartbeatIntervalMs ?? 1000,
          qemu: { accel: 'tcg', maxVcpus: 2, maxMemoryMiB: 2048 },
          isolation: { uidBase: n.uidBase, uidCount: 100, cgroupParent: n.cgroupParent },
          ...opts.nodeConfig,
          // the site's image; the caller's guest settings (liveness, debug console) beside it
          guest: { kernelPath: image.kernelPath, initrdPath: image.initrdPath, systemDiskPath: image.systemDisk.path, ...(opts.nodeConfig?.guest as object | undefined) },
        }),
      );
    }
    await Promise.all(nodes.map((n) => startAgent(n)));
    log(`${nodes.length} node agent(s) started`);
    nc = await connect({ servers: nats.url, authenticator: credsAuthenticator(readFileSync(operator.credsFile)), inboxPrefix: operator.inboxPrefix });
  } catch (err) {
    const t = await teardown();
    if (!t.clean) log(`teardown after a failed start left: ${t.leftovers.join(', ')}`);
    throw err;
  }

  const api = new Api(nc);
  const byId = (id: string): SiteNode => {
    const n = nodes.find((x) => x.id === id);
    if (!n) throw new Error(`no node ${id} in site ${prefix}`);
    return n;
  };
  return {
    prefix,
    dir,
    bridge,
    hostAddr,
    natsUrl: nats.url,
    nodes,
    nats,
    scheduler,
    nc,
    api,
    connect: { servers: [nats.url], creds: readFileSync(operatorCreds.credsFile, 'utf8'), inboxPrefix: operatorCreds.inboxPrefix },
    node: byId,
    providerBridges,
    addHost(name, network, hostNo = 2) {
      const net = networks.find((x) => x.name === network);
      if (!net) throw new Error(`no network ${network} in site ${prefix}`);
      const ns = `${prefix}-${name}`;
      const hostEnd = `${prefix}-x${hosts.length}`;
      sh('ip', ['netns', 'add', ns]);
      hosts.push(ns);
      sh('ip', ['link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      sh('ip', ['link', 'set', hostEnd, 'master', providerBridges[network]!, 'up']);
      sh('ip', ['-n', ns, 'addr', 'add', `${net.prefix}.${hostNo}/24`, 'dev', 'eth0']);
      sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      return ns;
    },
    async waitReady(ids = nodes.map((n) => n.id), timeoutMs = 120_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const r = await api.ok<{ items: { id: string; health: string }[] }>('nfv.v1.admin.nodes.list');
        const ready = new Set(r.items.filter((n) => n.health === 'Ready').map((n) => n.id));
        if (ids.every((id) => ready.has(id))) return;
        if (Date.now() > until) throw new Error(`nodes not Ready after ${timeoutMs} ms: ${JSON.stringify(r.items.map((n) => [n.id, n.health]))}`);
        await new Promise((res) => setTimeout(res, 250));
      }
    },
    async killAgent(id) {
      const n = byId(id);
      const child = n.child;
      if (!child || child.exitCode !== null || child.signalCode !== null) throw new Error(`node agent ${id} is not running`);
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
    startAgent: (id) => startAgent(byId(id)),
    async restartNats(downMs) {
      const port = nats!.port;
      await nats!.stop();
      await new Promise((r) => setTimeout(r, downMs));
      nats = await startNatsServer({ storeDir: join(dir, 'nats'), host: hostAddr, port, jwtAuth: trustForRestart!, serverName: `edgenfv-${prefix}` });
    },
    startScheduler: (instanceId) => startScheduler({ EDGENFV_CONFIG: join(dir, 'scheduler.json'), EDGENFV_INSTANCE_ID: instanceId }),
    teardown,
  };
}
