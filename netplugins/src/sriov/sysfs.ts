/**
 * The Sysfs port: reads, writes and symlinks under a root path (`/sys` on a node, a temporary folder in tests,
 * where FakeSysfs adds the kernel's side effects). Paths are relative to the root, e.g. `bus/pci/devices/<bdf>/sriov_numvfs`.
 */
import { promises as fs } from 'node:fs';
import { basename, join } from 'node:path';

export interface Sysfs {
  readonly root: string;
  /** The file's content without the trailing newline, or null when it does not exist. */
  read(rel: string): Promise<string | null>;
  write(rel: string, value: string): Promise<void>;
  /** The last path element of a symlink's target (a driver, a PCI address, an IOMMU group), or null. */
  linkName(rel: string): Promise<string | null>;
  list(rel: string): Promise<string[]>;
  exists(rel: string): Promise<boolean>;
}

export class RealSysfs implements Sysfs {
  constructor(readonly root = '/sys') {}
  protected abs(rel: string): string {
    return join(this.root, rel);
  }
  async read(rel: string): Promise<string | null> {
    try {
      return (await fs.readFile(this.abs(rel), 'utf8')).replace(/\n$/, '');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENODEV' || code === 'ENOTDIR') return null;
      throw e;
    }
  }
  async write(rel: string, value: string): Promise<void> {
    // sysfs wants one write(2) of the whole value; "w" without O_CREAT semantics matters little here
    const fh = await fs.open(this.abs(rel), 'w');
    try {
      await fh.write(value);
    } finally {
      await fh.close();
    }
  }
  async linkName(rel: string): Promise<string | null> {
    try {
      return basename(await fs.readlink(this.abs(rel)));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'EINVAL' || code === 'ENOTDIR') return null;
      throw e;
    }
  }
  async list(rel: string): Promise<string[]> {
    try {
      return (await fs.readdir(this.abs(rel))).sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }
  async exists(rel: string): Promise<boolean> {
    try {
      await fs.access(this.abs(rel));
      return true;
    } catch {
      return false;
    }
  }
}

export const pciDev = (bdf: string, file = ''): string => (file ? `bus/pci/devices/${bdf}/${file}` : `bus/pci/devices/${bdf}`);
