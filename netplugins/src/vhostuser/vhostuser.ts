/**
 * vhost-user attachment: a per-tenant socket folder (`<socketDir>/<tenant>`, owned by the VM's user, mode 0700),
 * a socket path per interface, and the port on the data plane (testpmd, VPP, OVS-DPDK) in server or client mode.
 * Queues and MTU come from the VNFD. DEL deletes the port and the socket, and the folder once empty.
 */
import { chownSync, mkdirSync, readdirSync, rmdirSync, statSync, unlinkSync, lstatSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { isDnsLabel, type AttachmentIp, type MacAddress, type VhostUserAttachmentResult } from '@edgenfv/contracts';
import { attachmentId, configFields, readIps, readOwner, validateCtx, type AttachCtx } from '../config.js';
import { RecordedPlugin, derivedMac, newRecord, withRollback, shortHash, type AttachmentRecord, type PluginDeps } from '../plugin.js';
import { OvsDpdkBackend, TestpmdBackend, VppBackend, type OvsDpdkTarget, type VhostBackend } from './backends.js';

export const DATAPLANES = ['testpmd', 'vpp', 'ovs-dpdk'] as const;
export type Dataplane = (typeof DATAPLANES)[number];

export interface VhostUserConfig {
  dataplane: Dataplane;
  /** The VM's role (QEMU `server=on` when "server"); default server, so the VM survives data-plane restarts. */
  mode: 'server' | 'client';
  queues: number;
  mtuBytes?: number;
  mac?: MacAddress;
  /** Root of the per-tenant socket folders. */
  socketDir: string;
  tenant: string;
  /** The VM's user: owns the tenant's folder. */
  owner?: { uid: number; gid: number };
  testpmd?: { controlPath: string; telemetryPath: string };
  /** The node's OVS-DPDK switch: bridge of the interface's network, its VLAN, the switch's ovsdb socket. */
  ovs?: OvsDpdkTarget;
  vpp?: { cliSocket?: string };
  ips: AttachmentIp[];
  /**
   * On OVS-DPDK, only the port's MAC and addresses may leave it, and no RA (ovs-antispoof.ts). On unless `false` (an
   * operator's L2 VNF).
   */
  antispoof?: false;
}

export type VhostUserRecord = AttachmentRecord<VhostUserConfig, VhostUserAttachmentResult, { folderExisted: boolean }>;

const SUN_PATH_MAX = 107;

export class VhostUserPlugin extends RecordedPlugin<
  VhostUserConfig,
  VhostUserAttachmentResult,
  VhostUserRecord,
  PluginDeps & { backend?: (cfg: VhostUserConfig) => VhostBackend }
> {
  readonly type = 'vhostuser' as const;

  parseConfig(raw: unknown): VhostUserConfig {
    const f = configFields(raw);
    const issues = f.issues;
    const dataplane = f.oneOf('dataplane', DATAPLANES, { required: true });
    const mode = f.oneOf('mode', ['server', 'client'] as const) ?? 'server';
    const queues = f.int('queues', { min: 1, max: 64 }) ?? 1;
    const mtuBytes = f.int('mtuBytes', { min: 68, max: 65535 });
    const mac = f.mac('mac');
    const socketDir = f.string('socketDir', { required: true, re: /^\/[^\0]*$/, reHint: 'an absolute path' });
    const tenant = f.string('tenant', { required: true });
    if (tenant !== undefined && !isDnsLabel(tenant)) issues.add('tenant', `must be a DNS label (got ${JSON.stringify(tenant)})`);
    const owner = readOwner(f);
    const t = f.object('testpmd');
    const controlPath = t?.string('controlPath', { required: true });
    const telemetryPath = t?.string('telemetryPath', { required: true });
    t?.closed();
    const ov = f.object('ovs');
    const bridge = ov?.string('bridge', { required: true, re: /^[A-Za-z0-9_.-]{1,15}$/, reHint: 'an OVS bridge name (1-15 letters, digits, "_", "." or "-")' });
    const vlan = ov?.int('vlan', { min: 1, max: 4094 });
    const db = ov?.string('db', { re: /^unix:\/[^\0]*$/, reHint: 'unix:/path/to/db.sock' });
    ov?.closed();
    const vp = f.object('vpp');
    const cliSocket = vp?.string('cliSocket');
    vp?.closed();
    const ips = readIps(f);
    const antispoof = f.bool('antispoof');
    f.closed();
    if (dataplane === 'testpmd' && !t) issues.add('testpmd', 'is required when dataplane is testpmd ({controlPath, telemetryPath})');
    if (dataplane === 'ovs-dpdk' && !ov) issues.add('ovs', 'is required when dataplane is ovs-dpdk ({bridge, vlan?, db?})');
    if (dataplane === 'ovs-dpdk' && mode === 'client') issues.add('mode', 'ovs-dpdk ports are dpdkvhostuserclient: the VM must be the server');
    if (socketDir && tenant && socketDir.length + tenant.length + 40 > SUN_PATH_MAX)
      issues.add('socketDir', `is too long: socket paths must fit in ${SUN_PATH_MAX} bytes`);
    issues.throwIfAny();
    const cfg: VhostUserConfig = { dataplane: dataplane!, mode, queues, socketDir: socketDir!, tenant: tenant!, ips };
    if (antispoof === false) cfg.antispoof = false;
    if (mtuBytes !== undefined) cfg.mtuBytes = mtuBytes;
    if (mac) cfg.mac = mac;
    if (owner) cfg.owner = owner;
    if (controlPath && telemetryPath) cfg.testpmd = { controlPath, telemetryPath };
    if (bridge) {
      cfg.ovs = { bridge };
      if (vlan !== undefined) cfg.ovs.vlan = vlan;
      if (db) cfg.ovs.db = db;
    }
    if (vp) cfg.vpp = cliSocket ? { cliSocket } : {};
    return cfg;
  }

  private backend(cfg: VhostUserConfig): VhostBackend {
    if (this.deps.backend) return this.deps.backend(cfg);
    switch (cfg.dataplane) {
      case 'testpmd':
        return new TestpmdBackend(cfg.testpmd!);
      case 'vpp':
        return new VppBackend(undefined, cfg.vpp?.cliSocket ? ['vppctl', '-s', cfg.vpp.cliSocket] : ['vppctl']);
      case 'ovs-dpdk':
        return new OvsDpdkBackend(cfg.ovs!);
    }
  }

  static socketPath(cfg: Pick<VhostUserConfig, 'socketDir' | 'tenant'>, ctx: AttachCtx): string {
    return join(cfg.socketDir, cfg.tenant, `${shortHash(attachmentId(ctx), 12)}-${ctx.ifName}.sock`);
  }

  async add(ctx: AttachCtx, cfg: VhostUserConfig): Promise<VhostUserAttachmentResult> {
    validateCtx(ctx, false);
    const { records, logger } = this.deps;
    const socketPath = VhostUserPlugin.socketPath(cfg, ctx);
    return this.addOnce(`vhu-${socketPath}`, ctx, cfg, async () => {
      const folder = join(cfg.socketDir, cfg.tenant);
      const folderExisted = exists(folder);
      const backend = this.backend(cfg);
      return withRollback(logger, async (undo) => {
        mkdirSync(cfg.socketDir, { recursive: true, mode: 0o755 });
        if (!folderExisted) {
          mkdirSync(folder, { mode: 0o700 });
          undo.push({ what: 'remove tenant folder', undo: async () => removeIfEmpty(folder) });
        }
        chmodSync(folder, 0o700);
        if (cfg.owner) chownSync(folder, cfg.owner.uid, cfg.owner.gid);
        const portName = `vhu${shortHash(attachmentId(ctx), 10)}`;
        undo.push({ what: 'delete data-plane port', undo: async () => {
          await backend.deletePort(backend.kind === 'testpmd' ? `net_vhost_${portName}` : portName);
          rmSocket(socketPath);
        } });
        const dpName = await backend.createPort({
          portName, socketPath, vmMode: cfg.mode, queues: cfg.queues, ...(cfg.mtuBytes !== undefined ? { mtuBytes: cfg.mtuBytes } : {}),
          ...guardOf(cfg, cfg.mac ?? derivedMac(ctx)),
        });
        const result: VhostUserAttachmentResult = {
          kind: 'vhostuser', id: attachmentId(ctx), ifName: ctx.ifName, mac: cfg.mac ?? derivedMac(ctx), ips: cfg.ips,
          socketPath, vmMode: cfg.mode, queues: cfg.queues, dataplane: cfg.dataplane, portName: dpName,
        };
        if (cfg.mtuBytes !== undefined) result.mtuBytes = cfg.mtuBytes;
        records.put<VhostUserRecord>(this.type, ctx, newRecord(ctx, cfg, { folderExisted }, result));
        return result;
      });
    });
  }

  async del(ctx: AttachCtx): Promise<void> {
    validateCtx(ctx, false);
    const rec = this.record(ctx);
    if (!rec) return;
    await this.delOnce(`vhu-${rec.result.socketPath}`, ctx, async (again) => {
      await this.backend(again.config).deletePort(again.result.portName);
      rmSocket(again.result.socketPath);
      removeIfEmpty(join(again.config.socketDir, again.config.tenant));
      this.deps.records.delete(this.type, ctx);
    });
  }

  /**
   * Re-creates the data-plane port of every recorded attachment that `match` selects: after a switch restart that
   * lost its ports (the node agent starts OVS on a fresh database), the records are the truth. createPort is
   * idempotent; one port failing does not stop the others.
   */
  async restorePorts(match: (cfg: VhostUserConfig) => boolean): Promise<{ restored: string[]; failed: { portName: string; error: string }[] }> {
    const restored: string[] = [];
    const failed: { portName: string; error: string }[] = [];
    for (const key of this.deps.records.list(this.type)) {
      const rec = this.deps.records.get<VhostUserRecord>(this.type, key);
      if (!rec || !match(rec.config)) continue;
      await this.deps.locks.with(`vhu-${rec.result.socketPath}`, async () => {
        // the record may have been deleted (DEL) while this waited for the lock
        const now = this.deps.records.get<VhostUserRecord>(this.type, key);
        if (!now) return;
        const backend = this.backend(now.config);
        try {
          await backend.createPort({
            portName: now.result.portName, socketPath: now.result.socketPath, vmMode: now.config.mode, queues: now.config.queues,
            ...(now.config.mtuBytes !== undefined ? { mtuBytes: now.config.mtuBytes } : {}),
            ...guardOf(now.config, now.result.mac),
          });
          restored.push(now.result.portName);
        } catch (err) {
          failed.push({ portName: now.result.portName, error: (err as Error).message });
        }
      });
    }
    return { restored, failed };
  }

  protected async probe(_ctx: AttachCtx, rec: VhostUserRecord, problems: string[]): Promise<void> {
    const folder = join(rec.config.socketDir, rec.config.tenant);
    try {
      const st = statSync(folder);
      if ((st.mode & 0o777) !== 0o700) problems.push(`${folder} has mode ${(st.mode & 0o777).toString(8)}, not 700`);
      if (rec.config.owner && (st.uid !== rec.config.owner.uid || st.gid !== rec.config.owner.gid)) problems.push(`${folder} is owned by ${st.uid}:${st.gid}`);
    } catch {
      problems.push(`socket folder ${folder} is missing`);
    }
    const backend = this.backend(rec.config);
    if (!(await backend.hasPort(rec.result.portName))) problems.push(`${rec.config.dataplane} has no port ${rec.result.portName}`);
    else if (guardOf(rec.config, rec.result.mac).guard && backend instanceof OvsDpdkBackend && !(await backend.hasGuard(rec.result.portName))) {
      problems.push(`the anti-spoofing flows of port ${rec.result.portName} are missing`);
    }
    if (rec.config.mode === 'client' && !exists(rec.result.socketPath)) problems.push(`socket ${rec.result.socketPath} is missing`);
  }
}

/** The port guard the back end applies (OVS-DPDK ports, unless the operator turned it off). */
function guardOf(cfg: VhostUserConfig, mac: string): { guard?: { mac: string; ips: AttachmentIp[] } } {
  return cfg.dataplane === 'ovs-dpdk' && cfg.antispoof !== false ? { guard: { mac, ips: cfg.ips } } : {};
}

function exists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}
function rmSocket(p: string): void {
  try {
    unlinkSync(p);
  } catch {
    /* gone */
  }
}
function removeIfEmpty(dir: string): void {
  try {
    if (readdirSync(dir).length === 0) rmdirSync(dir);
  } catch {
    /* gone */
  }
}
