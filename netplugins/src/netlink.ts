/**
 * The Netlink port: link and VF operations through iproute2's `ip`.
 *  - `IpNetlink` spawns one `ip -j -d -batch -` per call (a group of commands in one process).
 *  - `IpBatchNetlink` keeps one long-lived `ip -force -batch -` for the host netns and talks to it over its stdin,
 *    so host-side reads and writes cost a pipe round trip instead of a process; netns-side calls still spawn
 *    (a process living inside a sandbox's netns would keep that netns alive).
 * A netns is a name (`ip netns`) or a path; paths outside /var/run/netns go through `nsenter --net=<path>`.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { AppError } from '@edgenfv/contracts';
import { ChildSession, ShellRunner, runProcess, type Runner } from './exec.js';

export interface LinkInfo {
  ifIndex: number;
  name: string;
  mac: string;
  mtuBytes: number;
  up: boolean;
  master?: string;
  /** `veth`, `bridge`, `tun`, `macvtap`, ... (from `ip -d`). */
  kind?: string;
  /** The parent link (macvtap/vlan) by name when in the same netns. */
  parent?: string;
  /** macvtap/macvlan mode. */
  mode?: string;
  /** tun/tap: `tap` or `tun`. */
  tunType?: string;
}

export interface VfSettings {
  mac?: string;
  vlan?: number;
  vlanQos?: number;
  spoofchk?: boolean;
  trust?: boolean;
}
export interface VfState {
  vf: number;
  mac: string;
  vlan: number;
  vlanQos: number;
  spoofchk?: boolean;
  trust?: boolean;
}

/** A failed line of a batch: its index in the lines given, and ip's message. */
export interface BatchFailure {
  index: number;
  line: string;
  message: string;
}

export class BatchError extends AppError {
  constructor(readonly failures: BatchFailure[], readonly netns?: string) {
    super('INTERNAL', `ip${netns ? ` (netns ${netns})` : ''}: ${failures.map((f) => `"${f.line}": ${f.message}`).join('; ')}`, { details: { failures } });
  }
  /** The first failure's index (a batch without -force stops there: the lines before it took effect). */
  get failedIndex(): number {
    return this.failures[0]?.index ?? -1;
  }
}

export interface BatchResult {
  /** JSON outputs of `show` commands, in order. */
  outputs: unknown[];
  failures: BatchFailure[];
}

export interface Netlink {
  /** Runs `ip` commands (one per line, no leading `ip`); stops at the first failure and throws a BatchError. */
  batch(lines: readonly string[], netns?: string): Promise<unknown[]>;
  /** Runs every line even when some fail (`ip -force`); returns the failures instead of throwing. */
  tryBatch(lines: readonly string[], netns?: string): Promise<BatchResult>;
  /** Runs `tc` commands (one per line, no leading `tc`) in one process; stops at the first failure. */
  tcBatch(lines: readonly string[], netns?: string): Promise<unknown[]>;
  /** The link named `name`, or null when it does not exist. */
  link(name: string, netns?: string): Promise<LinkInfo | null>;
  /** Every link of a netns, by name. */
  links(netns?: string): Promise<Map<string, LinkInfo>>;
  netnsExists(netns: string): Promise<boolean>;
  /** The VF table of a PF (`ip link show <pf>`: vfinfo_list). */
  vfs(pf: string): Promise<VfState[]>;
  setVf(pf: string, vf: number, s: VfSettings): Promise<void>;
}

const NETNS_DIRS = ['/var/run/netns', '/run/netns'];

/** Splits a netns reference into what `ip` needs: `-n name` or an nsenter prefix. */
export function netnsArgs(netns: string | undefined): { pre: string[]; ipOpts: string[] } {
  if (!netns) return { pre: [], ipOpts: [] };
  if (!netns.includes('/')) return { pre: [], ipOpts: ['-n', netns] };
  if (NETNS_DIRS.includes(dirname(netns))) return { pre: [], ipOpts: ['-n', basename(netns)] };
  return { pre: ['nsenter', `--net=${netns}`], ipOpts: [] };
}

export function isNoSuchDevice(message: string): boolean {
  return /does not exist|Cannot find device|No such device/i.test(message);
}

/** Runs every `link del` line; a link that is already gone is success, any other failure throws a BatchError. */
export async function delLinks(netlink: Netlink, lines: readonly string[], netns?: string): Promise<void> {
  const r = await netlink.tryBatch(lines, netns);
  const real = r.failures.filter((f) => !isNoSuchDevice(f.message));
  if (real.length) throw new BatchError(real, netns);
}

