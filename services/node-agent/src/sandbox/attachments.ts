/**
 * The AttachmentPort on top of netplugins: tap and macvtap in the sandbox's netns, SR-IOV VFs bound to vfio-pci,
 * vhost-user ports on the node's OVS-DPDK switch. Each attachment is keyed `<sandboxId>/<hostIfName>` (netplugins'
 * CNI triple), so DEL works from netplugins' own record and is safe to repeat.
 *
 * vhost-user: the node decides everything of the port: the socket (absolute, `<socketDir>/<tenant>/...`, the
 * tenant's folder 0700 and owned by the VM's uid), QEMU as the vhost-user server (the VM's NIC survives a switch
 * restart) and OVS as the client (`dpdkvhostuserclient`), the bridge and VLAN of the interface's network (the
 * switch's, from the operator's config).
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import { InvalidArgumentError, type AttachmentResult, type NetworkConfig } from '@edgenfv/contracts';
import { execFile } from 'node:child_process';
import { createAttachments, IpNetlink, RealSysfs, tapNames, type Attachments, type Netlink, type Sysfs } from '@edgenfv/netplugins';
import type { DataplaneSwitch } from '../dataplane/switch.js';
import type { AttachmentPort, AttachRequest } from './ports.js';

export interface NetpluginsAttachmentsOptions {
  stateDir: string;
  sysfsRoot: string;
  /** PF -> physnet (the node config's mapping), for the SR-IOV plugin's pools. */
  physnets: Readonly<Record<string, string>>;
  logger: Logger;
  /** The SR-IOV host ports (default: `sysfsRoot` and `ip`); a FakeSysfs/FakeVfNetlink where the host has no SR-IOV NIC. */
  sriovHost?: { sysfs: Sysfs; vfNetlink: Netlink };
  /** The deployment's networks (operator-owned VF settings of SR-IOV interfaces on them). */
  networks?: readonly NetworkConfig[];
  /** The node's DPDK switch (absent: the node has none, and vhost-user interfaces are refused). */
  dataplane?: Pick<DataplaneSwitch, 'bridgeFor' | 'socketDir'>;
}

function ipsOf(req: AttachRequest): { address: string; gateway?: string }[] {
  return (req.iface.ips ?? []).map((address) => (req.iface.gateway ? { address, gateway: req.iface.gateway } : { address }));
}

export class NetpluginsAttachments implements AttachmentPort {
  private readonly plugins: Attachments;

  constructor(private readonly opts: NetpluginsAttachmentsOptions) {
    // records, device locks and VF claims under <stateDir>/netplugins (the switch restores its ports from the same records)
    this.plugins = createAttachments({
      stateDir: join(opts.stateDir, 'netplugins'),
      logger: opts.logger,
      netlink: new IpNetlink(),
      sysfs: opts.sriovHost?.sysfs ?? new RealSysfs(opts.sysfsRoot),
      ...(opts.sriovHost ? { vfNetlink: opts.sriovHost.vfNetlink } : {}),
    });
  }

