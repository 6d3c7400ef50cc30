/**
 * Appliance configuration: `$EDGENFV_HOME/edgenfv.yaml` (optional) plus the environment. Closed schema, every
 * issue reported together, then frozen. Sections other than the appliance's own are handed to each service.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { isAbsolute, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { InvalidArgumentError, type FieldIssue, type NetworkConfig } from '@edgenfv/contracts';

export interface ApplianceConfig {
  home: string;
  host: string;
  ports: { nats: number; dashboard: number; schedulerMetrics: number; nodeAgentMetrics: number };
  networks: NetworkConfig[];
  /** Passed through to the scheduler / node agent / dashboard config files. */
  scheduler: Record<string, unknown>;
  nodeAgent: Record<string, unknown>;
  dashboard: Record<string, unknown>;
  /** Which services to run besides nats-server (all by default). */
  services: { scheduler: boolean; nodeAgent: boolean; dashboard: boolean };
  /**
   * The node agent's OVS-DPDK switch for the networks with `dataplane: ovs-dpdk` (`ovsDpdk: auto|on|off`, default
   * auto: on when openvswitch-switch-dpdk is installed and a network asks for it), with each such network's uplink a
   * veth into `providerNetns`, the host namespace standing in for the provider network. Undefined: off.
   */
  ovsDpdk?: { providerNetns: string; switchNetns: string };
  /**
   * Seconds nats-server gives a client between its INFO and the client's CONNECT (nats' `authorization { timeout }`,
   * default 2). A node whose agent signs its JWT nonce slowly (an emulated or heavily loaded node) needs more.
   */
  natsAuthTimeoutS?: number;
}

/** The DPDK build of ovs-vswitchd (Debian openvswitch-switch-dpdk). */
export const OVS_VSWITCHD_DPDK = '/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk';

export const DEFAULT_PORTS = { nats: 4222, dashboard: 8080, schedulerMetrics: 9464, nodeAgentMetrics: 9465 } as const;

const TOP = new Set(['host', 'ports', 'networks', 'scheduler', 'nodeAgent', 'dashboard', 'services', 'ovsDpdk', 'natsAuthTimeoutS']);

function port(v: unknown, field: string, issues: FieldIssue[]): number | undefined {
  if (v === undefined) return undefined;
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) {
    issues.push({ field, message: 'must be a TCP port (1..65535)' });
    return undefined;
  }
  return n;
}

function section(v: unknown, field: string, issues: FieldIssue[]): Record<string, unknown> {
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    issues.push({ field, message: 'must be a mapping' });
    return {};
  }
  return v as Record<string, unknown>;
}

