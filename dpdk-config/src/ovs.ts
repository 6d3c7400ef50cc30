/**
 * OVS-DPDK: the `Open_vSwitch . other_config` settings for a plan and the `ovs-vsctl` argument vectors that
 * apply them and add ports. Pure: nothing here runs ovs-vsctl; a caller passes the vectors to execFile.
 */
import { InvalidArgumentError, type FieldIssue } from '@edgenfv/contracts';
import { cpuMask } from './cpus.js';
import { socketMemMiB, type DataplanePlan } from './plan.js';

export interface OvsDpdkOptions {
  /** Also cap each NUMA node's memory (`dpdk-socket-limit`). */
  socketLimit?: boolean;
  /** Extra EAL args passed through `dpdk-extra`; iova-mode and in-memory from the plan are added here. */
  extraEalArgs?: string[];
  /** Longest an idle PMD thread sleeps, in microseconds (`pmd-maxsleep`, OVS 3.1; 0: busy-polls). */
  pmdMaxSleepUs?: number;
  /** The switch's ovsdb-server (`unix:/path/db.sock`): adds `--db=` to the ovs-vsctl argv; default ovs-vsctl's own. */
  db?: string;
}

/** `other_config` keys and values, in the order they are applied. */
export function renderOvsOtherConfig(plan: DataplanePlan, opts: OvsDpdkOptions = {}): Array<[string, string]> {
  const cfg: Array<[string, string]> = [['dpdk-init', 'true']];
  if (plan.memory.kind === 'hugepages') {
    const perNode = socketMemMiB(plan).join(',');
    cfg.push(['dpdk-socket-mem', perNode]);
    if (opts.socketLimit) cfg.push(['dpdk-socket-limit', perNode]);
    if (plan.memory.hugeDir) cfg.push(['dpdk-hugepage-dir', plan.memory.hugeDir]);
  }
  cfg.push(['dpdk-lcore-mask', cpuMask([plan.mainCpu.cpu])]);
  if (plan.workerCpus.length > 0) cfg.push(['pmd-cpu-mask', cpuMask(plan.workerCpus.map((w) => w.cpu))]);
  if (opts.pmdMaxSleepUs !== undefined) {
    if (!Number.isInteger(opts.pmdMaxSleepUs) || opts.pmdMaxSleepUs < 0 || opts.pmdMaxSleepUs > 10_000) {
      throw new InvalidArgumentError([{ field: 'pmdMaxSleepUs', message: 'must be an integer in 0..10000 (microseconds)' }]);
    }
    cfg.push(['pmd-maxsleep', String(opts.pmdMaxSleepUs)]);
  }
  const extra: string[] = [];
  if (plan.memory.kind === 'no-huge') extra.push('--no-huge', '-m', String(plan.memory.memoryMiB));
  if (plan.inMemory) extra.push('--in-memory');
  if (plan.iovaMode) extra.push('--iova-mode', plan.iovaMode);
  extra.push(...(opts.extraEalArgs ?? []));
  if (extra.length > 0) cfg.push(['dpdk-extra', extra.join(' ')]);
  return cfg;
}

/** `ovs-vsctl --no-wait set Open_vSwitch . other_config:k=v ...` as one argv (ovs-vsctl quoting for values). */
export function ovsSetOtherConfigArgs(plan: DataplanePlan, opts: OvsDpdkOptions = {}): string[] {
  return [
    ...ovsVsctl(opts.db),
    '--no-wait',
    'set',
    'Open_vSwitch',
    '.',
    ...renderOvsOtherConfig(plan, opts).map(([k, v]) => `other_config:${k}=${ovsValue(v)}`),
  ];
}

/** `ovs-vsctl [--db=<db>]`: the argv head every vector here starts with. */
export function ovsVsctl(db?: string): string[] {
  if (db !== undefined && !/^(unix|tcp|ssl):\S+$/.test(db)) throw new InvalidArgumentError([{ field: 'db', message: 'must be an OVSDB remote such as unix:/run/ovs/db.sock' }]);
  return db === undefined ? ['ovs-vsctl'] : ['ovs-vsctl', `--db=${db}`];
}

/**
 * ovs-vsctl reads a bare value literally unless it holds one of its delimiters (`,` separates set members,
 * `=` keys from values, braces/brackets sets and maps) or whitespace: then the value is a double-quoted string.
 */
