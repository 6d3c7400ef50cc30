/**
 * The DPDK data plane end to end (issue 9), shared by `npm run demo:dataplane` and test/test/e2e-dataplane.test.ts:
 * the appliance with its OVS-DPDK switch; host namespaces `left` and `right` on the provider side of the switch's
 * networks (each network's uplink is a veth into the appliance's provider namespace: a Linux bridge there joins it
 * to the hosts); a tenant VNF with two vhost-user interfaces instantiated through the message API. Frames from left
 * reach right only through OVS-DPDK -> vhost-user -> the guest -> vhost-user -> OVS-DPDK. Then ovs-vswitchd is
 * killed: the node agent restarts the switch and re-creates the ports from its records, QEMU (the vhost-user server)
 * is untouched, and traffic resumes. Terminate leaves no switch port, socket, netplugins record or sandbox.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Api } from './harness.js';

/**
 * The VNF in the guest: `builtin:testpmd` (DPDK in the guest: io forwarding between its two ports bridges the two
 * networks; left and right share one subnet) or `builtin:vrouter` (the kernel routes between its two virtio-net NICs:
 * left and right are on the networks' own subnets).
 */
export type DataplaneVnf = 'builtin:testpmd' | 'builtin:vrouter';

/** The hosts' subnet when the guest bridges (testpmd). */
const BRIDGED_PREFIX = '10.65.9';

export interface DataplaneNames {
  tenant: string;
  leftNs: string;
  rightNs: string;
  /** The two networks the switch serves (left's and right's), with /24 prefixes. */
  leftNet: { name: string; prefix: string };
  rightNet: { name: string; prefix: string };
}

export interface DataplaneResult {
  framesSent: number;
  framesReceived: number;
  afterSwitchRestart: number;
  framesAfterTerminate: number;
  vnf: string;
  path: 'ovs-dpdk+vhost-user';
  vnfId: string;
  nodeId: string;
  sandboxId: string;
  /** What the replica reported of its vhost-user interfaces. */
  interfaces: { name: string; network: string; socketPath: string; portName: string; ips: string[] }[];
  /** What the host side saw when no frame crossed (empty otherwise). */
  diagnostics: string;
  /**
   * `driver: vfio-pci` only: the VM's virtual IOMMU as QEMU was started (intel-iommu, both vhost-user NICs with
   * iommu_platform), the switch's vhost-iommu-support, and testpmd's EAL lines on how it reached the NICs.
   */
  viommu?: { qemu: boolean; nicsTranslated: number; switchIommuSupport: string; eal: string[] };
  /** The hypervisor's pid before and after the switch restart (the VM is not touched). */
  qemuPid: { before: number; after: number };
  /** What the switch held for the VNF while it ran, and after terminate. */
  switchPorts: { running: string[]; afterTerminate: string[] };
  socketsAfterTerminate: string[];
  recordsAfterTerminate: string[];
  opStates: string[];
}

/** The appliance's networks: both on the OVS-DPDK switch (no VLAN: this kernel has no 8021q for a host end). */
/**
 * The two switch networks of a scenario. `l2`: the VNF forwards the hosts' frames as they are (builtin:testpmd's io
 * forwarding), so the operator turns port anti-spoofing off on them (`antispoof: false`, docs/security.md).
 */
export function dataplaneNetworks(n: DataplaneNames, opts: { l2?: boolean } = {}): unknown[] {
  return [n.leftNet, n.rightNet].map((net) => ({
    name: net.name,
    cidr: `${net.prefix}.0/24`,
    range: { start: `${net.prefix}.10`, end: `${net.prefix}.99` },
    dataplane: 'ovs-dpdk',
    ...(opts.l2 ? { antispoof: false } : {}),
  }));
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}
function tryIp(...args: string[]): void {
  spawnSync('ip', args, { stdio: 'ignore' });
}

/**
 * The provider side, once the appliance serves (its switch made the uplink veths): in the provider namespace a bridge
 * per network holds the uplink's end and a veth to the host namespace, which gets `.2` of the network.
 */