export function loadApplianceConfig(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd(), ovsInstalled = existsSync(OVS_VSWITCHD_DPDK)): Readonly<ApplianceConfig> {
  const home = resolve(cwd, env.EDGENFV_HOME ?? '.edgenfv');
  const file = env.EDGENFV_APPLIANCE_CONFIG ?? join(home, 'edgenfv.yaml');
  const issues: FieldIssue[] = [];
  let raw: Record<string, unknown> = {};
  if (existsSync(file)) {
    try {
      raw = section(parseYaml(readFileSync(file, 'utf8')) ?? {}, file, issues);
    } catch (err) {
      issues.push({ field: file, message: `cannot be parsed: ${(err as Error).message}` });
    }
  } else if (env.EDGENFV_APPLIANCE_CONFIG) {
    issues.push({ field: 'EDGENFV_APPLIANCE_CONFIG', message: `${file} does not exist` });
  }
  for (const k of Object.keys(raw)) if (!TOP.has(k)) issues.push({ field: k, message: 'is not a known setting' });
  const p = section(raw.ports, 'ports', issues);
  for (const k of Object.keys(p)) if (!(k in DEFAULT_PORTS)) issues.push({ field: `ports.${k}`, message: 'is not a known port' });
  const ports = {
    nats: port(env.EDGENFV_NATS_PORT ?? p.nats, 'ports.nats', issues) ?? DEFAULT_PORTS.nats,
    dashboard: port(env.EDGENFV_DASHBOARD_PORT ?? p.dashboard, 'ports.dashboard', issues) ?? DEFAULT_PORTS.dashboard,
    schedulerMetrics: port(env.EDGENFV_SCHEDULER_METRICS_PORT ?? p.schedulerMetrics, 'ports.schedulerMetrics', issues) ?? DEFAULT_PORTS.schedulerMetrics,
    nodeAgentMetrics: port(env.EDGENFV_NODE_AGENT_METRICS_PORT ?? p.nodeAgentMetrics, 'ports.nodeAgentMetrics', issues) ?? DEFAULT_PORTS.nodeAgentMetrics,
  };
  const seen = new Map<number, string>();
  for (const [k, v] of Object.entries(ports)) {
    if (seen.has(v)) issues.push({ field: `ports.${k}`, message: `is the same port as ports.${seen.get(v)} (${v})` });
    seen.set(v, k);
  }
  const networks = (raw.networks ?? DEFAULT_NETWORKS) as NetworkConfig[];
  if (!Array.isArray(networks)) issues.push({ field: 'networks', message: 'must be a list' });
  const s = section(raw.services, 'services', issues);
  const flag = (k: string): boolean => {
    const v = s[k];
    if (v === undefined) return true;
    if (typeof v !== 'boolean') issues.push({ field: `services.${k}`, message: 'must be true or false' });
    return v !== false;
  };
  const cfg: ApplianceConfig = {
    home,
    host: typeof raw.host === 'string' ? raw.host : '127.0.0.1',
    ports,
    networks: Array.isArray(networks) ? networks : [],
    scheduler: section(raw.scheduler, 'scheduler', issues),
    nodeAgent: section(raw.nodeAgent, 'nodeAgent', issues),
    dashboard: section(raw.dashboard, 'dashboard', issues),
    services: { scheduler: flag('scheduler'), nodeAgent: flag('nodeAgent'), dashboard: flag('dashboard') },
  };
  if (raw.natsAuthTimeoutS !== undefined) {
    const t = raw.natsAuthTimeoutS;
    if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0 || t > 600) issues.push({ field: 'natsAuthTimeoutS', message: 'must be a number of seconds in (0, 600]' });
    else cfg.natsAuthTimeoutS = t;
  }
  for (const k of Object.keys(s)) if (!['scheduler', 'nodeAgent', 'dashboard'].includes(k)) issues.push({ field: `services.${k}`, message: 'is not a known service' });
  const ovsMode = env.EDGENFV_OVS_DPDK ?? raw.ovsDpdk ?? 'auto';
  if (ovsMode !== 'auto' && ovsMode !== 'on' && ovsMode !== 'off' && ovsMode !== true && ovsMode !== false) {
    issues.push({ field: 'ovsDpdk', message: 'must be auto, on or off' });
  }
  const asks = cfg.networks.some((n) => (n as { dataplane?: unknown }).dataplane === 'ovs-dpdk');
  const on = ovsMode === 'on' || ovsMode === true || (ovsMode === 'auto' && ovsInstalled && asks);
  if ((ovsMode === 'on' || ovsMode === true) && !ovsInstalled) issues.push({ field: 'ovsDpdk', message: `is on but ${OVS_VSWITCHD_DPDK} is not installed (apt-get install openvswitch-switch-dpdk)` });
  if (on && cfg.nodeAgent.dataplanes === undefined) {
    // one appliance per EDGENFV_HOME: its namespaces carry a hash of the home, so two appliances on a host never meet
    const h = createHash('sha256').update(home).digest('hex').slice(0, 6);
    cfg.ovsDpdk = { switchNetns: `enfv-ovs-${h}`, providerNetns: `enfv-prov-${h}` };
  }
  if (!isAbsolute(cfg.home)) issues.push({ field: 'EDGENFV_HOME', message: 'must resolve to an absolute path' });
  if (issues.length) throw new InvalidArgumentError(issues);
  return Object.freeze(cfg);
}

/**
 * Networks of a fresh appliance (docs/appliance.md): a management network for tap interfaces, and a provider network
 * for vhost-user interfaces on the node's OVS-DPDK switch (its uplink a veth into the provider namespace).
 */
export const DEFAULT_NETWORKS: NetworkConfig[] = [
  { name: 'mgmt', cidr: '10.99.0.0/24', gateway: '10.99.0.1', range: { start: '10.99.0.10', end: '10.99.0.250' } },
  { name: 'provider', cidr: '10.98.0.0/24', range: { start: '10.98.0.10', end: '10.98.0.250' }, dataplane: 'ovs-dpdk' },
];

/** The node agent's `dataplanes` for the appliance's switch: one veth uplink per network that asks for it. */
export function applianceDataplanes(cfg: Pick<ApplianceConfig, 'networks' | 'ovsDpdk'>): unknown[] | undefined {
  if (!cfg.ovsDpdk) return undefined;
  const uplinks: Record<string, unknown> = {};
  for (const n of cfg.networks) {
    if (n.dataplane !== 'ovs-dpdk') continue;
    const name = n.name.length <= 15 ? n.name : createHash('sha256').update(n.name).digest('hex').slice(0, 12);
    uplinks[n.name] = { veth: { netns: cfg.ovsDpdk.providerNetns, name } };
  }
  return [{ kind: 'ovs-dpdk', numaNode: 0, ovs: { netns: cfg.ovsDpdk.switchNetns, uplinks } }];
}
