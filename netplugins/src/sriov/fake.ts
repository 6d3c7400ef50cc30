/**
 * A fake SR-IOV host for tests (this machine has no SR-IOV hardware): a sysfs tree in a temporary folder with the
 * kernel's relative symlinks (`bus/pci/devices/<bdf> -> ../../../devices/pci0000:00/<bdf>`, `virtfn<n>`, `physfn`,
 * `driver`, `iommu_group`), and FakeSysfs, which adds the kernel's side effects to writes (`sriov_numvfs` creates and
 * removes VFs with EBUSY/ERANGE, `unbind`, `bind`, `drivers_probe`, `driver_override`). FakeVfNetlink keeps the PF's VF
 * table (`ip link set <pf> vf <n> ...`) in a JSON file in the tree. The plugin runs the same code over both.
 * Selected in the CNI executables only by EDGENFV_SRIOV_FAKE_ROOT (tests).
 */
import { mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync, existsSync, readlinkSync, unlinkSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { RealSysfs } from './sysfs.js';
import type { BatchResult, LinkInfo, Netlink, VfSettings, VfState } from '../netlink.js';

export interface FakePfSpec {
  bdf: string; // 0000:03:00.0
  ifName: string;
  totalVfs: number;
  numVfs?: number;
  numaNode?: number;
  driver?: string; // igb
  vfDriver?: string; // igbvf
  vendor?: string;
  device?: string;
  /** Put every VF in the PF's IOMMU group (a non-ACS platform), to test the group check. */
  sharedGroup?: boolean;
}

function errno(code: string, msg: string): NodeJS.ErrnoException {
  const e = new Error(`${code}: ${msg}`) as NodeJS.ErrnoException;
  e.code = code;
  return e;
}

const groupCounter = 100;

export class FakeSysfs extends RealSysfs {
  constructor(root: string) {
    super(root);
  }

  /** Builds the tree: PFs with their drivers, and drivers vfio-pci (unless `noVfio`: module not loaded) and the VF drivers registered. */
  static build(root: string, pfs: FakePfSpec[], opts: { noVfio?: boolean } = {}): FakeSysfs {
    const fs = new FakeSysfs(root);
    for (const d of ['bus/pci/devices', 'devices/pci0000:00', 'kernel/iommu_groups', 'class/net']) mkdirSync(join(root, d), { recursive: true });
    if (!opts.noVfio) fs.mkDriver('vfio-pci');
    writeFileSync(join(root, 'bus/pci/drivers_probe'), '');
    for (const pf of pfs) {
      const drv = pf.driver ?? 'igb';
      fs.mkDriver(drv);
      fs.mkDriver(pf.vfDriver ?? 'igbvf');
      const dev = fs.mkDevice(pf.bdf, drv, fs.newGroup());
      writeFileSync(join(dev, 'sriov_totalvfs'), `${pf.totalVfs}\n`);
      writeFileSync(join(dev, 'sriov_numvfs'), '0\n');
      writeFileSync(join(dev, 'sriov_offset'), '128\n');
      writeFileSync(join(dev, 'sriov_stride'), '2\n');
      writeFileSync(join(dev, 'numa_node'), `${pf.numaNode ?? -1}\n`);
      writeFileSync(join(dev, 'vendor'), `${pf.vendor ?? '0x8086'}\n`);
      writeFileSync(join(dev, 'device'), `${pf.device ?? '0x10c9'}\n`);
      writeFileSync(join(dev, '.fake_vf_driver'), pf.vfDriver ?? 'igbvf');
      if (pf.sharedGroup) writeFileSync(join(dev, '.fake_shared_group'), '1');
      mkdirSync(join(dev, 'net', pf.ifName), { recursive: true });
      writeFileSync(join(dev, 'net', pf.ifName, 'address'), '52:54:00:12:34:56\n');
      symlinkSync(`../../../${pf.bdf}`, join(dev, 'net', pf.ifName, 'device'));
      symlinkSync(relative(join(root, 'class/net'), join(dev, 'net', pf.ifName)), join(root, 'class/net', pf.ifName));
      if (pf.numVfs) fs.setNumVfs(pf.bdf, pf.numVfs);
    }
    return fs;
  }

  private newGroup(): number {
    const existing = readdirSync(join(this.root, 'kernel/iommu_groups')).map(Number);
    const g = Math.max(groupCounter, ...existing.map((x) => x + 1));
    mkdirSync(join(this.root, 'kernel/iommu_groups', String(g), 'devices'), { recursive: true });
    return g;
  }
  private mkDriver(name: string): void {
    const d = join(this.root, 'bus/pci/drivers', name);
    mkdirSync(d, { recursive: true });
    for (const f of ['bind', 'unbind', 'new_id']) if (!existsSync(join(d, f))) writeFileSync(join(d, f), '');
  }
  private devDir(bdf: string): string {
    return join(this.root, 'devices/pci0000:00', bdf);
  }
  private mkDevice(bdf: string, driver: string | null, group: number): string {
    const dev = this.devDir(bdf);
    mkdirSync(dev, { recursive: true });
    this.mkDeviceAt(bdf, group);
    if (driver) this.linkDriver(bdf, driver);
    return dev;
  }
  private linkDriver(bdf: string, driver: string): void {
    const dev = this.devDir(bdf);
    const ddir = join(this.root, 'bus/pci/drivers', driver);
    symlinkSync(relative(dev, ddir), join(dev, 'driver'));
    symlinkSync(relative(ddir, dev), join(ddir, bdf));
    // a kernel network driver gives the VF a netdev (with a random MAC unless the PF set one: the real igbvf case)
    const pf = existsSync(join(dev, 'physfn')) ? basename(readlinkSync(join(dev, 'physfn'))) : null;
    if (pf && driver !== 'vfio-pci') {
      const idx = readdirSync(this.devDir(pf)).filter((n) => n.startsWith('virtfn')).find((n) => basename(readlinkSync(join(this.devDir(pf), n))) === bdf)!.slice(6);
      const name = `${readdirSync(join(this.devDir(pf), 'net'))[0]}v${idx}`;
      const nl = new FakeVfNetlink(this.root).state(this.pfIfName(pf)!);
      const set = nl[Number(idx)]?.mac;
      const mac = set && set !== '00:00:00:00:00:00' ? set : `02:fe:${bdf.slice(5, 7)}:${bdf.slice(8, 10)}:0${bdf.slice(11)}:${Math.floor(Math.random() * 256).toString(16).padStart(2, '0')}`;
      mkdirSync(join(dev, 'net', name), { recursive: true });
      writeFileSync(join(dev, 'net', name, 'address'), `${mac}\n`);
      symlinkSync(`../../../${bdf}`, join(dev, 'net', name, 'device'));
    }
  }
  private unlinkDriver(bdf: string): void {
    const dev = this.devDir(bdf);
    const drv = existsSync(join(dev, 'driver')) ? basename(readlinkSync(join(dev, 'driver'))) : null;
    if (!drv) throw errno('ENODEV', `${bdf} is not bound`);
    unlinkSync(join(dev, 'driver'));
    rmSync(join(this.root, 'bus/pci/drivers', drv, bdf), { force: true });
    rmSync(join(dev, 'net'), { recursive: true, force: true });
  }
  private pfIfName(pf: string): string | undefined {
    return readdirSync(join(this.devDir(pf), 'net'))[0];
  }

  private setNumVfs(pf: string, n: number): void {
    const dev = this.devDir(pf);
    const total = Number(readFileSync(join(dev, 'sriov_totalvfs'), 'utf8'));
    const cur = Number(readFileSync(join(dev, 'sriov_numvfs'), 'utf8'));
    if (n > total) throw errno('ERANGE', `sriov_numvfs ${n} > sriov_totalvfs ${total}`);
    if (cur !== 0 && n !== 0 && n !== cur) throw errno('EBUSY', 'set sriov_numvfs to 0 first');
    if (n === cur) return;
    const [dom, bus] = pf.split(':');
    const vfDriver = readFileSync(join(dev, '.fake_vf_driver'), 'utf8');
    const shared = existsSync(join(dev, '.fake_shared_group'));
    if (n === 0) {
      for (const v of readdirSync(dev).filter((x) => x.startsWith('virtfn'))) {
        const bdf = basename(readlinkSync(join(dev, v)));
        const vdev = this.devDir(bdf);
        if (existsSync(join(vdev, 'driver'))) this.unlinkDriver(bdf);
        const g = basename(readlinkSync(join(vdev, 'iommu_group')));
        rmSync(join(this.root, 'kernel/iommu_groups', g, 'devices', bdf), { force: true });
        rmSync(join(this.root, 'bus/pci/devices', bdf), { force: true });
        rmSync(vdev, { recursive: true, force: true });
        unlinkSync(join(dev, v));
      }
      rmSync(join(this.root, '.fake-netlink', `${this.pfIfName(pf)}.json`), { force: true });
    } else {
      const pfGroup = Number(basename(readlinkSync(join(dev, 'iommu_group'))));
      for (let i = 0; i < n; i++) {
        const devfn = 128 + i * 2; // offset 128, stride 2: 0x10.0, 0x10.2, ...
        const bdf = `${dom}:${bus}:${(devfn >> 3).toString(16).padStart(2, '0')}.${devfn & 7}`;
        const vdev = this.devDir(bdf);
        mkdirSync(vdev, { recursive: true });
        symlinkSync(relative(vdev, dev), join(vdev, 'physfn'));
        symlinkSync(relative(dev, vdev), join(dev, `virtfn${i}`));
        writeFileSync(join(vdev, 'numa_node'), readFileSync(join(dev, 'numa_node')));
        rmSync(join(this.root, 'bus/pci/devices', bdf), { force: true });
        this.mkDeviceAt(bdf, shared ? pfGroup : this.newGroup());
        this.linkDriver(bdf, vfDriver);
      }
    }
    writeFileSync(join(dev, 'sriov_numvfs'), `${n}\n`);
  }
  /** The PCI device files and links of `bdf` (its folder exists), in IOMMU group `group`. */
  private mkDeviceAt(bdf: string, group: number): void {
    const dev = this.devDir(bdf);
    writeFileSync(join(dev, 'driver_override'), '(null)\n');
    writeFileSync(join(dev, 'class'), '0x020000\n');
    symlinkSync(relative(join(this.root, 'bus/pci/devices'), dev), join(this.root, 'bus/pci/devices', bdf));
    const gdir = join(this.root, 'kernel/iommu_groups', String(group));
    symlinkSync(relative(dev, gdir), join(dev, 'iommu_group'));
    symlinkSync(relative(join(gdir, 'devices'), dev), join(gdir, 'devices', bdf));
  }

  /**
   * From now on the probe of `driver` fails (its probe() returns an error): as in the kernel, the write to
   * `drivers_probe` still succeeds and the device stays unbound.
   */
  failProbe(driver: string): void {
    writeFileSync(join(this.root, '.fake_fail_probe'), driver);
  }

  private probe(bdf: string): void {
    const dev = this.devDir(bdf);
    if (!existsSync(dev)) throw errno('ENODEV', `no device ${bdf}`);
    if (existsSync(join(dev, 'driver'))) return;
    const ov = readFileSync(join(dev, 'driver_override'), 'utf8').trim();
    let drv: string | null = ov && ov !== '(null)' ? ov : null;
    if (!drv) {
      const pf = existsSync(join(dev, 'physfn')) ? basename(readlinkSync(join(dev, 'physfn'))) : null;
      drv = pf ? readFileSync(join(this.devDir(pf), '.fake_vf_driver'), 'utf8') : null;
    }
    const failing = existsSync(join(this.root, '.fake_fail_probe')) ? readFileSync(join(this.root, '.fake_fail_probe'), 'utf8') : null;
    if (drv && drv !== failing && existsSync(join(this.root, 'bus/pci/drivers', drv))) this.linkDriver(bdf, drv);
  }

  override async write(rel: string, value: string): Promise<void> {
    const v = value.trim();
    let m: RegExpExecArray | null;
    if ((m = /^bus\/pci\/devices\/([^/]+)\/sriov_numvfs$/.exec(rel))) {
      if (!/^\d+$/.test(v)) throw errno('EINVAL', `sriov_numvfs ${value}`);
      return this.setNumVfs(m[1]!, Number(v));
    }
    if ((m = /^bus\/pci\/devices\/([^/]+)\/driver_override$/.exec(rel))) {
      if (!existsSync(this.devDir(m[1]!))) throw errno('ENOENT', rel);
      writeFileSync(join(this.devDir(m[1]!), 'driver_override'), `${v || '(null)'}\n`);
      return;
    }
    if ((m = /^bus\/pci\/drivers\/([^/]+)\/unbind$/.exec(rel))) {
      const cur = existsSync(join(this.devDir(v), 'driver')) ? basename(readlinkSync(join(this.devDir(v), 'driver'))) : null;
      if (cur !== m[1]) throw errno('ENODEV', `${v} is not bound to ${m[1]}`);
      return this.unlinkDriver(v);
    }
    if ((m = /^bus\/pci\/drivers\/([^/]+)\/bind$/.exec(rel))) {
      if (existsSync(join(this.devDir(v), 'driver'))) throw errno('EBUSY', `${v} is bound`);
      return this.linkDriver(v, m[1]!);
    }
    if (rel === 'bus/pci/drivers_probe') return this.probe(v);
    return super.write(rel, value);
  }
}

/** The VF table of each PF, kept in `<root>/.fake-netlink/<pf>.json`; VF count from the fake sysfs. */
export class FakeVfNetlink implements Netlink {
  constructor(readonly root: string) {}
  private file(pf: string): string {
    return join(this.root, '.fake-netlink', `${pf}.json`);
  }
  private numVfs(pf: string): number | null {
    const dev = join(this.root, 'class/net', pf, 'device');
    // class/net/<pf> -> devices/.../<bdf>/net/<pf>; the PCI device is two levels up
    const link = join(this.root, 'class/net', pf);
    if (!existsSync(link)) return null;
    void dev;
    const pciDir = dirname(dirname(join(dirname(link), readlinkSync(link))));
    return Number(readFileSync(join(pciDir, 'sriov_numvfs'), 'utf8'));
  }
  state(pf: string): VfState[] {
    const n = this.numVfs(pf) ?? 0;
    let saved: VfState[] = [];
    try {
      saved = JSON.parse(readFileSync(this.file(pf), 'utf8')) as VfState[];
    } catch {
      /* fresh */
    }
    return Array.from({ length: n }, (_, vf) => saved[vf] ?? { vf, mac: '00:00:00:00:00:00', vlan: 0, vlanQos: 0, spoofchk: true, trust: false });
  }
  async vfs(pf: string): Promise<VfState[]> {
    if (this.numVfs(pf) === null) throw errno('ENODEV', `Device "${pf}" does not exist.`);
    return this.state(pf);
  }
  async setVf(pf: string, vf: number, s: VfSettings): Promise<void> {
    const st = this.state(pf);
    const cur = st[vf];
    if (!cur) throw errno('EINVAL', `${pf} has no vf ${vf}`);
    if (s.mac !== undefined) cur.mac = s.mac.toLowerCase();
    if (s.vlan !== undefined) {
      if (s.vlan < 0 || s.vlan > 4094) throw errno('EINVAL', `vlan ${s.vlan}`);
      cur.vlan = s.vlan;
      cur.vlanQos = s.vlan ? (s.vlanQos ?? 0) : 0;
    }
    if (s.spoofchk !== undefined) cur.spoofchk = s.spoofchk;
    if (s.trust !== undefined) cur.trust = s.trust;
    mkdirSync(dirname(this.file(pf)), { recursive: true });
    writeFileSync(this.file(pf), JSON.stringify(st));
  }
  async batch(): Promise<unknown[]> {
    throw new Error('FakeVfNetlink only keeps VF tables');
  }
  async tcBatch(): Promise<unknown[]> {
    throw new Error('FakeVfNetlink only keeps VF tables');
  }
  async tryBatch(): Promise<BatchResult> {
    throw new Error('FakeVfNetlink only keeps VF tables');
  }
  async link(): Promise<LinkInfo | null> {
    throw new Error('FakeVfNetlink only keeps VF tables');
  }
  async links(): Promise<Map<string, LinkInfo>> {
    throw new Error('FakeVfNetlink only keeps VF tables');
  }
  async netnsExists(): Promise<boolean> {
    return true;
  }
}

