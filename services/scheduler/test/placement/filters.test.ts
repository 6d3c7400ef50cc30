import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  antiAffinityFilter,
  cordonFilter,
  dataplaneFilter,
  dedicatedCpusFilter,
  excludeFilter,
  healthFilter,
  hugepagesFilter,
  nodeSelectorFilter,
  numaFilter,
  resourcesFilter,
  sriovVfsFilter,
  tenantQuotaFilter,
  vmSizeFilter,
  vmIommuFilter,
  buildPlacementRequest,
  type Filter,
  type NodeView,
  type PlacementRequest,
} from '../../src/placement/index.js';
import { nodeView, occupy, pinAll, request, vnfd } from './helpers.js';

interface Case {
  name: string;
  req: () => PlacementRequest;
  node: () => NodeView;
  /** undefined: accepted; a string: rejected with exactly this reason. */
  reject?: string;
}

function table(filter: Filter, cases: Case[]): void {
  for (const c of cases) {
    test(`${filter.name}: ${c.name}`, () => {
      const v = filter.filter(c.req(), c.node());
      if (c.reject === undefined) assert.deepEqual(v, { ok: true });
      else assert.deepEqual(v, { ok: false, reason: c.reject });
    });
  }
}

const sriov = (n: number, physnet = 'physnet1') =>
  Array.from({ length: n }, (_, i) => ({ name: `vf${i}`, type: 'sriov' as const, physnet }));

table(excludeFilter, [
  { name: 'nothing excluded passes', req: () => request(vnfd()), node: () => nodeView({}) },
  {
    name: 'excluded node rejected whatever the anti-affinity policy',
    req: () => buildPlacementRequest({ tenantId: 't1', vnfId: 'v1', replica: 0, descriptor: vnfd(), excludeNodeIds: ['n1'] }),
    node: () => nodeView({}),
    reject: 'the operation moves replicas away from this node',
  },
  {
    name: 'other nodes pass',
    req: () => buildPlacementRequest({ tenantId: 't1', vnfId: 'v1', replica: 0, descriptor: vnfd(), excludeNodeIds: ['n9'] }),
    node: () => nodeView({}),
  },
  {
    name: 'a node other than onlyNodeId rejected (a migrating tenant VM\'s replicas go to one node)',
    req: () => buildPlacementRequest({ tenantId: 't1', vnfId: 'v1', replica: 0, descriptor: vnfd(), onlyNodeId: 'n9' }),
    node: () => nodeView({}),
    reject: "the tenant VM's other replicas move to node n9",
  },
  {
    name: 'the onlyNodeId node passes',
    req: () => buildPlacementRequest({ tenantId: 't1', vnfId: 'v1', replica: 0, descriptor: vnfd(), onlyNodeId: 'n1' }),
    node: () => nodeView({}),
  },
]);

table(healthFilter, [
  { name: 'Ready passes', req: () => request(vnfd()), node: () => nodeView({}) },
  { name: 'NotReady rejected', req: () => request(vnfd()), node: () => nodeView({}, { health: 'NotReady' }), reject: 'node is NotReady' },
  { name: 'Unknown rejected', req: () => request(vnfd()), node: () => nodeView({}, { health: 'Unknown' }), reject: 'node is Unknown' },
]);

table(cordonFilter, [
  { name: 'schedulable passes', req: () => request(vnfd()), node: () => nodeView({}) },
  { name: 'cordoned rejected', req: () => request(vnfd()), node: () => nodeView({}, { cordoned: true }), reject: 'node is cordoned' },
  { name: 'draining rejected', req: () => request(vnfd()), node: () => nodeView({}, { draining: true }), reject: 'node is draining' },
]);

table(tenantQuotaFilter, [
  { name: 'no quota given passes', req: () => request(vnfd()), node: () => nodeView({}) },
  { name: 'unlimited keys pass', req: () => request(vnfd(), { quota: {} }), node: () => nodeView({}) },
  { name: 'exactly enough passes', req: () => request(vnfd(), { quota: { vcpus: 2, memoryMiB: 1024, vfs: 0 } }), node: () => nodeView({}) },
  {
    name: 'vCPUs over quota',
    req: () => request(vnfd({ resources: { vcpus: 4 } }), { quota: { vcpus: 2 } }),
    node: () => nodeView({}),
    reject: 'tenant quota: needs 4 vCPUs, 2 left',
  },
  {
    name: 'memory over quota',
    req: () => request(vnfd(), { quota: { memoryMiB: 512 } }),
    node: () => nodeView({}),
    reject: 'tenant quota: needs 1024 MiB, 512 MiB left',
  },
  {
    name: 'VFs over quota',
    req: () => request(vnfd({ interfaces: sriov(2) }), { quota: { vfs: 1 } }),
    node: () => nodeView({}),
    reject: 'tenant quota: needs 2 VFs, 1 left',
  },
]);

