/**
 * The DPDK data plane through the product (issue 9), one VM boot: `npm start`'s appliance with its OVS-DPDK switch,
 * hosts left and right on the provider side of two switch networks, a tenant VNF `builtin:testpmd` (DPDK in the
 * guest: its two virtio-net devices bound for DPDK by the guest agent, io forwarding) with two vhost-user interfaces
 * (QEMU the vhost-user server, OVS `dpdkvhostuserclient`) instantiated through the message API; frames from left
 * reach right only through OVS-DPDK -> vhost-user -> the guest's DPDK -> vhost-user -> OVS-DPDK; ovs-vswitchd killed: the
 * node agent restarts the switch, re-creates the ports from its records, the VM is not touched and traffic resumes;
 * terminate leaves no switch port, socket, netplugins record, sandbox or lease. The same VNF again with
 * `dataplane.driver: vfio-pci`: its VM gets a virtual IOMMU, the vhost-user NICs `iommu_platform`, testpmd's EAL uses
 * vfio with the IOMMU, and OVS-DPDK (vhost-iommu-support) translates the guest's IOVAs. Then, with the same appliance, the
 * kernel builtin:vrouter on vhost-user NICs (a second VM boot: this 2-CPU node has no room for both VNFs at once)
 * routes between two more switch networks.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startAppliance, type RunningAppliance } from '../src/appliance.js';
import { cleanupNode, dataplaneNetworks, runDataplaneScenario, runVrouterOnVhostUser, setupProviderHosts, teardownProviderHosts, type DataplaneNames, type DataplaneVnf } from '../src/dataplane-scenario.js';

const OVS_DPDK = '/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk';
const VNF: DataplaneVnf = 'builtin:testpmd';
const tag = String(process.pid % 100000);
const names: DataplaneNames = {
  tenant: `dp${tag}`,
  leftNs: `dp-left-${tag}`,
  rightNs: `dp-right-${tag}`,
  leftNet: { name: 'dpwest', prefix: '10.64.1' },
  rightNet: { name: 'dpeast', prefix: '10.64.2' },
};
/** A second VNF of the tenant, the kernel builtin:vrouter, joins the same VM on two more switch networks. */
const joined: DataplaneNames = {
  tenant: names.tenant,
  leftNs: `dp-l2-${tag}`,
  rightNs: `dp-r2-${tag}`,
  leftNet: { name: 'dpw2', prefix: '10.64.3' },
  rightNet: { name: 'dpe2', prefix: '10.64.4' },
};
const cgroupParent = `edgenfv-dp${tag}`;
let appliance: RunningAppliance | undefined;
let home: string | undefined;

after(async () => {
  await appliance?.stop();
  teardownProviderHosts(names);
  teardownProviderHosts(joined);
  if (home) cleanupNode(join(home, 'node'), cgroupParent);
  if (home) rmSync(home, { recursive: true, force: true });
});

