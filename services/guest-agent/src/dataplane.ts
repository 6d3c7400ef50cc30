/**
 * Data-plane preparation for a DPDK VNF in the guest: bind NICs to vfio-pci or uio_pci_generic through
 * driver_override. vfio-pci works behind the VM's virtual IOMMU (the NIC has an IOMMU group before it is bound:
 * DPDK gets /dev/vfio/<group>), or in vfio's no-IOMMU mode (no group: /dev/vfio/noiommu-<group>), which the node's
 * operator must allow (`allowNoIommu`, guest.vfioNoIommu in the node config): without either it is refused. Then reserve and mount hugepages, and write the EAL/VPP config
 * files that dpdk-config rendered on the host. Everything is checked before anything changes. What was changed is
 * remembered (DataplaneState): the container runtime exposes exactly those devices and the hugepage mount to a
 * `dataplane` container, and `releaseDataplane` puts it all back (NICs to their kernel driver, hugepages freed and
 * the count restored, files removed) when that container is deleted or a new preparation replaces it, so nothing a
 * tenant leaves behind reaches the next container. Sysfs root configurable (tests use a fake tree).
 */
import { mkdir, writeFile, readlink, access, readFile, readdir, rm } from 'node:fs/promises';
import { basename, dirname, join, normalize } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConflictError, InvalidArgumentError, type FieldIssue } from '@edgenfv/contracts/internal/errors';
import { isPciAddress, parsePciAddress } from '@edgenfv/contracts/internal/values';
import type { PrepareDataplaneRequest, PrepareDataplaneResponse, DataplaneNic } from '@edgenfv/contracts/internal/agent';
import { runCommand, type Runner } from './exec.js';

const DRIVERS = ['vfio-pci', 'uio_pci_generic'];
const HUGE_SIZES = [2048, 1048576];
const FILE_ROOTS = ['/etc/edgenfv/', '/run/edgenfv/'];

interface BoundNic {
  pciAddress: string;
  driver: string;
  /** The kernel driver it had (virtio-pci), restored on release; '' when it had none. */
  previousDriver: string;
  /** Device nodes DPDK opens for it: /dev/uioN, or /dev/vfio/vfio + /dev/vfio/G (vIOMMU) or /dev/vfio/noiommu-G. */
  devices: string[];
}

/**
 * What the last PrepareDataplane changed in this guest. One per agent; with a file (on the guest's /run) it
 * survives an agent restart, so a later release still knows the NICs' kernel driver and the hugepage count.
 */
export class DataplaneState {
  nics: BoundNic[] = [];
  hugepages: { sizeKib: number; previous: number; mount: string } | undefined;
  files: string[] = [];

  constructor(private readonly file?: string) {}

  /** The state saved by an earlier agent process (none: empty). */
  static async load(file: string): Promise<DataplaneState> {
    const st = new DataplaneState(file);
    const saved = await readFile(file, 'utf8').then((t) => JSON.parse(t) as Partial<DataplaneState>, () => undefined);
    if (saved) {
      st.nics = saved.nics ?? [];
      st.hugepages = saved.hugepages;
      st.files = saved.files ?? [];
    }
    return st;
  }

  async save(): Promise<void> {
    if (!this.file) return;
    await mkdir(dirname(this.file), { recursive: true });
    await writeFile(this.file, JSON.stringify({ nics: this.nics, hugepages: this.hugepages, files: this.files }));
  }

  /** Device nodes and the hugepage mount a `dataplane` container gets. */
  exposure(): { devices: string[]; hugepageMount?: string } {
    return {
      devices: [...new Set(this.nics.flatMap((n) => n.devices))],
      ...(this.hugepages ? { hugepageMount: this.hugepages.mount } : {}),
    };
  }
}

export interface DataplaneDeps {
  sysRoot: string;
  /** Where absolute config paths land (default '/'; tests use a temp folder). */
  fileRoot: string;
  hugepageMount: string;
  /** Where device nodes are (default /dev; tests use a temp folder). */
  devRoot?: string;
  run?: Runner;
  /** Load a kernel module (default: modprobe); mount hugetlbfs (default: mount). */
  modprobe?: (mod: string) => Promise<void>;
  mountHugetlbfs?: (path: string, sizeKib: number) => Promise<void>;
  /** MemAvailable in KiB (default: /proc/meminfo). */
  memAvailableKib?: () => Promise<number>;
  /** Remembers what was changed (default: a state of its own per call, so nothing can be released). */
  state?: DataplaneState;
  /** How long a bound device's node may take to appear (default 5 s). */
  deviceWaitMs?: number;
}

