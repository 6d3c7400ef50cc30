/**
 * Wires the node agent from injected dependencies (a test builds the same app with other parts): inventory,
 * hypervisor driver, sandbox manager, NATS side, metrics.
 */
import { readFileSync } from 'node:fs';
import type { NatsConnection } from 'nats';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { UnavailableError, type HostCheck, type NodeInventory } from '@edgenfv/contracts';
import type { NodeAgentConfig } from './config.js';
import { collectInventory, detectDataplanes, kvmUsable, type InventoryDeps } from './inventory.js';
import { QemuDriver } from './hypervisor/qemu.js';
import type { HypervisorDriver } from './hypervisor/types.js';
import { createMetrics, type NodeAgentMetrics } from './metrics.js';
import { Cgroups } from './sandbox/cgroup.js';
import { hostProtections, nftBridgeUsable } from './protections.js';
import { vmOverhead } from './sandbox/overhead.js';
import { NetpluginsAttachments } from './sandbox/attachments.js';
import { GrpcGuestPort } from './sandbox/grpc-guest.js';
import { SandboxManager } from './sandbox/manager.js';
import type { AttachmentPort, GuestPort } from './sandbox/ports.js';
import { NodeAgent } from './agent.js';
import { createSwitches } from './dataplane/index.js';
import type { DataplaneSwitch } from './dataplane/switch.js';
import { ImageStore } from './images/store.js';
import { ReplicaRequests } from './replica-requests.js';

export interface AppDeps {
  cfg: Readonly<NodeAgentConfig>;
  logger: Logger;
  registry: Registry;
  nc: NatsConnection;
  /** Guest kernel + initramfs (+ the kernel arguments the image expects). */
  image: { kernelPath?: string; initrdPath?: string; systemDisk?: { path: string; serial: string }; kernelArgs?: string; minMemoryMiB?: number };
  driver?: HypervisorDriver;
  guest?: GuestPort;
  attachments?: AttachmentPort;
  inventoryDeps?: InventoryDeps;
  /** KVM as probed at start (probeKvm); default: /dev/kvm is usable. */
  kvm?: boolean;
  /** Host readiness checks run at start (@edgenfv/host-check), published in the inventory. */
  hostChecks?: HostCheck[];
}

export interface App {
  agent: NodeAgent;
  manager: SandboxManager;
  metrics: NodeAgentMetrics;
  accel: 'kvm' | 'tcg';
  /** The DPDK switch the agent runs (config `dataplanes: [{kind: ovs-dpdk}]`), if any. */
  dataplane?: DataplaneSwitch;
  inventory(): Promise<NodeInventory>;
  /** Re-adopts sandboxes, registers, starts watching. */
  start(): Promise<void>;
  /** Stops the agent; VMs keep running unless `stopVms` (operator shutdown of the node: every sandbox torn down). */
  stop(opts?: { stopVms?: boolean }): Promise<void>;
}