table(nodeSelectorFilter, [
  { name: 'no selector passes', req: () => request(vnfd()), node: () => nodeView({}) },
  {
    name: 'matching labels pass',
    req: () => request(vnfd({ placement: { nodeSelector: { site: 'edge-1' } } })),
    node: () => nodeView({ labels: { site: 'edge-1', rack: 'r1' } }),
  },
  {
    name: 'wrong value rejected',
    req: () => request(vnfd({ placement: { nodeSelector: { site: 'edge-1' } } })),
    node: () => nodeView({ labels: { site: 'edge-2' } }),
    reject: 'labels do not match nodeSelector {site=edge-1}',
  },
  {
    name: 'missing label rejected',
    req: () => request(vnfd({ placement: { nodeSelector: { site: 'edge-1', tier: 'a' } } })),
    node: () => nodeView({ labels: { site: 'edge-1' } }),
    reject: 'labels do not match nodeSelector {site=edge-1,tier=a}',
  },
]);

table(antiAffinityFilter, [
  { name: 'no anti-affinity ignores other replicas', req: () => request(vnfd(), { other: ['n1'] }), node: () => nodeView({}) },
  {
    name: 'node of another replica rejected',
    req: () => request(vnfd({ placement: { antiAffinity: 'node' } }), { other: ['n1'] }),
    node: () => nodeView({}),
    reject: 'already runs a replica of this VNF (antiAffinity: node)',
  },
  {
    name: 'node whose ledger holds a replica of the VNF rejected',
    req: () => request(vnfd({ placement: { antiAffinity: 'node' } })),
    node: () => {
      const v = nodeView({});
      occupy(v, { vnfId: 'v1', tenantId: 't1' });
      return v;
    },
    reject: 'already runs a replica of this VNF (antiAffinity: node)',
  },
  { name: 'other node passes', req: () => request(vnfd({ placement: { antiAffinity: 'node' } }), { other: ['n2'] }), node: () => nodeView({}) },
]);

table(dataplaneFilter, [
  { name: 'no vhost-user passes', req: () => request(vnfd()), node: () => nodeView({}) },
  {
    name: 'vpp present passes',
    req: () => request(vnfd({ interfaces: [{ name: 'dp0', type: 'vhostuser', dataplane: 'vpp' }] })),
    node: () => nodeView({ dataplanes: ['vpp'] }),
  },
  {
    name: 'vpp absent rejected',
    req: () => request(vnfd({ interfaces: [{ name: 'dp0', type: 'vhostuser', dataplane: 'vpp' }] })),
    node: () => nodeView({ dataplanes: ['ovs-dpdk'] }),
    reject: 'no vpp data plane for vhost-user',
  },
  {
    name: 'vhost-user on a network the node\'s healthy OVS-DPDK switch serves passes',
    req: () => request(vnfd({ interfaces: [{ name: 'dp0', type: 'vhostuser', network: 'dp-net' }] })),
    node: () => nodeView({ dataplanes: [{ kind: 'ovs-dpdk', networks: ['dp-net'], state: 'ready' }] }),
  },
  {
    name: 'vhost-user on a network without a DPDK switch rejected',
    req: () => request(vnfd({ interfaces: [{ name: 'dp0', type: 'vhostuser', network: 'dp-net' }] })),
    node: () => nodeView({ dataplanes: [{ kind: 'ovs-dpdk', networks: ['other-net'], state: 'ready' }] }),
    reject: 'no healthy OVS-DPDK switch on network dp-net',
  },
  {
    name: 'vhost-user on a network whose switch is unhealthy rejected',
    req: () => request(vnfd({ interfaces: [{ name: 'dp0', type: 'vhostuser', network: 'dp-net' }] })),
    node: () => nodeView({ dataplanes: [{ kind: 'ovs-dpdk', networks: ['dp-net'], state: 'failed' }] }),
    reject: 'no healthy OVS-DPDK switch on network dp-net',
  },
  {
    name: 'vhost-user on a network: a node with no switch at all rejected (the old dataplane field does not help)',
    req: () => request(vnfd({ interfaces: [{ name: 'dp0', type: 'vhostuser', network: 'dp-net', dataplane: 'ovs-dpdk' }] })),
    node: () => nodeView({ dataplanes: ['ovs-dpdk'] }),
    reject: 'no healthy OVS-DPDK switch on network dp-net',
  },
]);