export function parseDataplane(req: PrepareDataplaneRequest): { nics: DataplaneNic[]; size: number; count: number } {
  const issues: FieldIssue[] = [];
  const nics: DataplaneNic[] = [];
  const seen = new Map<string, number>();
  (req?.nics ?? []).forEach((n, i) => {
    if (!isPciAddress(n?.pciAddress)) issues.push({ field: `nics[${i}].pciAddress`, message: `not a PCI address: ${JSON.stringify(n?.pciAddress)} (expected dddd:bb:dd.f)` });
    if (!DRIVERS.includes(n?.driver)) issues.push({ field: `nics[${i}].driver`, message: `one of ${DRIVERS.join(', ')}` });
    if (isPciAddress(n?.pciAddress) && DRIVERS.includes(n?.driver)) {
      const pci = parsePciAddress(n.pciAddress);
      if (seen.has(pci)) issues.push({ field: `nics[${i}].pciAddress`, message: `${pci} is already nics[${seen.get(pci)}]` });
      else seen.set(pci, i);
      nics.push({ pciAddress: pci, driver: n.driver });
    }
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

async function exists(p: string): Promise<boolean> {
  return access(p).then(() => true, () => false);
}

async function readMemAvailableKib(): Promise<number> {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(await readFile('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) : 0;
}

const pciDir = (deps: DataplaneDeps, a: string): string => join(deps.sysRoot, 'bus', 'pci', 'devices', a);
const nrHugepages = (deps: DataplaneDeps, sizeKib: number): string => join(deps.sysRoot, 'kernel', 'mm', 'hugepages', `hugepages-${sizeKib}kB`, 'nr_hugepages');
const driverOf = (deps: DataplaneDeps, a: string): Promise<string> => readlink(join(pciDir(deps, a), 'driver')).then(basename, () => '');

/** Hands a PCI function to `driver` (or back to the kernel's choice with ''), through driver_override. */
async function rebind(deps: DataplaneDeps, pci: string, driver: string): Promise<void> {
  const current = await driverOf(deps, pci);
  await writeFile(join(pciDir(deps, pci), 'driver_override'), driver === '' ? '\n' : driver);
  if (current) await writeFile(join(pciDir(deps, pci), 'driver', 'unbind'), pci);
  await writeFile(join(deps.sysRoot, 'bus', 'pci', 'drivers_probe'), pci);
}

/** The device nodes of a function bound to a user-space driver (waits for devtmpfs to create them). */
async function deviceNodes(deps: DataplaneDeps, pci: string, driver: string): Promise<string[]> {
  const dev = deps.devRoot ?? '/dev';
  const deadline = Date.now() + (deps.deviceWaitMs ?? 5000);
  for (;;) {
    let nodes: string[] = [];
    if (driver === 'uio_pci_generic') {
      const uio = await readdir(join(pciDir(deps, pci), 'uio')).catch(() => [] as string[]);
      nodes = uio.filter((u) => /^uio\d+$/.test(u)).map((u) => join(dev, u));
    } else {
      const group = await readlink(join(pciDir(deps, pci), 'iommu_group')).then(basename, () => '');
      // behind an IOMMU the group node is the group's number; in no-IOMMU mode vfio names it noiommu-<n>
      if (group) nodes = [join(dev, 'vfio', 'vfio'), join(dev, 'vfio', (await exists(join(dev, 'vfio', group))) ? group : `noiommu-${group}`)];
    }
    if (nodes.length > 0 && (await Promise.all(nodes.map(exists))).every(Boolean)) return nodes;
    if (Date.now() >= deadline) {
      throw new ConflictError(`${pci} is bound to ${driver} but its device node did not appear (${nodes.join(', ') || 'no uio/iommu_group entry'})`);
    }
    await sleep(100);
  }
}

export async function prepareDataplane(deps: DataplaneDeps, req: PrepareDataplaneRequest): Promise<PrepareDataplaneResponse> {
  const { nics, size, count } = parseDataplane(req);
  const state = deps.state ?? new DataplaneState();
  const run = deps.run ?? runCommand;
  const modprobe = deps.modprobe ?? (async (m: string) => void (await run(['modprobe', m])));

  // checks that read the guest, still before anything changes
  const issues: FieldIssue[] = [];
  for (const [i, n] of nics.entries()) {
    if (!(await exists(pciDir(deps, n.pciAddress)))) issues.push({ field: `nics[${i}].pciAddress`, message: `no PCI device ${n.pciAddress} in this guest` });
  }
  if (count > 0) {
    if (!(await exists(nrHugepages(deps, size)))) {
      issues.push({ field: 'hugepageSizeKib', message: `this guest kernel has no ${size} KiB hugepages` });
    } else {
      const current = Number((await readFile(nrHugepages(deps, size), 'utf8')).trim()) || 0;
      const moreKib = (count - current) * size;
      const availKib = await (deps.memAvailableKib ?? readMemAvailableKib)();
      if (moreKib > availKib) {
        issues.push({
          field: 'hugepages',
          message: `${count} x ${size} KiB (${Math.ceil((count * size) / 1024)} MiB) is more than this guest can reserve (${Math.floor((availKib + current * size) / 1024)} MiB available): give the VNF more memory or ask for fewer hugepages`,
        });
      }
    }
  }
  if (issues.length > 0) throw new InvalidArgumentError(issues);
  // vfio-pci: behind the VM's vIOMMU (the NIC is in an IOMMU group already), else no-IOMMU mode if allowed
  const noIommu: number[] = [];
  for (const [i, n] of nics.entries()) {
    if (n.driver === 'vfio-pci' && !(await exists(join(pciDir(deps, n.pciAddress), 'iommu_group')))) noIommu.push(i);
  }
  if (noIommu.length > 0 && req.allowNoIommu !== true) {
    throw new ConflictError(
      `${noIommu.map((i) => nics[i]!.pciAddress).join(', ')}: no IOMMU in this guest (the VM has no virtual IOMMU), and the node does not allow vfio's no-IOMMU mode (guest.vfioNoIommu): use driver uio_pci_generic, or a VM with a vIOMMU`,
      { field: `nics[${noIommu[0]}].driver` },
    );
  }
  if (nics.some((n) => n.driver === 'vfio-pci')) {
    await modprobe('vfio-pci');
    if (noIommu.length < nics.filter((n) => n.driver === 'vfio-pci').length) await modprobe('vfio_iommu_type1'); // a soft dependency: not loaded with vfio-pci
    const param = join(deps.sysRoot, 'module', 'vfio', 'parameters', 'enable_unsafe_noiommu_mode');
    if (noIommu.length > 0 && !(await exists(param))) {
      throw new ConflictError(
        'this guest kernel has no vfio no-IOMMU mode (CONFIG_VFIO_NOIOMMU): use driver uio_pci_generic, a VM with a vIOMMU, or the generic kernel flavor of the guest image',
        { field: 'nics' },
      );
    }
  }

  // a new preparation replaces the previous one
  await releaseDataplane(deps, state);
  if (noIommu.length > 0) await writeFile(join(deps.sysRoot, 'module', 'vfio', 'parameters', 'enable_unsafe_noiommu_mode'), '1');
  if (nics.some((n) => n.driver === 'uio_pci_generic')) await modprobe('uio_pci_generic');
  for (const n of nics) {
    const previousDriver = await driverOf(deps, n.pciAddress);
    const entry: BoundNic = { pciAddress: n.pciAddress, driver: n.driver, previousDriver, devices: [] };
    state.nics.push(entry); // recorded first: a failure below is undone by the next release
    await state.save();
    if (previousDriver !== n.driver) await rebind(deps, n.pciAddress, n.driver);
    const now = await driverOf(deps, n.pciAddress);
    if (now !== n.driver) throw new ConflictError(`${n.pciAddress}: ${n.driver} did not take the device (it is ${now ? `bound to ${now}` : 'unbound'})`);
    entry.devices = await deviceNodes(deps, n.pciAddress, n.driver);
  }
  let hugepageMount = '';
  if (count > 0) {
    const previous = Number((await readFile(nrHugepages(deps, size), 'utf8')).trim()) || 0;
    state.hugepages = { sizeKib: size, previous, mount: deps.hugepageMount };
    await state.save();
    await writeFile(nrHugepages(deps, size), String(count));
    const got = Number((await readFile(nrHugepages(deps, size), 'utf8')).trim()) || 0;
    if (got < count) throw new ConflictError(`the guest kernel reserved ${got} of ${count} hugepages of ${size} KiB (memory too fragmented?)`, { field: 'hugepages' });
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
    state.files.push(dst);
    await writeFile(dst, f.content);
  }
  await state.save();
  return { bound: nics, hugepageMount };
}

/**
 * Undoes what the state says: NICs back to their previous driver, the hugepage mount emptied (a data plane's
 * leftover rtemap files would keep pages), the hugepage count restored, written files removed. Safe to repeat.
 */
export async function releaseDataplane(deps: DataplaneDeps, state: DataplaneState): Promise<void> {
  for (const n of state.nics.splice(0)) {
    if (!(await exists(pciDir(deps, n.pciAddress)))) continue;
    if (n.driver !== n.previousDriver) await rebind(deps, n.pciAddress, ''); // the kernel's own driver again (virtio-pci)
  }
  const h = state.hugepages;
  state.hugepages = undefined;
  if (h) {
    for (const f of await readdir(h.mount).catch(() => [] as string[])) await rm(join(h.mount, f), { recursive: true, force: true });
    await writeFile(nrHugepages(deps, h.sizeKib), String(h.previous));
  }
  for (const f of state.files.splice(0)) await rm(f, { force: true });
  await state.save();
}
