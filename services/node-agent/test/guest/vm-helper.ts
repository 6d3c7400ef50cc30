/**
 * Test helper (not the product's QEMU driver): boots the guest image under QEMU TCG (q35) inside a netns, with the
 * agent's virtio-serial port on a unix socket and virtio-net NICs on taps created in that netns. stop() kills QEMU.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { GuestImage } from '../../src/guest/index.js';

export interface TestVm {
  proc: ChildProcess;
  chardevPath: string;
  console(): string;
  stop(): Promise<void>;
}

export function bootTestVm(o: {
  image: GuestImage;
  dir: string;
  netns: string;
  taps: Array<{ ifname: string; mac: string }>;
  memoryMiB?: number;
  appendArgs?: string;
  /** Read-only raw disks (e.g. a packed OCI layout), found in the guest by serial. */
  disks?: Array<{ path: string; serial: string }>;
}): TestVm {
  const chardevPath = join(o.dir, 'agent.sock');
  for (const t of o.taps) execFileSync('ip', ['-n', o.netns, 'tuntap', 'add', t.ifname, 'mode', 'tap']);
  const args = [
    'netns', 'exec', o.netns, 'qemu-system-x86_64',
    '-M', 'q35,accel=tcg', '-cpu', 'max', '-smp', '1', '-m', `${Math.max(o.memoryMiB ?? 512, o.image.minMemoryMiB)}M`,
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'stdio', '-monitor', 'none',
    '-kernel', o.image.kernelPath, '-initrd', o.image.initrdPath, '-append', `${o.image.kernelArgs} ${o.appendArgs ?? ''}`.trim(),
    '-device', 'virtio-serial-pci',
    '-chardev', `socket,id=agent,path=${chardevPath},server=on,wait=off`,
    '-device', `virtserialport,chardev=agent,name=${o.image.agentPortName}`,
  ];
  o.taps.forEach((t, i) => {
    args.push('-netdev', `tap,id=n${i},ifname=${t.ifname},script=no,downscript=no`, '-device', `virtio-net-pci,netdev=n${i},mac=${t.mac}`);
  });
  (o.disks ?? []).forEach((d, i) => {
    args.push('-drive', `file=${d.path},format=raw,if=none,readonly=on,id=d${i}`, '-device', `virtio-blk-pci,drive=d${i},serial=${d.serial}`);
  });
  const proc = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d.toString('latin1')));
  proc.stderr!.on('data', (d) => (out += d.toString('latin1')));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return {
    proc,
    chardevPath,
    console: () => out,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGKILL');
        await exited;
      }
    },
  };
}
