/**
 * `npm start`: the whole appliance on this machine. Starts an embedded nats-server (JetStream, its store under
 * $EDGENFV_HOME/nats), then the scheduler, a node agent and the dashboard as supervised child processes; once all
 * serve, writes $EDGENFV_HOME/connect.json (0600) for the CLI and scripts. Ctrl-C / SIGTERM stops everything.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';
import { createLogger } from '@edgenfv/telemetry';
import { applianceDataplanes, loadApplianceConfig, type ApplianceConfig } from './config.js';
import { Supervised, type ServiceSpec } from './supervisor.js';
import { describeStop, tenantVms } from './tenant-vms.js';
import { defaultNodeId, loadPrincipals, type Principals } from './principals.js';

const REPO = fileURLToPath(new URL('../../../../', import.meta.url));

async function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

/**
 * Writes a 0600 JSON file whole or not at all (a temporary file renamed over it): readers that wait for it to appear
 * (the CLI, scripts, tests polling for connect.json) never see it empty or half written.
 */
function writeSecret(path: string, value: unknown): void {
  const tmp = `${path}.tmp${process.pid}`;
  writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n', { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

/** Secrets the appliance keeps across restarts: the dashboard's operator token. */
function secrets(home: string): { dashboardToken: string } {
  const path = join(home, 'secrets.json');
  if (existsSync(path)) {
    const s = JSON.parse(readFileSync(path, 'utf8')) as { dashboardToken?: string; pass?: string };
    if (s.dashboardToken) return { dashboardToken: s.dashboardToken };
  }
  const s = { dashboardToken: randomBytes(24).toString('base64url') };
  writeSecret(path, s);
  return s;
}

function serviceSpecs(cfg: ApplianceConfig, nats: NatsServerHandle, p: Principals, dashboardToken: string): ServiceSpec[] {
  const run = join(cfg.home, 'run');
  mkdirSync(run, { recursive: true, mode: 0o700 });
  // Each service connects as its own principal with a creds file (0600); no secret goes into any environment.
  const natsOf = (who: { credsFile: string; inboxPrefix: string }) => ({ credsFile: who.credsFile, inboxPrefix: who.inboxPrefix });
  const specs: ServiceSpec[] = [];
  if (cfg.services.scheduler) {
    const file = join(run, 'scheduler.json');
    writeSecret(file, {
      networks: cfg.networks,
      ...cfg.scheduler,
      nats: { servers: [nats.url], ...natsOf(p.scheduler) },
      credentials: { issuerFile: p.issuerFile },
    });
    specs.push({
      name: 'scheduler',
      script: join(REPO, 'services/scheduler/dist/src/main.js'),
      env: { EDGENFV_CONFIG: file, EDGENFV_SCHEDULER_METRICS_PORT: String(cfg.ports.schedulerMetrics) },
      healthUrl: `http://127.0.0.1:${cfg.ports.schedulerMetrics}/healthz`,
    });
  }
  if (cfg.services.nodeAgent) {
    const file = join(run, 'node-agent.json');
    const dataplanes = applianceDataplanes(cfg);
    writeSecret(file, {
      stateDir: join(cfg.home, 'node'),
      networks: cfg.networks,
      ...(dataplanes ? { dataplanes } : {}),
      ...cfg.nodeAgent,
      nodeId: p.nodeId,
      nats: { url: nats.url, ...natsOf(p.node) },
    });
    specs.push({
      name: 'node-agent',
      script: join(REPO, 'services/node-agent/dist/src/main.js'),
      env: { EDGENFV_NODE_CONFIG: file, EDGENFV_METRICS_PORT: String(cfg.ports.nodeAgentMetrics), ...(STOP_VMS ? { EDGENFV_STOP_VMS_ON_EXIT: '1' } : {}) },
      healthUrl: `http://127.0.0.1:${cfg.ports.nodeAgentMetrics}/healthz`,
      // the first start builds the guest image (kernel download, initramfs): minutes, not seconds
      readyTimeoutMs: 20 * 60_000,
    });
  }
  if (cfg.services.dashboard) {
    const connectFile = join(run, 'dashboard-connect.json');
    writeSecret(connectFile, { servers: [nats.url], creds: readFileSync(p.dashboard.credsFile, 'utf8'), inboxPrefix: p.dashboard.inboxPrefix });
    const tokenFile = join(run, 'dashboard-token');
    writeFileSync(tokenFile, dashboardToken, { mode: 0o600 });
    chmodSync(tokenFile, 0o600);
    specs.push({
      name: 'dashboard',
      script: join(REPO, 'services/dashboard/dist/src/main.js'),
      env: {
        EDGENFV_CONNECT: connectFile,
        EDGENFV_DASHBOARD_TOKEN_FILE: tokenFile,
        EDGENFV_DASHBOARD_HOST: cfg.host,
        EDGENFV_DASHBOARD_PORT: String(cfg.ports.dashboard),
        EDGENFV_METRICS_URLS: [
          ...(cfg.services.scheduler ? [`http://127.0.0.1:${cfg.ports.schedulerMetrics}/metrics`] : []),
          ...(cfg.services.nodeAgent ? [`http://127.0.0.1:${cfg.ports.nodeAgentMetrics}/metrics`] : []),
        ].join(','),
      },
      healthUrl: `http://127.0.0.1:${cfg.ports.dashboard}/healthz`,
    });
  }
  return specs;
}

/** `npm start -- --stop-vms`: Ctrl-C stops the tenant VMs too (by default they keep running for re-adoption). */
const STOP_VMS = process.argv.includes('--stop-vms');

function nodeStateDir(cfg: ApplianceConfig): string {
  const own = (cfg.nodeAgent as { stateDir?: unknown }).stateDir;
  return typeof own === 'string' ? own : join(cfg.home, 'node');
}

async function main(): Promise<number> {
  const logger = createLogger({ service: 'appliance' });
  let cfg: Readonly<ApplianceConfig>;
  try {
    cfg = loadApplianceConfig();
  } catch (err) {
    const issues = (err as { issues?: { field: string; message: string }[] }).issues ?? [];
    for (const i of issues) console.error(`edgenfv: config: ${i.field}: ${i.message}`);
    if (!issues.length) console.error(`edgenfv: ${(err as Error).message}`);
    return 2;
  }
  mkdirSync(cfg.home, { recursive: true, mode: 0o700 });
  const wanted: [string, number, string][] = [['NATS', cfg.ports.nats, 'EDGENFV_NATS_PORT']];
  if (cfg.services.dashboard) wanted.push(['dashboard', cfg.ports.dashboard, 'EDGENFV_DASHBOARD_PORT']);
  if (cfg.services.scheduler) wanted.push(['scheduler metrics', cfg.ports.schedulerMetrics, 'EDGENFV_SCHEDULER_METRICS_PORT']);
  if (cfg.services.nodeAgent) wanted.push(['node agent metrics', cfg.ports.nodeAgentMetrics, 'EDGENFV_NODE_AGENT_METRICS_PORT']);
  for (const [what, port, envName] of wanted) {
    if (!(await portFree(cfg.host, port))) {
      console.error(`edgenfv: port ${port} (${what}) on ${cfg.host} is already in use; free it, or choose another with ${envName} or ports in ${join(cfg.home, 'edgenfv.yaml')}`);
      return 3;
    }
  }

  const { dashboardToken } = secrets(cfg.home);
  const principals = await loadPrincipals(cfg.home, typeof cfg.nodeAgent.nodeId === 'string' ? cfg.nodeAgent.nodeId : defaultNodeId());
  const connectPath = join(cfg.home, 'connect.json');
  rmSync(connectPath, { force: true });
  const nats = await startNatsServer({ storeDir: join(cfg.home, 'nats'), host: cfg.host, port: cfg.ports.nats, jwtAuth: principals.trust, serverName: 'edgenfv-appliance', ...(cfg.natsAuthTimeoutS ? { authTimeoutS: cfg.natsAuthTimeoutS } : {}) });
  logger.info({ url: nats.url, storeDir: nats.storeDir }, 'embedded nats-server serving');

  let stopping: Promise<number> | undefined;
  const services: Supervised[] = [];
  const stopAll = (code: number, why: string): Promise<number> => {
    stopping ??= (async () => {
      const t0 = Date.now();
      logger.info({ why }, 'appliance stopping');
      // say what keeps running and why (tenant VMs are kept for re-adoption unless --stop-vms)
      const vms = cfg.services.nodeAgent ? tenantVms(nodeStateDir(cfg)) : [];
      console.error(describeStop(vms, STOP_VMS));
      rmSync(connectPath, { force: true });
      for (const s of [...services].reverse()) {
        const ts = Date.now();
        // a node agent stopping its VMs takes as long as their teardown
        await s.stop(s.spec.name === 'node-agent' && STOP_VMS ? 120_000 : undefined).catch((err) => logger.error({ err, service: s.spec.name }, 'stop failed'));
        logger.info({ service: s.spec.name, ms: Date.now() - ts }, 'service stopped');
      }
      const tn = Date.now();
      await nats.stop();
      logger.info({ natsMs: Date.now() - tn, ms: Date.now() - t0 }, 'appliance stopped');
      const left = STOP_VMS ? [] : vms;
      console.error(`edgenfv: stopped in ${((Date.now() - t0) / 1000).toFixed(1)} s${left.length ? `; still running: ${left.length} tenant VM(s) (${[...new Set(left.map((v) => v.tenantId))].join(', ')})` : ''}.`);
      return code;
    })();
    return stopping;
  };
  const done = new Promise<number>((resolve) => {
    process.once('SIGINT', () => void stopAll(0, 'SIGINT').then(resolve));
    process.once('SIGTERM', () => void stopAll(0, 'SIGTERM').then(resolve));
    void nats.exited.then(() => {
      if (!stopping) void stopAll(1, 'nats-server exited').then(resolve);
    });
    for (const spec of serviceSpecs(cfg, nats, principals, dashboardToken)) {
      services.push(new Supervised(spec, logger, (why) => void stopAll(1, why).then(resolve)));
    }
  });

  try {
    for (const s of services) {
      await s.start();
      logger.info({ service: s.spec.name, pid: s.pid }, 'service serving');
    }
  } catch (err) {
    logger.error({ err }, 'appliance could not start');
    return stopAll(1, 'start failed');
  }

  const connect = {
    servers: [nats.url],
    // the operator principal: everything (docs/security.md)
    creds: readFileSync(principals.operator.credsFile, 'utf8'),
    inboxPrefix: principals.operator.inboxPrefix,
    ...(cfg.services.dashboard ? { dashboardUrl: `http://${cfg.host}:${cfg.ports.dashboard}/`, dashboardToken } : {}),
    metricsUrls: services.map((s) => s.spec.healthUrl.replace(/\/healthz$/, '/metrics')),
    // where each network with dataplane: ovs-dpdk ends on the provider side (a veth named after the network)
    ...(cfg.ovsDpdk && cfg.services.nodeAgent ? { providerNetns: cfg.ovsDpdk.providerNetns } : {}),
    home: cfg.home,
    pid: process.pid,
  };
  writeSecret(connectPath, connect);
  logger.info({ connect: connectPath, dashboardUrl: connect.dashboardUrl }, 'edgenfv appliance serving');
  return done;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error('edgenfv: appliance failed:', err);
    process.exit(1);
  },
);
