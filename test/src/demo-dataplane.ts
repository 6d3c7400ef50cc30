/**
 * `npm run demo:dataplane` (as root): the appliance with its OVS-DPDK switch (its own home and free ports), hosts
 * `left` and `right` on the provider side of the switch's networks, a tenant VNF with two vhost-user interfaces
 * instantiated through the message API; frames from left arrive in right through OVS-DPDK -> vhost-user -> the guest
 * -> vhost-user -> OVS-DPDK; ovs-vswitchd is killed and traffic resumes without touching the VM; terminate leaves no
 * port, socket or record. Last line:
 * `{"framesSent":N,"framesReceived":N,"afterSwitchRestart":N,"vnf":"builtin:...","path":"ovs-dpdk+vhost-user"}`.
 * `--vfio`: testpmd's data plane asks `driver: vfio-pci`: the VM gets a virtual IOMMU, its vhost-user NICs
 * `iommu_platform`, OVS-DPDK (vhost-iommu-support) translates the guest's IOVAs; the last line adds
 * `"driver":"vfio-pci","viommu":true` when QEMU, the switch and testpmd's EAL ("IOMMU type 1") all show it.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startAppliance } from './appliance.js';
import { cleanupNode, dataplaneNetworks, runDataplaneScenario, setupProviderHosts, teardownProviderHosts, type DataplaneNames, type DataplaneVnf } from './dataplane-scenario.js';

const OVS_DPDK = '/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk';
const names: DataplaneNames = {
  tenant: 'dpdemo',
  leftNs: 'left',
  rightNs: 'right',
  leftNet: { name: 'west', prefix: '10.65.1' },
  rightNet: { name: 'east', prefix: '10.65.2' },
};

/** The guest's VNF: builtin:testpmd (DPDK in the guest), or EDGENFV_DEMO_VNF=builtin:vrouter (the kernel on vhost-user NICs). */
const vnf: DataplaneVnf = process.env.EDGENFV_DEMO_VNF === 'builtin:vrouter' ? 'builtin:vrouter' : 'builtin:testpmd';
/** `--vfio`: testpmd's data plane asks `driver: vfio-pci` (the VM gets a virtual IOMMU; OVS-DPDK translates through vhost IOTLB). */
const vfio = process.argv.includes('--vfio');

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.error('demo:dataplane: needs root (hugepages, OVS-DPDK, network namespaces, QEMU isolation)');
    return 1;
  }
  if (!existsSync(OVS_DPDK)) {
    console.error(`demo:dataplane: ${OVS_DPDK} is missing (apt-get install openvswitch-switch-dpdk, or npm run setup)`);
    return 1;
  }
  const home = process.env.EDGENFV_DEMO_HOME ?? mkdtempSync(join(tmpdir(), 'enfv-dpdemo-'));
  const log = (m: string): void => console.log(`demo: ${m}`);
  log(`appliance home ${home}`);
  const ports = { nats: await freePort(), dashboard: await freePort(), schedulerMetrics: await freePort(), nodeAgentMetrics: await freePort() };
  let appliance: Awaited<ReturnType<typeof startAppliance>> | undefined;
  try {
    log('starting the appliance with OVS-DPDK (the first run builds the guest image: a few minutes)');
    appliance = await startAppliance(home, {
      ports,
      networks: dataplaneNetworks(names, { l2: vnf === 'builtin:testpmd' }),
      ovsDpdk: 'on',
      nodeAgent: { nodeId: 'dpdemo-node', heartbeatIntervalMs: 1000, isolation: { cgroupParent: 'edgenfv-dpdemo' }, qemu: { maxVcpus: 2, maxMemoryMiB: 2048 } },
    });
    const providerNetns = JSON.parse(readFileSync(join(home, 'connect.json'), 'utf8')).providerNetns as string;
    log(`serving: NATS ${appliance.info.servers[0]}; provider namespace ${providerNetns}`);
    setupProviderHosts(providerNetns, names, vnf);
    const r = await runDataplaneScenario(appliance.api, join(home, 'node'), names, vnf, { frames: 10, log, ...(vfio ? { driver: 'vfio-pci' as const } : {}) });
    const clean = r.framesAfterTerminate === 0 && !r.switchPorts.afterTerminate.length && !r.socketsAfterTerminate.length && !r.recordsAfterTerminate.length;
    if (!clean) log(`WARNING: left behind: ${JSON.stringify({ frames: r.framesAfterTerminate, ports: r.switchPorts.afterTerminate, sockets: r.socketsAfterTerminate, records: r.recordsAfterTerminate })}`);
    if (r.qemuPid.after !== r.qemuPid.before) log('WARNING: the VM changed across the switch restart');
    const code = await appliance.stop();
    appliance = undefined;
    log(`appliance stopped (exit ${code})`);
    // --vfio: the guest's DPDK drove the vhost-user NICs with vfio-pci behind the VM's virtual IOMMU, OVS-DPDK translating
    const viommuOk = !vfio || (r.viommu?.qemu === true && r.viommu.nicsTranslated === 2 && r.viommu.switchIommuSupport.replace(/"/g, '') === 'true' && r.viommu.eal.some((l) => /IOMMU type 1/.test(l)));
    console.log(JSON.stringify({ framesSent: r.framesSent, framesReceived: r.framesReceived, afterSwitchRestart: r.afterSwitchRestart, vnf: r.vnf, path: r.path, ...(vfio ? { driver: 'vfio-pci', viommu: viommuOk } : {}) }));
    return r.framesReceived > 0 && r.afterSwitchRestart > 0 && clean && viommuOk ? 0 : 1;
  } finally {
    await appliance?.stop();
    teardownProviderHosts(names);
    cleanupNode(join(home, 'node'), 'edgenfv-dpdemo');
    if (!process.env.EDGENFV_DEMO_HOME) rmSync(home, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error('demo:dataplane failed:', err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