export function vfSetLine(pf: string, vf: number, s: VfSettings): string {
  const parts = [`link set dev ${pf} vf ${vf}`];
  if (s.mac !== undefined) parts.push(`mac ${s.mac}`);
  if (s.vlan !== undefined) parts.push(`vlan ${s.vlan}` + (s.vlan !== 0 && s.vlanQos ? ` qos ${s.vlanQos}` : ''));
  if (s.spoofchk !== undefined) parts.push(`spoofchk ${s.spoofchk ? 'on' : 'off'}`);
  if (s.trust !== undefined) parts.push(`trust ${s.trust ? 'on' : 'off'}`);
  return parts.join(' ');
}

/**
 * Parses the merged output of `ip -j -batch` (stdout and stderr in order): JSON lines are outputs; error text
 * followed by `Command failed -:N` belongs to batch line N (1-based, counted from `firstLine`).
 */
export function parseBatchOutput(text: string, lines: readonly string[], firstLine = 1): BatchResult {
  const outputs: unknown[] = [];
  const failures: BatchFailure[] = [];
  let pending: string[] = [];
  for (const raw of text.split('\n')) {
    const l = raw.trim();
    if (!l) continue;
    const m = /^Command failed (?:-|\S+):(\d+)$/.exec(l);
    if (m) {
      const index = Number(m[1]) - firstLine;
      failures.push({ index, line: lines[index] ?? '?', message: pending.join(' ') || 'failed' });
      pending = [];
    } else if (l.startsWith('[') || l.startsWith('{')) {
      try {
        outputs.push(JSON.parse(l));
      } catch {
        pending.push(l);
      }
    } else pending.push(l);
  }
  if (pending.length && failures.length === 0) failures.push({ index: -1, line: '?', message: pending.join(' ') });
  return { outputs, failures };
}

interface IpJsonLink {
  ifindex: number;
  ifname: string;
  address?: string;
  mtu: number;
  flags?: string[];
  master?: string;
  link?: string;
  linkinfo?: { info_kind?: string; info_data?: { mode?: string; type?: string } };
  vfinfo_list?: Array<{
    vf: number;
    address?: string;
    vlan?: number;
    qos?: number;
    vlan_list?: Array<{ vlan?: number; qos?: number }>;
    spoofchk?: boolean;
    trust?: boolean;
  }>;
}

export function toLinkInfo(l: IpJsonLink): LinkInfo {
  const info: LinkInfo = {
    ifIndex: l.ifindex,
    name: l.ifname,
    mac: l.address ?? '',
    mtuBytes: l.mtu,
    up: (l.flags ?? []).includes('UP'),
  };
  if (l.master) info.master = l.master;
  if (l.linkinfo?.info_kind) info.kind = l.linkinfo.info_kind;
  if (l.link) info.parent = l.link;
  if (l.linkinfo?.info_data?.mode) info.mode = l.linkinfo.info_data.mode.toLowerCase();
  if (l.linkinfo?.info_data?.type) info.tunType = l.linkinfo.info_data.type;
  return info;
}

function vfStates(l: IpJsonLink): VfState[] {
  return (l.vfinfo_list ?? []).map((v) => {
    const vl = v.vlan_list?.[0];
    const st: VfState = {
      vf: v.vf,
      mac: (v.address ?? '00:00:00:00:00:00').toLowerCase(),
      vlan: vl?.vlan ?? v.vlan ?? 0,
      vlanQos: vl?.qos ?? v.qos ?? 0,
    };
    if (v.spoofchk !== undefined) st.spoofchk = v.spoofchk;
    if (v.trust !== undefined) st.trust = v.trust;
    return st;
  });
}

export class IpNetlink implements Netlink {
  constructor(
    protected readonly run: Runner = runProcess,
    protected readonly ipPath = 'ip',
  ) {}

  protected async exec(lines: readonly string[], netns: string | undefined, force: boolean, program?: string): Promise<BatchResult> {
    if (lines.length === 0) return { outputs: [], failures: [] };
    const { pre, ipOpts } = netnsArgs(netns);
    // stderr after stdout is fine here: a spawned batch's outputs and errors are attributed by line numbers
    const argv = [...pre, program ?? this.ipPath, ...ipOpts, '-j', ...(program ? [] : ['-d']), ...(force ? ['-force'] : []), '-batch', '-'];
    const r = await this.run(argv, lines.join('\n') + '\n');
    const res = parseBatchOutput(`${r.stdout}\n${r.stderr}`, lines);
    if (r.code !== 0 && res.failures.length === 0) res.failures.push({ index: -1, line: '?', message: `exit ${r.code}: ${r.stderr.trim()}` });
    return res;
  }

  async batch(lines: readonly string[], netns?: string): Promise<unknown[]> {
    const r = await this.exec(lines, netns, false);
    if (r.failures.length) throw new BatchError(r.failures, netns);
    return r.outputs;
  }

  tryBatch(lines: readonly string[], netns?: string): Promise<BatchResult> {
    return this.exec(lines, netns, true);
  }

  async tcBatch(lines: readonly string[], netns?: string): Promise<unknown[]> {
    const r = await this.exec(lines, netns, false, 'tc');
    if (r.failures.length) throw new BatchError(r.failures, netns);
    return r.outputs;
  }

