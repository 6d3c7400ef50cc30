/**
 * Sysfs port for NIC lookups: which PCI device (and driver) is behind a netdev. Reads `<root>/class/net/<if>/device`
 * (a symlink into `devices/pci.../0000:bb:dd.f`), so tests point it at a fake tree in a temporary folder.
 */
import { readdir, readlink, realpath } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { isPciAddress } from '@edgenfv/contracts/internal/values';

export interface NetSysfs {
  /** PCI address of the device behind ifname, or '' (virtual link, virtio-mmio). */
  pciAddressOf(ifname: string): Promise<string>;
  driverOf(ifname: string): Promise<string>;
  /** Netdev names whose device is at this PCI address. */
  netdevsAt(pci: string): Promise<string[]>;
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