test('frames from left reach right through OVS-DPDK, vhost-user and the tenant VM; again after the switch restarts; terminate leaves nothing', async () => {
  assert.ok(existsSync(OVS_DPDK), `${OVS_DPDK} is required (apt-get install openvswitch-switch-dpdk; npm run setup)`);
  home = mkdtempSync(join(tmpdir(), 'enfv-dp-'));
  appliance = await startAppliance(home, {
    ports: { nats: await freePort(), dashboard: await freePort(), schedulerMetrics: await freePort(), nodeAgentMetrics: await freePort() },
    networks: [...dataplaneNetworks(names, { l2: VNF === 'builtin:testpmd' }), ...dataplaneNetworks(joined)],
    ovsDpdk: 'on',
    nodeAgent: { nodeId: `dp-node-${tag}`, heartbeatIntervalMs: 1000, isolation: { cgroupParent }, qemu: { maxVcpus: 2, maxMemoryMiB: 2048 } },
  });
  const providerNetns = JSON.parse(readFileSync(join(home, 'connect.json'), 'utf8')).providerNetns as string;
  assert.ok(providerNetns, 'connect.json names the provider namespace');
  const node = await appliance.api.ok('nfv.v1.admin.nodes.get', { id: `dp-node-${tag}` });
  const sw = node.inventory.dataplanes.find((d: any) => d.kind === 'ovs-dpdk');
  assert.equal(sw?.state, 'ready', `the node's switch: ${JSON.stringify(sw)}`);
  assert.deepEqual([...sw.networks].sort(), ['dpe2', 'dpeast', 'dpw2', 'dpwest']);
  setupProviderHosts(providerNetns, names, VNF);
  setupProviderHosts(providerNetns, joined, 'builtin:vrouter');

  const nodeState = join(home, 'node');
  const r = await runDataplaneScenario(appliance.api, nodeState, names, VNF, { frames: 5 });
  assert.equal(r.vnf, VNF);
  assert.deepEqual(r.opStates, ['COMPLETED', 'COMPLETED']);
  // what the replica reports: an absolute socket under the tenant's folder in the sandbox's VM root (the chrooted
  // QEMU's own /: <stateDir>/vm/<id>/v/<tenant>/), and the switch's port
  for (const i of r.interfaces) {
    const rel = i.socketPath.startsWith(join(nodeState, 'vm') + '/') ? i.socketPath.slice(join(nodeState, 'vm').length + 1) : '';
    assert.match(rel, new RegExp(`^[0-9a-f]{10}/v/${names.tenant}/[^/]+\\.sock$`), JSON.stringify(i));
    assert.match(i.portName, /^vhu[0-9a-f]+$/);
  }
  assert.deepEqual([...r.switchPorts.running].sort(), r.interfaces.map((i) => i.portName).sort(), 'one dpdkvhostuserclient port per interface');
  assert.ok(r.framesReceived >= r.framesSent - 1, `frames through the VM: ${r.framesReceived}/${r.framesSent}\n${r.diagnostics}`);
  assert.ok(r.afterSwitchRestart >= r.framesSent - 1, `after the switch restart: ${r.afterSwitchRestart}/${r.framesSent}`);
  assert.ok(r.qemuPid.before > 0);
  assert.equal(r.qemuPid.after, r.qemuPid.before, 'the VM was not touched by the switch restart');
  assert.equal(r.framesAfterTerminate, 0, 'the path is gone after terminate');
  assert.deepEqual(r.switchPorts.afterTerminate, [], 'no switch port left');
  assert.deepEqual(r.socketsAfterTerminate, [], 'no vhost-user socket left');
  assert.deepEqual(r.recordsAfterTerminate, [], 'no netplugins record left');
  const kv = await appliance.nc.jetstream().views.kv('edgenfv_ipam');
  const leases: string[] = [];
  for await (const k of await kv.keys()) if ((await kv.get(k))?.operation === 'PUT') leases.push(k);
  assert.deepEqual(leases, [], 'no IP lease');
});

