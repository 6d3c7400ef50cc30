// A bare OVS-DPDK for the vhost-user back end's tests (the node agent runs the product's own switch; this is just
// enough of one): ovsdb-server + ovs-vswitchd-dpdk in a folder and a network namespace of their own, 128 MiB of
// hugepages, one netdev bridge. stop() removes everything.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { uniq } from './helpers.js';

export const OVS_VSWITCHD_DPDK = '/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk';

export interface TestOvs {
  db: string;
  bridge: string;
  vsctl(...args: string[]): string;
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Makes `pages` 2 MiB hugepages free (raising nr_hugepages only) and hugetlbfs mounted. */
function hugepages(pages: number): void {
  const pool = '/sys/kernel/mm/hugepages/hugepages-2048kB';
  const nr = Number(readFileSync(join(pool, 'nr_hugepages'), 'utf8'));
  const free = Number(readFileSync(join(pool, 'free_hugepages'), 'utf8'));
  if (free < pages) writeFileSync(join(pool, 'nr_hugepages'), String(nr + pages - free));
  if (!readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[2] === 'hugetlbfs')) {
    execFileSync('mkdir', ['-p', '/dev/hugepages']);
    execFileSync('mount', ['-t', 'hugetlbfs', 'nodev', '/dev/hugepages']);
  }
}

export async function startTestOvs(): Promise<TestOvs> {
  if (!existsSync(OVS_VSWITCHD_DPDK)) throw new Error(`${OVS_VSWITCHD_DPDK} is missing: apt-get install openvswitch-switch-dpdk (scripts/setup.sh)`);
  hugepages(256); // 64 for this switch, the rest a margin for the OVS-DPDK tests that run at once
  const dir = mkdtempSync(join(tmpdir(), 'np-ovs-'));
  const netns = uniq('npovs');
  const bridge = uniq('brnp');
  const db = `unix:${join(dir, 'db.sock')}`;
  const env = { ...process.env, OVS_RUNDIR: dir, OVS_DBDIR: dir, OVS_LOGDIR: dir, OVS_SYSCONFDIR: dir };
  const vsctl = (...args: string[]) => execFileSync('ovs-vsctl', [`--db=${db}`, '--timeout=30', ...args], { encoding: 'utf8', env }).trim();
  execFileSync('ip', ['netns', 'add', netns]);
  execFileSync('ovsdb-tool', ['create', join(dir, 'conf.db'), '/usr/share/openvswitch/vswitch.ovsschema']);
  const kids: ChildProcess[] = [];
  const run = (argv: string[]) => {
    const c = spawn('ip', ['netns', 'exec', netns, ...argv], { env, stdio: 'ignore' });
    kids.push(c);
    return c;
  };
  const stop = async () => {
    for (const c of kids.reverse()) {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGKILL');
        await new Promise((r) => c.once('exit', r));
      }
    }
    try {
      execFileSync('ip', ['netns', 'del', netns]);
    } catch {
      /* gone */
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    run(['ovsdb-server', join(dir, 'conf.db'), `--remote=punix:${join(dir, 'db.sock')}`, `--unixctl=${join(dir, 'ovsdb.ctl')}`, '-vconsole:off']);
    for (let i = 0; !existsSync(join(dir, 'db.sock')); i++) {
      if (i > 300) throw new Error('ovsdb-server did not come up');
      await sleep(100);
    }
    vsctl('--no-wait', 'init');
    vsctl('--no-wait', 'set', 'Open_vSwitch', '.', 'other_config:dpdk-init=true', 'other_config:dpdk-extra=--no-pci',
      'other_config:dpdk-socket-mem=128', 'other_config:dpdk-socket-limit=128', 'other_config:pmd-maxsleep=10000');
    run([OVS_VSWITCHD_DPDK, db, `--unixctl=${join(dir, 'vswitchd.ctl')}`, `--log-file=${join(dir, 'vswitchd.log')}`, '-vconsole:off']);
    for (let i = 0; vsctl('get', 'Open_vSwitch', '.', 'dpdk_initialized') !== 'true'; i++) {
      if (i > 600) throw new Error(`ovs-vswitchd did not initialise DPDK: ${readFileSync(join(dir, 'vswitchd.log'), 'utf8').slice(-1500)}`);
      await sleep(100);
    }
    vsctl('add-br', bridge, '--', 'set', 'Bridge', bridge, 'datapath_type=netdev');
    return { db, bridge, vsctl, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
