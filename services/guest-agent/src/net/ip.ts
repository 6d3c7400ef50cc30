/**
 * Netlink port over iproute2 (`ip -json`), optionally inside a named network namespace (`ip -n NS`): the guest
 * agent calls it in the VM's own namespace; tests point it at a host netns with veth pairs.
 * busybox's `ip` has no -json: the guest image ships iproute2's.
 */
import { InternalError } from '@edgenfv/contracts/internal/errors';
import { CommandError, runCommand, type Runner } from '../exec.js';
import type { NicCounters } from '@edgenfv/contracts/internal/agent';

export interface IpLink {
  ifindex: number;
  name: string;
  mac: string;
  mtu: number;
  operState: string;
  up: boolean;
  kind: string;
}
export interface IpAddr {
  ifname: string;
  cidr: string;
  scope: string;
  family: 4 | 6;
}
export interface IpRoute {
  dst: string; // normalized CIDR, e.g. 0.0.0.0/0
  gateway?: string;
  device?: string;
  source?: string;
  metric?: number;
  protocol: string;
  family: 4 | 6;
  type: string;
}
/** Per-link counters as `ip -s` reports them: the protocol's NicCounters. */
export type IpStats = NicCounters;

/**
 * One change of a link or an address. Changes go to `ip` as one batch (apply): under TCG every `ip` process costs
 * 30-150 ms, so a NIC's rename, address and state are one spawn instead of six.
 */
export type IpOp =
  | { kind: 'link'; dev: string; name?: string; mac?: string; mtu?: number; up?: boolean }
  | { kind: 'addr-add'; dev: string; cidr: string }
  | { kind: 'addr-del'; dev: string; cidr: string };

export interface IpPort {
  links(): Promise<IpLink[]>;
  /** Links and their addresses in one look (one `ip` process). */
  snapshot(): Promise<{ links: IpLink[]; addrs: IpAddr[] }>;
  /**
   * Runs the changes in order (one `ip -batch` process). An address added that is there already, or deleted that is
   * gone, is success; any other failure stops there and throws, naming that change (the ones before it are done).
   */
  apply(ops: IpOp[]): Promise<void>;
  addrs(): Promise<IpAddr[]>;
  routes(): Promise<IpRoute[]>;
  addRoute(r: { dst: string; gateway?: string; device?: string; source?: string; metric?: number }): Promise<void>;
  delRoute(r: IpRoute): Promise<void>;
  replaceNeighbor(ip: string, mac: string, device: string): Promise<void>;
  stats(): Promise<IpStats[]>;
}

interface RawLink {
  ifindex: number;
  ifname: string;
  address?: string;
  mtu: number;
  operstate?: string;
  flags?: string[];
  linkinfo?: { info_kind?: string };
  stats64?: Record<string, Record<string, number>>;
}
interface RawAddrInfo {
  ifname: string;
  addr_info?: Array<{ family: string; local: string; prefixlen: number; scope: string }>;
}
interface RawRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  prefsrc?: string;
  metric?: number;
  protocol?: string;
  type?: string;
}

export function normalizeDst(dst: string, family: 4 | 6): string {
  if (dst === 'default') return family === 4 ? '0.0.0.0/0' : '::/0';
  if (dst.includes('/')) return dst;
  return `${dst}/${family === 4 ? 32 : 128}`;
}

/** An `ip -json` output that did not parse: the command's arguments, which look it was, the error and the text near it. */
interface BadIpOutput {
  args: string[];
  attempt: number;
  error: string;
  near: string;
}

export class IprouteIp implements IpPort {
  private readonly run: Runner;
  private readonly prefix: string[];
  /** Told of each `ip -json` output that did not parse (the guest agent logs it). */
  private readonly onBadOutput?: (o: BadIpOutput) => void;
  constructor(opts: { netns?: string; ipBin?: string; runner?: Runner; onBadOutput?: (o: BadIpOutput) => void } = {}) {
    this.run = opts.runner ?? runCommand;
    if (opts.onBadOutput) this.onBadOutput = opts.onBadOutput;
    this.prefix = [opts.ipBin ?? 'ip', ...(opts.netns ? ['-n', opts.netns] : [])];
  }

