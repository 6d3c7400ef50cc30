/**
 * The Netlink port: link and VF operations. `IpNetlink` shells out to iproute2's `ip` (JSON output for reads,
 * one `ip -batch -` process for a group of writes). A netns is a name (`ip netns`) or a path; paths outside
 * /var/run/netns go through `nsenter --net=<path>`.
 */
import { existsSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { ExecError, mustRun, runProcess, type Runner } from './exec.js';

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

export interface Netlink {
  /** Runs `ip` commands (one per line, no leading `ip`) in one process; stops at the first failure. */
  batch(lines: readonly string[], netns?: string): Promise<void>;
  /** The link named `name`, or null when it does not exist. */
  link(name: string, netns?: string): Promise<LinkInfo | null>;
  /** Every link of a netns (one process), by name. */
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

function isNoSuchDevice(stderr: string): boolean {
  return /does not exist|Cannot find device|No such device/i.test(stderr);
}

export function vfSetLine(pf: string, vf: number, s: VfSettings): string {
  const parts = [`link set dev ${pf} vf ${vf}`];
  if (s.mac !== undefined) parts.push(`mac ${s.mac}`);
  if (s.vlan !== undefined) parts.push(`vlan ${s.vlan}` + (s.vlan !== 0 && s.vlanQos ? ` qos ${s.vlanQos}` : ''));
  if (s.spoofchk !== undefined) parts.push(`spoofchk ${s.spoofchk ? 'on' : 'off'}`);
  if (s.trust !== undefined) parts.push(`trust ${s.trust ? 'on' : 'off'}`);
  return parts.join(' ');
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

export class IpNetlink implements Netlink {
  constructor(
    private readonly run: Runner = runProcess,
    private readonly ipPath = 'ip',
  ) {}

  async batch(lines: readonly string[], netns?: string): Promise<void> {
    if (lines.length === 0) return;
    const { pre, ipOpts } = netnsArgs(netns);
    await mustRun(this.run, [...pre, this.ipPath, ...ipOpts, '-batch', '-'], lines.join('\n') + '\n');
  }

  private async show(name: string, netns?: string): Promise<IpJsonLink | null> {
    const { pre, ipOpts } = netnsArgs(netns);
    const argv = [...pre, this.ipPath, ...ipOpts, '-j', '-d', 'link', 'show', 'dev', name];
    const r = await this.run(argv);
    if (r.code !== 0) {
      if (isNoSuchDevice(r.stderr)) return null;
      throw new ExecError(argv, r.code, r.stderr);
    }
    const arr = JSON.parse(r.stdout) as IpJsonLink[];
    return arr[0] ?? null;
  }

  async link(name: string, netns?: string): Promise<LinkInfo | null> {
    const l = await this.show(name, netns);
    return l ? toInfo(l) : null;
  }

  async links(netns?: string): Promise<Map<string, LinkInfo>> {
    const { pre, ipOpts } = netnsArgs(netns);
    const out = await mustRun(this.run, [...pre, this.ipPath, ...ipOpts, '-j', '-d', 'link', 'show']);
    const m = new Map<string, LinkInfo>();
    for (const l of JSON.parse(out) as IpJsonLink[]) m.set(l.ifname, toInfo(l));
    return m;
  }

  async netnsExists(netns: string): Promise<boolean> {
    if (netns.includes('/')) return existsSync(netns);
    return NETNS_DIRS.some((d) => existsSync(`${d}/${netns}`));
  }

  async vfs(pf: string): Promise<VfState[]> {
    const l = await this.show(pf);
    if (!l) throw new ExecError(['ip', 'link', 'show', pf], 1, `Device "${pf}" does not exist.`);
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

  async setVf(pf: string, vf: number, s: VfSettings): Promise<void> {
    await this.batch([vfSetLine(pf, vf, s)]);
  }
}

function toInfo(l: IpJsonLink): LinkInfo {
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
