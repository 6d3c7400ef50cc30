/**
 * A DPDK VNF in the guest (`resources.dataplane: {kind: dpdk}`): what the node agent asks the guest agent to prepare
 * (PrepareDataplane: the VNF's virtio-net NICs to uio_pci_generic by default, a VF — no INTx, so no uio — or a NIC
 * the VNFD asks so to vfio-pci, behind the VM's virtual IOMMU (`needsViommu`: given at boot) or in vfio's no-IOMMU
 * mode where the node's operator allows it; and 2 MiB hugepages) and the EAL arguments its container gets, rendered by dpdk-config from
 * the guest as a node (its vCPUs, the hugepages just reserved, the NICs at their guest PCI addresses) and the VNF as
 * a workload (main lcore + one forwarding lcore per further vCPU, the PCI allow-list of its interfaces).
 */
import { ConflictError, DEFAULT_DATAPLANE_HUGEPAGES_MIB, InvalidArgumentError, guestDataplaneUsesVfio, guestDpdkDriver, type Allocation, type GuestDpdkDriver, type PrepareDataplaneRequest } from '@edgenfv/contracts';
import { placeWorkload, renderEalArgs } from '@edgenfv/dpdk-config';
import type { GuestSession } from './ports.js';
import type { ReplicaRecord } from './records.js';

export const GUEST_HUGEPAGE_MOUNT = '/dev/hugepages';
export const GUEST_HUGEPAGE_KIB = 2048;
/** The container's environment variable builtin:testpmd (and any DPDK image) reads its EAL arguments from. */
export const EAL_ARGS_ENV = 'EDGENFV_EAL_ARGS';

export interface GuestDataplane {
  /** DPDK --file-prefix (the container id). */
  prefix: string;
  vcpus: number;
  hugepagesMiB: number;
  /** The NICs handed to DPDK, by interface name, at their guest PCI addresses, with their guest driver. */
  nics: Array<{ name: string; pciAddress: string; driver?: GuestDpdkDriver }>;
  /** The driver of NICs that name none; default uio_pci_generic. */
  driver?: GuestDpdkDriver;
  /** The node's operator allows vfio's no-IOMMU mode in guests (node config guest.vfioNoIommu). */
  allowNoIommu?: boolean;
}


/** PrepareDataplane's request for it. */
export function prepareRequest(dp: GuestDataplane): PrepareDataplaneRequest {
  return {
    nics: dp.nics.map((n) => ({ pciAddress: n.pciAddress, driver: n.driver ?? dp.driver ?? 'uio_pci_generic' })),
    hugepageSizeKib: GUEST_HUGEPAGE_KIB,
    hugepages: Math.ceil((dp.hugepagesMiB * 1024) / GUEST_HUGEPAGE_KIB),
    ...(dp.allowNoIommu ? { allowNoIommu: true } : {}),
  };
}


/**
 * Whether a VM booted for this allocation needs a virtual IOMMU: some data-plane NIC is vfio-pci in the guest and
 * the operator has not chosen no-IOMMU mode for guests instead. (It cannot be added later: a replica needing one does
 * not join a VM booted without one, see SandboxManager.grow; node config guest.viommu always gives every VM one.)
 */
export function needsViommu(alloc: Pick<Allocation, 'resources' | 'interfaces'>, allowNoIommu: boolean): boolean {
  return !allowNoIommu && guestDataplaneUsesVfio(alloc);
}

/** The EAL argv: `-l 0-1 --main-lcore 0 --file-prefix P --socket-mem M --huge-dir /dev/hugepages -a <pci>...`. */
export function guestEalArgs(dp: GuestDataplane): string[] {
  if (dp.vcpus < 2) throw new InvalidArgumentError([{ field: 'resources.vcpus', message: 'a DPDK data plane needs at least 2 vCPUs (a main and a forwarding lcore)' }]);
  const pages = Math.ceil((dp.hugepagesMiB * 1024) / GUEST_HUGEPAGE_KIB);
  const node = {
    name: 'guest',
    numaNodes: [{ id: 0, cpus: Array.from({ length: dp.vcpus }, (_, i) => i), hugepages: [{ sizeKiB: GUEST_HUGEPAGE_KIB, free: pages }] }],
    nics: dp.nics.map((n) => ({ name: n.name, pciAddress: n.pciAddress, numaNode: -1 })),
    hugeDir: GUEST_HUGEPAGE_MOUNT,
  };
  const workload = {
    name: dp.prefix,
    workers: dp.vcpus - 1,
    memory: { hugepagesMiB: dp.hugepagesMiB, pageSizeKiB: GUEST_HUGEPAGE_KIB },
    nics: dp.nics.map((n) => ({ kind: 'pci' as const, name: n.name })),
  };
  return renderEalArgs(placeWorkload(node, workload).plan);
}

/**
 * For a replica whose VNFD asks `resources.dataplane: {kind: dpdk}`: the EAL arguments are rendered first (a bad
 * combination fails before the guest changes), then the guest agent prepares the NICs and hugepages. `viommu`: the VM
 * has a virtual IOMMU, so a vfio-pci NIC in it translates through it: a vhost-user NIC only can when its switch takes
 * vhost IOTLB messages (the node agent's OVS-DPDK), otherwise it is refused here.
 */
export async function prepareGuestDataplane(s: GuestSession, replica: ReplicaRecord, opts: { allowNoIommu?: boolean; viommu?: boolean } = {}): Promise<string[]> {
  const a = replica.alloc;
  const dp = a.resources.dataplane!;
  const nics = (dp.interfaces ?? []).map((name) => {
    const pciAddress = replica.guestPciAddresses?.[name];
    if (!pciAddress) throw new ConflictError(`replica ${a.replica}: the guest did not report a PCI address for interface ${name} (resources.dataplane.interfaces)`);
    const driver = guestDpdkDriver(a, name);
    const att = replica.attachments[name];
    if (opts.viommu && driver === 'vfio-pci' && att?.kind === 'vhostuser' && att.dataplane !== 'ovs-dpdk') {
      throw new InvalidArgumentError([{ field: 'resources.dataplane.driver', message: `interface ${name}: vfio-pci behind the VM's virtual IOMMU needs a switch that translates through it (vhost IOTLB: the node's OVS-DPDK); its ${att.dataplane} switch does not: use uio_pci_generic` }]);
    }
    return { name, pciAddress, driver };
  });
  const g: GuestDataplane = {
    prefix: replica.containerId,
    vcpus: a.resources.vcpus,
    hugepagesMiB: dp.hugepagesMiB ?? DEFAULT_DATAPLANE_HUGEPAGES_MIB,
    nics,
    ...(opts.allowNoIommu ? { allowNoIommu: true } : {}),
  };
  const eal = guestEalArgs(g);
  await s.prepareDataplane(prepareRequest(g));
  return eal;
}