export function ovsValue(v: string): string {
  return v.length > 0 && !/[\s,"{}[\]=]/.test(v) ? v : JSON.stringify(v);
}

const OVS_NAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;

/** `ovs-vsctl --may-exist add-br <br> -- set Bridge <br> datapath_type=netdev` (a userspace bridge). */
export function ovsAddBridgeArgs(bridge: string, db?: string): string[] {
  checkNames([['bridge', bridge]]);
  return [...ovsVsctl(db), '--may-exist', 'add-br', bridge, '--', 'set', 'Bridge', bridge, 'datapath_type=netdev'];
}

/**
 * A kernel link as a bridge's uplink (a system port of the netdev bridge): with a VLAN it trunks that VLAN only
 * (frames leave tagged), without one it carries untagged frames. Repeating it converges.
 */
export function ovsAddUplinkArgs(p: { bridge: string; port: string; vlan?: number }, db?: string): string[] {
  const issues: FieldIssue[] = [];
  collectName(issues, 'bridge', p.bridge);
  collectName(issues, 'port', p.port);
  if (p.vlan !== undefined && !(Number.isInteger(p.vlan) && p.vlan >= 1 && p.vlan <= 4094)) issues.push({ field: 'vlan', message: 'must be an integer in 1..4094' });
  if (issues.length > 0) throw new InvalidArgumentError(issues);
  const vlan = p.vlan !== undefined ? ['vlan_mode=trunk', `trunks=${p.vlan}`] : ['vlan_mode=[]', 'trunks=[]'];
  return [...ovsVsctl(db), '--may-exist', 'add-port', p.bridge, p.port, '--', 'set', 'Port', p.port, ...vlan];
}

export interface VhostUserClientPort {
  bridge: string;
  port: string;
  /** The socket QEMU serves (QEMU `server=on`); OVS connects to it and reconnects after a restart. */
  socketPath: string;
  /** Queue pairs; sets `n_rxq`. */
  queues?: number;
}

/** `ovs-vsctl --may-exist add-port <br> <port> -- set Interface <port> type=dpdkvhostuserclient options:vhost-server-path=...`. */
export function ovsAddVhostUserClientPortArgs(p: VhostUserClientPort): string[] {
  const issues: FieldIssue[] = [];
  collectName(issues, 'bridge', p.bridge);
  collectName(issues, 'port', p.port);
  if (typeof p.socketPath !== 'string' || !p.socketPath.startsWith('/')) issues.push({ field: 'socketPath', message: 'must be an absolute path' });
  if (p.queues !== undefined && !(Number.isInteger(p.queues) && p.queues >= 1)) issues.push({ field: 'queues', message: 'must be an integer >= 1' });
  if (issues.length > 0) throw new InvalidArgumentError(issues);
  const args = [
    'ovs-vsctl', '--may-exist', 'add-port', p.bridge, p.port,
    '--', 'set', 'Interface', p.port, 'type=dpdkvhostuserclient', `options:vhost-server-path=${ovsValue(p.socketPath)}`,
  ];
  if (p.queues !== undefined) args.push(`options:n_rxq=${p.queues}`);
  return args;
}

/** Every PCI NIC of the plan as a `type=dpdk` port with `dpdk-devargs` and its rx queues. */
export function ovsAddDpdkPortArgs(plan: DataplanePlan, bridge: string): string[][] {
  checkNames([['bridge', bridge]]);
  const out: string[][] = [];
  for (const n of plan.nics) {
    if (n.kind !== 'pci') continue;
    checkNames([[`nics.${n.name}`, n.name]]);
    out.push([
      'ovs-vsctl', '--may-exist', 'add-port', bridge, n.name,
      '--', 'set', 'Interface', n.name, 'type=dpdk', `options:dpdk-devargs=${n.pciAddress}`, `options:n_rxq=${n.rxQueues}`,
    ]);
  }
  return out;
}

/** `ovs-vsctl --if-exists del-port <br> <port>`: safe to repeat. */
export function ovsDelPortArgs(bridge: string, port: string): string[] {
  checkNames([['bridge', bridge], ['port', port]]);
  return ['ovs-vsctl', '--if-exists', 'del-port', bridge, port];
}

function collectName(issues: FieldIssue[], field: string, v: unknown): void {
  if (typeof v !== 'string' || !OVS_NAME_RE.test(v)) {
    issues.push({ field, message: 'must be 1-15 characters of letters, digits, "_", "." or "-" (a Linux interface name)' });
  }
}
function checkNames(pairs: Array<[string, unknown]>): void {
  const issues: FieldIssue[] = [];
  for (const [f, v] of pairs) collectName(issues, f, v);
  if (issues.length > 0) throw new InvalidArgumentError(issues);
}
