/**
 * tap attachment: a tap device for a VM's virtio-net NIC, created in the sandbox's network namespace and wired to
 * the network's Linux bridge on the host:
 *   host: <bridge> -- <hostVeth>  ==veth==  netns: <peer> -- <nsBridge> -- <tap = ifName>  (QEMU opens the tap)
 * Everything is created with two `ip -batch` processes (host, netns); DEL removes the netns side and the veth.
 * Without a bridge (as the reference CNI `tap` plugin allows), the tap alone is made in the netns: nothing on the host.
 */
import { ConflictError, type AttachmentIp, type MacAddress, type TapAttachmentResult } from '@edgenfv/contracts';
import { IFNAME_HINT, IFNAME_RE, attachmentId, configFields, readIps, readOwner, validateCtx, type AttachCtx } from './config.js';
import { BatchError, delLinks, type Netlink } from './netlink.js';
import { addNetns, netnsMustExist, netnsTarget } from './netns.js';
import { addAntispoof, antispoofTable, delAntispoof } from './antispoof.js';
import { runProcess } from './exec.js';
import { RecordedPlugin, derivedMac, newRecord, withRollback, shortHash, type AttachmentRecord, type PluginDeps } from './plugin.js';

export interface TapConfig {
  /**
   * The network's bridge in the host netns (created when missing, never deleted: other attachments share it);
   * absent: a bare tap in the netns, wired to nothing (whoever holds the netns connects it).
   */
  bridge?: string;
  mtuBytes?: number;
  /** The guest NIC's MAC; default derived from containerId/ifName. */
  mac?: MacAddress;
  ips: AttachmentIp[];
  /**
   * How the tap meets the veth inside the netns: `bridge` (a small Linux bridge per attachment; its deletion costs
   * the kernel ~40 ms) or `tc` (ingress mirred redirects both ways, as Kata's tcfilter: cheaper to make and delete).
   */
  wiring: 'bridge' | 'tc';
  /** The VM's user: owns the tap, so a QEMU that dropped privileges can open it (hotplug). */
  owner?: { uid: number; gid: number };
  /**
   * Frames from this port onto the shared bridge must carry its own MAC, and may not claim another address of its
   * subnets (antispoof.ts, nftables bridge family). On unless `false` (only where the operator runs an L2 VNF).
   */
  antispoof?: false;
}

interface TapOriginal {
  bridgeExisted: boolean;
}
export type TapRecord = AttachmentRecord<TapConfig, TapAttachmentResult, TapOriginal>;

export function tapNames(ctx: AttachCtx): { hostVeth: string; peer: string; nsBridge: string; tmpTap: string; group: number } {
  const h = shortHash(attachmentId(ctx), 10);
  // the netns-side links share a device group: DEL removes them with one `link del group` (one batched unregister)
  const group = (parseInt(h.slice(0, 8), 16) % 0x7ffffffe) + 1;
  return { hostVeth: `vt${h}`, peer: `vp${h.slice(0, 8)}`, nsBridge: `br${h.slice(0, 8)}`, tmpTap: `tt${h.slice(0, 8)}`, group };
}

export class TapPlugin extends RecordedPlugin<TapConfig, TapAttachmentResult, TapRecord, PluginDeps & { netlink: Netlink }> {
  readonly type = 'tap' as const;
  private readonly knownBridges = new Set<string>();

  parseConfig(raw: unknown): TapConfig {
    const f = configFields(raw);
    const issues = f.issues;
    const bridge = f.string('bridge', { re: IFNAME_RE, reHint: IFNAME_HINT });
    const mtuBytes = f.int('mtuBytes', { min: 68, max: 65535 });
    const mac = f.mac('mac');
    const ips = readIps(f);
    const wiring = f.oneOf('wiring', ['bridge', 'tc'] as const) ?? 'bridge';
    const owner = readOwner(f);
    const antispoof = f.bool('antispoof');
    f.closed();
    issues.throwIfAny();
    const cfg: TapConfig = { ips, wiring };
    if (bridge !== undefined) cfg.bridge = bridge;
    if (antispoof === false) cfg.antispoof = false;
    if (owner) cfg.owner = owner;
    if (mtuBytes !== undefined) cfg.mtuBytes = mtuBytes;
    if (mac) cfg.mac = mac;
    return cfg;
  }