export function setupProviderHosts(providerNetns: string, n: DataplaneNames, vnf: DataplaneVnf): void {
  teardownProviderHosts(n);
  for (const [ns, net, tag] of [
    [n.leftNs, n.leftNet, 'l'],
    [n.rightNs, n.rightNet, 'r'],
  ] as const) {
    const address = vnf === 'builtin:testpmd' ? `${BRIDGED_PREFIX}.${tag === 'l' ? 1 : 2}/24` : `${net.prefix}.2/24`;
    const br = `pb-${net.name}`.slice(0, 15);
    const end = `ph-${net.name}`.slice(0, 15);
    ip('netns', 'add', ns);
    ip('-n', providerNetns, 'link', 'add', br, 'type', 'bridge');
    ip('-n', providerNetns, 'link', 'set', br, 'up');
    ip('-n', providerNetns, 'link', 'set', net.name.slice(0, 15), 'master', br, 'up'); // the switch's uplink veth end
    ip('-n', providerNetns, 'link', 'add', end, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    ip('-n', providerNetns, 'link', 'set', end, 'master', br, 'up');
    ip('-n', ns, 'addr', 'add', address, 'dev', 'eth0');
    ip('-n', ns, 'link', 'set', 'eth0', 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
  }
}

export function teardownProviderHosts(n: DataplaneNames): void {
  for (const ns of [n.leftNs, n.rightNs]) tryIp('netns', 'del', ns);
}

export function ping(ns: string, target: string, count: number, waitS = 2): { sent: number; received: number } {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'busybox', 'ping', '-c', String(count), '-W', String(waitS), target], { encoding: 'utf8' });
  const m = /(\d+) packets transmitted, (\d+) packets received/.exec(`${r.stdout}${r.stderr}`);
  return { sent: m ? Number(m[1]) : count, received: m ? Number(m[2]) : 0 };
}

/** `ovs-vsctl` against the node agent's switch (its own ovsdb-server). */
export function vsctl(nodeStateDir: string, ...args: string[]): string {
  return execFileSync('ovs-vsctl', [`--db=unix:${join(nodeStateDir, 'ovs', 'db.sock')}`, '--timeout=10', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

function switchPorts(nodeStateDir: string, n: DataplaneNames): string[] {
  return [n.leftNet, n.rightNet].flatMap((net) => {
    const br = `br-${net.name}`.slice(0, 15);
    return vsctl(nodeStateDir, 'list-ports', br).split('\n').filter((p) => p && !p.startsWith('up-'));
  });
}

function qemuPidOf(sandboxId: string): number {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(`guest=${sandboxId}`)) return Number(d);
    } catch {
      /* gone */
    }
  }
  return 0;
}

function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return (readdirSync(dir, { recursive: true }) as string[]).map((f) => join(dir, f)).filter((f) => !statSync(f).isDirectory());
}

function sh(argv: string[]): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  return `$ ${argv.join(' ')}\n${r.stdout}${r.stderr}`.trim();
}

/** The host side of a path that carried nothing: each hop on its own, the switch's counters. */
function diagnose(nodeStateDir: string, n: DataplaneNames, interfaces: { portName: string }[], addr: (name: string) => string): string {
  const db = `--db=unix:${join(nodeStateDir, 'ovs', 'db.sock')}`;
  return [
    ...(addr('west') ? [sh(['ip', 'netns', 'exec', n.leftNs, 'busybox', 'ping', '-c', '2', '-W', '2', addr('west')])] : []),
    ...(addr('east') ? [sh(['ip', 'netns', 'exec', n.rightNs, 'busybox', 'ping', '-c', '2', '-W', '2', addr('east')])] : []),
    sh(['ip', '-n', n.leftNs, 'neigh']),
    sh(['ip', '-n', n.leftNs, 'route']),
    sh(['ovs-vsctl', db, 'show']),
    ...interfaces.map((i) => sh(['ovs-vsctl', db, 'get', 'Interface', i.portName, 'status', 'statistics:rx_packets', 'statistics:tx_packets', 'statistics:tx_dropped'])),
    sh(['tail', '-n', '15', join(nodeStateDir, 'ovs', 'ovs-vswitchd.log')]),
  ].join('\n');
}

