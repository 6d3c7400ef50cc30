/**
 * Netlink port over iproute2 (`ip -json`), optionally inside a named network namespace (`ip -n NS`): the guest
 * agent calls it in the VM's own namespace; tests point it at a host netns with veth pairs.
 * busybox's `ip` has no -json: the guest image ships iproute2's.
 */
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

export interface IpPort {
  links(): Promise<IpLink[]>;
  setLink(name: string, opts: { name?: string; mac?: string; mtu?: number; up?: boolean }): Promise<void>;
  addrs(): Promise<IpAddr[]>;
  addAddr(ifname: string, cidr: string): Promise<void>;
  delAddr(ifname: string, cidr: string): Promise<void>;
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

export class IprouteIp implements IpPort {
  private readonly run: Runner;
  private readonly prefix: string[];
  constructor(opts: { netns?: string; ipBin?: string; runner?: Runner } = {}) {
    this.run = opts.runner ?? runCommand;
    this.prefix = [opts.ipBin ?? 'ip', ...(opts.netns ? ['-n', opts.netns] : [])];
  }

  private async ip(args: string[]): Promise<string> {
    return (await this.run([...this.prefix, ...args])).stdout;
  }
  private async json<T>(args: string[]): Promise<T> {
    const out = await this.ip(['-json', ...args]);
    return (out.trim() ? JSON.parse(out) : []) as T;
  }

  async links(): Promise<IpLink[]> {
    const raw = await this.json<RawLink[]>(['-d', 'link', 'show']);
    return raw.map((l) => ({
      ifindex: l.ifindex,
      name: l.ifname,
      mac: (l.address ?? '').toLowerCase(),
      mtu: l.mtu,
      operState: l.operstate ?? 'UNKNOWN',
      up: (l.flags ?? []).includes('UP'),
      kind: l.linkinfo?.info_kind ?? '',
    }));
  }

  async setLink(name: string, opts: { name?: string; mac?: string; mtu?: number; up?: boolean }): Promise<void> {
    const args = ['link', 'set', 'dev', name];
    if (opts.name !== undefined) args.push('name', opts.name);
    if (opts.mac !== undefined) args.push('address', opts.mac);
    if (opts.mtu !== undefined) args.push('mtu', String(opts.mtu));
    if (opts.up !== undefined) args.push(opts.up ? 'up' : 'down');
    await this.ip(args);
  }

  async addrs(): Promise<IpAddr[]> {
    const raw = await this.json<RawAddrInfo[]>(['addr', 'show']);
    const out: IpAddr[] = [];
    for (const l of raw) {
      for (const a of l.addr_info ?? []) {
        out.push({ ifname: l.ifname, cidr: `${a.local}/${a.prefixlen}`, scope: a.scope, family: a.family === 'inet6' ? 6 : 4 });
      }
    }
    return out;
  }

  async addAddr(ifname: string, cidr: string): Promise<void> {
    try {
      await this.ip(['addr', 'add', cidr, 'dev', ifname]);
    } catch (err) {
      if (!isExists(err)) throw err;
    }
  }

  async delAddr(ifname: string, cidr: string): Promise<void> {
    try {
      await this.ip(['addr', 'del', cidr, 'dev', ifname]);
    } catch (err) {
      if (!isMissing(err)) throw err;
    }
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

function isExists(err: unknown): boolean {
  return err instanceof CommandError && /File exists|already assigned/i.test(err.stderr);
}
function isMissing(err: unknown): boolean {
  return err instanceof CommandError && /No such process|Cannot assign requested address|Cannot find device|No such device|not found/i.test(err.stderr);
}