/** A node whose agent allows `max` vCPUs per tenant VM (inventory vmMaxVcpus). */
function vmMax(max: number | undefined): NodeView {
  const v = nodeView({ numaNodes: 1, cpusPerNuma: 8 });
  if (max !== undefined) v.inventory = { ...v.inventory, vmMaxVcpus: max };
  return v;
}
table(vmSizeFilter, [
  { name: 'no limit advertised passes', req: () => request(vnfd({ resources: { vcpus: 4 } })), node: () => vmMax(undefined) },
  { name: 'within the per-VM vCPUs passes', req: () => request(vnfd({ resources: { vcpus: 2 } })), node: () => vmMax(2) },
  { name: 'a replica larger than a VM may be', req: () => request(vnfd({ resources: { vcpus: 2 } })), node: () => vmMax(1), reject: "2 vCPUs exceed the node's 1 per VM" },
  {
    name: "the tenant's replicas on the node share its VM: their vCPUs count together",
    req: () => request(vnfd({ resources: { vcpus: 2 } })),
    node: () => {
      const v = vmMax(3);
      occupy(v, { tenantId: 't1', vcpus: 2 });
      return v;
    },
    reject: "the tenant's VM here has 2 vCPUs; 2 more exceed the node's 3 per VM",
  },
  {
    name: "another tenant's VM does not count",
    req: () => request(vnfd({ resources: { vcpus: 2 } })),
    node: () => {
      const v = vmMax(3);
      occupy(v, { tenantId: 'other', vcpus: 2 });
      return v;
    },
  },
]);

table(resourcesFilter, [
  { name: 'fits', req: () => request(vnfd()), node: () => nodeView({ numaNodes: 1, cpusPerNuma: 2 }) },
  {
    name: 'too many shared vCPUs',
    req: () => request(vnfd({ resources: { vcpus: 3 } })),
    node: () => nodeView({ numaNodes: 1, cpusPerNuma: 2 }),
    reject: 'fewer than 3 free vCPUs',
  },
  {
    name: 'pinned CPUs shrink the shared pool',
    req: () => request(vnfd({ resources: { vcpus: 2 } })),
    node: () => {
      const v = nodeView({ numaNodes: 1, cpusPerNuma: 4, isolatedPerNuma: 4 });
      occupy(v, { numaNode: 0, cpus: [0, 1, 2] });
      return v;
    },
    reject: 'fewer than 2 free vCPUs',
  },
  {
    name: "the node's cpuAllocationRatio multiplies the shared pool: 2 CPUs x 1.5 take 3 shared vCPUs",
    req: () => request(vnfd({ resources: { vcpus: 3 } })),
    node: () => nodeView({ numaNodes: 1, cpusPerNuma: 2, cpuAllocationRatio: 1.5 }),
  },
  {
    name: '... and not 4',
    req: () => request(vnfd({ resources: { vcpus: 4 } })),
    node: () => nodeView({ numaNodes: 1, cpusPerNuma: 2, cpuAllocationRatio: 1.5 }),
    reject: 'fewer than 4 free vCPUs',
  },
  {
    name: 'dedicated vCPUs never overcommit, whatever the ratio',
    req: () => request(vnfd({ resources: { vcpus: 3, cpuPolicy: 'dedicated' } })),
    node: () => nodeView({ numaNodes: 1, cpusPerNuma: 2, isolatedPerNuma: 2, cpuAllocationRatio: 4 }),
    reject: 'fewer than 3 free vCPUs',
  },
  {
    name: 'memory outside the hugepage pools',
    req: () => request(vnfd({ resources: { memoryMiB: 3000 } })),
    // 2 x 4096 MiB, of which 2 x 1024 x 2 MiB in hugepages: 4096 MiB left
    node: () => {
      const v = nodeView({ memoryMiBPerNuma: 4096, hugepages2MPerNuma: 1024 });
      occupy(v, { memoryMiB: 2000 });
      return v;
    },
    reject: 'less than 3000 MiB of free memory',
  },
  {
    name: 'hugepage-backed memory is not counted twice',
    req: () => request(vnfd({ resources: { memoryMiB: 2048, hugepages: { sizeKiB: 2048, count: 1024 } } })),
    node: () => nodeView({ memoryMiBPerNuma: 2048, hugepages2MPerNuma: 1024 }),
  },
]);

