/**
 * Builds a plugin for one CNI invocation: state in `stateDir` (conf) or EDGENFV_NETPLUGINS_STATE or
 * /var/lib/edgenfv/netplugins; real ports (`ip`, /sys), except that EDGENFV_SRIOV_FAKE_ROOT (tests only) points the
 * SR-IOV plugin at a fake sysfs tree.
 */
import { join } from 'node:path';
import type { AttachmentResult, AttachmentType } from '@edgenfv/contracts';
import { DeviceLocks } from '../lock.js';
import { IpBatchNetlink } from '../netlink.js';
import type { AttachmentPlugin } from '../plugin.js';
import { RecordStore } from '../records.js';
import { TapPlugin } from '../tap.js';
import { MacvtapPlugin } from '../macvtap.js';
import { SriovPlugin, defaultClaimsDir } from '../sriov/sriov.js';
import { RealSysfs } from '../sriov/sysfs.js';
import { FakeSysfs, FakeVfNetlink } from '../sriov/fake.js';
import { SysfsPciBind } from '../sriov/pci-bind.js';
import { VhostUserPlugin } from '../vhostuser/vhostuser.js';

export const DEFAULT_STATE_DIR = '/var/lib/edgenfv/netplugins';

export function stateDirOf(conf: Record<string, unknown>, env: NodeJS.ProcessEnv): string {
  return typeof conf.stateDir === 'string' && conf.stateDir ? conf.stateDir : env.EDGENFV_NETPLUGINS_STATE || DEFAULT_STATE_DIR;
}

export function pluginFor(type: AttachmentType, stateDir: string, env: NodeJS.ProcessEnv = {}): AttachmentPlugin<unknown, AttachmentResult> {
  const base = { records: new RecordStore(join(stateDir, 'records')), locks: new DeviceLocks(join(stateDir, 'locks')) };
  switch (type) {
    case 'tap':
      return new TapPlugin({ ...base, netlink: new IpBatchNetlink() }) as AttachmentPlugin<unknown, AttachmentResult>;
    case 'macvtap':
      return new MacvtapPlugin({ ...base, netlink: new IpBatchNetlink() }) as AttachmentPlugin<unknown, AttachmentResult>;
    case 'sriov': {
      const fake = env.EDGENFV_SRIOV_FAKE_ROOT;
      const sysfs = fake ? new FakeSysfs(fake) : new RealSysfs('/sys');
      const netlink = fake ? new FakeVfNetlink(fake) : new IpBatchNetlink();
      return new SriovPlugin({ ...base, sysfs, netlink, pciBind: new SysfsPciBind(sysfs), claimsDir: defaultClaimsDir(stateDir) }) as AttachmentPlugin<unknown, AttachmentResult>;
    }
    case 'vhostuser':
      return new VhostUserPlugin({ ...base }) as AttachmentPlugin<unknown, AttachmentResult>;
  }
}
