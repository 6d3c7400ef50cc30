/**
 * Route table replacement and static neighbours. UpdateRoutes takes the complete wanted main table (kernel routes
 * that come with addresses are left alone): routes not wanted are removed, link routes (no gateway) are added
 * before gateway routes, and "exists" counts as success, so the call is idempotent.
 */
import { InvalidArgumentError, type FieldIssue } from '@edgenfv/contracts/internal/errors';
import { isMacAddress, parseMacAddress } from '@edgenfv/contracts/internal/values';
import type { ArpNeighbor, RouteSpec } from '@edgenfv/contracts/internal/agent';
import { normalizeDst, type IpPort, type IpRoute } from './ip.js';
import { checkCidr, checkIp, familyOf, isIfName } from './validate.js';

interface RouteWant {
  dst: string;
  gateway?: string;
  device?: string;
  source?: string;
  metric?: number;
  family: 4 | 6;
}

export function parseRoutes(routes: unknown): RouteWant[] {
  const issues: FieldIssue[] = [];
  if (!Array.isArray(routes)) throw new InvalidArgumentError([{ field: 'routes', message: 'must be a list' }]);
  const out: RouteWant[] = [];
  (routes as RouteSpec[]).forEach((r, i) => {
    const f = `routes[${i}]`;
    const before = issues.length;
    if (!r || typeof r !== 'object') {
      issues.push({ field: f, message: 'must be an object' });
      return;
    }
    const dstRaw = r.dst === 'default' ? 'default' : r.dst;
    if (dstRaw !== 'default') checkCidr(dstRaw, `${f}.dst`, issues, { allowBare: true });
    if (r.gateway) checkIp(r.gateway, `${f}.gateway`, issues);
    if (r.source) checkIp(r.source, `${f}.source`, issues);
    if (r.device && !isIfName(r.device)) issues.push({ field: `${f}.device`, message: `not an interface name: ${JSON.stringify(r.device)}` });
    if (!r.device && !r.gateway) issues.push({ field: f, message: 'needs a device or a gateway' });
    if (r.metric !== undefined && (!Number.isInteger(r.metric) || r.metric < 0)) issues.push({ field: `${f}.metric`, message: 'must be a non-negative integer' });
    if (issues.length > before) return;
    const family = dstRaw === 'default' ? (r.gateway ? familyOf(r.gateway) : 4) : familyOf(dstRaw);
    if (r.gateway && familyOf(r.gateway) !== family) {
      issues.push({ field: `${f}.gateway`, message: 'address family differs from dst' });
      return;
    }
    out.push({
      dst: normalizeDst(dstRaw, family),
      family,
      ...(r.gateway ? { gateway: r.gateway } : {}),
      ...(r.device ? { device: r.device } : {}),
      ...(r.source ? { source: r.source } : {}),
      ...(r.metric ? { metric: r.metric } : {}),
    });
  });
  if (issues.length > 0) throw new InvalidArgumentError(issues);
  return out;
}

function sameRoute(have: IpRoute, want: RouteWant): boolean {
  return (
    have.family === want.family &&
    have.dst === want.dst &&
    (have.gateway ?? '') === (want.gateway ?? '') &&
    (!want.device || have.device === want.device) &&
    (have.metric ?? 0) === (want.metric ?? 0)
  );
}

/** Routes the agent manages: unicast, not made by the kernel for an address, not IPv6 link-local. */
function managed(r: IpRoute): boolean {
  return r.type === 'unicast' && r.protocol !== 'kernel' && !(r.family === 6 && r.dst.startsWith('fe80:'));
}

export async function updateRoutes(ip: IpPort, routes: unknown): Promise<RouteSpec[]> {
  const wants = parseRoutes(routes);
  const devices = new Set((await ip.links()).map((l) => l.name));
  const unknown = wants.map((w, i) => ({ w, i })).filter(({ w }) => w.device && !devices.has(w.device));
  if (unknown.length > 0) {
    throw new InvalidArgumentError(unknown.map(({ w, i }) => ({ field: `routes[${i}].device`, message: `no such link: ${w.device}` })));
  }
  const have = await ip.routes();
  for (const r of have) if (managed(r) && !wants.some((w) => sameRoute(r, w))) await ip.delRoute(r);
  const ordered = [...wants.filter((w) => !w.gateway), ...wants.filter((w) => w.gateway)];
  const now = await ip.routes();
  for (const w of ordered) if (!now.some((r) => sameRoute(r, w))) await ip.addRoute(w);
  return (await ip.routes()).filter(managed).map((r) => ({
    dst: r.dst,
    gateway: r.gateway ?? '',
    device: r.device ?? '',
    source: r.source ?? '',
    metric: r.metric ?? 0,
  }));
}

export function parseNeighbors(neighbors: unknown): ArpNeighbor[] {
  if (!Array.isArray(neighbors)) throw new InvalidArgumentError([{ field: 'neighbors', message: 'must be a list' }]);
  const issues: FieldIssue[] = [];
  const out: ArpNeighbor[] = [];
  (neighbors as ArpNeighbor[]).forEach((n, i) => {
    const f = `neighbors[${i}]`;
    const before = issues.length;
    checkIp(n?.ip, `${f}.ip`, issues);
    if (!isMacAddress(n?.mac)) issues.push({ field: `${f}.mac`, message: `not a MAC address: ${JSON.stringify(n?.mac)}` });
    if (!isIfName(n?.device)) issues.push({ field: `${f}.device`, message: `not an interface name: ${JSON.stringify(n?.device)}` });
    if (issues.length === before) out.push({ ip: n.ip, mac: parseMacAddress(n.mac), device: n.device });
  });
  if (issues.length > 0) throw new InvalidArgumentError(issues);
  return out;
}

export async function addArpNeighbors(ip: IpPort, neighbors: unknown): Promise<void> {
  const list = parseNeighbors(neighbors);
  const devices = new Set((await ip.links()).map((l) => l.name));
  const bad = list.map((n, i) => ({ n, i })).filter(({ n }) => !devices.has(n.device));
  if (bad.length > 0) throw new InvalidArgumentError(bad.map(({ n, i }) => ({ field: `neighbors[${i}].device`, message: `no such link: ${n.device}` })));
  for (const n of list) await ip.replaceNeighbor(n.ip, n.mac, n.device);
}
