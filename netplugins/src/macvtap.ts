/**
 * macvtap attachment: a macvtap on a host parent link (the network's uplink), created straight into the sandbox's
 * netns under the interface's name. QEMU opens `/dev/tap<ifIndex>` (`-netdev tap,fd=N`); the macvtap's MAC is the
 * guest NIC's MAC.
 */
import { ConflictError, NotFoundError, type AttachmentIp, type MacAddress, type MacvtapAttachmentResult } from '@edgenfv/contracts';
import { IFNAME_HINT, IFNAME_RE, attachmentId, configFields, readIps, validateCtx, type AttachCtx } from './config.js';
import { BatchError, delLinks, type Netlink } from './netlink.js';
import { addNetns, netnsMustExist, netnsTarget } from './netns.js';
import { RecordedPlugin, derivedMac, newRecord, withRollback, type AttachmentRecord, type PluginDeps } from './plugin.js';

export const MACVTAP_MODES = ['bridge', 'vepa', 'private', 'passthru'] as const;
export type MacvtapMode = (typeof MACVTAP_MODES)[number];

export interface MacvtapConfig {
  parent: string;
  mode: MacvtapMode;
  mtuBytes?: number;
  mac?: MacAddress;
  ips: AttachmentIp[];
}
export type MacvtapRecord = AttachmentRecord<MacvtapConfig, MacvtapAttachmentResult, { parentMtuBytes: number }>;

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
    f.closed();
    issues.throwIfAny();
    const cfg: MacvtapConfig = { parent: parent!, mode, ips };
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
          tapDevice: `/dev/tap${live.ifindex}`,
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
        await delLinks(netlink, [`link del ${ctx.ifName}`], netns);
      }
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
        if (l.mode && l.mode !== rec.config.mode) problems.push(`${ctx.ifName} is in mode ${l.mode}, recorded ${rec.config.mode}`);
      }
    }
  }
}
