/**
 * The VNF descriptor (VNFD) a tenant submits with `vnfs.instantiate` (see shared API.md, "VNFD"): the JSON Schema
 * (`VnfdSchema`, validated by schemas.ts) and the types derived from it. Rules the schema language cannot say
 * follow in schemas.ts `validateVnfdSemantics`.
 */
import { Closed, DnsLabel, Enum, IfName, Mac, TaggedUnion, BoundedMap, Type, type Static } from './schema-kit.js';

export const NUMA_POLICIES = ['strict', 'preferred', 'none'] as const;
export type NumaPolicy = (typeof NUMA_POLICIES)[number];
export const CPU_POLICIES = ['dedicated', 'shared'] as const;
export type CpuPolicy = (typeof CPU_POLICIES)[number];
export const DATAPLANE_KINDS = ['vpp', 'ovs-dpdk', 'testpmd'] as const;
export type DataplaneKind = (typeof DATAPLANE_KINDS)[number];
export const INTERFACE_TYPES = ['tap', 'macvtap', 'sriov', 'vhostuser'] as const;

export const HugepagesRequestSchema = Closed({
  sizeKiB: Enum([2048, 1048576] as const),
  count: Type.Integer({ minimum: 1, maximum: 1_048_576 }),
});

/**
 * A DPDK data plane in the guest (API.md "Data planes"): before the container starts, the guest agent binds the
 * named interfaces' virtio-net devices for DPDK and reserves guest hugepages (out of memoryMiB); the container gets
 * its EAL arguments (lcores, memory, PCI allow-list) in EDGENFV_EAL_ARGS.
 */
export const VnfdDataplaneSchema = Closed({
  kind: Enum(['dpdk'] as const),
  /** Guest hugepages (2 MiB pages) for DPDK; default 128. */
  hugepagesMiB: Type.Optional(Type.Integer({ minimum: 2, maximum: 1_048_576 })),
  /** The interfaces handed to DPDK (default: every vhostuser and sriov interface). */
  interfaces: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 15 }), { minItems: 1, maxItems: 32 })),
  /**
   * The guest driver of the virtio NICs; default uio_pci_generic. vfio-pci gets the VM a virtual IOMMU (or the
   * node's no-IOMMU mode, where its operator allows it). A VF is always vfio-pci (it has no INTx for uio).
   */
  driver: Type.Optional(Enum(['uio_pci_generic', 'vfio-pci'] as const)),
});
export type VnfdDataplane = Static<typeof VnfdDataplaneSchema>;
export const DEFAULT_DATAPLANE_HUGEPAGES_MIB = 128;
/** What the guest's own system (kernel, agent with Node.js) needs besides a data plane's hugepages. */
export const GUEST_BASE_MEMORY_MIB = 384;

export const VnfdResourcesSchema = Closed({
  vcpus: Type.Integer({ minimum: 1, maximum: 256 }),
  memoryMiB: Type.Integer({ minimum: 64, maximum: 4_194_304 }),
  /** Default shared. */
  cpuPolicy: Type.Optional(Enum(CPU_POLICIES)),
  hugepages: Type.Optional(HugepagesRequestSchema),
  /** Default none. */
  numa: Type.Optional(Enum(NUMA_POLICIES)),
  dataplane: Type.Optional(VnfdDataplaneSchema),
});

/** What the data-plane rules read of a VNFD or of an allocation made from one: the data plane and the interfaces. */
interface DataplaneOwner {
  resources: { dataplane?: VnfdDataplane | undefined };
  interfaces?: readonly { name: string; type: string }[] | undefined;
}

/** The interfaces a DPDK data plane takes (named, or every vhostuser and sriov one). */
export function dataplaneInterfaces(d: DataplaneOwner): string[] {
  const dp = d.resources.dataplane;
  if (!dp) return [];
  return dp.interfaces ?? (d.interfaces ?? []).filter((i) => i.type === 'vhostuser' || i.type === 'sriov').map((i) => i.name);
}

export type GuestDpdkDriver = NonNullable<VnfdDataplane['driver']>;

/**
 * The guest driver of the data plane's interface `name`: a VF's is vfio-pci (a VF has no INTx, which
 * uio_pci_generic needs), the others' what the VNFD asks (uio_pci_generic by default).
 */
export function guestDpdkDriver(d: DataplaneOwner, name: string): GuestDpdkDriver {
  if ((d.interfaces ?? []).find((i) => i.name === name)?.type === 'sriov') return 'vfio-pci';
  return d.resources.dataplane?.driver ?? 'uio_pci_generic';
}

/**
 * The data plane puts some NIC on vfio-pci in the guest: the tenant's VM needs a virtual IOMMU, given at its boot
 * only (or the node's no-IOMMU mode, where its operator allows it).
 */