table(sriovVfsFilter, [
  { name: 'no VFs asked passes', req: () => request(vnfd()), node: () => nodeView({}) },
  {
    name: 'enough VFs on the physnet',
    req: () => request(vnfd({ interfaces: sriov(2) })),
    node: () => nodeView({ pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 1 }, { physnet: 'physnet1', numaNode: 1, vfs: 1 }] }),
  },
  {
    name: 'VFs on another physnet do not count',
    req: () => request(vnfd({ interfaces: sriov(2) })),
    node: () => nodeView({ pfs: [{ physnet: 'physnet2', numaNode: 0, vfs: 8 }, { physnet: 'physnet1', numaNode: 0, vfs: 1 }] }),
    reject: 'fewer than 2 free VFs on physnet1',
  },
  {
    name: 'held VFs do not count',
    req: () => request(vnfd({ interfaces: sriov(1) })),
    node: () => {
      const v = nodeView({ pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 1 }] });
      occupy(v, { vfs: [...v.vfByPci.keys()] });
      return v;
    },
    reject: 'fewer than 1 free VFs on physnet1',
  },
]);

const dedicated = (vcpus: number, numa: 'strict' | 'preferred' | 'none' = 'none') =>
  vnfd({ resources: { vcpus, cpuPolicy: 'dedicated', numa } });

table(dedicatedCpusFilter, [
  { name: 'shared policy passes', req: () => request(vnfd({ resources: { vcpus: 64 } })), node: () => nodeView({}) },
  { name: 'enough isolated CPUs on one NUMA node', req: () => request(dedicated(7)), node: () => nodeView({ cpusPerNuma: 8, isolatedPerNuma: 7 }) },
  {
    name: 'pinned CPUs never span NUMA nodes',
    req: () => request(dedicated(8)),
    node: () => nodeView({ cpusPerNuma: 8, isolatedPerNuma: 7 }),
    reject: 'no NUMA node with 8 free dedicated CPUs',
  },
  {
    name: 'already pinned CPUs are not free',
    req: () => request(dedicated(2)),
    node: () => {
      const v = nodeView({ numaNodes: 1, cpusPerNuma: 4, isolatedPerNuma: 3 });
      occupy(v, { numaNode: 0, cpus: [1, 2] });
      return v;
    },
    reject: 'no NUMA node with 2 free dedicated CPUs',
  },
]);

const withHp = (count: number) => vnfd({ resources: { memoryMiB: 2 * count, hugepages: { sizeKiB: 2048, count } } });
table(hugepagesFilter, [
  { name: 'no hugepages asked passes', req: () => request(vnfd()), node: () => nodeView({ hugepages2MPerNuma: 0 }) },
  { name: 'enough on one NUMA node', req: () => request(withHp(1024)), node: () => nodeView({ hugepages2MPerNuma: 1024 }) },
  {
    name: 'pages never span NUMA nodes',
    req: () => request(withHp(1500)),
    node: () => nodeView({ hugepages2MPerNuma: 1024 }),
    reject: 'no NUMA node with 1500 free 2048 KiB hugepages',
  },
  {
    name: '1 GiB pages asked, only 2 MiB present',
    req: () => request(vnfd({ resources: { memoryMiB: 2048, hugepages: { sizeKiB: 1048576, count: 2 } } })),
    node: () => nodeView({ hugepages2MPerNuma: 4096 }),
    reject: 'no NUMA node with 2 free 1048576 KiB hugepages',
  },
]);

// The NUMA cases of the issue: VFs on NUMA node 1, free pinnable CPUs only on NUMA node 0.
function vfsOn1CpusOn0(): NodeView {
  const v = nodeView({ pfs: [{ physnet: 'physnet1', numaNode: 1, vfs: 4 }] });
  pinAll(v, 1);
  return v;
}
const numaReq = (numa: 'strict' | 'preferred' | 'none') =>
  request(vnfd({ resources: { vcpus: 2, cpuPolicy: 'dedicated', numa }, interfaces: sriov(2) }));

