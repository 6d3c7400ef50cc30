/**
 * `npm start`: the whole appliance on this machine. Starts an embedded nats-server (JetStream, its store under
 * $EDGENFV_HOME/nats), then the scheduler, a node agent and the dashboard as supervised child processes; once all
 * serve, writes $EDGENFV_HOME/connect.json (0600) for the CLI and scripts. Ctrl-C / SIGTERM stops everything.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';
import { createLogger } from '@edgenfv/telemetry';
import { applianceDataplanes, loadApplianceConfig, type ApplianceConfig } from './config.js';
import { Supervised, type ServiceSpec } from './supervisor.js';

const REPO = fileURLToPath(new URL('../../../../', import.meta.url));

async function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

function writeSecret(path: string, value: unknown): void {
  writeFileSync(path, JSON.stringify(value, null, 2) + '\n', { mode: 0o600 });
  chmodSync(path, 0o600);
}

/** The operator's NATS credentials and the dashboard's own operator token (a separate secret), made once. */
function credentials(home: string): { user: string; pass: string; dashboardToken: string } {
  const path = join(home, 'secrets.json');
  const old = existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as { user: string; pass: string; dashboardToken?: string }) : undefined;
  if (old?.dashboardToken) return old as { user: string; pass: string; dashboardToken: string };
  const creds = { user: old?.user ?? 'operator', pass: old?.pass ?? randomBytes(18).toString('base64url'), dashboardToken: randomBytes(24).toString('base64url') };
  writeSecret(path, creds);
  return creds;
}

function serviceSpecs(cfg: ApplianceConfig, nats: NatsServerHandle, creds: { user: string; pass: string; dashboardToken: string }): ServiceSpec[] {
  const run = join(cfg.home, 'run');
  mkdirSync(run, { recursive: true, mode: 0o700 });
  const natsEnv = { EDGENFV_NATS_URL: nats.url, EDGENFV_NATS_USER: creds.user, EDGENFV_NATS_PASS: creds.pass };
  const specs: ServiceSpec[] = [];
  if (cfg.services.scheduler) {
    const file = join(run, 'scheduler.json');
    writeSecret(file, { networks: cfg.networks, ...cfg.scheduler });
    specs.push({
      name: 'scheduler',
      script: join(REPO, 'services/scheduler/dist/src/main.js'),
      env: { ...natsEnv, EDGENFV_CONFIG: file, EDGENFV_SCHEDULER_METRICS_PORT: String(cfg.ports.schedulerMetrics) },
      healthUrl: `http://127.0.0.1:${cfg.ports.schedulerMetrics}/healthz`,
    });
  }
  if (cfg.services.nodeAgent) {
    const file = join(run, 'node-agent.json');
    const dataplanes = applianceDataplanes(cfg);
    writeSecret(file, { stateDir: join(cfg.home, 'node'), networks: cfg.networks, ...(dataplanes ? { dataplanes } : {}), ...cfg.nodeAgent });
    specs.push({
      name: 'node-agent',
      script: join(REPO, 'services/node-agent/dist/src/main.js'),
      env: { ...natsEnv, EDGENFV_NODE_CONFIG: file, EDGENFV_METRICS_PORT: String(cfg.ports.nodeAgentMetrics) },
      healthUrl: `http://127.0.0.1:${cfg.ports.nodeAgentMetrics}/healthz`,
      // the first start builds the guest image (kernel download, initramfs): minutes, not seconds
      readyTimeoutMs: 20 * 60_000,
    });
  }
  if (cfg.services.dashboard) {
    specs.push({
      name: 'dashboard',
      script: join(REPO, 'services/dashboard/dist/src/main.js'),
      env: {
        ...natsEnv,
        EDGENFV_DASHBOARD_HOST: cfg.host,
        EDGENFV_DASHBOARD_PORT: String(cfg.ports.dashboard),
        EDGENFV_DASHBOARD_TOKEN: creds.dashboardToken,
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

  const creds = credentials(cfg.home);
  const connectPath = join(cfg.home, 'connect.json');
  rmSync(connectPath, { force: true });
  const nats = await startNatsServer({ storeDir: join(cfg.home, 'nats'), host: cfg.host, port: cfg.ports.nats, user: creds.user, pass: creds.pass, serverName: 'edgenfv-appliance' });
  logger.info({ url: nats.url, storeDir: nats.storeDir }, 'embedded nats-server serving');

  let stopping: Promise<number> | undefined;
  const services: Supervised[] = [];
  const stopAll = (code: number, why: string): Promise<number> => {
    stopping ??= (async () => {
      logger.info({ why }, 'appliance stopping');
      rmSync(connectPath, { force: true });
      for (const s of [...services].reverse()) await s.stop().catch((err) => logger.error({ err, service: s.spec.name }, 'stop failed'));
      await nats.stop();
      logger.info('appliance stopped');
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
    for (const spec of serviceSpecs(cfg, nats, creds)) {
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
    user: creds.user,
    pass: creds.pass,
    ...(cfg.services.dashboard ? { dashboardUrl: `http://${cfg.host}:${cfg.ports.dashboard}/`, dashboardToken: creds.dashboardToken } : {}),
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
