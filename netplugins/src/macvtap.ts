/**
 * macvtap attachment: a macvtap on a host parent link (the network's uplink), created straight into the sandbox's
 * netns under the interface's name. QEMU gets an fd of its character device (`-netdev tap,fd=N`); the macvtap's MAC
 * is the guest NIC's MAC.
 *
 * The character device: the kernel names it `tap<ifindex>` in devtmpfs, but an ifindex is only unique within its
 * netns — every sandbox's first macvtap is ifindex 2 — so `/dev/tap2` is whichever came first, and another tenant's
 * QEMU opening it would get that tenant's port. The plugin makes a node of its own instead, from the device number
 * the macvtap's sysfs entry (seen from its netns) gives: `/dev/edgenfv-macvtap/<attachment hash>`, removed at DEL.
 */
import { ConflictError, NotFoundError, type AttachmentIp, type MacAddress, type MacvtapAttachmentResult } from '@edgenfv/contracts';
import { IFNAME_HINT, IFNAME_RE, attachmentId, configFields, readIps, validateCtx, type AttachCtx } from './config.js';
import { BatchError, delLinks, type Netlink } from './netlink.js';
import { addNetns, netnsMustExist, netnsTarget } from './netns.js';
import { addDeviceAntispoof, delDeviceAntispoof, deviceAntispoofTable, hasDeviceAntispoof } from './antispoof.js';
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { mustRun, runProcess } from './exec.js';
import { RecordedPlugin, derivedMac, newRecord, shortHash, withRollback, type AttachmentRecord, type PluginDeps } from './plugin.js';

export const MACVTAP_MODES = ['bridge', 'vepa', 'private', 'passthru'] as const;
export type MacvtapMode = (typeof MACVTAP_MODES)[number];

export interface MacvtapConfig {
  parent: string;
  mode: MacvtapMode;
  mtuBytes?: number;
  mac?: MacAddress;
  ips: AttachmentIp[];
  /**
   * Frames the guest sends must carry its MAC and addresses (antispoof.ts: the macvtap's egress, netdev family, in
   * the sandbox's netns). On unless `false` (an operator's L2 VNF).
   */
  antispoof?: false;
}
export type MacvtapRecord = AttachmentRecord<MacvtapConfig, MacvtapAttachmentResult, { parentMtuBytes: number }>;

/** Where the plugin's macvtap character device nodes live (devtmpfs: never nodev). */
export const TAP_DEV_DIR = '/dev/edgenfv-macvtap';

/** `major:minor` of the macvtap's character device, read from its sysfs entry as its own netns shows it. */
async function tapDevt(netns: string, ifName: string, ifIndex: number): Promise<{ major: number; minor: number }> {
  // `ip netns exec` mounts a sysfs of the netns: /sys/class/net there lists the netns's own links
  const out = await mustRun(runProcess, ['ip', 'netns', 'exec', netnsTarget(netns), 'cat', `/sys/class/net/${ifName}/macvtap/tap${ifIndex}/dev`]);
  const m = /^(\d+):(\d+)\s*$/.exec(out);
  if (!m) throw new NotFoundError(`macvtap ${ifName} in ${netns}: no character device number in sysfs (${out.trim()})`);
  return { major: Number(m[1]), minor: Number(m[2]) };
}

async function makeTapNode(netns: string, ifName: string, ifIndex: number, path: string): Promise<void> {
  const { major, minor } = await tapDevt(netns, ifName, ifIndex);
  mkdirSync(TAP_DEV_DIR, { recursive: true, mode: 0o700 });
  rmSync(path, { force: true });
  await mustRun(runProcess, ['mknod', '-m', '0600', path, 'c', String(major), String(minor)]);
}

function sameDevt(path: string, d: { major: number; minor: number }): boolean {
  try {
    const st = statSync(path);
    // Linux dev_t: major in bits 8-19 (and 32+), minor in bits 0-7 and 20-31
    const rdev = st.rdev;
    return st.isCharacterDevice() && ((rdev >> 8) & 0xfff) === d.major && ((rdev & 0xff) | ((rdev >> 12) & 0xfff00)) === d.minor;
  } catch {
    return false;
  }
}

export class MacvtapPlugin extends RecordedPlugin<MacvtapConfig, MacvtapAttachmentResult, MacvtapRecord, PluginDeps & { netlink: Netlink }> {
  readonly type = 'macvtap' as const;

  parseConfig(raw: unknown): MacvtapConfig {
    const f = configFields(raw);
    const issues = f.issues;
    const parent = f.string('parent', { required: true, re: IFNAME_RE, reHint: IFNAME_HINT });
    const mode = f.oneOf('mode', MACVTAP_MODES) ?? 'bridge';
    const mtuBytes = f.int('mtuBytes', { min: 68, max: 65535 });
    const mac = f.mac('mac');
    const ips = readIps(f);
    const antispoof = f.bool('antispoof');
    f.closed();
    issues.throwIfAny();
    const cfg: MacvtapConfig = { parent: parent!, mode, ips };
    if (antispoof === false) cfg.antispoof = false;
    if (mtuBytes !== undefined) cfg.mtuBytes = mtuBytes;
    if (mac) cfg.mac = mac;
    return cfg;
  }

