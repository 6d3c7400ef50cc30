// A real OVS-DPDK switch of the node agent for tests: its own state folder, its own network namespaces, stopped in after().
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { DeviceLocks, RecordStore, VhostUserPlugin } from '@edgenfv/netplugins';
import { parseConfig, type NodeAgentConfig } from '../../src/config.js';
import { createSwitches } from '../../src/dataplane/index.js';
import type { OvsDpdkSwitch } from '../../src/dataplane/ovs-dpdk.js';

export function sh(argv: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(argv[0]!, argv.slice(1), { timeout: 60_000 }, (err, out, errOut) => (err ? reject(new Error(`${argv.join(' ')}: ${errOut || err.message}`)) : resolve(out))),
  );
}

export interface TestSwitch {
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

export function startTestSwitch(ovs: Record<string, unknown> = {}, vlan: number | undefined = 100): TestSwitch {
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
  return {
    sw,
    cfg,
    stateDir,
    netns,
    provider,
    vhostuser,
    logs,
    vsctl: (...args) => sh(['ovs-vsctl', `--db=${sw.db}`, '--timeout=30', ...args]).then((s) => s.trim()),
    stop: async () => {
      await sw.stop();
      for (const ns of [netns, provider]) await sh(['ip', 'netns', 'del', ns]).catch(() => undefined);
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
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
