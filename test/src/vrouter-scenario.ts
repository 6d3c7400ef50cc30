/**
 * The product's end-to-end scenario (issue: "a real packet through a VNF"): two host network namespaces, a
 * tenant VNF `builtin:vrouter` with one tap interface in each network, instantiated through the message API;
 * a ping from the left namespace to the right one crosses the tenant's VM and comes back; terminate; the path is
 * gone and nothing is left. Used by `npm run demo` (with an appliance it starts) and by the e2e test.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import type { Api } from './harness.js';

export interface ScenarioNames {
  tenant: string;
  leftNs: string;
  rightNs: string;
  leftBridge: string;
  rightBridge: string;
  /** networks as configured in the appliance (names and /24 prefixes) */
  leftNet: { name: string; prefix: string };
  rightNet: { name: string; prefix: string };
}

export interface ScenarioResult {
  pingsSent: number;
  pingsReceived: number;
  bootMs: number;
  rttMsMedian: number | null;
  vnfId: string;
  nodeId: string;
  sandboxId: string;
  vrouterIps: { left: string; right: string };
  pingsAfterTerminate: number;
  opStates: string[];
}

export function scenarioNetworks(n: ScenarioNames): unknown[] {
  return [
    { name: n.leftNet.name, cidr: `${n.leftNet.prefix}.0/24`, range: { start: `${n.leftNet.prefix}.10`, end: `${n.leftNet.prefix}.99` }, bridge: n.leftBridge },
    { name: n.rightNet.name, cidr: `${n.rightNet.prefix}.0/24`, range: { start: `${n.rightNet.prefix}.10`, end: `${n.rightNet.prefix}.99` }, bridge: n.rightBridge },
  ];
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}
function tryIp(...args: string[]): void {
  spawnSync('ip', args, { stdio: 'ignore' });
}

/** Host side: a bridge per network and a namespace on each, with an address in the network (.2). */
export function setupHost(n: ScenarioNames): void {
  teardownHost(n);
  for (const [ns, br, net, tag] of [
    [n.leftNs, n.leftBridge, n.leftNet, 'l'],
    [n.rightNs, n.rightBridge, n.rightNet, 'r'],
  ] as const) {
    const hostEnd = `${br.slice(0, 12)}h${tag}`.slice(0, 15);
    ip('netns', 'add', ns);
    ip('link', 'add', br, 'type', 'bridge');
    ip('link', 'set', br, 'up');
    ip('link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    ip('link', 'set', hostEnd, 'master', br, 'up');
    ip('-n', ns, 'addr', 'add', `${net.prefix}.2/24`, 'dev', 'eth0');
    ip('-n', ns, 'link', 'set', 'eth0', 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
  }
}

export function teardownHost(n: ScenarioNames): void {
  for (const ns of [n.leftNs, n.rightNs]) tryIp('netns', 'del', ns);
  for (const br of [n.leftBridge, n.rightBridge]) tryIp('link', 'del', br);
}

export function ping(ns: string, target: string, count: number, waitS = 2): { sent: number; received: number; rttsMs: number[] } {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'busybox', 'ping', '-c', String(count), '-W', String(waitS), target], { encoding: 'utf8' });
  const out = `${r.stdout}${r.stderr}`;
  const m = /(\d+) packets transmitted, (\d+) packets received/.exec(out);
  const rttsMs = [...out.matchAll(/time=([\d.]+) ms/g)].map((x) => Number(x[1]));
  return { sent: m ? Number(m[1]) : count, received: m ? Number(m[2]) : 0, rttsMs };
}

function median(xs: number[]): number | null {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Runs the scenario through the API; the host side must be set up (setupHost) and is left for the caller. */
export async function runVrouterScenario(api: Api, n: ScenarioNames, opts: { pings?: number; log?: (msg: string) => void; opTimeoutMs?: number } = {}): Promise<ScenarioResult> {
  const log = opts.log ?? (() => undefined);
  const pings = opts.pings ?? 10;
  const t = n.tenant;
  const existing = await api.admin('tenants.get', { id: t });
  if (!existing.ok) await api.ok('nfv.v1.admin.tenants.create', { id: t, displayName: 'edgenfv demo', quota: { vcpus: 4, vnfs: 2 } });
  const descriptor = {
    name: 'vrouter',
    replicas: 1,
    resources: { vcpus: 1, memoryMiB: 128 },
    image: { ref: 'builtin:vrouter' },
    interfaces: [
      { name: 'west', type: 'tap', network: n.leftNet.name },
      { name: 'east', type: 'tap', network: n.rightNet.name },
    ],
  };
  log('instantiating builtin:vrouter through the message API');
  const inst = await api.ok(`nfv.v1.tenant.${t}.vnfs.instantiate`, { descriptor, requestId: `demo-${n.leftNs}` });
  const op = await api.waitOp(t, inst.opOccId, opts.opTimeoutMs ?? 600_000);
  if (op.operationState !== 'COMPLETED') throw new Error(`instantiate ended ${op.operationState}: ${JSON.stringify(op.error)} steps: ${op.steps.map((s: any) => s.message).join(' | ')}`);
  const bootMs = Date.parse(op.stateEnteredTime) - Date.parse(op.startTime);
  const vnf = await api.ok(`nfv.v1.tenant.${t}.vnfs.get`, { id: inst.vnfId });
  const rep = vnf.replicas[0];
  const addr = (name: string): string => String(rep.interfaces.find((i: any) => i.name === name)?.ips?.[0] ?? '').split('/')[0]!;
  const vrouterIps = { left: addr('west'), right: addr('east') };
  log(`replica RUNNING on node ${rep.nodeId} (sandbox ${rep.sandboxId}); vrouter ${vrouterIps.left} | ${vrouterIps.right}; ${bootMs} ms`);

  ip('-n', n.leftNs, 'route', 'replace', `${n.rightNet.prefix}.0/24`, 'via', vrouterIps.left);
  ip('-n', n.rightNs, 'route', 'replace', `${n.leftNet.prefix}.0/24`, 'via', vrouterIps.right);
  // the first packets may wait for ARP across the VM: a short warm-up, not counted
  ping(n.leftNs, `${n.rightNet.prefix}.2`, 2, 3);
  const p = ping(n.leftNs, `${n.rightNet.prefix}.2`, pings, 3);
  log(`ping ${n.leftNs} -> ${n.rightNs}: ${p.received}/${p.sent} received`);

  log('terminating');
  const term = await api.ok(`nfv.v1.tenant.${t}.vnfs.terminate`, { id: inst.vnfId });
  const top = await api.waitOp(t, term.opOccId, opts.opTimeoutMs ?? 600_000);
  const after = ping(n.leftNs, `${n.rightNet.prefix}.2`, 2, 1);
  log(`after terminate: ${after.received}/${after.sent} received`);
  return {
    pingsSent: p.sent,
    pingsReceived: p.received,
    bootMs,
    rttMsMedian: median(p.rttsMs),
    vnfId: inst.vnfId,
    nodeId: rep.nodeId,
    sandboxId: rep.sandboxId,
    vrouterIps,
    pingsAfterTerminate: after.received,
    opStates: [op.operationState, top.operationState],
  };
}
