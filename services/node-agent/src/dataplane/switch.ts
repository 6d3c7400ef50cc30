/**
 * The node's DPDK switch as the rest of the node agent sees it: which bridge (and VLAN) carries a network's
 * vhost-user ports, where their sockets live, and whether the switch serves. The OVS-DPDK implementation
 * (`ovs-dpdk.ts`) runs ovsdb-server and ovs-vswitchd as the agent's own supervised children.
 */
import type { DataplaneInfo, DataplaneState } from '@edgenfv/contracts';

/** Where a network's vhost-user ports go: what netplugins' vhost-user plugin takes as its `ovs` section. */
export interface SwitchBridge {
  bridge: string;
  /** The network's VLAN: the port's access tag (the uplink trunks it). */
  vlan?: number;
  /** The switch's ovsdb-server (`unix:<path>`), for ovs-vsctl. */
  db: string;
}

export interface SwitchHealth {
  state: DataplaneState;
  /** Why it is not ready (failed), or what it last recovered from (starting after a crash). */
  error?: string;
}

export interface DataplaneSwitch {
  readonly kind: 'ovs-dpdk';
  /** Root of the per-tenant vhost-user socket folders (`<socketDir>/<tenant>/`). */
  readonly socketDir: string;
  /** The bridge of a network that asks for the switch (`dataplane: ovs-dpdk`); undefined for any other. */
  bridgeFor(network: string): SwitchBridge | undefined;
  health(): SwitchHealth;
  /** The node inventory's view (state, error, networks). */
  info(): DataplaneInfo;
  /** Starts the switch and its supervision; resolves once the first start is ready or has failed (bounded). */
  start(): Promise<void>;
  /** Stops the switch and everything the agent made for it (its namespace, uplink veths). */
  stop(): Promise<void>;
}