  async add(req: AttachRequest): Promise<AttachmentResult> {
    const ctx = { containerId: req.sandboxId, ifName: req.hostIfName, netns: req.netns };
    const i = req.iface;
    const common: Record<string, unknown> = { mac: i.mac, ips: ipsOf(req) };
    if (i.mtuBytes) common.mtuBytes = i.mtuBytes;
    // port anti-spoofing is on unless the operator turned it off for the network (an L2 VNF's: docs/security.md)
    const guard = i.network !== undefined && this.opts.networks?.find((n) => n.name === i.network)?.antispoof === false ? { antispoof: false } : {};
    switch (i.type) {
      case 'tap': {
        const bridge = (i.bridge ?? `enfv-${i.network ?? 'default'}`).slice(0, 15);
        const res = await this.plugins.tap.add(ctx, this.plugins.tap.parseConfig({ ...common, ...guard, bridge }));
        if (req.owner) await this.ownTap(req, res.tapName, i.mtuBytes);
        return res;
      }
      case 'macvtap':
        return this.plugins.macvtap.add(ctx, this.plugins.macvtap.parseConfig({ ...common, ...guard, parent: i.parent, mode: 'bridge' }));
      case 'sriov': {
        const s = i.sriov;
        // the operator's VF settings come from the interface's network (VLAN, spoofchk, trust); what the tenant's
        // descriptor asked (s.vlan, ...) may repeat them, never change them (netplugins: PERMISSION_DENIED)
        const net = i.network !== undefined ? this.opts.networks?.find((n) => n.name === i.network) : undefined;
        const operator = { ...(net?.vlan !== undefined ? { vlan: net.vlan } : {}), ...(net?.spoofchk !== undefined ? { spoofchk: net.spoofchk } : {}), ...(net?.trust !== undefined ? { trust: net.trust } : {}) };
        const pfs = Object.entries(this.opts.physnets).map(([pf, physnet]) => ({ pf, physnet, ...(physnet === s.physnet ? operator : {}) }));
        const raw: Record<string, unknown> = { ...common, physnet: s.physnet, deviceID: s.vfPciAddress, pfs, driver: 'vfio-pci' };
        for (const k of ['vlan', 'vlanQos', 'spoofchk', 'trust'] as const) if (s[k] !== undefined) raw[k] = s[k];
        return this.plugins.sriov.add({ containerId: req.sandboxId, ifName: req.hostIfName }, this.plugins.sriov.parseConfig(raw));
      }
      case 'vhostuser': {
        const sw = this.opts.dataplane;
        const where = i.network !== undefined ? sw?.bridgeFor(i.network) : undefined;
        if (!sw || !where) {
          const message =
            i.network === undefined ? 'a vhost-user interface needs a network (the node\'s DPDK switch serves networks)' : `this node's DPDK switch does not serve network ${i.network}`;
          throw new InvalidArgumentError([{ field: `interfaces.${i.name}.network`, message }]);
        }
        const cfg = this.plugins.vhostuser.parseConfig({
          ...common,
          ...guard,
          dataplane: 'ovs-dpdk',
          mode: 'server',
          queues: i.queues,
          socketDir: req.socketDir ?? sw.socketDir,
          tenant: req.tenantId,
          ...(req.owner ? { owner: req.owner } : {}),
          ovs: where,
        });
        return this.plugins.vhostuser.add(ctx, cfg);
      }
    }
  }

  /**
   * A QEMU that dropped its privileges can open a persistent tap only when the tap belongs to its uid (hotplug
   * after boot): re-create the tap with that owner, in the same place of the netns bridge. (netplugins' tap has no
   * owner option yet; this is the only thing done here behind its back, and DEL/CHECK see the same link.)
   */
  private async ownTap(req: AttachRequest, tapName: string, mtuBytes?: number): Promise<void> {
    const ns = req.netns;
    const { nsBridge } = tapNames({ containerId: req.sandboxId, ifName: req.hostIfName, netns: ns });
    const batch = [
      `link del ${tapName}`,
      `tuntap add dev ${tapName} mode tap user ${req.owner!.uid} group ${req.owner!.gid}`,
      `link set ${tapName}${mtuBytes ? ` mtu ${mtuBytes}` : ''} master ${nsBridge} up`,
    ];
    await new Promise<void>((resolve, reject) => {
      // An ExecFileException is an Error; its declared type (an intersection of two Omit<>s) is not one to the rule.
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
      const child = execFile('ip', ['-n', ns, '-batch', '-'], (err) => (err ? reject(err) : resolve()));
      child.stdin!.end(batch.join('\n') + '\n');
    });
  }

  async del(req: AttachRequest): Promise<void> {
    const ctx = { containerId: req.sandboxId, ifName: req.hostIfName, netns: req.netns };
    switch (req.iface.type) {
      case 'tap':
        return this.plugins.tap.del(ctx);
      case 'macvtap':
        return this.plugins.macvtap.del(ctx);
      case 'sriov':
        return this.plugins.sriov.del({ containerId: req.sandboxId, ifName: req.hostIfName });
      case 'vhostuser':
        return this.plugins.vhostuser.del(ctx); // from netplugins' record: the switch port, the socket, the folder once empty
    }
  }
}
