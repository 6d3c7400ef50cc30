/** A sandbox manager on the real parts (QEMU driver, gRPC guest port, netplugins, cgroups) for the VM tests. */
import type { Logger } from '@edgenfv/telemetry';
import type { NodeAgentConfig } from '../../src/config.js';
import type { GuestImage } from '../../src/guest/index.js';
import { QemuDriver } from '../../src/hypervisor/qemu.js';
import { hostCpuKHz } from '../../src/app.js';
import { Cgroups } from '../../src/sandbox/cgroup.js';
import { NetpluginsAttachments } from '../../src/sandbox/attachments.js';
import { GrpcGuestPort } from '../../src/sandbox/grpc-guest.js';
import { SandboxManager, type SandboxManagerDeps } from '../../src/sandbox/manager.js';
import type { GuestPort } from '../../src/sandbox/ports.js';

export function realSandboxManager(o: {
  cfg: NodeAgentConfig;
  accel: 'kvm' | 'tcg';
  stateDir: string;
  cgParent: string;
  image: GuestImage;
  log: Logger;
  /** hotplugSlots, warmPool, ... */
  extra?: Partial<SandboxManagerDeps>;
}): SandboxManager {
  const cpuKHz = hostCpuKHz();
  return new SandboxManager({
    cfg: o.cfg,
    driver: new QemuDriver({ logger: o.log }),
    accel: o.accel,
    guest: new GrpcGuestPort(o.log),
    attachments: new NetpluginsAttachments({ stateDir: o.stateDir, sysfsRoot: '/sys', physnets: {}, logger: o.log }),
    cgroups: new Cgroups(o.cfg.isolation.cgroupRoot, o.cgParent, o.log),
    logger: o.log,
    image: { kernelPath: o.image.kernelPath, initrdPath: o.image.initrdPath, systemDisk: o.image.systemDisk },
    kernelArgs: o.image.kernelArgs,
    ...(cpuKHz ? { hostCpuKHz: cpuKHz } : {}),
    ...o.extra,
  });
}

/**
 * A sandbox manager on real QEMU, netplugins and cgroups, with no guest kernel (the VM idles in firmware) and a
 * stand-in guest port (e.g. RecordingGuest): for the tests of what the manager does around the VM.
 */
export function firmwareSandboxManager(o: { cfg: NodeAgentConfig; stateDir: string; cgParent: string; guest: GuestPort; log: Logger; extra?: Partial<SandboxManagerDeps> }): SandboxManager {
  return new SandboxManager({
    cfg: o.cfg,
    driver: new QemuDriver({ logger: o.log }),
    accel: 'tcg',
    guest: o.guest,
    attachments: new NetpluginsAttachments({ stateDir: o.stateDir, sysfsRoot: '/sys', physnets: {}, logger: o.log }),
    cgroups: new Cgroups(o.cfg.isolation.cgroupRoot, o.cgParent, o.log),
    logger: o.log,
    image: {},
    ...o.extra,
  });
}
