/**
 * VF pools per PF and physnet, read from sysfs (`sriov_totalvfs`, `sriov_numvfs`, `virtfn*`, `physfn`, `numa_node`,
 * `iommu_group`), and claims: a VF is handed to one attachment by creating its claim file with O_EXCL, so two
 * sandboxes (threads, processes) never get one VF.
 */
import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { AppError, NotFoundError, UnschedulableError, parsePciAddress, type PciAddress, type SriovPfInfo, type SriovVfInfo } from '@edgenfv/contracts';
import { pciDev, type Sysfs } from './sysfs.js';
import { VFIO_PCI } from './pci-bind.js';

export interface PfRef {
  /** The PF by netdev name (`eth0`) or PCI address. */
  pf: string;
  physnet: string;
  /** Create this many VFs when the PF has none (writes `sriov_numvfs`). */
  numVfs?: number;
  /** The operator's VF settings on this PF's physnet (a request may repeat them, never change them: contracts vf-policy). */
  vlan?: number;
  vlanQos?: number;
  spoofchk?: boolean;
  trust?: boolean;
}

export interface VfInfo extends SriovVfInfo {
  pciAddress: PciAddress;
  pf: PciAddress;
  pfIfName?: string;
  numaNode: number;
  physnet?: string;
  ifName?: string;
}

