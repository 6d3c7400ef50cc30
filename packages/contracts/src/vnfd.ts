/** The VNF descriptor (VNFD) a tenant submits with `vnfs.instantiate` (see shared API.md, "VNFD"). */
export type NumaPolicy = 'strict' | 'preferred' | 'none';
export type CpuPolicy = 'dedicated' | 'shared';
export type DataplaneKind = 'vpp' | 'ovs-dpdk' | 'testpmd';
export type InterfaceType = 'tap' | 'macvtap' | 'sriov' | 'vhostuser';

export interface HugepagesRequest {
  sizeKiB: 2048 | 1048576;
  count: number;
}

export interface VnfdResources {
  vcpus: number;
  memoryMiB: number;
  cpuPolicy?: CpuPolicy; // default shared
  hugepages?: HugepagesRequest;
  numa?: NumaPolicy; // default none
}

interface InterfaceBase {
  name: string; // the interface's name inside the VNF (a Linux ifname)
  network?: string; // a network of the deployment's config: the IPAM hands out the address
  mtuBytes?: number;
  mac?: string; // optional fixed MAC; otherwise the plan chooses one
}
export interface TapInterface extends InterfaceBase {
  type: 'tap';
}
export interface MacvtapInterface extends InterfaceBase {
  type: 'macvtap';
  parent?: string; // host link; default: the network's parent
}
export interface SriovInterface extends InterfaceBase {
  type: 'sriov';
  physnet: string;
  vlan?: number;
  vlanQos?: number;
  spoofchk?: boolean;
  trust?: boolean;
}
/** A port on the node's DPDK switch for `network` (API.md "Data planes"); `dataplane` is the older form, still accepted. */
export interface VhostUserInterface extends InterfaceBase {
  type: 'vhostuser';
  dataplane?: DataplaneKind;
  queues?: number;
}
export type VnfdInterface = TapInterface | MacvtapInterface | SriovInterface | VhostUserInterface;

export interface VnfdRoute {
  dst: string;
  via?: string;
  dev?: string;
}

export interface Vnfd {
  name: string;
  replicas: number;
  placement?: {
    antiAffinity?: 'node' | 'none';
    nodeSelector?: Record<string, string>;
  };
  resources: VnfdResources;
  image: { ref: string };
  command?: string[];
  args?: string[];
  env?: Record<string, string>;
  interfaces?: VnfdInterface[];
  routes?: VnfdRoute[];
}

/** What one replica of a VNFD asks of a node (and of a tenant's quota). */
export function replicaDemand(d: Vnfd): { vcpus: number; memoryMiB: number; vfs: number } {
  const vfs = (d.interfaces ?? []).filter((i) => i.type === 'sriov').length;
  return { vcpus: d.resources.vcpus, memoryMiB: d.resources.memoryMiB, vfs };
}
