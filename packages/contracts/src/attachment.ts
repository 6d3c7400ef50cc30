/**
 * Network attachments: what netplugins hands back for one interface of a sandbox, and what the node agent
 * passes to the hypervisor driver. Tagged by `kind` (the attachment type).
 */
import type { MacAddress, PciAddress } from './values.js';

export type AttachmentType = 'sriov' | 'vhostuser' | 'tap' | 'macvtap';
export const ATTACHMENT_TYPES: readonly AttachmentType[] = ['sriov', 'vhostuser', 'tap', 'macvtap'];

/** An address given to the interface (from the IPAM or the caller): `10.10.0.5/24`. */
export interface AttachmentIp {
  address: string;
  gateway?: string;
}

interface AttachmentResultBase {
  /** `<containerId>/<ifName>`: the attachment's identity (the CNI triple minus the netns). */
  id: string;
  /** Name of the interface inside the sandbox / VNF. */
  ifName: string;
  /** The MAC the guest sees (for SR-IOV: the MAC set on the PF for the VF). */
  mac: MacAddress;
  mtuBytes?: number;
  ips: AttachmentIp[];
}

export interface SriovAttachmentResult extends AttachmentResultBase {
  kind: 'sriov';
  /** The VF's PCI address: the guest finds the NIC by it even when the VF came up with a random MAC. */
  pciAddress: PciAddress;
  pfPciAddress: PciAddress;
  pfIfName?: string;
  vfIndex: number;
  physnet?: string;
  vlan?: number;
  vlanQos?: number;
  /** Driver the VF is bound to now (`vfio-pci` for a VM) and its IOMMU group (`/dev/vfio/<group>`). */
  driver: string;
  iommuGroup?: number;
  numaNode: number;
}

export interface VhostUserAttachmentResult extends AttachmentResultBase {
  kind: 'vhostuser';
  socketPath: string;
  /** Role of the VM (QEMU): `client` when the data plane listens (VPP server), `server` otherwise. */
  vmMode: 'server' | 'client';
  queues: number;
  dataplane: 'vpp' | 'ovs-dpdk' | 'testpmd';
  /** The port's name on the data plane. */
  portName: string;
}

export interface TapAttachmentResult extends AttachmentResultBase {
  kind: 'tap';
  /** Network namespace (name or path) the tap lives in; QEMU opens it there. */
  netns: string;
  /** The tap's name inside the netns (QEMU `-netdev tap,ifname=`). */
  tapName: string;
  /** The host bridge and the veth to it; absent for a bare tap (a CNI config without `bridge`). */
  bridge?: string;
  hostVeth?: string;
}

export interface MacvtapAttachmentResult extends AttachmentResultBase {
  kind: 'macvtap';
  netns: string;
  tapName: string;
  parent: string;
  ifIndex: number;
  /** Character device QEMU opens (`-netdev tap,fd=N` on `/dev/tap<ifIndex>`). */
  tapDevice: string;
}

export type AttachmentResult =
  | SriovAttachmentResult
  | VhostUserAttachmentResult
  | TapAttachmentResult
  | MacvtapAttachmentResult;
