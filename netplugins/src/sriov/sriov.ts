/**
 * SR-IOV VF attachment. ADD: pick (or take the given) VF and claim it, record the PF's VF settings and the VF's
 * driver, set MAC/VLAN/spoofchk/trust on the PF (`ip link set <pf> vf <n> ...`), check the VF's IOMMU group and bind
 * it to vfio-pci. DEL (reverse): unbind from vfio-pci, restore the VF settings, bind the original driver, release
 * the claim. The result names the VF's PCI address and MAC, so the guest finds it even when it came up with a random MAC.
 */
import { join } from 'node:path';
import { AppError, ConflictError, NotFoundError, checkVfPolicy, effectiveVfPolicy, type VfPolicy, type AttachmentIp, type MacAddress, type PciAddress, type SriovAttachmentResult } from '@edgenfv/contracts';
import { Fields, attachmentId, configFields, isObj, readIps, validateCtx, type AttachCtx } from '../config.js';
import type { Netlink, VfSettings, VfState } from '../netlink.js';
import { RecordedPlugin, derivedMac, newRecord, withRollback, type AttachmentRecord, type PluginDeps, type UndoStep } from '../plugin.js';
import { VFIO_PCI, type PciBind } from './pci-bind.js';
import { VfClaims, allocateVf, refOf, vfAt, type PfRef, type VfInfo } from './pools.js';
import { pciDev, type Sysfs } from './sysfs.js';

export type SriovDriverMode = 'vfio-pci' | 'kernel';

export interface SriovConfig {
  physnet?: string;
  /** A specific VF (from a device plugin: Multus `deviceID`). */
  deviceID?: PciAddress;
  /** The node's PF -> physnet mapping (how many VFs to create on a PF that has none, the operator's VF settings). */
  pfs: PfRef[];
  /** Only a VF of a PF on this NUMA node (a pinned VM's node). */
  numaNode?: number;
  /** Asked for; where the PF's entry in `pfs` sets a value (the operator's), it may only be repeated (PERMISSION_DENIED). */
  vlan?: number;
  vlanQos?: number;
  spoofchk?: boolean;
  trust?: boolean;
  mac?: MacAddress;
  mtuBytes?: number;
  /** vfio-pci (default: the VF goes to a VM) or kernel (the VF keeps its kernel driver, e.g. igbvf). */
  driver: SriovDriverMode;
  ips: AttachmentIp[];
}

interface SriovOriginal {
  vf: PciAddress;
  pf: PciAddress;
  pfIfName: string;
  vfIndex: number;
  settings: VfState;
  driver: string | null;
  driverOverride: string | null;
}
/** `applied`: the VF settings given (the operator's and the asked ones), what DEL restores and CHECK compares. */
export type SriovRecord = AttachmentRecord<SriovConfig, SriovAttachmentResult, SriovOriginal> & { phase: 'adding' | 'ready'; applied?: VfPolicy };

export interface SriovDeps extends PluginDeps {
  sysfs: Sysfs;
  pciBind: PciBind;
  netlink: Netlink;
  /** Where VF claims live (default: `<records dir>/../sriov-claims`). */
  claimsDir: string;
}

export class SriovPlugin extends RecordedPlugin<SriovConfig, SriovAttachmentResult, SriovRecord, SriovDeps> {
  readonly type = 'sriov' as const;
  private readonly claims: VfClaims;
  constructor(deps: SriovDeps) {
    super(deps);
    this.claims = new VfClaims(deps.claimsDir);
  }

  /** A record in phase `adding` is a crashed ADD: the next ADD or DEL restores from it. */
  protected override completed(rec: SriovRecord): boolean {
    return rec.phase === 'ready';
  }