test('DPDK on the vhost-user NICs with vfio-pci behind the VM\'s virtual IOMMU: OVS-DPDK translates through vhost IOTLB; frames cross, also after the switch restarts', async () => {
  assert.ok(appliance && home, 'the appliance of the test above');
  const nodeState = join(home, 'node');
  const r = await runDataplaneScenario(appliance.api, nodeState, names, VNF, { frames: 5, driver: 'vfio-pci' });
  assert.deepEqual(r.opStates, ['COMPLETED', 'COMPLETED']);
  assert.ok(r.viommu, 'the vIOMMU was looked at');
  assert.equal(r.viommu.qemu, true, 'QEMU started with intel-iommu');
  assert.equal(r.viommu.nicsTranslated, 2, 'both vhost-user NICs with iommu_platform');
  assert.equal(r.viommu.switchIommuSupport.replace(/"/g, ''), 'true', 'OVS-DPDK with vhost-iommu-support');
  assert.ok(r.viommu.eal.some((l) => /Using IOMMU type 1/.test(l)), `testpmd's EAL on vfio with the IOMMU: ${r.viommu.eal.join(' | ')}`);
  assert.equal(r.viommu.eal.filter((l) => /Probe PCI driver: net_virtio/.test(l)).length, 2, 'both NICs probed');
  assert.ok(r.framesReceived >= r.framesSent - 1, `frames through the VM: ${r.framesReceived}/${r.framesSent}\n${r.diagnostics}`);
  assert.ok(r.afterSwitchRestart >= r.framesSent - 1, `after the switch restart: ${r.afterSwitchRestart}/${r.framesSent}`);
  assert.equal(r.framesAfterTerminate, 0);
  assert.deepEqual([r.switchPorts.afterTerminate, r.socketsAfterTerminate, r.recordsAfterTerminate], [[], [], []], 'nothing left');
});

test('the kernel builtin:vrouter on vhost-user NICs routes between two more switch networks; terminate leaves no port or socket', async () => {
  assert.ok(appliance && home, 'the appliance of the test above');
  const nodeState = join(home, 'node');
  // while the vrouter's VM (booted without a virtual IOMMU: no vfio-pci data plane) runs, a DPDK VNF of the same
  // tenant asking vfio-pci cannot join it: the node reports the tenant in noViommuTenants, the vm-iommu filter says so
  let refused: { state: string; error?: { code: string; message: string } } | undefined;
  let noViommuTenants: string[] | undefined;
  const api = appliance.api;
  const v = await runVrouterOnVhostUser(api, nodeState, joined, {
    frames: 5,
    whileRunning: async () => {
      const nodeId = `dp-node-${tag}`;
      for (let i = 0; i < 50 && !noViommuTenants?.length; i++) {
        noViommuTenants = (await api.ok('nfv.v1.admin.nodes.get', { id: nodeId })).inventory.noViommuTenants;
        if (!noViommuTenants?.length) await new Promise((r) => setTimeout(r, 200));
      }
      const inst = await api.ok(`nfv.v1.tenant.${names.tenant}.vnfs.instantiate`, {
        descriptor: {
          name: 'dp-vfio',
          replicas: 1,
          resources: { vcpus: 2, memoryMiB: 768, dataplane: { kind: 'dpdk', driver: 'vfio-pci' } },
          image: { ref: 'builtin:testpmd' },
          interfaces: [{ name: 'west', type: 'vhostuser', network: names.leftNet.name }, { name: 'east', type: 'vhostuser', network: names.rightNet.name }],
        },
      });
      const op = await api.waitOp(names.tenant, inst.opOccId);
      refused = { state: op.operationState, error: op.error };
    },
  });
  assert.deepEqual(noViommuTenants, [names.tenant], 'the node reports the tenant whose VM has no vIOMMU');
  assert.equal(refused?.state, 'FAILED', JSON.stringify(refused));
  assert.equal(refused?.error?.code, 'UNSCHEDULABLE');
  assert.match(refused!.error!.message, /vm-iommu/);
  assert.match(refused!.error!.message, /booted without a virtual IOMMU/);
  assert.deepEqual(v.opStates, ['COMPLETED', 'COMPLETED']);
  assert.deepEqual([...v.portsWhileRunning].sort(), v.interfaces.map((i) => i.portName).sort());
  assert.ok(v.framesReceived >= v.framesSent - 1, `routed by the vrouter: ${v.framesReceived}/${v.framesSent}`);
  assert.deepEqual(v.portsAfterTerminate, [], 'its switch ports are gone');
  assert.deepEqual(v.socketsLeft, [], 'its sockets are gone');
  assert.equal(v.qemuLeft, 0, 'its VM is gone');
  assert.equal(await appliance.stop(), 0, 'the appliance stops cleanly');
  appliance = undefined;
});
