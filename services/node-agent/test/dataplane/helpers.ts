// A real OVS-DPDK switch of the node agent for tests: its own state folder, its own network namespaces, stopped in after().
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { execFile, spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { DeviceLocks, RecordStore, VhostUserPlugin } from '@edgenfv/netplugins';
import { parseConfig, type NodeAgentConfig } from '../../src/config.js';
import { createSwitches } from '../../src/dataplane/index.js';
import { reserveHugepages } from '../../src/dataplane/hugepages.js';
import type { OvsDpdkSwitch } from '../../src/dataplane/ovs-dpdk.js';

export function sh(argv: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(argv[0]!, argv.slice(1), { timeout: 60_000 }, (err, out, errOut) => (err ? reject(new Error(`${argv.join(' ')}: ${errOut || err.message}`)) : resolve(out))),
  );
}

export interface TestSwitch {
  /** The switch (a test may replace it by a new one from the same config, as a restarted agent makes). */
  sw: OvsDpdkSwitch;
  cfg: Readonly<NodeAgentConfig>;
  stateDir: string;
  /** The switch's network namespace and the provider's (the uplink's far end is `eth0` there). */
  netns: string;
  provider: string;
  vhostuser: VhostUserPlugin;
  vsctl(...args: string[]): Promise<string>;
  logs: string[];
  stop(): Promise<void>;
}

/** Collects the switch's log lines (pino JSON) so a test can assert on them. */
function memoryLogger(lines: string[]): Logger {
  return pino({ level: 'info' }, { write: (s: string) => void lines.push(s) });
}

/**
 * Hugepages for the tests that run at once (npm test runs two files in parallel): each switch reserves its own 128
 * pages right before DPDK takes them, so two reservations could both count the same free pages. A shared margin,
 * made before, keeps them apart (raised only, as the switch does).
 */
export async function reserveTestHugepages(): Promise<void> {
  await reserveHugepages({ sysfsRoot: '/sys', numaNode: 0, pages: 384 });
}

export async function startTestSwitch(ovs: Record<string, unknown> = {}, vlan: number | undefined = 100): Promise<TestSwitch> {
  await reserveTestHugepages();
  const id = randomBytes(3).toString('hex');
  const stateDir = mkdtempSync(join(tmpdir(), 'na-ovs-'));
  const netns = `enfvt-ovs-${id}`;
  const provider = `enfvt-prov-${id}`;
  const cfg = parseConfig({
    nodeId: 'ovs-test',
    stateDir,
    networks: [{ name: 'prov', cidr: '10.77.0.0/24', ...(vlan !== undefined ? { vlan } : {}), dataplane: 'ovs-dpdk' }, { name: 'mgmt', cidr: '10.78.0.0/24' }],
    dataplanes: [
      {
        kind: 'ovs-dpdk',
        numaNode: 0,
        ovs: { socketMemMiB: 256, pmdMaxSleepUs: 10_000, netns, startTimeoutMs: 120_000, uplinks: { prov: { veth: { netns: provider, name: 'eth0' } } }, ...ovs },
      },
    ],
  });
  const logs: string[] = [];
  const sw = createSwitches(cfg, memoryLogger(logs))[0] as OvsDpdkSwitch;
  const base = join(stateDir, 'netplugins');
  const vhostuser = new VhostUserPlugin({ records: new RecordStore(join(base, 'records')), locks: new DeviceLocks(join(base, 'locks')) });
  const t: TestSwitch = {
    sw,
    cfg,
    stateDir,
    netns,
    provider,
    vhostuser,
    logs,
    vsctl: (...args) => sh(['ovs-vsctl', `--db=${t.sw.db}`, '--timeout=30', ...args]).then((s) => s.trim()),
    stop: async () => {
      await t.sw.stop();
      for (const ns of [netns, provider]) await sh(['ip', 'netns', 'del', ns]).catch(() => undefined);
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
  return t;
}

export function pidFile(t: TestSwitch, name: 'ovs-vswitchd' | 'ovsdb-server'): number {
  return Number(readFileSync(join(t.sw.runDir, `${name}.pid`), 'utf8').trim());
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 180_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// Counts the frames an interface receives, by VLAN id (the kernel moves a tag into PACKET_AUXDATA; this kernel has
// no 8021q module for a VLAN sub-interface). Prints `{"total": n, "byVlan": {"100": n}}`.
const VLAN_RX_PY = `
import socket, struct, sys, time, json
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.setsockopt(263, 8, 1)
s.settimeout(0.2)
end = time.time() + float(sys.argv[2]); tags = {}; n = 0
while time.time() < end:
    try:
        data, anc, flags, addr = s.recvmsg(2048, socket.CMSG_SPACE(20))
    except socket.timeout:
        continue
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    n += 1
    vid = 'untagged'
    for lvl, typ, d in anc:
        if lvl == 263 and typ == 8:
            st, ln, sn, mac, net, tci, tpid = struct.unpack('IIIHHHH', d[:20])
            if st & (1 << 4): vid = str(tci & 0xfff)
    tags[vid] = tags.get(vid, 0) + 1
print(json.dumps({"total": n, "byVlan": tags}))
`;

export async function countFrames(netns: string, ifName: string, seconds: number): Promise<{ total: number; byVlan: Record<string, number> }> {
  return JSON.parse(await sh(['ip', 'netns', 'exec', netns, 'python3', '-c', VLAN_RX_PY, ifName, String(seconds)])) as { total: number; byVlan: Record<string, number> };
}

/**
 * A DPDK virtio-user front end (what QEMU is to the switch: the vhost-user server) sending 64-byte broadcast
 * frames: `dpdk-testpmd --in-memory --single-file-segments` (virtio-user needs both for its memory table).
 * `--stats-period` keeps it running with stdin on /dev/null; it ignores SIGTERM, so stop() kills it.
 */
/** `mac`: the sender's source MAC: a guarded (anti-spoofing) port lets only its own MAC leave it. */
export function startVirtioUserSender(socketPath: string, mac: string): { stop(): Promise<void>; output(): string } {
  rmSync(socketPath, { force: true });
  const child = spawn(
    'dpdk-testpmd',
    ['-l', '0-1', '-m', '64', '--in-memory', '--single-file-segments', '--no-pci', `--vdev=net_virtio_user0,path=${socketPath},server=1,queues=1,mac=${mac}`,
      '--', '--forward-mode=txonly', '--auto-start', '--txpkts=64', '--eth-peer=0,ff:ff:ff:ff:ff:ff', '--stats-period=3600', '--total-num-mbufs=4096'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-4000)));
  child.stderr!.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-4000)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    output: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
      rmSync(socketPath, { force: true });
    },
  };
}
