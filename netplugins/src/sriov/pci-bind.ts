/**
 * The PciBind port: which driver a PCI function is bound to, its IOMMU group, and (re)binding through
 * `driver_override` + `unbind` + `drivers_probe`, waiting until the kernel has bound it (probe can be asynchronous).
 */
import { AppError, ConflictError, type PciAddress } from '@edgenfv/contracts';
import { pciDev, type Sysfs } from './sysfs.js';

export const VFIO_PCI = 'vfio-pci';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface PciBind {
  driver(bdf: PciAddress): Promise<string | null>;
  driverOverride(bdf: PciAddress): Promise<string | null>;
  iommuGroup(bdf: PciAddress): Promise<number | null>;
  iommuGroupDevices(group: number): Promise<string[]>;
  /** Binds to `driver` (null: the kernel's own choice) and waits for it; `override` is left as given. */
  bind(bdf: PciAddress, driver: string | null, opts?: { override?: string | null }): Promise<void>;
  /** Unbinds from whatever driver holds it and sets driver_override (null clears it). */
  unbind(bdf: PciAddress, override: string | null): Promise<void>;
  /** The group is viable for vfio: every other device in it is bound to vfio-pci, unbound, or a bridge. */
  checkGroupViable(bdf: PciAddress): Promise<number>;
}

export class SysfsPciBind implements PciBind {
  constructor(
    private readonly sysfs: Sysfs,
    private readonly timeoutMs = 10_000,
  ) {}

  driver(bdf: PciAddress): Promise<string | null> {
    return this.sysfs.linkName(pciDev(bdf, 'driver'));
  }
  async driverOverride(bdf: PciAddress): Promise<string | null> {
    const v = await this.sysfs.read(pciDev(bdf, 'driver_override'));
    return !v || v === '(null)' ? null : v;
  }
  async iommuGroup(bdf: PciAddress): Promise<number | null> {
    const g = await this.sysfs.linkName(pciDev(bdf, 'iommu_group'));
    return g === null ? null : Number(g);
  }
  iommuGroupDevices(group: number): Promise<string[]> {
    return this.sysfs.list(`kernel/iommu_groups/${group}/devices`);
  }

  async checkGroupViable(bdf: PciAddress): Promise<number> {
    const group = await this.iommuGroup(bdf);
    if (group === null) throw new AppError('UNAVAILABLE', `${bdf} has no IOMMU group: enable the IOMMU (intel_iommu=on / amd_iommu=on) to pass a VF to a VM`);
    const blockers: string[] = [];
    for (const other of await this.iommuGroupDevices(group)) {
      if (other === bdf) continue;
      const cls = (await this.sysfs.read(pciDev(other, 'class'))) ?? '';
      if (cls.startsWith('0x0604')) continue; // PCI bridge
      const d = await this.sysfs.linkName(pciDev(other, 'driver'));
      if (d !== null && d !== VFIO_PCI && d !== 'pci-stub') blockers.push(`${other} (bound to ${d})`);
    }
    if (blockers.length)
      throw new ConflictError(`IOMMU group ${group} of ${bdf} is not viable for vfio: ${blockers.join(', ')} must be bound to vfio-pci first`, { group, blockers });
    return group;
  }

  async unbind(bdf: PciAddress, override: string | null): Promise<void> {
    const cur = await this.driver(bdf);
    if (cur !== null) await this.sysfs.write(`bus/pci/drivers/${cur}/unbind`, bdf);
    if ((await this.driverOverride(bdf)) !== override) await this.sysfs.write(pciDev(bdf, 'driver_override'), override ?? '\n');
  }

  async bind(bdf: PciAddress, driver: string | null, opts: { override?: string | null } = {}): Promise<void> {
    const { sysfs } = this;
    if (!(await sysfs.exists(pciDev(bdf)))) throw new AppError('NOT_FOUND', `PCI device ${bdf} does not exist`);
    if (driver !== null && !(await sysfs.exists(`bus/pci/drivers/${driver}`)))
      throw new AppError('UNAVAILABLE', `driver ${driver} is not loaded (modprobe ${driver.replace(/-/g, '_')})`);
    const override = opts.override === undefined ? driver : opts.override;
    const cur = await this.driver(bdf);
    if (cur === driver && (await this.driverOverride(bdf)) === override) return;
    await sysfs.write(pciDev(bdf, 'driver_override'), override ?? '\n');
    if (cur !== null) await sysfs.write(`bus/pci/drivers/${cur}/unbind`, bdf);
    await sysfs.write('bus/pci/drivers_probe', bdf);
    const deadline = Date.now() + this.timeoutMs;
    for (let wait = 2; ; wait = Math.min(wait * 2, 100)) {
      const now = await this.driver(bdf);
      if (driver === null ? now !== null : now === driver) return;
      if (Date.now() > deadline) throw new AppError('UNAVAILABLE', `${bdf}: not bound to ${driver ?? 'a driver'} after ${this.timeoutMs} ms (now: ${now ?? 'none'})`, { retryable: true });
      await sleep(wait);
    }
  }
}