  async add(ctx: AttachCtx, cfg: MacvtapConfig): Promise<MacvtapAttachmentResult> {
    const netns = addNetns(ctx);
    const { netlink, records, logger } = this.deps;
    return this.addOnce(this.attachmentLock(ctx), ctx, cfg, async () => {
      await netnsMustExist(netlink, netns);
      const parent = await netlink.link(cfg.parent);
      if (!parent) throw new NotFoundError(`parent: host link ${cfg.parent} does not exist`);
      const mac = cfg.mac ?? derivedMac(ctx);
      const mtu = cfg.mtuBytes !== undefined ? ` mtu ${cfg.mtuBytes}` : '';
      return withRollback(logger, async (undo) => {
        // created straight into the netns under its final name: fails (EEXIST) instead of adopting a link there
        try {
          await netlink.batch([
            `link add link ${cfg.parent} name ${ctx.ifName} netns ${netnsTarget(netns)} address ${mac}${mtu} type macvtap mode ${cfg.mode}`,
          ]);
        } catch (err) {
          if (err instanceof BatchError && /exists/i.test(err.message)) throw new ConflictError(`link ${ctx.ifName} already exists in netns ${netns} and is not ours`, { cause: err });
          throw err;
        }
        undo.push({ what: 'delete macvtap', undo: async () => void (await netlink.tryBatch([`link del ${ctx.ifName}`], netns)) });
        const [shown] = await netlink.batch([`link set ${ctx.ifName} up`, `link show dev ${ctx.ifName}`], netns);
        const live = (shown as Array<{ ifindex: number }> | undefined)?.[0];
        if (!live) throw new NotFoundError(`macvtap ${ctx.ifName} vanished from ${netns} right after creation`);
        if (cfg.antispoof !== false) {
          undo.push({ what: 'delete anti-spoofing table', undo: () => delDeviceAntispoof(netns, ctx.ifName) });
          await addDeviceAntispoof(netns, ctx.ifName, mac, cfg.ips);
        }
        const tapDevice = join(TAP_DEV_DIR, shortHash(attachmentId(ctx), 16));
        undo.push({ what: 'remove the tap device node', undo: async () => rmSync(tapDevice, { force: true }) });
        await makeTapNode(netns, ctx.ifName, live.ifindex, tapDevice);
        const result: MacvtapAttachmentResult = {
          kind: 'macvtap',
          id: attachmentId(ctx),
          ifName: ctx.ifName,
          mac,
          ips: cfg.ips,
          netns,
          tapName: ctx.ifName,
          parent: cfg.parent,
          ifIndex: live.ifindex,
          tapDevice,
        };
        if (cfg.mtuBytes !== undefined) result.mtuBytes = cfg.mtuBytes;
        records.put<MacvtapRecord>(this.type, ctx, newRecord(ctx, cfg, { parentMtuBytes: parent.mtuBytes }, result));
        return result;
      });
    });
  }

  async del(ctx: AttachCtx): Promise<void> {
    validateCtx(ctx, false);
    const { netlink, records } = this.deps;
    await this.delOnce(this.attachmentLock(ctx), ctx, async (rec) => {
      const netns = rec.netns!;
      if (await netlink.netnsExists(netns)) {
        await delDeviceAntispoof(netns, ctx.ifName);
        await delLinks(netlink, [`link del ${ctx.ifName}`], netns);
      }
      if (rec.result.tapDevice.startsWith(`${TAP_DEV_DIR}/`)) rmSync(rec.result.tapDevice, { force: true });
      records.delete(this.type, ctx);
    });
  }

  protected async probe(ctx: AttachCtx, rec: MacvtapRecord, problems: string[]): Promise<void> {
    const { netlink } = this.deps;
    const netns = rec.netns!;
    if (!(await netlink.netnsExists(netns))) problems.push(`netns ${netns} is gone`);
    else {
      const l = await netlink.link(ctx.ifName, netns);
      if (!l) problems.push(`macvtap ${ctx.ifName} is missing in ${netns}`);
      else {
        if (l.kind !== 'macvtap') problems.push(`${ctx.ifName} is a ${l.kind}, not a macvtap`);
        if (l.mac.toLowerCase() !== rec.result.mac) problems.push(`${ctx.ifName} has MAC ${l.mac}, recorded ${rec.result.mac}`);
        if (l.ifIndex !== rec.result.ifIndex) problems.push(`${ctx.ifName} has ifindex ${l.ifIndex}, recorded ${rec.result.ifIndex}`);
        const devt = await tapDevt(netns, ctx.ifName, l.ifIndex).catch(() => undefined);
        if (!devt || !sameDevt(rec.result.tapDevice, devt)) problems.push(`${rec.result.tapDevice} is not ${ctx.ifName}'s character device`);
        if (l.mode && l.mode !== rec.config.mode) problems.push(`${ctx.ifName} is in mode ${l.mode}, recorded ${rec.config.mode}`);
        if (rec.config.antispoof !== false && !(await hasDeviceAntispoof(netns, ctx.ifName))) problems.push(`anti-spoofing table ${deviceAntispoofTable(ctx.ifName)} is missing in ${netns}`);
      }
    }
  }
}