table(numaFilter, [
  {
    name: 'strict: VFs on node 1, CPUs only on node 0 -> rejected',
    req: () => numaReq('strict'),
    node: vfsOn1CpusOn0,
    reject: 'no NUMA node with 2 free dedicated CPUs and 2 free VFs on physnet1 together (numa: strict)',
  },
  { name: 'preferred: same node passes (falls back)', req: () => numaReq('preferred'), node: vfsOn1CpusOn0 },
  { name: 'none: same node passes', req: () => numaReq('none'), node: vfsOn1CpusOn0 },
  {
    name: 'strict: CPUs, hugepages and VFs together on node 1',
    req: () =>
      request(
        vnfd({
          resources: { vcpus: 2, memoryMiB: 1024, cpuPolicy: 'dedicated', numa: 'strict', hugepages: { sizeKiB: 2048, count: 512 } },
          interfaces: sriov(2),
        }),
      ),
    node: () => nodeView({ pfs: [{ physnet: 'physnet1', numaNode: 1, vfs: 2 }] }),
  },
  {
    name: 'strict: hugepages exhausted on the VFs NUMA node -> rejected',
    req: () =>
      request(
        vnfd({
          resources: { vcpus: 2, memoryMiB: 1024, cpuPolicy: 'dedicated', numa: 'strict', hugepages: { sizeKiB: 2048, count: 512 } },
          interfaces: sriov(2),
        }),
      ),
    node: () => {
      const v = nodeView({ pfs: [{ physnet: 'physnet1', numaNode: 1, vfs: 2 }] });
      occupy(v, { hugepages: { sizeKiB: 2048, count: 1000, numaNode: 1 } });
      return v;
    },
    reject: 'no NUMA node with 2 free dedicated CPUs, 512 free 2048 KiB hugepages and 2 free VFs on physnet1 together (numa: strict)',
  },
  {
    name: 'strict: VFs of a PF without NUMA affinity (-1) do not count (Nova required)',
    req: () => numaReq('strict'),
    node: () => nodeView({ pfs: [{ physnet: 'physnet1', numaNode: -1, vfs: 4 }] }),
    reject: 'no NUMA node with 2 free dedicated CPUs and 2 free VFs on physnet1 together (numa: strict)',
  },
  {
    name: 'strict: VFs split over two NUMA nodes -> rejected',
    req: () => numaReq('strict'),
    node: () => nodeView({ pfs: [{ physnet: 'physnet1', numaNode: 0, vfs: 1 }, { physnet: 'physnet1', numaNode: 1, vfs: 1 }] }),
    reject: 'no NUMA node with 2 free dedicated CPUs and 2 free VFs on physnet1 together (numa: strict)',
  },
]);

/** A node where the tenants listed have a VM booted without a virtual IOMMU (inventory noViommuTenants). */
function noViommu(tenants?: string[]): NodeView {
  const v = nodeView({});
  if (tenants) v.inventory = { ...v.inventory, noViommuTenants: tenants };
  return v;
}
const vfioDp = { vcpus: 2, dataplane: { kind: 'dpdk' as const, driver: 'vfio-pci' as const } };
const dpIfs = [{ name: 'dp0', type: 'vhostuser' as const, network: 'west' }];
table(vmIommuFilter, [
  { name: "a vfio-pci data plane, the tenant's VM here without a vIOMMU", req: () => request(vnfd({ resources: vfioDp, interfaces: dpIfs })), node: () => noViommu(['t1']), reject: "the tenant's VM here was booted without a virtual IOMMU, which a vfio-pci data plane in the guest needs (it cannot be added to a running VM)" },
  { name: "another tenant's VM without one does not count", req: () => request(vnfd({ resources: vfioDp, interfaces: dpIfs })), node: () => noViommu(['other']) },
  { name: 'no tenant VM here (or an older agent): a boot gives the vIOMMU', req: () => request(vnfd({ resources: vfioDp, interfaces: dpIfs })), node: () => noViommu(undefined) },
  { name: 'uio_pci_generic needs none', req: () => request(vnfd({ resources: { vcpus: 2, dataplane: { kind: 'dpdk' } }, interfaces: dpIfs })), node: () => noViommu(['t1']) },
  {
    name: 'a VF in the data plane is vfio-pci in the guest',
    req: () => request(vnfd({ resources: { vcpus: 2, dataplane: { kind: 'dpdk' } }, interfaces: sriov(1) })),
    node: () => noViommu(['t1']),
    reject: "the tenant's VM here was booted without a virtual IOMMU, which a vfio-pci data plane in the guest needs (it cannot be added to a running VM)",
  },
  { name: 'a VF without a data plane: the guest kernel drives it', req: () => request(vnfd({ interfaces: sriov(1) })), node: () => noViommu(['t1']) },
]);