  parseConfig(raw: unknown): SriovConfig {
    const f = configFields(raw);
    const issues = f.issues;
    const physnet = f.string('physnet', { re: /^[A-Za-z0-9_.-]{1,64}$/ });
    const deviceID = f.pci('deviceID');
    const pfsRaw = f.array('pfs');
    const pfs: PfRef[] = [];
    pfsRaw?.forEach((p, i) => {
      const at = `pfs[${i}]`;
      if (!isObj(p)) return issues.add(at, 'must be an object {pf, physnet, numVfs?}');
      const g = new Fields(p, issues, at);
      const pf = g.string('pf', { required: true });
      const pn = g.string('physnet', { required: true, re: /^[A-Za-z0-9_.-]{1,64}$/ });
      const numVfs = g.int('numVfs', { min: 0, max: 256 });
      const ref: Partial<PfRef> = { numVfs, vlan: g.int('vlan', { min: 0, max: 4094 }), vlanQos: g.int('vlanQos', { min: 0, max: 7 }), spoofchk: g.bool('spoofchk'), trust: g.bool('trust') };
      g.closed();
      if (pf && pn) pfs.push(Object.assign({ pf, physnet: pn }, Object.fromEntries(Object.entries(ref).filter(([, v]) => v !== undefined))));
    });
    const vlan = f.int('vlan', { min: 0, max: 4094 });
    const vlanQos = f.int('vlanQos', { min: 0, max: 7 });
    const spoofchk = f.bool('spoofchk');
    const trust = f.bool('trust');
    const mac = f.mac('mac');
    const mtuBytes = f.int('mtuBytes', { min: 68, max: 65535 });
    const numaNode = f.int('numaNode', { min: 0, max: 1023 });
    const driver = f.oneOf('driver', ['vfio-pci', 'kernel'] as const) ?? 'vfio-pci';
    const ips = readIps(f);
    f.closed();
    if (physnet === undefined && deviceID === undefined && !f.has('physnet') && !f.has('deviceID'))
      issues.add('physnet', 'is required (or deviceID)');
    if (physnet !== undefined && pfsRaw !== undefined && pfs.length > 0 && !pfs.some((p) => p.physnet === physnet))
      issues.add('physnet', `unknown physnet ${JSON.stringify(physnet)} (pfs name: ${[...new Set(pfs.map((p) => p.physnet))].join(', ')})`);
    if (physnet !== undefined && deviceID === undefined && pfsRaw === undefined) issues.add('pfs', 'is required to allocate a VF on a physnet');
    if (vlanQos !== undefined && vlanQos !== 0 && !vlan) issues.add('vlanQos', 'needs a vlan');
    issues.throwIfAny();
    const cfg: SriovConfig = { pfs, driver, ips };
    if (physnet !== undefined) cfg.physnet = physnet;
    if (numaNode !== undefined) cfg.numaNode = numaNode;
    if (deviceID !== undefined) cfg.deviceID = deviceID;
    if (vlan !== undefined) cfg.vlan = vlan;
    if (vlanQos !== undefined) cfg.vlanQos = vlanQos;
    if (spoofchk !== undefined) cfg.spoofchk = spoofchk;
    if (trust !== undefined) cfg.trust = trust;
    if (mac) cfg.mac = mac;
    if (mtuBytes !== undefined) cfg.mtuBytes = mtuBytes;
    return cfg;
  }

  private async pickVf(ctx: AttachCtx, cfg: SriovConfig): Promise<VfInfo> {
    const id = attachmentId(ctx);
    if (cfg.deviceID) {
      const vf = await vfAt(this.deps.sysfs, cfg.deviceID, cfg.pfs);
      if (cfg.physnet && vf.physnet && vf.physnet !== cfg.physnet) throw new ConflictError(`deviceID: ${cfg.deviceID} is on physnet ${vf.physnet}, not ${cfg.physnet}`);
      if (cfg.numaNode !== undefined && vf.numaNode !== cfg.numaNode) throw new ConflictError(`deviceID: ${cfg.deviceID} is on NUMA node ${vf.numaNode}, not ${cfg.numaNode}`);
      if (!this.claims.claim(vf.pciAddress, id)) throw new ConflictError(`deviceID: VF ${vf.pciAddress} is already attached to ${this.claims.owner(vf.pciAddress)}`);
      return vf;
    }
    return allocateVf(this.deps.sysfs, this.claims, cfg.pfs, cfg.physnet!, id, cfg.numaNode);
  }

  /**
   * The settings this attachment gives the VF: the operator's (the PF's entry in `pfs`) and the asked ones where
   * the operator left a field open; asking for another value than the operator's is PERMISSION_DENIED (before anything changes).
   */
  private async applied(cfg: SriovConfig, vf: VfInfo): Promise<SriovConfig> {
    const ref = await refOf(this.deps.sysfs, cfg.pfs, vf.pf);
    const operator = ref ?? {};
    checkVfPolicy(cfg, operator, vf.physnet ?? ref?.physnet ?? '(none)');
    const out: SriovConfig = { ...cfg };
    for (const k of ['vlan', 'vlanQos', 'spoofchk', 'trust'] as const) delete out[k];
    return Object.assign(out, effectiveVfPolicy(cfg, operator));
  }

