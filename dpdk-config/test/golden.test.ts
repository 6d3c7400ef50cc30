import { test } from 'node:test';
import { parseDataplanePlan, renderVppStartupConf, ovsSetOtherConfigArgs, ovsAddBridgeArgs, ovsAddDpdkPortArgs,
  ovsAddVhostUserClientPortArgs, renderEalArgs } from '../src/index.js';
import { assertGolden, noHugeVhost, ovsTwoNodes, shellLines, vppNode1 } from './fixtures.js';

test('golden: VPP startup.conf, strict on NUMA node 1, PCI + vhost-user', () => {
  const conf = renderVppStartupConf(parseDataplanePlan(vppNode1), {
    logFile: '/var/log/vpp/vrouter-0.log',
    mainHeapSize: '1G',
    uioDriver: 'vfio-pci',
    noTxChecksumOffload: true,
    plugins: { enable: ['ping_plugin.so'] },
  });
  assertGolden('vpp-numa1.conf', conf);
});

test('golden: VPP startup.conf without hugepages (4k pages, no-pci), default plugins', () => {
  const conf = renderVppStartupConf(parseDataplanePlan(noHugeVhost), {
    runtimeDir: '/tmp/vpp-tp1',
    buffersPerNuma: 4096,
    bufferDataSizeBytes: 2048,
    noMultiSeg: false,
    plugins: { defaultEnabled: true, disable: ['nat_plugin.so'] },
  });
  assertGolden('vpp-nohuge.conf', conf);
});

test('golden: OVS-DPDK other_config, bridge, dpdk port and vhost-user client port', () => {
  const plan = parseDataplanePlan(ovsTwoNodes);
  const cmds = [
    ovsSetOtherConfigArgs(plan, { socketLimit: true, extraEalArgs: ['--log-level', 'pmd.net.vhost:info'] }),
    ovsAddBridgeArgs('br-int'),
    ...ovsAddDpdkPortArgs(plan, 'br-int'),
    ovsAddVhostUserClientPortArgs({ bridge: 'br-int', port: 'vhu-t1-0', socketPath: '/run/edgenfv/vhost/t1 0.sock', queues: 2 }),
  ];
  assertGolden('ovs-two-nodes.conf', shellLines(cmds));
});

test('golden: EAL argv, one argument a line', () => {
  assertGolden('eal-numa1.conf', renderEalArgs(parseDataplanePlan(vppNode1)).join('\n') + '\n');
});
