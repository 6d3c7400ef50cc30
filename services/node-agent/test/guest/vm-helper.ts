/**
 * Test helper (not the product's QEMU driver): boots the guest image under QEMU TCG (q35) inside a netns, with the
 * agent's virtio-serial port on a unix socket and virtio-net NICs on taps created in that netns. stop() kills QEMU.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { connect } from 'node:net';
import type { GuestImage } from '../../src/guest/index.js';
import { VIOMMU_DEVICE, VIOMMU_KERNEL_ARGS, VIOMMU_NIC_PROPS } from '../../src/hypervisor/qemu-args.js';

export interface TestVm {
  proc: ChildProcess;
  chardevPath: string;
  /** Hot-adds a virtio-net NIC on a new tap (in the VM's netns) through QMP, into the spare PCIe root port. */
  hotplugTap(ifname: string, mac: string): Promise<void>;
  console(): string;
  stop(): Promise<void>;
}

export function bootTestVm(o: {
  image: GuestImage;
  dir: string;
  netns: string;
  taps: Array<{ ifname: string; mac: string }>;
  memoryMiB?: number;
  /** vCPUs (default 1). */
  smp?: number;
  appendArgs?: string;
  /** Read-only raw disks (e.g. a packed OCI layout), found in the guest by serial. */
  disks?: Array<{ path: string; serial: string }>;
  /** The product's virtual IOMMU (qemu-args VIOMMU_*): VT-d first, the taps' NICs translated through it. */
  viommu?: boolean;
}): TestVm {
  const chardevPath = join(o.dir, 'agent.sock');
  for (const t of o.taps) execFileSync('ip', ['-n', o.netns, 'tuntap', 'add', t.ifname, 'mode', 'tap']);
  const args = [
    'netns', 'exec', o.netns, 'qemu-system-x86_64',
    '-M', 'q35,accel=tcg', '-cpu', 'max', '-smp', String(o.smp ?? 1), '-m', `${Math.max(o.memoryMiB ?? 512, o.image.minMemoryMiB)}M`,
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'stdio', '-monitor', 'none',
    '-kernel', o.image.kernelPath, '-initrd', o.image.initrdPath, '-append', `${o.image.kernelArgs} ${o.viommu ? VIOMMU_KERNEL_ARGS : ''} ${o.appendArgs ?? ''}`.trim(),
    ...(o.viommu ? ['-device', VIOMMU_DEVICE] : []),
    '-device', 'virtio-serial-pci',
    '-chardev', `socket,id=agent,path=${chardevPath},server=on,wait=off`,
    '-device', `virtserialport,chardev=agent,name=${o.image.agentPortName}`,
    '-qmp', `unix:${join(o.dir, 'qmp.sock')},server=on,wait=off`,
    '-device', 'pcie-root-port,id=hp0,chassis=9,slot=9',
  ];
  o.taps.forEach((t, i) => {
    args.push('-netdev', `tap,id=n${i},ifname=${t.ifname},script=no,downscript=no`, '-device', `virtio-net-pci,netdev=n${i},mac=${t.mac}${o.viommu ? `,${VIOMMU_NIC_PROPS}` : ''}`);
  });
  (o.disks ?? []).forEach((d, i) => {
    args.push('-drive', `file=${d.path},format=raw,if=none,readonly=on,id=d${i}`, '-device', `virtio-blk-pci,drive=d${i},serial=${d.serial}`);
  });
  // the image's system disk (Node.js, the agent...), last like the node agent's QEMU command line
  args.push('-drive', `file=${o.image.systemDisk.path},format=raw,if=none,readonly=on,id=sysdisk`, '-device', `virtio-blk-pci,drive=sysdisk,serial=${o.image.systemDisk.serial}`);
  const proc = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d.toString('latin1')));
  proc.stderr!.on('data', (d) => (out += d.toString('latin1')));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return {
    proc,
    chardevPath,
    hotplugTap: async (ifname, mac) => {
      execFileSync('ip', ['-n', o.netns, 'tuntap', 'add', ifname, 'mode', 'tap']);
      await qmp(join(o.dir, 'qmp.sock'), [
        { execute: 'qmp_capabilities' },
        { execute: 'netdev_add', arguments: { type: 'tap', id: `nd-${ifname}`, ifname, script: 'no', downscript: 'no' } },
        { execute: 'device_add', arguments: { driver: 'virtio-net-pci', id: `dev-${ifname}`, netdev: `nd-${ifname}`, mac, bus: 'hp0' } },
      ]);
    },
    console: () => out,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** Runs QMP commands in order; rejects on the first error reply. */
async function qmp(path: string, cmds: object[]): Promise<void> {
  const sock = connect(path);
  let buf = '';
  const lines: Array<Record<string, unknown>> = [];
  let wake: (() => void) | undefined;
  sock.on('data', (d) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
    }
    wake?.();
  });
  const next = async (): Promise<Record<string, unknown>> => {
    for (;;) {
      const j = lines.findIndex((l) => 'return' in l || 'error' in l || 'QMP' in l);
      if (j >= 0) return lines.splice(j, 1)[0]!;
      await new Promise<void>((r) => (wake = r));
    }
  };
  try {
    await next(); // greeting
    for (const c of cmds) {
      sock.write(JSON.stringify(c) + '\n');
      const r = await next();
      if ('error' in r) throw new Error(`QMP ${JSON.stringify(c)}: ${JSON.stringify(r.error)}`);
    }
  } finally {
    sock.destroy();
  }
}