  /** What the VF needs before anything changes: vfio-pci loaded and an IOMMU group that vfio can take. */
  private async preflight(cfg: SriovConfig, vf: VfInfo): Promise<void> {
    if (cfg.driver !== 'vfio-pci') return;
    if (!(await this.deps.sysfs.exists(`bus/pci/drivers/${VFIO_PCI}`)))
      throw new AppError('UNAVAILABLE', `driver vfio-pci is not loaded on this node (modprobe vfio-pci): VF ${vf.pciAddress} cannot go to a VM`);
    await this.deps.pciBind.checkGroupViable(vf.pciAddress);
  }

  async add(ctx: AttachCtx, asked: SriovConfig): Promise<SriovAttachmentResult> {
    validateCtx(ctx, false);
    const { records, locks, logger, netlink, pciBind } = this.deps;
    const id = attachmentId(ctx);
    return this.addOnce(this.attachmentLock(ctx, 'sriov-att'), ctx, asked, async (prev) => {
      if (prev) await this.undoRecord(ctx, prev); // a crashed ADD: put the host back first
      const vf = await this.pickVf(ctx, asked);
      const releaseClaim: UndoStep = { what: 'release claim', undo: async () => this.claims.release(vf.pciAddress, id) };
      return withRollback(logger, (undo) =>
        locks.with(`vf-${vf.pciAddress}`, async () => {
          const cfg = await this.applied(asked, vf);
          await this.preflight(cfg, vf);
          if (!vf.pfIfName) throw new AppError('UNAVAILABLE', `PF ${vf.pf} has no network device: load its driver`);
          const table = await netlink.vfs(vf.pfIfName);
          const settings = table.find((s) => s.vf === vf.index);
          if (!settings) throw new NotFoundError(`PF ${vf.pfIfName} reports no vf ${vf.index}`);
          const original: SriovOriginal = {
            vf: vf.pciAddress, pf: vf.pf, pfIfName: vf.pfIfName, vfIndex: vf.index, settings,
            driver: (await pciBind.driver(vf.pciAddress)) ?? null,
            driverOverride: await pciBind.driverOverride(vf.pciAddress),
          };
          const mac = cfg.mac ?? derivedMac(ctx);
          const result: SriovAttachmentResult = {
            kind: 'sriov', id, ifName: ctx.ifName, mac, ips: cfg.ips,
            pciAddress: vf.pciAddress, pfPciAddress: vf.pf, pfIfName: vf.pfIfName, vfIndex: vf.index,
            driver: cfg.driver === 'vfio-pci' ? VFIO_PCI : (original.driver ?? ''), numaNode: vf.numaNode,
          };
          if (vf.physnet) result.physnet = vf.physnet;
          if (cfg.vlan !== undefined) result.vlan = cfg.vlan;
          if (cfg.vlanQos !== undefined) result.vlanQos = cfg.vlanQos;
          if (cfg.mtuBytes !== undefined) result.mtuBytes = cfg.mtuBytes;
          if (vf.iommuGroup !== undefined) result.iommuGroup = vf.iommuGroup;
          // the original state goes to disk before anything changes
          const rec: SriovRecord = { ...newRecord(ctx, asked, original, result), phase: 'adding', applied: policyOf(cfg) };
          records.put(this.type, ctx, rec);
          undo.push({ what: 'delete record', undo: async () => records.delete(this.type, ctx) });

          const want: VfSettings = { mac, vlan: cfg.vlan ?? 0 };
          if (cfg.vlanQos !== undefined) want.vlanQos = cfg.vlanQos;
          if (cfg.spoofchk !== undefined) want.spoofchk = cfg.spoofchk;
          if (cfg.trust !== undefined) want.trust = cfg.trust;
          undo.push({ what: 'restore VF settings', undo: () => netlink.setVf(original.pfIfName, original.vfIndex, restoreSettings(original.settings, policyOf(cfg))) });
          await netlink.setVf(vf.pfIfName, vf.index, want);

          undo.push({ what: 'restore VF driver', undo: () => this.restoreDriver(original) });
          if (cfg.driver === 'vfio-pci') {
            result.iommuGroup = await pciBind.checkGroupViable(vf.pciAddress); // again, under the VF lock, right before the bind
            await pciBind.bind(vf.pciAddress, VFIO_PCI);
          } else if (original.driver) {
            // rebind so the kernel driver picks up the MAC set on the PF (a VF probed earlier has a random MAC)
            await pciBind.unbind(vf.pciAddress, original.driverOverride);
            await pciBind.bind(vf.pciAddress, original.driver, { override: original.driverOverride });
          }
          const done: SriovRecord = { ...rec, phase: 'ready', result };
          records.put(this.type, ctx, done);
          return result;
        }), [releaseClaim]);
    });
  }

