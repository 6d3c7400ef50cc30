/**
 * Networks of a deployment (from the appliance's config): where the IPAM hands out addresses, and which
 * Linux bridge (tap) or parent link (macvtap) carries them on a node. Shared by the scheduler (IPAM),
 * the node agent (attachments) and netplugins. Addresses stay strings here; netplugins parses them with ip-num.
 */
export interface NetworkRange {
  /** First address the IPAM may hand out (inclusive). */
  start: string;
  /** Last address the IPAM may hand out (inclusive). */
  end: string;
}

export interface NetworkConfig {
  /** DNS label, unique in the deployment; also the first token of the network's IPAM keys. */
  name: string;
  /** `10.10.0.0/24` or `fd00:10::/64`. */
  cidr: string;
  /** Gateway address inside `cidr`; never handed out. */
  gateway?: string;
  /** Sub-range of `cidr` to hand out; default: the whole CIDR (minus network/broadcast for IPv4). */
  range?: NetworkRange;
  /** 802.1Q VLAN id (1..4094); for SR-IOV VFs on this network, the VF's VLAN (operator-owned: contracts vf-policy). */
  vlan?: number;
  /** SR-IOV VFs on this network: MAC spoof checking, and trust (promiscuous/multicast, MAC changes in the guest). Operator-owned. */
  spoofchk?: boolean;
  trust?: boolean;
  /** Linux bridge on each node that carries this network (tap attachments). */
  bridge?: string;
  /** Host link that macvtap attachments of this network hang off. */
  parent?: string;
  mtuBytes?: number;
  /**
   * The node's DPDK switch that carries this network's vhost-user ports: each node with an `ovs-dpdk` data plane
   * makes one netdev bridge for it (the network's `vlan` tags its ports; the uplink trunks it).
   */
  dataplane?: NetworkDataplane;
  /**
   * Tenants that may attach interfaces to this network; absent: every tenant. A VNFD of another tenant naming it
   * gets PERMISSION_DENIED (docs/security.md).
   */
  tenants?: string[];
  /**
   * Anti-spoofing of the tap, macvtap and OVS-DPDK vhost-user ports on this network (a port may only send its own MAC
   * and addresses; no router advertisement): on unless `false`, for an operator's L2 VNF that forwards others'
   * frames as they are (a bump in the wire). Operator-owned (docs/security.md).
   */
  antispoof?: boolean;
  /** A fixed MAC a VNFD asks for on this network must start with this prefix (e.g. `02:ed:`); default: any unicast. */
  macPrefix?: string;
}

/** The switch kinds a network can ask for (only OVS-DPDK is managed by the node agent). */
export type NetworkDataplane = 'ovs-dpdk';

/** One address lease as the IPAM stores it (bucket `edgenfv_ipam`, key `<network>.<address>`). */
export interface IpLease {
  network: string;
  /** The address without prefix length, canonical form. */
  address: string;
  /** The address with the network's prefix length, e.g. `10.10.0.5/24`. */
  cidr: string;
  gateway?: string;
  /** Who holds it: an allocation id (`<nodeId>.<allocId>`) or a CNI `<containerId>.<ifName>`. */
  owner: string;
  nodeId?: string;
  epoch?: number;
  leasedAt: string;
}
