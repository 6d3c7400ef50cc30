/** The VNF descriptor (VNFD) a tenant submits with `vnfs.instantiate` (see shared API.md, "VNFD"). */
export type NumaPolicy = 'strict' | 'preferred' | 'none';
export type CpuPolicy = 'dedicated' | 'shared';
export type DataplaneKind = 'vpp' | 'ovs-dpdk' | 'testpmd';
export type InterfaceType = 'tap' | 'macvtap' | 'sriov' | 'vhostuser';

export interface HugepagesRequest {
  sizeKiB: 2048 | 1048576;
  count: number;
}

/**
 * A DPDK data plane in the guest (API.md "Data planes"): before the container starts, the guest agent binds the
 * named interfaces' virtio-net devices for DPDK and reserves guest hugepages (out of memoryMiB); the container gets
 * its EAL arguments (lcores, memory, PCI allow-list) in EDGENFV_EAL_ARGS.
 */
export interface VnfdDataplane {
  kind: 'dpdk';
  /** Guest hugepages (2 MiB pages) for DPDK; default 128. */
  hugepagesMiB?: number;
  /** The interfaces handed to DPDK (default: every vhostuser interface). */
  interfaces?: string[];
  /** Default uio_pci_generic (the cloud guest kernel has no vfio no-IOMMU mode). */
  driver?: 'uio_pci_generic' | 'vfio-pci';
}
export const DEFAULT_DATAPLANE_HUGEPAGES_MIB = 128;
/** What the guest's own system (kernel, agent with Node.js) needs besides a data plane's hugepages. */
export const GUEST_BASE_MEMORY_MIB = 384;

export interface VnfdResources {
  vcpus: number;
  memoryMiB: number;
  cpuPolicy?: CpuPolicy; // default shared
  hugepages?: HugepagesRequest;
  numa?: NumaPolicy; // default none
  dataplane?: VnfdDataplane;
}

/** The interfaces a DPDK data plane takes (named, or every vhostuser one). */
export function dataplaneInterfaces(d: Pick<Vnfd, 'resources' | 'interfaces'>): string[] {
  const dp = d.resources.dataplane;
  if (!dp) return [];
  return dp.interfaces ?? (d.interfaces ?? []).filter((i) => i.type === 'vhostuser').map((i) => i.name);
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
