/**
 * Data-plane preparation for a DPDK VNF in the guest: bind NICs to vfio-pci (no-IOMMU mode: a guest without a
 * vIOMMU) or uio_pci_generic through driver_override, reserve and mount hugepages, and write the EAL/VPP config
 * files that dpdk-config rendered on the host. Sysfs root configurable (tests use a fake tree).
 */
import { mkdir, writeFile, readlink, access } from 'node:fs/promises';
import { basename, dirname, join, normalize } from 'node:path';
import { ConflictError, InvalidArgumentError, type FieldIssue } from '@edgenfv/contracts/internal/errors';
import { isPciAddress, parsePciAddress } from '@edgenfv/contracts/internal/values';
import type { PrepareDataplaneRequest, PrepareDataplaneResponse, DataplaneNic } from '@edgenfv/contracts/internal/agent';
import { runCommand, type Runner } from './exec.js';

const DRIVERS = ['vfio-pci', 'uio_pci_generic'];
const HUGE_SIZES = [2048, 1048576];
const FILE_ROOTS = ['/etc/edgenfv/', '/run/edgenfv/'];

export interface DataplaneDeps {
  sysRoot: string;
  /** Where absolute config paths land (default '/'; tests use a temp folder). */
  fileRoot: string;
  hugepageMount: string;
  run?: Runner;
  /** Load a kernel module (default: modprobe); mount hugetlbfs (default: mount). */
  modprobe?: (mod: string) => Promise<void>;
  mountHugetlbfs?: (path: string, sizeKib: number) => Promise<void>;
}

export function parseDataplane(req: PrepareDataplaneRequest): { nics: DataplaneNic[]; size: number; count: number } {
  const issues: FieldIssue[] = [];
  const nics: DataplaneNic[] = [];
  (req?.nics ?? []).forEach((n, i) => {
    if (!isPciAddress(n?.pciAddress)) issues.push({ field: `nics[${i}].pciAddress`, message: 'not a PCI address' });
    if (!DRIVERS.includes(n?.driver)) issues.push({ field: `nics[${i}].driver`, message: `one of ${DRIVERS.join(', ')}` });
    if (isPciAddress(n?.pciAddress) && DRIVERS.includes(n?.driver)) nics.push({ pciAddress: parsePciAddress(n.pciAddress), driver: n.driver });
  });
  const size = req?.hugepageSizeKib ?? 0;
  const count = req?.hugepages ?? 0;
  if (size !== 0 && !HUGE_SIZES.includes(size)) issues.push({ field: 'hugepageSizeKib', message: 'one of 0, 2048, 1048576' });
  if (!Number.isInteger(count) || count < 0 || count > 1 << 20) issues.push({ field: 'hugepages', message: 'must be 0..1048576' });
  if (count > 0 && size === 0) issues.push({ field: 'hugepageSizeKib', message: 'needed when hugepages > 0' });
  (req?.files ?? []).forEach((f, i) => {
    const p = typeof f?.path === 'string' ? normalize(f.path) : '';
    if (!FILE_ROOTS.some((r) => p.startsWith(r)) || p !== f.path) issues.push({ field: `files[${i}].path`, message: `must be a normalized path under ${FILE_ROOTS.join(' or ')}` });
    if (typeof f?.content !== 'string') issues.push({ field: `files[${i}].content`, message: 'must be a string' });
  });
  if (issues.length > 0) throw new InvalidArgumentError(issues);
  return { nics, size, count };
}

export async function prepareDataplane(deps: DataplaneDeps, req: PrepareDataplaneRequest): Promise<PrepareDataplaneResponse> {
  const { nics, size, count } = parseDataplane(req);
  const run = deps.run ?? runCommand;
  const modprobe = deps.modprobe ?? (async (m: string) => void (await run(['modprobe', m])));
  const pci = (a: string) => join(deps.sysRoot, 'bus', 'pci', 'devices', a);
  for (const [i, n] of nics.entries()) {
    try {
      await access(pci(n.pciAddress));
    } catch {
      throw new InvalidArgumentError([{ field: `nics[${i}].pciAddress`, message: `no PCI device ${n.pciAddress}` }]);
    }
  }
  if (nics.some((n) => n.driver === 'vfio-pci')) {
    await modprobe('vfio-pci');
    const param = join(deps.sysRoot, 'module', 'vfio', 'parameters', 'enable_unsafe_noiommu_mode');
    try {
      await access(param);
    } catch {
      throw new ConflictError(
        'this guest kernel has no vfio no-IOMMU mode (CONFIG_VFIO_NOIOMMU): use driver uio_pci_generic, or the generic kernel flavor of the guest image',
        { field: 'nics' },
      );
    }
    await writeFile(param, '1');
  }
  if (nics.some((n) => n.driver === 'uio_pci_generic')) await modprobe('uio_pci_generic');
  for (const n of nics) {
    const current = await readlink(join(pci(n.pciAddress), 'driver')).then(basename, () => '');
    if (current === n.driver) continue;
    await writeFile(join(pci(n.pciAddress), 'driver_override'), n.driver);
    if (current) await writeFile(join(pci(n.pciAddress), 'driver', 'unbind'), n.pciAddress);
    await writeFile(join(deps.sysRoot, 'bus', 'pci', 'drivers_probe'), n.pciAddress);
  }
  let hugepageMount = '';
  if (count > 0) {
    await writeFile(join(deps.sysRoot, 'kernel', 'mm', 'hugepages', `hugepages-${size}kB`, 'nr_hugepages'), String(count));
    const mount = deps.mountHugetlbfs ?? (async (p: string, kib: number) => {
      await mkdir(p, { recursive: true });
      await run(['mount', '-t', 'hugetlbfs', '-o', `pagesize=${kib}K`, 'nodev', p]).catch((err) => {
        if (!/busy|already mounted/i.test(String(err))) throw err;
      });
    });
    await mount(deps.hugepageMount, size);
    hugepageMount = deps.hugepageMount;
  }
  for (const f of req.files ?? []) {
    const dst = join(deps.fileRoot, f.path);
    await mkdir(dirname(dst), { recursive: true });
    await writeFile(dst, f.content);
  }
  return { bound: nics, hugepageMount };
}