/** Host TSC in kHz (microvm under TCG needs tsc_early_khz). */
export function hostCpuKHz(): number | undefined {
  try {
    const m = /cpu MHz\s*:\s*([\d.]+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    return m ? Math.round(Number(m[1]) * 1000) : undefined;
  } catch {
    return undefined;
  }
}

export function buildApp(deps: AppDeps): App {
  const { cfg, logger } = deps;
  const kvm = deps.kvm ?? kvmUsable(cfg.devRoot);
  const accel = cfg.qemu.accel ?? (kvm ? 'kvm' : 'tcg');
  if (accel === 'kvm' && !kvm) throw new UnavailableError(`qemu.accel is kvm but ${cfg.devRoot}/kvm is not usable on this node`);
  const driver = deps.driver ?? new QemuDriver({ logger, ...(cfg.qemu.binary ? { binary: cfg.qemu.binary } : {}) });
  const switches = createSwitches(cfg, logger);
  let manager: SandboxManager;
  const metrics = createMetrics(deps.registry, () => manager.rssByTenant(), () => manager.guestAgentRssByTenant());
  const cpuKHz = hostCpuKHz();
  const cgroups = new Cgroups(cfg.isolation.cgroupRoot, cfg.isolation.cgroupParent, logger);
  const guestBaseMiB = Math.max(cfg.vmBaseMemoryMiB, deps.image.minMemoryMiB ?? 0);
  const overhead = vmOverhead({
    guestBaseMiB,
    accel,
    ...(cfg.qemu.overheadMiB !== undefined ? { overheadMiB: cfg.qemu.overheadMiB } : {}),
    ...(cfg.qemu.tcgTbSizeMiB !== undefined ? { tcgTbSizeMiB: cfg.qemu.tcgTbSizeMiB } : {}),
  });
  let capacity: Promise<{ memoryMiB: number; cpuCount: number; cpuAllocationRatio: number }> | undefined;
  manager = new SandboxManager({
    cfg: { ...cfg, vmBaseMemoryMiB: guestBaseMiB },
    driver,
    accel,
    guest: deps.guest ?? new GrpcGuestPort(logger, { keepaliveTimeoutMs: cfg.guest.keepaliveTimeoutMs, rpcTimeoutScale: cfg.guest.rpcTimeoutScale }),
    attachments: deps.attachments ?? new NetpluginsAttachments({
        stateDir: cfg.stateDir,
        sysfsRoot: cfg.sysfsRoot,
        physnets: cfg.physnets,
        networks: cfg.networks,
        logger,
        ...(switches[0] ? { dataplane: switches[0] } : {}), // vhost-user ports go on the node's switch
      }),
    cgroups,
    logger,
    metrics,
    image: {
      ...(deps.image.kernelPath ? { kernelPath: deps.image.kernelPath } : {}),
      ...(deps.image.initrdPath ? { initrdPath: deps.image.initrdPath } : {}),
      ...(deps.image.systemDisk ? { systemDisk: deps.image.systemDisk } : {}),
    },
    ...(deps.image.kernelArgs ? { kernelArgs: deps.image.kernelArgs } : {}),
    ...(cpuKHz ? { hostCpuKHz: cpuKHz } : {}),
    // pruning keeps the images the node's replicas run (read when a pull prunes, after the manager exists)
    images: new ImageStore(cfg, undefined, { inUse: () => [...manager.replicas().values()].flatMap((r) => (r.replica.image?.digest ? [r.replica.image.digest] : [])), logger }),
    warmPool: {
      flavours: cfg.warmPool,
      cpuBudgetPercent: cfg.warmPoolCpuBudgetPercent,
      overhead,
      capacity: () => (capacity ??= collectInventory(cfg, { kvm, switches, ...deps.inventoryDeps }).then((i) => ({ memoryMiB: i.memoryMiB, cpuCount: i.cpuCount, cpuAllocationRatio: cfg.cpuAllocationRatio }))),
    },
  });
  let nftBridge: Promise<boolean> | undefined;
  const inventory = async (): Promise<NodeInventory> => {
    const inv = await collectInventory(cfg, { kvm, switches, ...deps.inventoryDeps });
    nftBridge ??= nftBridgeUsable();
    const protections = hostProtections({ cgroupControllers: cgroups.enabledControllers(), seccomp: cfg.isolation.sandbox, uidBase: cfg.isolation.uidBase, nftBridge: await nftBridge });
    const warmPool = manager.warm?.info();
    return { ...inv, vmOverhead: overhead, vmMaxVcpus: cfg.qemu.maxVcpus, cpuAllocationRatio: cfg.cpuAllocationRatio, noViommuTenants: manager.noViommuTenants(), ...(deps.hostChecks ? { checks: deps.hostChecks } : {}), protections, ...(warmPool ? { warmPool } : {}) };
  };
  const agent = new NodeAgent({
    nodeId: cfg.nodeId,
    nc: deps.nc,
    manager,
    inventory,
    live: () => ({ dataplanes: detectDataplanes(cfg, switches), ...(manager.warm ? { warmPool: manager.warm.info() } : {}), noViommuTenants: manager.noViommuTenants() }),
    logger,
    metrics,
    heartbeatIntervalMs: cfg.heartbeatIntervalMs,
    fencing: cfg.fencing,
    guestLivenessIntervalMs: cfg.guest.livenessIntervalMs,
  });
  const requests = new ReplicaRequests(cfg.nodeId, deps.nc, manager, logger.child({ component: 'replica-requests' }));
  return {
    agent,
    manager,
    metrics,
    accel,
    ...(switches[0] ? { dataplane: switches[0] } : {}),
    inventory,
    async start() {
      logger.info({ nodeId: cfg.nodeId, accel, kvm, machine: cfg.qemu.machine }, `node agent starting (qemu accel ${accel}${kvm ? '' : ': no /dev/kvm, TCG'})`);
      // bounded (startTimeoutMs): a switch that will not start is reported as failed in the inventory, not waited for
      for (const s of switches) await s.start();
      const { adopted, cleaned } = await manager.init();
      if (adopted.length || cleaned.length) logger.info({ adopted, cleaned }, 're-adoption done');
      await agent.start();
      requests.start();
    },
    async stop(opts = {}) {
      requests.stop();
      await agent.stop();
      // after the agent (no more heartbeats or status writes), before the switches (their ports go with the VMs)
      if (opts.stopVms) await manager.stopAll();
      await manager.close();
      for (const s of switches) await s.stop();
    },
  };
}