  async link(name: string, netns?: string): Promise<LinkInfo | null> {
    const r = await this.exec([`link show dev ${name}`], netns, true);
    if (r.failures.length) {
      if (isNoSuchDevice(r.failures[0]!.message)) return null;
      throw new BatchError(r.failures, netns);
    }
    const l = (r.outputs[0] as IpJsonLink[] | undefined)?.[0];
    return l ? toLinkInfo(l) : null;
  }

  async links(netns?: string): Promise<Map<string, LinkInfo>> {
    const out = await this.batch(['link show'], netns);
    const m = new Map<string, LinkInfo>();
    for (const l of (out[0] as IpJsonLink[] | undefined) ?? []) m.set(l.ifname, toLinkInfo(l));
    return m;
  }

  async netnsExists(netns: string): Promise<boolean> {
    if (netns.includes('/')) return existsSync(netns);
    return NETNS_DIRS.some((d) => existsSync(`${d}/${netns}`));
  }

  async vfs(pf: string): Promise<VfState[]> {
    const r = await this.exec([`link show dev ${pf}`], undefined, true);
    if (r.failures.length) throw new BatchError(r.failures);
    const l = (r.outputs[0] as IpJsonLink[] | undefined)?.[0];
    return l ? vfStates(l) : [];
  }

  async setVf(pf: string, vf: number, s: VfSettings): Promise<void> {
    await this.batch([vfSetLine(pf, vf, s)]);
  }
}

/** One long-lived `ip -j -d -force -batch -` in the host netns, fed request by request. */
class PersistentIp {
  private lineNo = 0;
  private seq = 0;
  private readonly session: ChildSession;

  constructor(private readonly ipPath: string) {
    this.session = new ChildSession(
      // stdout line-buffered and stderr merged into it, so errors arrive in order with outputs
      () => spawn('sh', ['-c', `exec stdbuf -oL ${this.ipPath} -j -d -force -batch - 2>&1`], { stdio: ['pipe', 'pipe', 'ignore'] }),
      (buf, at) => {
        const cf = buf.indexOf('Command failed', at);
        return cf < 0 ? -1 : buf.indexOf('\n', cf); // -1: the marker's own "Command failed -:N" line has not arrived yet
      },
      () => (this.lineNo = 0),
    );
  }

  /** Runs the lines one request each (ip exits on some argument errors even with -force: one line is one fate). */
  exec(lines: readonly string[]): Promise<BatchResult> {
    return this.session.serial(async (): Promise<BatchResult> => {
      const outputs: unknown[] = [];
      const failures: BatchFailure[] = [];
      for (const [i, line] of lines.entries()) {
        const r = await this.one(line);
        outputs.push(...r.outputs);
        failures.push(...r.failures.map((f) => ({ ...f, index: i, line })));
      }
      return { outputs, failures };
    });
  }

  private async one(line: string): Promise<BatchResult> {
    this.session.child(); // a restarted ip numbers its lines from 1 again
    const name = `__np${(this.seq++).toString(36)}`;
    const marker = `Device "${name}" does not exist.`;
    const first = this.lineNo + 1;
    this.lineNo += 2;
    // some argument errors make ip exit even with -force ("invarg"): then the answer is all it said
    const { text, died } = await this.session.request(`${line}\nlink show dev ${name}\n`, marker);
    const r = parseBatchOutput(text, [line], first);
    if (died && r.failures.length === 0) r.failures.push({ index: 0, line, message: text.trim() || 'ip exited' });
    return { outputs: r.outputs, failures: r.failures.map((f) => ({ ...f, index: 0, line })) };
  }

  close(): void {
    this.session.close();
  }
}

export class IpBatchNetlink extends IpNetlink {
  private readonly host: PersistentIp;
  private readonly shell: ShellRunner | null;
  constructor(run?: Runner, ipPath = 'ip') {
    const shell = run ? null : new ShellRunner();
    super(run ?? shell!.run, ipPath);
    this.shell = shell;
    this.host = new PersistentIp(ipPath);
  }
  protected override async exec(lines: readonly string[], netns: string | undefined, force: boolean, program?: string): Promise<BatchResult> {
    if (netns || program) return super.exec(lines, netns, force, program);
    if (lines.length === 0) return { outputs: [], failures: [] };
    if (force) return this.host.exec(lines);
    // keep "stop at the first failure": line after line
    const outputs: unknown[] = [];
    for (const [i, line] of lines.entries()) {
      const r = await this.host.exec([line]);
      outputs.push(...r.outputs);
      if (r.failures.length) return { outputs, failures: r.failures.map((f) => ({ ...f, index: i, line })) };
    }
    return { outputs, failures: [] };
  }
  /** Ends the long-lived ip and shell processes (they also end with this process). */
  close(): void {
    this.host.close();
    this.shell?.close();
  }
}
