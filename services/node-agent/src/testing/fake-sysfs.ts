/**
 * Test support (exported as `@edgenfv/node-agent/internal/testing/fake-sysfs` for other workspaces' tests):
 * A fake sysfs tree in a temporary folder, with the same relative symlinks as the kernel's
 * (virtfn* -> ../<vf>, physfn -> ../<pf>, driver -> ../../../bus/pci/drivers/<d>, iommu_group).
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export interface FakePf {
  pci: string;
  ifName?: string;
  numaNode: number;
  totalVfs: number;
  vfs: { pci: string; driver?: string; iommuGroup?: number }[];
  driver?: string;
}
export interface FakeSysfsSpec {
  numa: { cpus: string; memKiB: number; hugepages: Record<number, { total: number; free: number }> }[];
  isolated: string;
  pfs: FakePf[];
}

function write(root: string, rel: string, content: string): void {
  const p = join(root, rel);
  mkdirSync(dirname(p), { recursive: true });
  writeFileSync(p, content);
}

export function makeFakeSysfs(spec: FakeSysfsSpec): { root: string; cleanup: () => void } {
  const root = mkdtempSync(join(tmpdir(), 'edgenfv-sysfs-'));
  spec.numa.forEach((n, id) => {
    const d = `devices/system/node/node${id}`;
    write(root, `${d}/cpulist`, `${n.cpus}\n`);
    write(root, `${d}/meminfo`, `Node ${id} MemTotal:       ${n.memKiB} kB\nNode ${id} MemFree:        1 kB\n`);
    for (const [size, p] of Object.entries(n.hugepages)) {
      write(root, `${d}/hugepages/hugepages-${size}kB/nr_hugepages`, `${p.total}\n`);
      write(root, `${d}/hugepages/hugepages-${size}kB/free_hugepages`, `${p.free}\n`);
    }
  });
  write(root, 'devices/system/cpu/isolated', `${spec.isolated}\n`);
  const devs = join(root, 'devices/pci0000:00');
  const bus = join(root, 'bus/pci/devices');
  mkdirSync(bus, { recursive: true });
  mkdirSync(join(root, 'bus/pci/drivers'), { recursive: true });
  const addDev = (pci: string): string => {
    const d = join(devs, pci);
    mkdirSync(d, { recursive: true });
    symlinkSync(`../../../devices/pci0000:00/${pci}`, join(bus, pci));
    return d;
  };
  const bindDriver = (d: string, drv: string): void => {
    mkdirSync(join(root, 'bus/pci/drivers', drv), { recursive: true });
    symlinkSync(`../../../bus/pci/drivers/${drv}`, join(d, 'driver'));
  };
  for (const pf of spec.pfs) {
    const d = addDev(pf.pci);
    writeFileSync(join(d, 'sriov_totalvfs'), `${pf.totalVfs}\n`);
    writeFileSync(join(d, 'sriov_numvfs'), `${pf.vfs.length}\n`);
    writeFileSync(join(d, 'numa_node'), `${pf.numaNode}\n`);
    writeFileSync(join(d, 'vendor'), '0x8086\n');
    writeFileSync(join(d, 'device'), '0x10c9\n');
    if (pf.driver) bindDriver(d, pf.driver);
    if (pf.ifName) mkdirSync(join(d, 'net', pf.ifName), { recursive: true });
    pf.vfs.forEach((vf, i) => {
      const vd = addDev(vf.pci);
      symlinkSync(`../${vf.pci}`, join(d, `virtfn${i}`));
      symlinkSync(`../${pf.pci}`, join(vd, 'physfn'));
      writeFileSync(join(vd, 'numa_node'), `${pf.numaNode}\n`);
      if (vf.driver) bindDriver(vd, vf.driver);
      if (vf.iommuGroup !== undefined) {
        mkdirSync(join(root, 'kernel/iommu_groups', String(vf.iommuGroup)), { recursive: true });
        symlinkSync(`../../../kernel/iommu_groups/${vf.iommuGroup}`, join(vd, 'iommu_group'));
      }
    });
  }
  return { root, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}