export function guestDataplaneUsesVfio(d: DataplaneOwner): boolean {
  return dataplaneInterfaces(d).some((n) => guestDpdkDriver(d, n) === 'vfio-pci');
}

const interfaceBase = {
  /** The interface's name inside the VNF (a Linux ifname). */
  name: IfName,
  /** A network of the deployment's config: the IPAM hands out the address. */
  network: Type.Optional(DnsLabel),
  mtuBytes: Type.Optional(Type.Integer({ minimum: 68, maximum: 9216 })),
  /** Optional fixed MAC; otherwise the plan chooses one. */
  mac: Type.Optional(Mac),
};
export const TapInterfaceSchema = Closed({ ...interfaceBase, type: Type.Literal('tap') });
export const MacvtapInterfaceSchema = Closed({
  ...interfaceBase,
  type: Type.Literal('macvtap'),
  /** Host link; default: the network's parent. */
  parent: Type.Optional(IfName),
});
export const SriovInterfaceSchema = Closed({
  ...interfaceBase,
  type: Type.Literal('sriov'),
  physnet: DnsLabel,
  vlan: Type.Optional(Type.Integer({ minimum: 0, maximum: 4094 })),
  vlanQos: Type.Optional(Type.Integer({ minimum: 0, maximum: 7 })),
  spoofchk: Type.Optional(Type.Boolean()),
  trust: Type.Optional(Type.Boolean()),
});
/** A port on the node's DPDK switch for `network` (API.md "Data planes"); `dataplane` is the older form, still accepted. */
export const VhostUserInterfaceSchema = Closed({
  ...interfaceBase,
  type: Type.Literal('vhostuser'),
  dataplane: Type.Optional(Enum(DATAPLANE_KINDS)),
  queues: Type.Optional(Type.Integer({ minimum: 1, maximum: 16 })),
});
export const VnfdInterfaceSchema = TaggedUnion('type', INTERFACE_TYPES, [
  TapInterfaceSchema,
  MacvtapInterfaceSchema,
  SriovInterfaceSchema,
  VhostUserInterfaceSchema,
]);
export type VnfdInterface = Static<typeof VnfdInterfaceSchema>;

export const VnfdRouteSchema = Closed({
  dst: Type.String({ maxLength: 64 }),
  via: Type.Optional(Type.String({ maxLength: 64 })),
  dev: Type.Optional(IfName),
});
export type VnfdRoute = Static<typeof VnfdRouteSchema>;

export const PartitionPolicySchema = Type.Union([Type.Literal('stop'), Type.Literal('keep')]);
export type PartitionPolicy = Static<typeof PartitionPolicySchema>;

export const VnfdSchema = Closed({
  name: DnsLabel,
  replicas: Type.Integer({ minimum: 1, maximum: 1000 }),
  placement: Type.Optional(
    Closed({
      antiAffinity: Type.Optional(Enum(['node', 'none'] as const)),
      nodeSelector: Type.Optional(
        BoundedMap({ maxLength: 63, pattern: '^[A-Za-z0-9]([A-Za-z0-9_./-]{0,61}[A-Za-z0-9])?$' }, Type.String({ maxLength: 63 }), 32),
      ),
    }),
  ),
  resources: VnfdResourcesSchema,
  image: Closed({
    // the forms (builtin:, oci:, a registry reference) are checked by parseImageRef in validateVnfdSemantics
    ref: Type.String({ minLength: 1, maxLength: 1024, pattern: '^\\S+$' }),
  }),
  command: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 64 })),
  args: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 256 })),
  env: Type.Optional(BoundedMap({ maxLength: 256, pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }, Type.String({ maxLength: 4096 }), 128)),
  interfaces: Type.Optional(Type.Array(VnfdInterfaceSchema, { maxItems: 16 })),
  routes: Type.Optional(Type.Array(VnfdRouteSchema, { maxItems: 64 })),
  /**
   * What a node that lost NATS for longer than the grace (fenced itself) does with this VNF's replicas: `stop`
   * (default) removes them once the node's `fencing.stopAfterMs` passed (Nomad's `stop_on_client_after`), `keep`
   * keeps them running until the node is back. Either way the scheduler heals them elsewhere after the grace and
   * the returning node tears down what was healed away: after healing, one copy serves.
   */
  onPartition: Type.Optional(PartitionPolicySchema),
});
export type Vnfd = Static<typeof VnfdSchema>;

/** What one replica of a VNFD asks of a node (and of a tenant's quota). */
export function replicaDemand(d: Vnfd): { vcpus: number; memoryMiB: number; vfs: number } {
  const vfs = (d.interfaces ?? []).filter((i) => i.type === 'sriov').length;
  return { vcpus: d.resources.vcpus, memoryMiB: d.resources.memoryMiB, vfs };
}
