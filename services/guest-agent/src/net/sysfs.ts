/**
 * Sysfs port for NIC lookups: which PCI device (and driver) is behind a netdev. Reads `<root>/class/net/<if>/device`
 * (a symlink into `devices/pci.../0000:bb:dd.f`), so tests point it at a fake tree in a temporary folder.
 */
import { readdir, readFile, readlink, realpath } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { isPciAddress } from '@edgenfv/contracts/internal/values';

export interface NetSysfs {
  /** PCI address of the device behind ifname, or '' (virtual link, virtio-mmio). */
  pciAddressOf(ifname: string): Promise<string>;
  driverOf(ifname: string): Promise<string>;
  /** The link's operstate as `ip` prints it (UP, DOWN, UNKNOWN...), or '' when sysfs has none for it. */
  operStateOf(ifname: string): Promise<string>;
  /** Netdev names whose device is at this PCI address. */
  netdevsAt(pci: string): Promise<string[]>;
  /** The PCI address at a PCI path (`10.0/00.0`: slot.fn hops from the root bus), or '' when nothing is there. */
  resolvePciPath(path: string): Promise<string>;
}

/** `10.0/00.0` -> [[0x10, 0], [0, 0]]; null when malformed. */
export function parsePciPath(path: string): [number, number][] | null {
  if (!/^[0-9a-f]{2}\.[0-7](\/[0-9a-f]{2}\.[0-7]){0,7}$/i.test(path)) return null;
  const hops = path.split('/').map((h) => h.split('.').map((x) => parseInt(x, 16)) as [number, number]);
  return hops.every(([slot]) => slot < 32) ? hops : null;
}

export class LinuxNetSysfs implements NetSysfs {
  constructor(private readonly root = '/sys') {}

  async pciAddressOf(ifname: string): Promise<string> {
    // virtio-net: class/net/eth0/device -> .../0000:00:02.0/virtio0; the PCI function is its parent
    try {
      let p = await realpath(join(this.root, 'class', 'net', ifname, 'device'));
      for (let i = 0; i < 2; i++) {
        if (isPciAddress(basename(p)) && basename(p).length === 12) return basename(p);
        p = join(p, '..');
      }
      return '';
    } catch {
      return '';
    }
  }

  async driverOf(ifname: string): Promise<string> {
    try {
      return basename(await readlink(join(this.root, 'class', 'net', ifname, 'device', 'driver')));
    } catch {
      return '';
    }
  }

  async operStateOf(ifname: string): Promise<string> {
    try {
      return (await readFile(join(this.root, 'class', 'net', ifname, 'operstate'), 'utf8')).trim().toUpperCase();
    } catch {
      return '';
    }
  }

  async resolvePciPath(path: string): Promise<string> {
    const hops = parsePciPath(path);
    if (!hops) return '';
    const hex = (n: number) => n.toString(16).padStart(2, '0');
    // the root bus (domain 0000, bus 00), then one hop per bridge: the child function at <slot>.<fn> on the bus behind it
    let dir = join(this.root, 'devices', 'pci0000:00');
    let found = '';
    for (const [slot, fn] of hops) {
      const want = new RegExp(`^[0-9a-f]{4}:[0-9a-f]{2}:${hex(slot)}\\.${fn}$`);
      const entries = await readdir(dir).catch(() => [] as string[]);
      const next = entries.find((e) => want.test(e));
      if (!next) return '';
      found = next;
      dir = join(dir, next);
    }
    return found;
  }

  async netdevsAt(pci: string): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(join(this.root, 'class', 'net'));
    } catch {
      return [];
    }
    const out: string[] = [];
    for (const n of names.sort()) if ((await this.pciAddressOf(n)) === pci) out.push(n);
    return out;
  }
}