  private async restoreDriver(o: SriovOriginal): Promise<void> {
    const { pciBind, sysfs } = this.deps;
    if (!(await sysfs.exists(pciDev(o.vf)))) return; // VF removed (sriov_numvfs reset): gone
    const cur = await pciBind.driver(o.vf);
    if (cur === o.driver && (await pciBind.driverOverride(o.vf)) === o.driverOverride) return;
    if (o.driver === null) return pciBind.unbind(o.vf, o.driverOverride);
    await pciBind.bind(o.vf, o.driver, { override: o.driverOverride });
  }

  /** Puts the host back as the record says: unbind from vfio-pci, restore the VF settings, bind the original driver. */
  private async undoRecord(ctx: AttachCtx, rec: SriovRecord): Promise<void> {
    const { netlink, pciBind, sysfs, records } = this.deps;
    const o = rec.original;
    await this.deps.locks.with(`vf-${o.vf}`, async () => {
      const present = await sysfs.exists(pciDev(o.vf));
      if (present && (await pciBind.driver(o.vf)) !== o.driver) await pciBind.unbind(o.vf, o.driverOverride);
      if (present && (await sysfs.exists(pciDev(o.pf)))) {
        const table = await netlink.vfs(o.pfIfName).catch(() => null);
        if (table?.some((s) => s.vf === o.vfIndex)) await netlink.setVf(o.pfIfName, o.vfIndex, restoreSettings(o.settings, rec.applied ?? rec.config));
      }
      if (present) await this.restoreDriver(o);
      this.claims.release(o.vf, attachmentId(ctx));
      records.delete(this.type, ctx);
    });
  }

  async del(ctx: AttachCtx): Promise<void> {
    validateCtx(ctx, false);
    await this.delOnce(this.attachmentLock(ctx, 'sriov-att'), ctx, (rec) => this.undoRecord(ctx, rec));
  }

  protected async probe(ctx: AttachCtx, rec: SriovRecord, problems: string[]): Promise<void> {
    const { netlink, pciBind, sysfs } = this.deps;
    const o = rec.original;
    const r = rec.result;
    const want = rec.applied ?? rec.config;
    if (!(await sysfs.exists(pciDev(o.vf)))) problems.push(`VF ${o.vf} is gone`);
    else {
      const drv = await pciBind.driver(o.vf);
      if (rec.config.driver === 'vfio-pci' && drv !== VFIO_PCI) problems.push(`VF ${o.vf} is bound to ${drv ?? 'no driver'}, not vfio-pci`);
      const s = (await netlink.vfs(o.pfIfName)).find((x) => x.vf === o.vfIndex);
      if (!s) problems.push(`PF ${o.pfIfName} has no vf ${o.vfIndex}`);
      else {
        if (s.mac !== r.mac) problems.push(`vf ${o.vfIndex} MAC is ${s.mac}, recorded ${r.mac}`);
        if (s.vlan !== (want.vlan ?? 0)) problems.push(`vf ${o.vfIndex} VLAN is ${s.vlan}, recorded ${want.vlan ?? 0}`);
        if (want.spoofchk !== undefined && s.spoofchk !== undefined && s.spoofchk !== want.spoofchk) problems.push(`vf ${o.vfIndex} spoofchk is ${s.spoofchk}`);
        if (want.trust !== undefined && s.trust !== undefined && s.trust !== want.trust) problems.push(`vf ${o.vfIndex} trust is ${s.trust}`);
      }
    }
    if (this.claims.owner(o.vf) !== attachmentId(ctx)) problems.push(`VF ${o.vf} is not claimed by ${attachmentId(ctx)}`);
  }
}

function policyOf(cfg: VfPolicy): VfPolicy {
  const p: VfPolicy = {};
  for (const k of ['vlan', 'vlanQos', 'spoofchk', 'trust'] as const) if (cfg[k] !== undefined) (p as Record<string, unknown>)[k] = cfg[k];
  return p;
}

/** The original VF settings, restricted to what this attachment changed. */
function restoreSettings(o: VfState, cfg: VfPolicy): VfSettings {
  const s: VfSettings = { mac: o.mac, vlan: o.vlan, vlanQos: o.vlanQos };
  if (cfg.spoofchk !== undefined && o.spoofchk !== undefined) s.spoofchk = o.spoofchk;
  if (cfg.trust !== undefined && o.trust !== undefined) s.trust = o.trust;
  return s;
}

export function defaultClaimsDir(stateDir: string): string {
  return join(stateDir, 'sriov-claims');
}
