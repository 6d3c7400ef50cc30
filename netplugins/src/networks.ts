/**
 * Networks from config (name, cidr, gateway, range, vlan, bridge, parent, mtuBytes, dataplane), validated with ip-num: one error lists
 * every issue. Parsed networks carry the allocatable range as bigints (IPv4 and IPv6 alike).
 */
import { IPv4, IPv4CidrRange, IPv6, IPv6CidrRange } from 'ip-num';
import { isDnsLabel, type NetworkConfig } from '@edgenfv/contracts';
import { isIP } from 'node:net';
import { Fields, IFNAME_HINT, IFNAME_RE, Issues, isObj } from './config.js';

export interface ParsedNetwork {
  readonly config: Readonly<NetworkConfig>;
  readonly family: 4 | 6;
  readonly prefixLen: number;
  /** First and last address the IPAM may hand out. */
  readonly first: bigint;
  readonly last: bigint;
  /** Never handed out inside [first,last] (the gateway). */
  readonly excluded: ReadonlySet<bigint>;
  readonly gateway?: string;
}

/** Canonical text of an address (IPv6 compressed, lower case). */
export function formatIp(family: 4 | 6, v: bigint): string {
  if (family === 4) return IPv4.fromNumber(v).toString();
  return new URL(`http://[${IPv6.fromBigInt(v).toString()}]`).hostname.slice(1, -1);
}

export function parseIp(s: string): { family: 4 | 6; value: bigint } | null {
  const fam = isIP(s);
  if (fam === 4) return { family: 4, value: IPv4.fromString(s).getValue() };
  if (fam === 6) return { family: 6, value: IPv6.fromString(s).getValue() };
  return null;
}

