/**
 * Wires the guest agent from its config: the gRPC server on a local unix socket, the ports (netlink through
 * iproute2, sysfs, /proc/sys, crun) and the framed channel on the virtio-serial port (or, on a host, a socket
 * stand-in). `main.ts` only parses the config and calls this.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnavailableError } from '@edgenfv/contracts/internal/errors';
import { AGENT_PORT_NAME } from '@edgenfv/contracts/internal/agent';
import { startAgentServer, type RunningServer } from './server.js';
import { IprouteIp } from './net/ip.js';
import { runCommand, timedRunner, withDefaultTimeout } from './exec.js';
import { LinuxNetSysfs } from './net/sysfs.js';
import { PciDrivers } from './net/pci-drivers.js';
import { ProcSysctl } from './sysctl.js';
import { ContainerRuntime } from './containers/runtime.js';
import { DataplaneState, releaseDataplane } from './dataplane.js';
import { GuestMux, VirtioSerialPort, findVirtioPort, unixConnector, type SerialPort } from './channel.js';
import { SocketChardevPort } from './socket-port.js';
import type { Log } from './log.js';
import { watchCpuHotplug } from './cpu-hotplug.js';
import { Identity } from './identity.js';

export interface AgentConfig {
  protoPath: string;
  stateDir: string;
  /** virtio-serial port name, or `socket:<path>` for the host stand-in. */
  port: string;
  netns?: string;
  sysRoot: string;
  procRoot: string;
  crun: string;
  busybox: string;
  ipBin: string;
  containerNetnsPath?: string;
  portWaitMs: number;
  /** How long a command the agent runs (ip, modprobe, crun's short commands) may take, unless it says otherwise. */
  commandTimeoutMs: number;
}

export const DEFAULT_CONFIG: Omit<AgentConfig, 'protoPath'> = {
  stateDir: '/run/edgenfv',
  port: AGENT_PORT_NAME,
  sysRoot: '/sys',
  procRoot: '/proc',
  crun: 'crun',
  busybox: '/bin/busybox',
  ipBin: 'ip',
  portWaitMs: 30_000,
  commandTimeoutMs: 30_000,
};

export interface RunningAgent {
  server: RunningServer;
  mux: GuestMux;
  containers: ContainerRuntime;
  stop(): Promise<void>;
}

async function openPort(cfg: AgentConfig, log: Log): Promise<SerialPort> {
  if (cfg.port.startsWith('socket:')) return SocketChardevPort.listen(cfg.port.slice('socket:'.length));
  const deadline = Date.now() + cfg.portWaitMs;
  for (;;) {
    const dev = findVirtioPort(cfg.port, cfg.sysRoot);
    if (dev) {
      log.info({ port: cfg.port, dev }, 'agent port found');
      return VirtioSerialPort.open(dev);
    }
    if (Date.now() > deadline) throw new UnavailableError(`virtio-serial port ${cfg.port} not found`);
    await sleep(50);
  }
}

/** true when / is the initramfs (rootfs/ramfs), where pivot_root(2) cannot be used. */
export async function rootIsInitramfs(procRoot = '/proc'): Promise<boolean> {
  const mounts = await readFile(join(procRoot, 'mounts'), 'utf8').catch(() => '');
  return mounts.split('\n').some((l) => {
    const [, mnt, type] = l.split(' ');
    return mnt === '/' && (type === 'rootfs' || type === 'ramfs');
  });
}

export async function startAgent(cfg: AgentConfig, log: Log, hooks: { exit?: (powerOff: boolean) => void } = {}): Promise<RunningAgent> {
  await mkdir(cfg.stateDir, { recursive: true });
  const socketPath = join(cfg.stateDir, 'agent.sock');
  await rm(socketPath, { force: true });
  const runner = timedRunner(log.child({ component: 'exec' }), withDefaultTimeout(runCommand, cfg.commandTimeoutMs));
  const drivers = new PciDrivers({ sysRoot: cfg.sysRoot, log: log.child({ component: 'pci-drivers' }) });
  const ipLog = log.child({ component: 'ip' });
  const onBadOutput = (o: object): void => ipLog.warn(o, 'ip -json printed output that is not JSON');
  const net = { ip: new IprouteIp({ ipBin: cfg.ipBin, runner, onBadOutput, ...(cfg.netns ? { netns: cfg.netns } : {}) }), sysfs: new LinuxNetSysfs(cfg.sysRoot), drivers };
  const dataplaneState = await DataplaneState.load(join(cfg.stateDir, 'dataplane.json'));
  const dataplane = { sysRoot: cfg.sysRoot, fileRoot: '/', hugepageMount: '/dev/hugepages', state: dataplaneState, run: runner };
  const containers = new ContainerRuntime({
    dataplane: { exposure: () => dataplaneState.exposure(), release: () => releaseDataplane(dataplane, dataplaneState) },
    stateDir: cfg.stateDir,
    crun: cfg.crun,
    busybox: cfg.busybox,
    runner,
    log: log.child({ component: 'containers' }),
    noPivot: await rootIsInitramfs(cfg.procRoot),
    ...(cfg.containerNetnsPath ? { networkNamespacePath: cfg.containerNetnsPath } : {}),
  });
  const server = await startAgentServer({
    socketPath,
    protoPath: cfg.protoPath,
    deps: {
      net,
      sysctl: new ProcSysctl(cfg.procRoot),
      containers,
      dataplane,
      procRoot: cfg.procRoot,
      identity: new Identity(randomUUID(), { run: runner, exists: existsSync }),
      ...(hooks.exit ? { onShutdown: (powerOff: boolean) => void shutdown(powerOff) } : {}),
      log: log.child({ component: 'grpc' }),
    },
  });
  // in the VM only: on a host (the socket stand-in, tests) the host's CPUs are not ours to online
  const stopCpuWatch = cfg.port.startsWith('socket:') ? () => undefined : watchCpuHotplug(cfg.sysRoot, log.child({ component: 'cpu-hotplug' }));
  // VFs passed through at boot: their drivers (not loaded by /init) now, in the background; later ones on demand
  if (!cfg.port.startsWith('socket:')) void drivers.scan();
  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= (async () => {
    stopCpuWatch();
    await mux.stop();
    await containers.close();
    await server.close();
  })());
  async function shutdown(powerOff: boolean): Promise<void> {
    log.info({ powerOff }, 'shutdown requested');
    await stop().catch((err: unknown) => log.error({ err }, 'stop failed'));
    hooks.exit!(powerOff);
  }
  const port = await openPort(cfg, log);
  const mux = new GuestMux({ port, connectLocal: unixConnector(socketPath), log: log.child({ component: 'channel' }) });
  mux.start();
  log.info({ socketPath, port: cfg.port }, 'guest agent ready');
  return {
    server,
    mux,
    containers,
    stop,
  };
}