async function waitFor(what: string, probe: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Runs the scenario through the API: the appliance serves with its switch `ready`, and the provider side is set up. */
export async function runDataplaneScenario(
  api: Api,
  nodeStateDir: string,
  n: DataplaneNames,
  vnf: DataplaneVnf,
  opts: { frames?: number; log?: (msg: string) => void; opTimeoutMs?: number; driver?: 'vfio-pci' } = {},
): Promise<DataplaneResult> {
  const log = opts.log ?? (() => undefined);
  const frames = opts.frames ?? 10;
  const t = n.tenant;
  const image = vnf;
  const testpmd = vnf === 'builtin:testpmd';
  if (!(await api.admin('tenants.get', { id: t })).ok) await api.ok('nfv.v1.admin.tenants.create', { id: t, displayName: 'edgenfv data plane demo', quota: { vcpus: 4, vnfs: 2 } });
  const interfacesOfVnfd = [
    { name: 'west', type: 'vhostuser', network: n.leftNet.name },
    { name: 'east', type: 'vhostuser', network: n.rightNet.name },
  ];
  const descriptor = testpmd
    ? {
        name: 'dp-testpmd',
        replicas: 1,
        // a main lcore and a forwarding lcore; guest hugepages for DPDK's mbufs
        // driver vfio-pci: the VM gets a virtual IOMMU, its vhost-user NICs iommu_platform, OVS-DPDK translates
        resources: { vcpus: 2, memoryMiB: 768, dataplane: { kind: 'dpdk', hugepagesMiB: 128, ...(opts.driver ? { driver: opts.driver } : {}) } },
        image: { ref: image },
        env: { EDGENFV_TESTPMD_ARGS: '--forward-mode=io' },
        interfaces: interfacesOfVnfd,
      }
    : { name: 'dp-router', replicas: 1, resources: { vcpus: 1, memoryMiB: 128 }, image: { ref: image }, interfaces: interfacesOfVnfd };
  log(`instantiating ${image} with two vhost-user interfaces through the message API`);
  const inst = await api.ok(`nfv.v1.tenant.${t}.vnfs.instantiate`, { descriptor, requestId: `dp-${n.leftNs}${opts.driver ? `-${opts.driver}` : ''}` });
  const op = await api.waitOp(t, inst.opOccId, opts.opTimeoutMs ?? 600_000);
  if (op.operationState !== 'COMPLETED') throw new Error(`instantiate ended ${op.operationState}: ${JSON.stringify(op.error)} steps: ${op.steps.map((s: any) => s.message).join(' | ')}`);
  const record = await api.ok(`nfv.v1.tenant.${t}.vnfs.get`, { id: inst.vnfId });
  const rep = record.replicas[0];
  const interfaces = rep.interfaces.map((i: any) => ({ name: i.name, network: i.network, socketPath: i.socketPath, portName: i.portName, ips: i.ips }));
  const addr = (name: string): string => String(interfaces.find((i: any) => i.name === name)?.ips?.[0] ?? '').split('/')[0]!;
  log(`replica RUNNING on node ${rep.nodeId} (sandbox ${rep.sandboxId}): ${interfaces.map((i: any) => `${i.name} ${i.portName} ${i.socketPath}`).join(', ')}`);
  const running = switchPorts(nodeStateDir, n);
  log(`switch ports: ${running.join(', ')}`);
  const connected = (): boolean =>
    interfaces.every((i: { portName: string }) => {
      try {
        return vsctl(nodeStateDir, 'get', 'Interface', i.portName, 'status:status') === 'connected' && vsctl(nodeStateDir, 'get', 'Interface', i.portName, 'link_state') === 'up';
      } catch {
        return false;
      }
    });
  await waitFor('the switch connected to the VM\'s vhost-user sockets', connected, 120_000);
  let viommu: DataplaneResult['viommu'];
  if (opts.driver === 'vfio-pci') {
    const cmdline = readFileSync(`/proc/${qemuPidOf(rep.sandboxId)}/cmdline`, 'utf8').split('\0');
    const vhostUser = cmdline.flatMap((a) => /^vhost-user,id=([^,]+)/.exec(a)?.[1] ?? []);
    const nics = cmdline.filter((a) => a.startsWith('virtio-net-pci,') && a.includes('iommu_platform=on') && vhostUser.some((id) => a.includes(`netdev=${id},`)));
    const logs = await api.call(`nfv.v1.tenant.${t}.vnfs.logs`, { id: inst.vnfId, tailLines: 500 });
    const eal = (logs.ok ? (logs.result.lines as string[]) : []).filter((l) => /IOMMU|IOVA|Probe PCI driver/.test(l));
    viommu = { qemu: cmdline.some((a) => a.startsWith('intel-iommu')), nicsTranslated: nics.length, switchIommuSupport: vsctl(nodeStateDir, 'get', 'Open_vSwitch', '.', 'other_config:vhost-iommu-support'), eal };
    log(`vIOMMU: ${JSON.stringify(viommu)}`);
  }

  if (!testpmd) {
    ip('-n', n.leftNs, 'route', 'replace', `${n.rightNet.prefix}.0/24`, 'via', addr('west'));
    ip('-n', n.rightNs, 'route', 'replace', `${n.leftNet.prefix}.0/24`, 'via', addr('east'));
  }
  const target = testpmd ? `${BRIDGED_PREFIX}.2` : `${n.rightNet.prefix}.2`;
  // the first frames may wait for ARP (and for OVS to learn): a warm-up, not counted
  for (let i = 0; i < 20 && ping(n.leftNs, target, 1, 3).received === 0; i++);
  const p = ping(n.leftNs, target, frames, 3);
  log(`left -> right through OVS-DPDK and the VM: ${p.received}/${p.sent}`);
  const diagnostics = p.received === 0 ? diagnose(nodeStateDir, n, interfaces, addr) : '';
  if (diagnostics) log(diagnostics);

  const qemuBefore = qemuPidOf(rep.sandboxId);
  const pidFile = join(nodeStateDir, 'ovs', 'ovs-vswitchd.pid');
  const vswitchd = Number(readFileSync(pidFile, 'utf8').trim());
  const dbBefore = vsctl(nodeStateDir, 'get', 'Open_vSwitch', '.', '_uuid');
  log(`killing ovs-vswitchd (pid ${vswitchd}): the node agent restarts the switch and re-creates the ports`);
  process.kill(vswitchd, 'SIGKILL');
  await waitFor(
    'the switch back on a new database with the ports',
    () => {
      try {
        return vsctl(nodeStateDir, 'get', 'Open_vSwitch', '.', '_uuid') !== dbBefore && switchPorts(nodeStateDir, n).length === running.length;
      } catch {
        return false;
      }
    },
    120_000,
  );
  await waitFor('the re-created ports connected to the VM again', connected, 120_000);
  for (let i = 0; i < 40 && ping(n.leftNs, target, 1, 3).received === 0; i++);
  const again = ping(n.leftNs, target, frames, 3);
  const qemuAfter = qemuPidOf(rep.sandboxId);
  log(`after the switch restart: ${again.received}/${again.sent} (QEMU pid ${qemuBefore} -> ${qemuAfter})`);

  log('terminating');
  const term = await api.ok(`nfv.v1.tenant.${t}.vnfs.terminate`, { id: inst.vnfId });
  const top = await api.waitOp(t, term.opOccId, opts.opTimeoutMs ?? 600_000);
  const sandboxes = join(nodeStateDir, 'sandboxes');
  await waitFor('the sandbox torn down', () => qemuPidOf(rep.sandboxId) === 0 && (!existsSync(sandboxes) || readdirSync(sandboxes).length === 0), 60_000);
  const after = ping(n.leftNs, target, 2, 1);
  const result: DataplaneResult = {
    framesSent: p.sent,
    framesReceived: p.received,
    afterSwitchRestart: again.received,
    framesAfterTerminate: after.received,
    vnf: image,
    path: 'ovs-dpdk+vhost-user',
    vnfId: inst.vnfId,
    nodeId: rep.nodeId,
    sandboxId: rep.sandboxId,
    interfaces,
    diagnostics,
    ...(viommu ? { viommu } : {}),
    qemuPid: { before: qemuBefore, after: qemuAfter },
    switchPorts: { running, afterTerminate: switchPorts(nodeStateDir, n) },
    socketsAfterTerminate: listFiles(join(nodeStateDir, 'vhost-user')),
    recordsAfterTerminate: listFiles(join(nodeStateDir, 'netplugins', 'records')),
    opStates: [op.operationState, top.operationState],
  };
  log(`after terminate: ${after.received} frames crossed; ports ${result.switchPorts.afterTerminate.length}, sockets ${result.socketsAfterTerminate.length}, records ${result.recordsAfterTerminate.length}`);
  return result;
}

export interface VrouterResult {
  sandboxId: string;
  /** The VM's hypervisor pid after terminate (0: gone). */
  qemuLeft: number;
  framesSent: number;
  framesReceived: number;
  interfaces: { name: string; socketPath: string; portName: string }[];
  portsWhileRunning: string[];
  portsAfterTerminate: string[];
  socketsLeft: string[];
  opStates: string[];
}

/**
 * The kernel `builtin:vrouter` on two vhost-user NICs (virtio-net in the guest) on two switch networks, its hosts on
 * their provider side routed by the guest; terminated, its ports and sockets go.
 */
export async function runVrouterOnVhostUser(
  api: Api,
  nodeStateDir: string,
  n: DataplaneNames,
  opts: { frames?: number; log?: (msg: string) => void; opTimeoutMs?: number; /** Runs while the vrouter routes, before its terminate. */ whileRunning?: () => Promise<void> } = {},
): Promise<VrouterResult> {
  const log = opts.log ?? (() => undefined);
  const t = n.tenant;
  const descriptor = {
    name: 'dp-router',
    replicas: 1,
    resources: { vcpus: 1, memoryMiB: 128 },
    image: { ref: 'builtin:vrouter' },
    interfaces: [
      { name: 'west', type: 'vhostuser', network: n.leftNet.name },
      { name: 'east', type: 'vhostuser', network: n.rightNet.name },
    ],
  };
  log('builtin:vrouter with two vhost-user interfaces');
  if (!(await api.admin('tenants.get', { id: t })).ok) await api.ok('nfv.v1.admin.tenants.create', { id: t, quota: { vcpus: 4, vnfs: 2 } });
  const inst = await api.ok(`nfv.v1.tenant.${t}.vnfs.instantiate`, { descriptor, requestId: `dp-vr-${n.leftNs}` });
  const op = await api.waitOp(t, inst.opOccId, opts.opTimeoutMs ?? 600_000);
  if (op.operationState !== 'COMPLETED') throw new Error(`vrouter instantiate ended ${op.operationState}: ${JSON.stringify(op.error)}`);
  const rep = (await api.ok(`nfv.v1.tenant.${t}.vnfs.get`, { id: inst.vnfId })).replicas[0];
  const interfaces = rep.interfaces.map((i: any) => ({ name: i.name, socketPath: i.socketPath, portName: i.portName, ips: i.ips as string[] }));
  const addr = (name: string): string => String(interfaces.find((i: any) => i.name === name)?.ips?.[0] ?? '').split('/')[0]!;
  const portsWhileRunning = switchPorts(nodeStateDir, n);
  await waitFor(
    'the switch connected to the vrouter\'s NICs',
    () => interfaces.every((i: { portName: string }) => {
      try {
        return vsctl(nodeStateDir, 'get', 'Interface', i.portName, 'status:status') === 'connected';
      } catch {
        return false;
      }
    }),
    120_000,
  );
  ip('-n', n.leftNs, 'route', 'replace', `${n.rightNet.prefix}.0/24`, 'via', addr('west'));
  ip('-n', n.rightNs, 'route', 'replace', `${n.leftNet.prefix}.0/24`, 'via', addr('east'));
  const target = `${n.rightNet.prefix}.2`;
  for (let i = 0; i < 20 && ping(n.leftNs, target, 1, 3).received === 0; i++);
  const p = ping(n.leftNs, target, opts.frames ?? 5, 3);
  log(`${n.leftNs} -> ${n.rightNs} routed by the vrouter: ${p.received}/${p.sent}`);
  await opts.whileRunning?.();
  const term = await api.ok(`nfv.v1.tenant.${t}.vnfs.terminate`, { id: inst.vnfId });
  const top = await api.waitOp(t, term.opOccId, opts.opTimeoutMs ?? 600_000);
  const sandboxes = join(nodeStateDir, 'sandboxes');
  await waitFor('the vrouter\'s ports and sandbox gone', () => switchPorts(nodeStateDir, n).length === 0 && qemuPidOf(rep.sandboxId) === 0 && (!existsSync(sandboxes) || readdirSync(sandboxes).length === 0), 60_000).catch(() => undefined);
  return {
    sandboxId: rep.sandboxId,
    qemuLeft: qemuPidOf(rep.sandboxId),
    framesSent: p.sent,
    framesReceived: p.received,
    interfaces,
    portsWhileRunning,
    portsAfterTerminate: switchPorts(nodeStateDir, n),
    socketsLeft: interfaces.map((i: { socketPath: string }) => i.socketPath).filter((f: string) => existsSync(f)),
    opStates: [op.operationState, top.operationState],
  };
}

/**
 * After a run that stopped half-way: the node agent leaves VMs running when it stops (a restarted agent re-adopts
 * them), so a test's cleanup kills what the node's sandbox records still hold (QEMU, netns) and removes the cgroup
 * parent. Never throws.
 */
export function cleanupNode(nodeStateDir: string, cgroupParent: string): void {
  const dir = join(nodeStateDir, 'sandboxes');
  for (const f of existsSync(dir) ? readdirSync(dir) : []) {
    try {
      const rec = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { sandboxId: string; netns: string };
      const pid = qemuPidOf(rec.sandboxId);
      if (pid) process.kill(pid, 'SIGKILL');
      tryIp('netns', 'del', rec.netns);
    } catch {
      /* unreadable or gone */
    }
  }
  for (const root of ['/sys/fs/cgroup/unified', '/sys/fs/cgroup']) {
    const d = join(root, cgroupParent);
    if (!existsSync(d)) continue;
    for (let i = 0; i < 50; i++) {
      try {
        for (const c of readdirSync(d, { withFileTypes: true })) if (c.isDirectory()) rmdirSync(join(d, c.name));
        rmdirSync(d);
        break;
      } catch {
        spawnSync('sleep', ['0.1']); // EBUSY while a killed QEMU is reaped
      }
    }
  }
}