function parseOne(raw: unknown, issues: Issues, at: string): ParsedNetwork | undefined {
  if (!isObj(raw)) {
    issues.add(at, 'must be an object');
    return undefined;
  }
  const before = issues.list.length;
  const f = new Fields(raw, issues, at);
  const name = f.string('name', { required: true });
  if (name !== undefined && !isDnsLabel(name)) issues.add(f.path('name'), `must be a DNS label (got ${JSON.stringify(name)})`);
  const cidr = f.string('cidr', { required: true });
  const gatewayS = f.string('gateway');
  const range = f.object('range');
  const startS = range?.string('start', { required: true });
  const endS = range?.string('end', { required: true });
  range?.closed();
  const vlan = f.int('vlan', { min: 1, max: 4094 });
  const bridge = f.string('bridge', { re: IFNAME_RE, reHint: IFNAME_HINT });
  const parent = f.string('parent', { re: IFNAME_RE, reHint: IFNAME_HINT });
  const mtuBytes = f.int('mtuBytes', { min: 68, max: 65535 });
  const tenants = f.array('tenants');
  (tenants ?? []).forEach((t, j) => {
    if (typeof t !== 'string' || !isDnsLabel(t)) issues.add(`${f.path('tenants')}[${j}]`, `must be a tenant id (a DNS label; got ${JSON.stringify(t)})`);
  });
  const macPrefix = f.string('macPrefix', { re: /^([0-9a-f]{2}:){1,5}$/, reHint: 'lower-case hex octets, each followed by a colon (02:ed:)' });
  const dataplane = f.oneOf('dataplane', ['ovs-dpdk'] as const);
  const spoofchk = f.bool('spoofchk');
  const trust = f.bool('trust');
  const antispoof = f.bool('antispoof');
  f.closed();

  let family: 4 | 6 = 4;
  let netFirst = 0n;
  let netLast = 0n;
  let prefixLen = 0;
  if (cidr) {
    const [addr, len] = cidr.split('/');
    const fam = isIP(addr ?? '');
    if (!fam || len === undefined || !/^\d+$/.test(len) || Number(len) > (fam === 4 ? 32 : 128)) {
      issues.add(f.path('cidr'), `must be an IPv4 or IPv6 CIDR such as 10.10.0.0/24 (got ${JSON.stringify(cidr)})`);
    } else {
      family = fam as 4 | 6;
      const r = family === 4 ? IPv4CidrRange.fromCidr(cidr) : IPv6CidrRange.fromCidr(cidr);
      netFirst = r.getFirst().getValue();
      netLast = r.getLast().getValue();
      prefixLen = Number(len);
      if (parseIp(addr!)!.value !== netFirst)
        issues.add(f.path('cidr'), `has host bits set: did you mean ${formatIp(family, netFirst)}/${len}?`);
    }
  }
  const inCidr = (field: string, s: string | undefined): bigint | undefined => {
    if (s === undefined || !cidr) return undefined;
    const p = parseIp(s);
    if (!p) return void issues.add(field, `must be an IP address (got ${JSON.stringify(s)})`);
    if (p.family !== family || p.value < netFirst || p.value > netLast) return void issues.add(field, `${s} is not inside ${cidr}`);
    return p.value;
  };
  const gw = inCidr(f.path('gateway'), gatewayS);
  const start = inCidr(`${at}.range.start`, startS);
  const end = inCidr(`${at}.range.end`, endS);
  if (start !== undefined && end !== undefined && start > end) issues.add(`${at}.range`, `start ${startS} is after end ${endS}`);
  if (issues.list.length > before || !name || !cidr) return undefined;

  // Default range: the whole CIDR without the network and broadcast addresses (IPv4 /31 and /32 keep them).
  let first = start ?? netFirst;
  let last = end ?? netLast;
  if (start === undefined && family === 4 && prefixLen < 31) first = netFirst + 1n;
  if (end === undefined && family === 4 && prefixLen < 31) last = netLast - 1n;
  if (start === undefined && family === 6 && prefixLen < 127) first = netFirst + 1n; // skip the subnet-router anycast
  const config: NetworkConfig = { name, cidr };
  if (gatewayS) config.gateway = formatIp(family, gw!);
  if (startS && endS) config.range = { start: formatIp(family, start!), end: formatIp(family, end!) };
  if (vlan !== undefined) config.vlan = vlan;
  if (bridge) config.bridge = bridge;
  if (parent) config.parent = parent;
  if (mtuBytes !== undefined) config.mtuBytes = mtuBytes;
  if (tenants !== undefined) config.tenants = tenants as string[];
  if (macPrefix !== undefined) config.macPrefix = macPrefix;
  if (dataplane) config.dataplane = dataplane;
  if (spoofchk !== undefined) config.spoofchk = spoofchk;
  if (trust !== undefined) config.trust = trust;
  if (antispoof !== undefined) config.antispoof = antispoof;
  const net: ParsedNetwork = {
    config: Object.freeze(config),
    family,
    prefixLen,
    first,
    last,
    excluded: new Set(gw !== undefined ? [gw] : []),
    ...(config.gateway ? { gateway: config.gateway } : {}),
  };
  return net;
}

/** Parses and validates the networks of a deployment; throws one ConfigError with every issue. */
export function parseNetworks(raw: unknown, field = 'networks'): ParsedNetwork[] {
  const issues = new Issues();
  if (!Array.isArray(raw)) {
    issues.add(field, 'must be an array of networks');
    issues.throwIfAny();
  }
  const out: ParsedNetwork[] = [];
  const names = new Set<string>();
  (raw as unknown[]).forEach((n, i) => {
    const p = parseOne(n, issues, `${field}[${i}]`);
    if (!p) return;
    if (names.has(p.config.name)) issues.add(`${field}[${i}].name`, `duplicate network name ${p.config.name}`);
    names.add(p.config.name);
    out.push(p);
  });
  issues.throwIfAny();
  return out;
}

/** Number of addresses the IPAM can hand out. */
export function capacity(n: ParsedNetwork): bigint {
  let c = n.last - n.first + 1n;
  for (const x of n.excluded) if (x >= n.first && x <= n.last) c -= 1n;
  return c;
}
