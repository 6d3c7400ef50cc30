/**
 * The data planes the node agent runs itself, built from its config: today one OVS-DPDK switch, whose tenant
 * ports are re-created from netplugins' vhost-user records after every (re)start.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import { DeviceLocks, RecordStore, VhostUserPlugin } from '@edgenfv/netplugins';
import type { NodeAgentConfig } from '../config.js';
import { OvsDpdkSwitch } from './ovs-dpdk.js';
import type { DataplaneSwitch } from './switch.js';

export type { DataplaneSwitch } from './switch.js';

export function createSwitches(cfg: Pick<NodeAgentConfig, 'dataplanes' | 'networks' | 'stateDir' | 'sysfsRoot'>, logger: Logger): DataplaneSwitch[] {
  const out: DataplaneSwitch[] = [];
  for (const d of cfg.dataplanes) {
    if (d.kind !== 'ovs-dpdk' || !d.ovs) continue;
    const base = join(cfg.stateDir, 'netplugins');
    const vhostuser = new VhostUserPlugin({ records: new RecordStore(join(base, 'records')), locks: new DeviceLocks(join(base, 'locks')), logger });
    out.push(
      new OvsDpdkSwitch({
        dataplane: { ...d, ovs: d.ovs },
        networks: cfg.networks,
        stateDir: cfg.stateDir,
        sysfsRoot: cfg.sysfsRoot,
        logger,
        restorePorts: (db) => vhostuser.restorePorts((c) => c.dataplane === 'ovs-dpdk' && c.ovs?.db === db),
      }),
    );
  }
  return out;
}