export async function resolvePf(sysfs: Sysfs, pf: string): Promise<PciAddress> {
  if (/^([0-9a-f]{4}:)?[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$/i.test(pf)) {
    const bdf = parsePciAddress(pf);
    if (!(await sysfs.exists(pciDev(bdf)))) throw new NotFoundError(`PF ${pf}: no such PCI device`);
    return bdf;
  }
  const bdf = await sysfs.linkName(`class/net/${pf}/device`);
  if (!bdf) throw new NotFoundError(`PF ${pf}: no such network device`);
  return parsePciAddress(bdf);
}

async function ifNameOf(sysfs: Sysfs, bdf: string): Promise<string | undefined> {
  return (await sysfs.list(pciDev(bdf, 'net')))[0];
}

/** One PF and its VFs as sysfs shows them now. */
export type PfInfo = Omit<SriovPfInfo, 'vfs'> & { vfs: VfInfo[] };

export async function readPf(sysfs: Sysfs, bdf: PciAddress, physnet?: string): Promise<PfInfo> {
  const total = await sysfs.read(pciDev(bdf, 'sriov_totalvfs'));
  if (total === null) throw new AppError('INVALID_ARGUMENT', `${bdf} is not an SR-IOV physical function (no sriov_totalvfs)`);
  const numaNode = Number((await sysfs.read(pciDev(bdf, 'numa_node'))) ?? -1);
  const pfIfName = await ifNameOf(sysfs, bdf);
  const vfs: VfInfo[] = [];
  for (const name of await sysfs.list(pciDev(bdf))) {
    if (!name.startsWith('virtfn')) continue;
    const vf = await sysfs.linkName(pciDev(bdf, name));
    if (!vf) continue;
    const pci = parsePciAddress(vf);
    const g = await sysfs.linkName(pciDev(pci, 'iommu_group'));
    const drv = await sysfs.linkName(pciDev(pci, 'driver'));
    const info: VfInfo = { index: Number(name.slice(6)), pciAddress: pci, pf: bdf, numaNode };
    if (pfIfName) info.pfIfName = pfIfName;
    if (drv) info.driver = drv;
    if (g !== null) info.iommuGroup = Number(g);
    if (physnet) info.physnet = physnet;
    const ifn = await ifNameOf(sysfs, pci);
    if (ifn) info.ifName = ifn;
    vfs.push(info);
  }
  vfs.sort((a, b) => a.index - b.index);
  const out: PfInfo = {
    pciAddress: bdf,
    numaNode,
    totalVfs: Number(total),
    numVfs: Number((await sysfs.read(pciDev(bdf, 'sriov_numvfs'))) ?? 0),
    vfs,
  };
  if (pfIfName) out.ifName = pfIfName;
  if (physnet) out.physnet = physnet;
  const drv = await sysfs.linkName(pciDev(bdf, 'driver'));
  if (drv) out.driver = drv;
  const vendor = await sysfs.read(pciDev(bdf, 'vendor'));
  const device = await sysfs.read(pciDev(bdf, 'device'));
  if (vendor) out.vendorId = vendor;
  if (device) out.deviceId = device;
  return out;
}

/** Every SR-IOV PF on the host (for inventory), with physnets from the mapping. */
export async function discoverPfs(sysfs: Sysfs, mapping: readonly PfRef[] = []): Promise<SriovPfInfo[]> {
  const byBdf = new Map<string, string>();
  for (const m of mapping) byBdf.set(await resolvePf(sysfs, m.pf).catch(() => m.pf), m.physnet);
  const out: SriovPfInfo[] = [];
  for (const bdf of await sysfs.list('bus/pci/devices')) {
    if ((await sysfs.read(pciDev(bdf, 'sriov_totalvfs'))) === null) continue;
    out.push(await readPf(sysfs, parsePciAddress(bdf), byBdf.get(bdf)));
  }
  return out;
}

/** Creates `n` VFs on a PF that has none; a PF that already has VFs is left alone (changing N needs 0 first). */
export async function ensureVfs(sysfs: Sysfs, bdf: PciAddress, n: number): Promise<void> {
  const total = Number((await sysfs.read(pciDev(bdf, 'sriov_totalvfs'))) ?? 0);
  if (n > total) throw new AppError('INVALID_ARGUMENT', `numVfs ${n} is more than ${bdf} supports (sriov_totalvfs ${total})`);
  const cur = Number((await sysfs.read(pciDev(bdf, 'sriov_numvfs'))) ?? 0);
  if (cur === 0 && n > 0) await sysfs.write(pciDev(bdf, 'sriov_numvfs'), String(n));
}

/** Claims: `<dir>/<bdf>` holds the owning attachment id. */
export class VfClaims {
  constructor(readonly dir: string) {}
  private file(bdf: string): string {
    return join(this.dir, bdf);
  }
  owner(bdf: string): string | null {
    try {
      return readFileSync(this.file(bdf), 'utf8');
    } catch {
      return null;
    }
  }
  /** True when claimed now (or already ours). */
  claim(bdf: string, owner: string): boolean {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    try {
      const fd = openSync(this.file(bdf), 'wx', 0o600);
      try {
        writeSync(fd, owner);
      } finally {
        closeSync(fd);
      }
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      return this.owner(bdf) === owner;
    }
  }
  release(bdf: string, owner: string): void {
    if (this.owner(bdf) !== owner) return;
    try {
      unlinkSync(this.file(bdf));
    } catch {
      /* gone */
    }
  }
}

/** The PfRef (operator mapping entry) of the PF at `bdf`, if any. */
export async function refOf(sysfs: Sysfs, pfs: readonly PfRef[], bdf: PciAddress): Promise<PfRef | undefined> {
  for (const ref of pfs) if ((await resolvePf(sysfs, ref.pf).catch(() => null)) === bdf) return ref;
  return undefined;
}

/**
 * Picks and claims a free VF on a physnet (and NUMA node, when asked): unclaimed, and not already given to vfio-pci
 * by someone else.
 */
export async function allocateVf(sysfs: Sysfs, claims: VfClaims, pfs: readonly PfRef[], physnet: string, owner: string, numaNode?: number): Promise<VfInfo> {
  const mine = pfs.filter((p) => p.physnet === physnet);
  if (mine.length === 0)
    throw new NotFoundError(`physnet: unknown physnet ${JSON.stringify(physnet)} (known: ${[...new Set(pfs.map((p) => p.physnet))].join(', ') || 'none'})`);
  let total = 0;
  let onNode = 0;
  for (const ref of mine) {
    const bdf = await resolvePf(sysfs, ref.pf);
    if (ref.numVfs) await ensureVfs(sysfs, bdf, ref.numVfs);
    const pf = await readPf(sysfs, bdf, physnet);
    total += pf.vfs.length;
    if (numaNode !== undefined && pf.numaNode !== numaNode) continue;
    onNode += pf.vfs.length;
    for (const vf of pf.vfs) {
      if (claims.owner(vf.pciAddress) === owner) return vf;
    }
    for (const vf of pf.vfs) {
      if (claims.owner(vf.pciAddress) !== null || vf.driver === VFIO_PCI) continue;
      if (claims.claim(vf.pciAddress, owner)) return vf;
    }
  }
  if (numaNode !== undefined && onNode < total)
    throw new UnschedulableError(`numaNode: physnet ${physnet} has no free VF on NUMA node ${numaNode} (${onNode} of its ${total} VFs are there, all claimed)`);
  throw new UnschedulableError(`physnet ${physnet}: no free VF (${total} VFs on ${mine.map((p) => p.pf).join(', ')}, all claimed)`);
}

/** The VF at `bdf` (a deviceID given by a device plugin): it must be a VF of a known PF. */
export async function vfAt(sysfs: Sysfs, bdf: PciAddress, pfs: readonly PfRef[]): Promise<VfInfo> {
  if (!(await sysfs.exists(pciDev(bdf)))) throw new NotFoundError(`deviceID: PCI device ${bdf} does not exist`);
  const pf = await sysfs.linkName(pciDev(bdf, 'physfn'));
  if (!pf) throw new AppError('INVALID_ARGUMENT', `deviceID: ${bdf} is not an SR-IOV virtual function (no physfn)`);
  const pfBdf = parsePciAddress(pf);
  const physnet = (await refOf(sysfs, pfs, pfBdf))?.physnet;
  const info = await readPf(sysfs, pfBdf, physnet);
  const vf = info.vfs.find((v) => v.pciAddress === bdf);
  if (!vf) throw new NotFoundError(`deviceID: ${bdf} is not listed among ${pfBdf}'s virtfn links`);
  return vf;
}
