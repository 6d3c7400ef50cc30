/**
 * @edgenfv/netplugins: network attachments as a library (the node agent calls these in-process) and as CNI 1.0
 * executables (netplugins/bin), and the IPAM (the scheduler calls `Ipam`).
 */
import { join } from 'node:path';
import { DeviceLocks } from './lock.js';
import { IpBatchNetlink, type Netlink } from './netlink.js';
import { RecordStore } from './records.js';
import { TapPlugin } from './tap.js';
import { MacvtapPlugin } from './macvtap.js';
import { SriovPlugin, defaultClaimsDir } from './sriov/sriov.js';
import { RealSysfs, type Sysfs } from './sriov/sysfs.js';
import { SysfsPciBind, type PciBind } from './sriov/pci-bind.js';
import { VhostUserPlugin } from './vhostuser/vhostuser.js';
import type { VhostBackend } from './vhostuser/backends.js';
import type { VhostUserConfig } from './vhostuser/vhostuser.js';
import type { Logger } from 'pino';

export { DeviceLocks } from './lock.js';
export { RecordStore } from './records.js';
export { IpNetlink, type Netlink } from './netlink.js';
export { TapPlugin, tapNames } from './tap.js';
export { MacvtapPlugin } from './macvtap.js';
export { SriovPlugin } from './sriov/sriov.js';
export { RealSysfs, type Sysfs } from './sriov/sysfs.js';
export { type PciBind } from './sriov/pci-bind.js';
export { discoverPfs } from './sriov/pools.js';
export { FakeSysfs, FakeVfNetlink } from './sriov/fake.js';
export { VhostUserPlugin, type VhostUserConfig } from './vhostuser/vhostuser.js';
export { type VhostBackend } from './vhostuser/backends.js';
export { parseNetworks } from './networks.js';

export interface Attachments {
  tap: TapPlugin;
  macvtap: MacvtapPlugin;
  sriov: SriovPlugin;
  vhostuser: VhostUserPlugin;
}

/**
 * The four plugins over one state folder (records, device locks, VF claims), as the node agent uses them.
 * Ports default to the real host (`ip`, /sys); tests pass a FakeSysfs/FakeVfNetlink for SR-IOV.
 */
export function createAttachments(opts: {
  stateDir: string;
  logger?: Logger;
  netlink?: Netlink;
  sysfs?: Sysfs;
  pciBind?: PciBind;
  vfNetlink?: Netlink;
  vhostBackend?: (cfg: VhostUserConfig) => VhostBackend;
}): Attachments {
  const base = {
    records: new RecordStore(join(opts.stateDir, 'records')),
    locks: new DeviceLocks(join(opts.stateDir, 'locks')),
    ...(opts.logger ? { logger: opts.logger } : {}),
  };
  const netlink = opts.netlink ?? new IpBatchNetlink();
  const sysfs = opts.sysfs ?? new RealSysfs('/sys');
  return {
    tap: new TapPlugin({ ...base, netlink }),
    macvtap: new MacvtapPlugin({ ...base, netlink }),
    sriov: new SriovPlugin({
      ...base,
      sysfs,
      pciBind: opts.pciBind ?? new SysfsPciBind(sysfs),
      netlink: opts.vfNetlink ?? netlink,
      claimsDir: defaultClaimsDir(opts.stateDir),
    }),
    vhostuser: new VhostUserPlugin({ ...base, ...(opts.vhostBackend ? { backend: opts.vhostBackend } : {}) }),
  };
}