  async add(ctx: AttachCtx, cfg: TapConfig): Promise<TapAttachmentResult> {
    const netns = addNetns(ctx);
    const { netlink, records, logger } = this.deps;
    return this.addOnce(this.attachmentLock(ctx), ctx, cfg, async () => {
      await netnsMustExist(netlink, netns);
      const names = tapNames(ctx);
      const mtu = cfg.mtuBytes !== undefined ? ` mtu ${cfg.mtuBytes}` : '';
      let original: TapOriginal = { bridgeExisted: true };
      return withRollback(logger, async (undo) => {
        const bridge = cfg.bridge;
        if (bridge !== undefined) {
          // host side, one command: the veth on the bridge, its peer created straight in the sandbox's netns
          // (fails when a link of either name exists: never adopt a link that is not ours)
          const vethLine = `link add ${names.hostVeth}${mtu} master ${bridge} up type veth peer name ${names.peer} netns ${netnsTarget(netns)}${mtu} group ${names.group}`;
          for (let attempt = 0; ; attempt++) {
            if (!this.knownBridges.has(bridge)) original = { bridgeExisted: await this.ensureBridge(bridge) };
            try {
              await netlink.batch([vethLine]);
              break;
            } catch (err) {
              const msg = err instanceof Error ? err.message : String(err);
              if (attempt === 0 && this.knownBridges.has(bridge) && /does not exist|Cannot find/i.test(msg)) {
                this.knownBridges.delete(bridge); // the bridge went away behind our back: make it again
                continue;
              }
              throw new ConflictError(`host link ${names.hostVeth} or ${names.peer} in ${netns} already exists and is not ours (${msg})`, { cause: err });
            }
          }
          undo.push({ what: 'delete host veth', undo: () => this.delIfPresent(names.hostVeth) });
          if (cfg.antispoof !== false) {
            // before the port carries anything: its frames must carry its MAC and its own addresses
            undo.push({ what: 'delete anti-spoofing table', undo: () => delAntispoof(names.hostVeth) });
            await addAntispoof(names.hostVeth, cfg.mac ?? derivedMac(ctx), cfg.ips);
          }
        }
        // netns side, one process: a bridge, the tap (made under a private name, then renamed: the rename fails
        // instead of adopting a link that is already called ifName), both on the bridge with the veth peer
        const user = cfg.owner ? ` user ${cfg.owner.uid} group ${cfg.owner.gid}` : '';
        const nsLines =
          bridge === undefined
            ? [
                `tuntap add dev ${names.tmpTap} mode tap${user}`,
                `link set ${names.tmpTap} name ${ctx.ifName}`,
                `link set ${ctx.ifName}${mtu} group ${names.group} up`,
              ]
            : cfg.wiring === 'bridge'
            ? [
                `tuntap add dev ${names.tmpTap} mode tap${user}`,
                `link set ${names.tmpTap} name ${ctx.ifName}`,
                `link add ${names.nsBridge}${mtu} group ${names.group} type bridge`,
                `link set ${ctx.ifName}${mtu} group ${names.group} master ${names.nsBridge} up`,
                `link set ${names.peer} master ${names.nsBridge} up`,
                `link set ${names.nsBridge} up`,
              ]
            : [
                `tuntap add dev ${names.tmpTap} mode tap${user}`,
                `link set ${names.tmpTap} name ${ctx.ifName}`,
                `link set ${ctx.ifName}${mtu} group ${names.group} up`,
                `link set ${names.peer} up`,
              ];
        try {
          await netlink.batch(nsLines, netns);
        } catch (err) {
          const done = err instanceof BatchError ? err.failedIndex : nsLines.length;
          const del: string[] = [];
          if (done > 1) del.push(`link del ${ctx.ifName}`);
          else if (done > 0) del.push(`link del ${names.tmpTap}`);
          if (bridge !== undefined && cfg.wiring === 'bridge' && done > 2) del.push(`link del ${names.nsBridge}`);
          undo.push({ what: 'delete netns links', undo: async () => void (await netlink.tryBatch(del, netns)) });
          if (err instanceof BatchError && err.failedIndex === 1) throw new ConflictError(`link ${ctx.ifName} already exists in netns ${netns} and is not ours`, { cause: err });
          throw err;
        }
        if (bridge !== undefined && cfg.wiring === 'tc') {
          // frames entering the veth peer leave through the tap and the other way round
          await netlink.tcBatch(
            [
              `qdisc add dev ${names.peer} ingress`,
              `filter add dev ${names.peer} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev ${ctx.ifName}`,
              `qdisc add dev ${ctx.ifName} ingress`,
              `filter add dev ${ctx.ifName} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev ${names.peer}`,
            ],
            netns,
          );
        }
        const result: TapAttachmentResult = {
          kind: 'tap',
          id: attachmentId(ctx),
          ifName: ctx.ifName,
          mac: cfg.mac ?? derivedMac(ctx),
          ips: cfg.ips,
          netns,
          tapName: ctx.ifName,
        };
        if (bridge !== undefined) {
          result.bridge = bridge;
          result.hostVeth = names.hostVeth;
        }
        if (cfg.mtuBytes !== undefined) result.mtuBytes = cfg.mtuBytes;
        records.put<TapRecord>(this.type, ctx, newRecord(ctx, cfg, original, result));
        return result;
      });
    });
  }

