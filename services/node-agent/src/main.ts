/**
 * `node services/node-agent/dist/src/main.js [--config node.yaml]`: reads config, builds logger and registry,
 * connects NATS, buildApp(deps), serves /metrics. SIGTERM/SIGINT stop the agent; VMs keep running and the next
 * start re-adopts them.
 */
import { createServer } from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { credsAuthenticator, type ConnectionOptions } from 'nats';
import { createLogger, createRegistry } from '@edgenfv/telemetry';
import { loadConfig } from './config.js';
import { connectWithRetry } from './nats-connect.js';
import { buildApp } from './app.js';
import { buildGuestImage, SYSTEM_DISK_FILE, SYSTEM_DISK_SERIAL } from './guest/index.js';
import { probeKvm } from './hypervisor/kvm-probe.js';
import { promisesFromNodeConfig, runHostChecks } from '@edgenfv/host-check';
import { findBinary } from './inventory.js';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const ci = argv.indexOf('--config');
  const file = ci >= 0 ? argv[ci + 1] : process.env.EDGENFV_NODE_CONFIG;
  const cfg = loadConfig(process.env, file);
  const logger = createLogger({ service: 'node-agent' }).child({ nodeId: cfg.nodeId });
  const registry = createRegistry('node-agent');
  const opts: ConnectionOptions = { servers: cfg.nats.url, name: `node-agent-${cfg.nodeId}`, maxReconnectAttempts: -1 };
  if (cfg.nats.user) Object.assign(opts, { user: cfg.nats.user, pass: cfg.nats.pass });
  if (cfg.nats.token) Object.assign(opts, { token: cfg.nats.token });
  if (cfg.nats.credsFile) opts.authenticator = credsAuthenticator(readFileSync(cfg.nats.credsFile));
  // a node's credentials may only subscribe below its own inbox prefix (docs/security.md)
  if (cfg.nats.inboxPrefix) opts.inboxPrefix = cfg.nats.inboxPrefix;
  // a service waits for its server: the first connect is retried with backoff (nats-connect.ts), never fatal
  const nc = await connectWithRetry(opts, logger);
  const image =
    cfg.guest.kernelPath && cfg.guest.initrdPath
      ? {
          kernelPath: cfg.guest.kernelPath,
          initrdPath: cfg.guest.initrdPath,
          ...systemDiskOf(cfg.guest.systemDiskPath, cfg.guest.initrdPath),
        }
      : // a node with SR-IOV PFs needs the VF drivers (igbvf, iavf, i40e, ice are only in the generic kernel)
        await buildGuestImage({ log: logger, kernelFlavor: Object.keys(cfg.physnets).length > 0 ? 'generic' : 'cloud' });
  let kvm = false;
  let kvmProbe: { ok: boolean; reason: string } | undefined;
  if (cfg.qemu.accel !== 'tcg') {
    const probe = await probeKvm({ qemuBinary: cfg.qemu.binary ?? findBinary('qemu-system-x86_64') ?? 'qemu-system-x86_64', kernelPath: image.kernelPath, devRoot: cfg.devRoot });
    kvm = probe.ok;
    kvmProbe = probe;
    logger.info({ kvm, reason: probe.reason }, kvm ? 'KVM works: guests run with accel kvm' : `KVM not usable (${probe.reason}): guests run under TCG`);
  }
  // the same checks as `edgenfv check`, published in the inventory (nodes.get)
  const host = await runHostChecks({
    promises: promisesFromNodeConfig(cfg),
    cgroupRoot: cfg.isolation.cgroupRoot,
    ...(kvmProbe ? { kvmProbe } : {}),
  });
  for (const c of host.checks.filter((x) => x.status !== 'pass')) logger.warn({ check: c.name, status: c.status, required: c.required, fix: c.fix }, `host check ${c.name}: ${c.detail}`);
  const app = buildApp({ cfg, logger, registry, nc, image, kvm, hostChecks: host.checks });
  await app.start();
  const server = createServer((req, res) => {
    if (req.url === '/metrics') {
      registry
        .metrics()
        .then((body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body))
        .catch((err: Error) => res.writeHead(500).end(err.message));
    } else if (req.url === '/healthz') res.writeHead(200).end('ok\n');
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(cfg.metrics.port, cfg.metrics.host, resolve));
  logger.info({ metrics: `http://${cfg.metrics.host}:${cfg.metrics.port}/metrics` }, 'node agent ready');
  let stopping = false;
  const stop = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    // the appliance's `--stop-vms` (npm start -- --stop-vms): the tenant VMs stop with the agent
    const stopVms = process.env.EDGENFV_STOP_VMS_ON_EXIT === '1';
    const vms = app.manager.sandboxes().length;
    logger.info({ sig, vms, stopVms }, stopVms ? `stopping with the ${vms} tenant VM(s)` : `stopping (${vms} tenant VM(s) keep running for re-adoption)`);
    void (async () => {
      server.close();
      await app.stop({ stopVms });
      await nc.drain();
      process.exit(0);
    })();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  const e = err as Error & { issues?: unknown };
  process.stderr.write(`node-agent: ${e.message}\n`);
  process.exit(1);
});

/**
 * The image's system disk: the configured one, else the `system.erofs` beside the configured initrd (a built image's
 * folder; without it the guest's /init finds no system disk and powers off).
 */
function systemDiskOf(configured: string | undefined, initrdPath: string): { systemDisk?: { path: string; serial: string } } {
  const beside = join(dirname(initrdPath), SYSTEM_DISK_FILE);
  const path = configured ?? (existsSync(beside) ? beside : undefined);
  return path ? { systemDisk: { path, serial: SYSTEM_DISK_SERIAL } } : {};
}