  private async ip(args: string[]): Promise<string> {
    return (await this.run([...this.prefix, ...args])).stdout;
  }
  /**
   * `ip -json ...` parsed. Output that is not JSON is looked at once more: in a nested guest an `ip -json -d addr show`
   * racing a VF's driver registering its netdev printed malformed JSON once (the UpdateInterfaces of a replica failed
   * with "Expected ',' or '}' after property value in JSON at position 582"). A second failure names the command and
   * shows the output around the error.
   */
  private async json<T>(args: string[]): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const out = await this.ip(['-json', ...args]);
      if (!out.trim()) return [] as T;
      try {
        return JSON.parse(out) as T;
      } catch (err) {
        const at = Number(/position (\d+)/.exec((err as Error).message)?.[1] ?? 0);
        const near = out.slice(Math.max(0, at - 120), at + 120);
        this.onBadOutput?.({ args, attempt, error: (err as Error).message, near });
        if (attempt >= 2) throw new InternalError(`ip -json ${args.join(' ')}: output is not JSON (${(err as Error).message}) near: ${near}`, { cause: err });
      }
    }
  }

  async links(): Promise<IpLink[]> {
    return (await this.json<RawLink[]>(['-d', 'link', 'show'])).map(toLink);
  }

  async snapshot(): Promise<{ links: IpLink[]; addrs: IpAddr[] }> {
    // `ip -d addr show` lists every link with its details and its addresses
    const raw = await this.json<Array<RawLink & RawAddrInfo>>(['-d', 'addr', 'show']);
    return { links: raw.map(toLink), addrs: raw.flatMap(toAddrs) };
  }

  async apply(ops: IpOp[]): Promise<void> {
    let rest = ops;
    while (rest.length > 0) {
      try {
        await this.run([...this.prefix, '-batch', '-'], { input: rest.map((op) => batchLine(op) + '\n').join('') });
        return;
      } catch (err) {
        // without -force, ip stops at the first failed line: `Command failed -:<line>`, its reason on the lines before
        const m = err instanceof CommandError ? /Command failed -:(\d+)/.exec(err.stderr) : null;
        const at = m ? Number(m[1]) - 1 : -1;
        const op = rest[at];
        if (!op) throw err;
        const tolerated = (op.kind === 'addr-add' && isExists(err)) || (op.kind === 'addr-del' && isMissing(err));
        if (!tolerated) throw new CommandError([...this.prefix, ...batchLine(op).split(' ')], (err as CommandError).exitCode, (err as CommandError).stderr, err);
        rest = rest.slice(at + 1);
      }
    }
  }

  async addrs(): Promise<IpAddr[]> {
    return (await this.json<RawAddrInfo[]>(['addr', 'show'])).flatMap(toAddrs);
  }

  async routes(): Promise<IpRoute[]> {
    const out: IpRoute[] = [];
    for (const family of [4, 6] as const) {
      const raw = await this.json<RawRoute[]>([`-${family}`, 'route', 'show', 'table', 'main']);
      for (const r of raw) {
        out.push({
          dst: normalizeDst(r.dst, family),
          ...(r.gateway ? { gateway: r.gateway } : {}),
          ...(r.dev ? { device: r.dev } : {}),
          ...(r.prefsrc ? { source: r.prefsrc } : {}),
          ...(r.metric !== undefined ? { metric: r.metric } : {}),
          protocol: r.protocol ?? 'boot',
          family,
          type: r.type ?? 'unicast',
        });
      }
    }
    return out;
  }

  async addRoute(r: { dst: string; gateway?: string; device?: string; source?: string; metric?: number }): Promise<void> {
    const args = ['route', 'add', r.dst];
    if (r.gateway) args.push('via', r.gateway);
    if (r.device) args.push('dev', r.device);
    if (r.source) args.push('src', r.source);
    if (r.metric) args.push('metric', String(r.metric));
    try {
      await this.ip(args);
    } catch (err) {
      if (!isExists(err)) throw err; // "exists" is success
    }
  }

  async delRoute(r: IpRoute): Promise<void> {
    const args = [`-${r.family}`, 'route', 'del', r.dst];
    if (r.gateway) args.push('via', r.gateway);
    if (r.device) args.push('dev', r.device);
    if (r.metric !== undefined) args.push('metric', String(r.metric));
    try {
      await this.ip(args);
    } catch (err) {
      if (!isMissing(err)) throw err;
    }
  }

  async replaceNeighbor(ip: string, mac: string, device: string): Promise<void> {
    await this.ip(['neigh', 'replace', ip, 'lladdr', mac, 'dev', device, 'nud', 'permanent']);
  }

  async stats(): Promise<IpStats[]> {
    const raw = await this.json<RawLink[]>(['-s', 'link', 'show']);
    return raw.map((l) => {
      const rx = l.stats64?.rx ?? {};
      const tx = l.stats64?.tx ?? {};
      return {
        name: l.ifname,
        rxBytes: rx.bytes ?? 0,
        txBytes: tx.bytes ?? 0,
        rxPackets: rx.packets ?? 0,
        txPackets: tx.packets ?? 0,
        rxDropped: rx.dropped ?? 0,
        txDropped: tx.dropped ?? 0,
        rxErrors: rx.errors ?? 0,
        txErrors: tx.errors ?? 0,
      };
    });
  }
}

function toLink(l: RawLink): IpLink {
  return {
    ifindex: l.ifindex,
    name: l.ifname,
    mac: (l.address ?? '').toLowerCase(),
    mtu: l.mtu,
    operState: l.operstate ?? 'UNKNOWN',
    up: (l.flags ?? []).includes('UP'),
    kind: l.linkinfo?.info_kind ?? '',
  };
}

function toAddrs(l: RawAddrInfo): IpAddr[] {
  return (l.addr_info ?? []).map((a) => ({ ifname: l.ifname, cidr: `${a.local}/${a.prefixlen}`, scope: a.scope, family: a.family === 'inet6' ? 6 : 4 }));
}

/** One line of `ip -batch` (the caller checked names, MACs and CIDRs: no spaces, quotes or `#` in them). */
function batchLine(op: IpOp): string {
  if (op.kind === 'addr-add') return `addr add ${op.cidr} dev ${op.dev}`;
  if (op.kind === 'addr-del') return `addr del ${op.cidr} dev ${op.dev}`;
  const args = ['link', 'set', 'dev', op.dev];
  if (op.name !== undefined) args.push('name', op.name);
  if (op.mac !== undefined) args.push('address', op.mac);
  if (op.mtu !== undefined) args.push('mtu', String(op.mtu));
  if (op.up !== undefined) args.push(op.up ? 'up' : 'down');
  return args.join(' ');
}

function isExists(err: unknown): boolean {
  return err instanceof CommandError && /File exists|already assigned/i.test(err.stderr);
}
function isMissing(err: unknown): boolean {
  return err instanceof CommandError && /No such process|Cannot assign requested address|Cannot find device|No such device|not found/i.test(err.stderr);
}