  /** Makes the network's bridge when missing; true when it existed. Verified bridges are remembered. */
  private async ensureBridge(bridge: string): Promise<boolean> {
    const { netlink } = this.deps;
    const br = await netlink.link(bridge);
    if (br && br.kind !== 'bridge') throw new ConflictError(`bridge: host link ${bridge} exists and is a ${br.kind ?? 'plain link'}, not a bridge`);
    if (!br) await netlink.tryBatch([`link add ${bridge} type bridge`, `link set ${bridge} up`]); // "exists": a racing ADD made it
    this.knownBridges.add(bridge);
    return !!br;
  }

  private async delIfPresent(name: string, netns?: string): Promise<void> {
    const l = await this.deps.netlink.link(name, netns);
    if (l) await this.deps.netlink.batch([`link del ${name}`], netns);
  }

  async del(ctx: AttachCtx): Promise<void> {
    validateCtx(ctx, false);
    const { netlink, records } = this.deps;
    await this.delOnce(this.attachmentLock(ctx), ctx, async (rec) => {
      const netns = rec.netns!;
      const names = tapNames(ctx);
      if (await netlink.netnsExists(netns)) {
        const lines = [
          `link del group ${names.group}`, // everything we made in the netns, in one batched unregister
          `link del ${ctx.ifName}`, // and by name, for records made before groups (no-ops otherwise)
          ...(rec.config.wiring === 'tc' ? [] : [`link del ${names.nsBridge}`]),
          `link del ${names.peer}`,
        ];
        await delLinks(netlink, lines, netns);
      }
      await delLinks(netlink, [`link del ${names.hostVeth}`]); // gone with its peer already, as a rule
      await delAntispoof(names.hostVeth); // named after the attachment: found without the record's help
      records.delete(this.type, ctx);
    });
  }

  protected async probe(ctx: AttachCtx, rec: TapRecord, problems: string[]): Promise<void> {
    const { netlink } = this.deps;
    const netns = rec.netns!;
    const names = tapNames(ctx);
    if (!(await netlink.netnsExists(netns))) problems.push(`netns ${netns} is gone`);
    else {
      const live = await netlink.links(netns);
      const tap = live.get(ctx.ifName);
      const bare = rec.config.bridge === undefined;
      const onBridge = !bare && rec.config.wiring !== 'tc';
      if (!tap) problems.push(`tap ${ctx.ifName} is missing in ${netns}`);
      else {
        if (tap.kind !== 'tun' || (tap.tunType && tap.tunType !== 'tap')) problems.push(`${ctx.ifName} is a ${tap.kind}, not a tap`);
        if (onBridge && tap.master !== names.nsBridge) problems.push(`${ctx.ifName} is not on ${names.nsBridge}`);
      }
      if (bare) {
        if (tap && tap.master) problems.push(`${ctx.ifName} is on ${tap.master}, not a bare tap`);
        return;
      }
      const peer = live.get(names.peer);
      if (!peer) problems.push(`veth ${names.peer} is missing in ${netns}`);
      else if (onBridge && peer.master !== names.nsBridge) problems.push(`${names.peer} is not on ${names.nsBridge}`);
      if (!onBridge && tap && peer) {
        const [filters] = await netlink.tcBatch([`filter show dev ${names.peer} ingress`], netns);
        if (!JSON.stringify(filters ?? []).includes(ctx.ifName)) problems.push(`no tc redirect from ${names.peer} to ${ctx.ifName}`);
      }
    }
    if (rec.config.bridge === undefined) return;
    const hv = await netlink.link(names.hostVeth);
    if (!hv) problems.push(`host veth ${names.hostVeth} is missing`);
    else if (hv.master !== rec.config.bridge) problems.push(`${names.hostVeth} is not on bridge ${rec.config.bridge}`);
    if (rec.config.antispoof !== false) {
      const r = await runProcess(['nft', 'list', 'table', 'bridge', antispoofTable(names.hostVeth)]);
      if (r.code !== 0) problems.push(`anti-spoofing table ${antispoofTable(names.hostVeth)} is missing`);
    }
  }
}
