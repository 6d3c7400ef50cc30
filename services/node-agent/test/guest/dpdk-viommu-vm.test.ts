/**
 * DPDK on vfio-pci in a real guest behind the product's virtual IOMMU (issue 10 item 3, kata#693; the uio version
 * is dpdk-vm.test.ts): QEMU TCG with `intel-iommu,intremap=on,caching-mode=on` (qemu-args VIOMMU_DEVICE, the
 * guest's `intel_iommu=on iommu=pt`) and two virtio-net NICs with `iommu_platform=on` on taps, standing in for VFs
 * (this host has no SR-IOV NIC and no IOMMU). PrepareDataplane binds them to vfio-pci with no no-IOMMU permission:
 * the guest's IOMMU groups make that safe; builtin:testpmd gets /dev/vfio/<group> and forwards frames between its
 * ports; deleting the container gives the NICs back to virtio-net.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { silentLogger } from '@edgenfv/telemetry';
import { buildGuestImage, connectAgent, type AgentConnection, type GuestImage } from '../../src/guest/index.js';
import { EAL_ARGS_ENV, guestEalArgs, prepareRequest } from '../../src/sandbox/dataplane.js';
import { bootTestVm, type TestVm } from './vm-helper.js';

const tag = `${process.pid}`;
const NS = { vm: `ivm-${tag}`, left: `il-${tag}`, right: `ir-${tag}` };
const MAC_0 = '52:54:00:63:01:02';
const MAC_1 = '52:54:00:63:02:02';
const FRAMES = 40;
let dir: string;
let image: GuestImage;
let vm: TestVm | undefined;
let conn: AgentConnection | undefined;
let pci: { dp0: string; dp1: string };

const ip = (...a: string[]) => execFileSync('ip', a, { encoding: 'utf8' });
const rxPackets = (ns: string, dev: string): number =>
  Number(execFileSync('ip', ['netns', 'exec', ns, 'cat', `/sys/class/net/${dev}/statistics/rx_packets`], { encoding: 'utf8' }).trim());

/** Writes `count` raw Ethernet frames (a local experimental ethertype nothing answers) into a tap. */
function sendFrames(ns: string, dev: string, count: number): void {
  const py = [
    'import socket,sys',
    's=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)',
    `s.bind((sys.argv[1],0))`,
    `f=bytes.fromhex('ffffffffffff'+'020000000001'+'88b5')+b'edgenfv-vfio'*5`,
    'for i in range(int(sys.argv[2])): s.send(f)',
  ].join('\n');
  execFileSync('ip', ['netns', 'exec', ns, 'python3', '-c', py, dev, String(count)]);
}

async function logsOf(id: string): Promise<string> {
  let out = '';
  for await (const chunk of conn!.client.readLogs({ id, follow: false })) out += chunk.data.toString('utf8');
  return out;
}

async function sh(id: string, script: string): Promise<string> {
  const r = await conn!.client.execProcess(id, ['sh', '-c', script], { timeoutMs: 60_000 });
  return Buffer.from(r.stdout).toString('utf8');
}

/** The last statistics block's counter for a port: `RX-packets` / `TX-packets`. */
function lastCounter(logs: string, port: number, counter: 'RX-packets' | 'TX-packets'): number | undefined {
  const blocks = logs.split(`NIC statistics for port ${port} `);
  if (blocks.length < 2) return undefined;
  const m = new RegExp(`${counter}: (\\d+)`).exec(blocks[blocks.length - 1]!);
  return m ? Number(m[1]) : undefined;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'na-ivm-'));
  image = await buildGuestImage({ log: silentLogger() });
  for (const n of Object.values(NS)) ip('netns', 'add', n);
  vm = bootTestVm({ image, dir, netns: NS.vm, smp: 2, memoryMiB: 768, viommu: true, taps: [{ ifname: 'tap0', mac: MAC_0 }, { ifname: 'tap1', mac: MAC_1 }] });
  try {
    // QEMU refusing its command line must fail the test at once, not after the boot timeout
    const proc = vm.proc;
    const died = new Promise<never>((_r, reject) => proc.once('exit', (code) => reject(new Error(`QEMU exited (${code}) before the guest agent answered`))));
    died.catch(() => undefined); // the kill at the end is not a failure
    conn = await Promise.race([connectAgent({ chardevPath: vm.chardevPath, timeoutMs: 900_000, log: silentLogger() }), died]);
  } catch (err) {
    throw new Error(`guest agent did not come up: ${(err as Error).message}\n--- console ---\n${vm.console().slice(-3000)}`, { cause: err });
  }
  for (const [tap, ns] of [['tap0', NS.left], ['tap1', NS.right]] as const) {
    ip('-n', NS.vm, 'link', 'set', tap, 'netns', ns);
    execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `net.ipv6.conf.${tap}.disable_ipv6=1`]);
    ip('-n', ns, 'link', 'set', tap, 'up');
  }
});

after(async () => {
  await conn?.close().catch(() => {});
  await vm?.stop();
  for (const n of Object.values(NS)) spawnSync('ip', ['netns', 'del', n]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the guest runs its VT-d: both virtio NICs are in IOMMU groups of their own', async () => {
  const d = await conn!.client.guestDetails();
  const byMac = new Map(d.nics.map((n) => [n.mac, n.pciAddress]));
  assert.ok(byMac.get(MAC_0) && byMac.get(MAC_1), JSON.stringify(d.nics));
  pci = { dp0: byMac.get(MAC_0)!, dp1: byMac.get(MAC_1)! };
  await conn!.client.createContainer({ id: 'look', image: 'builtin:busybox', command: ['sh', '-c', 'sleep 600'], hostNetwork: true });
  await conn!.client.startContainer('look');
  try {
    const out = await sh('look', `for p in ${pci.dp0} ${pci.dp1}; do basename $(readlink /sys/bus/pci/devices/$p/iommu_group); done; grep -o 'intel_iommu=on' /proc/cmdline`);
    const [g0, g1, cmd] = out.trim().split('\n');
    assert.match(g0 ?? '', /^\d+$/, `dp0 in an IOMMU group: ${out}`);
    assert.match(g1 ?? '', /^\d+$/, `dp1 in an IOMMU group: ${out}`);
    assert.notEqual(g0, g1, 'each NIC has its own group');
    assert.equal(cmd, 'intel_iommu=on');
  } finally {
    await conn!.client.deleteContainer('look', true).catch(() => {});
  }
});

test('PrepareDataplane binds both NICs to vfio-pci behind the vIOMMU (no no-IOMMU permission); builtin:testpmd forwards frames from one port to the other', async (t) => {
  const dp = { prefix: 'tv1', vcpus: 2, hugepagesMiB: 128, nics: [{ name: 'dp0', pciAddress: pci.dp0 }, { name: 'dp1', pciAddress: pci.dp1 }], driver: 'vfio-pci' as const };
  const req = prepareRequest(dp);
  assert.equal(req.allowNoIommu, undefined);
  const res = await conn!.client.prepareDataplane(req, { timeoutMs: 300_000 });
  assert.deepEqual(res.bound.map((b) => [b.pciAddress, b.driver]), [[pci.dp0, 'vfio-pci'], [pci.dp1, 'vfio-pci']]);
  const after = await conn!.client.guestDetails();
  assert.ok(!after.nics.some((n) => n.mac === MAC_0 || n.mac === MAC_1), `the kernel let go of the NICs: ${JSON.stringify(after.nics)}`);

  const eal = guestEalArgs(dp);
  await conn!.client.createContainer({ id: 'tv1', image: 'builtin:testpmd', env: [`${EAL_ARGS_ENV}=${eal.join(' ')}`], hostNetwork: true, dataplane: true });
  await conn!.client.startContainer('tv1');
  t.after(async () => {
    await conn?.client.deleteContainer('tv1', true).catch(() => {});
  });
  // what the container got: the vfio container node and one group node per NIC, none in no-IOMMU mode
  const nodes = (await sh('tv1', 'ls /dev/vfio')).trim().split(/\s+/).sort();
  assert.equal(nodes.length, 3, `vfio + two groups: ${nodes.join(' ')}`);
  assert.ok(nodes.includes('vfio'));
  assert.ok(nodes.filter((n) => n !== 'vfio').every((n) => /^\d+$/.test(n)), `group nodes, not noiommu-N: ${nodes.join(' ')}`);

  let logs = '';
  for (let i = 0; i < 1200 && lastCounter(logs, 1, 'RX-packets') === undefined; i++) {
    const st = (await conn!.client.listContainers()).containers.find((c) => c.id === 'tv1');
    logs = await logsOf('tv1');
    assert.equal(st?.state, 'RUNNING', `testpmd exited (${st?.exitCode}):\n${logs.slice(-4000)}`);
    await sleep(500);
  }
  assert.ok(lastCounter(logs, 1, 'RX-packets') !== undefined, `testpmd never printed port statistics:\n${logs.slice(-4000)}`);
  assert.match(logs, /io packet forwarding/);

  const rx0 = lastCounter(logs, 0, 'RX-packets')!;
  const tx1 = lastCounter(logs, 1, 'TX-packets')!;
  const before = rxPackets(NS.right, 'tap1');
  sendFrames(NS.left, 'tap0', FRAMES);
  let arrived = 0;
  for (let i = 0; i < 480 && arrived < FRAMES; i++) {
    await sleep(500);
    arrived = rxPackets(NS.right, 'tap1') - before;
  }
  assert.equal(arrived, FRAMES, 'frames sent into port 0 (tap0) that came out of port 1 (tap1)');
  for (let i = 0; i < 120; i++) {
    logs = await logsOf('tv1');
    if ((lastCounter(logs, 0, 'RX-packets') ?? 0) - rx0 >= FRAMES && (lastCounter(logs, 1, 'TX-packets') ?? 0) - tx1 >= FRAMES) break;
    await sleep(500);
  }
  assert.equal(lastCounter(logs, 0, 'RX-packets')! - rx0, FRAMES, 'testpmd port 0 RX');
  assert.equal(lastCounter(logs, 1, 'TX-packets')! - tx1, FRAMES, 'testpmd port 1 TX');
});

test('deleting the data plane container gives the NICs back to virtio-net: nothing left on vfio-pci', async () => {
  await conn!.client.deleteContainer('tv1', true);
  let nics: string[] = [];
  for (let i = 0; i < 120; i++) {
    nics = (await conn!.client.guestDetails()).nics.map((n) => n.mac);
    if (nics.includes(MAC_0) && nics.includes(MAC_1)) break;
    await sleep(500);
  }
  assert.ok(nics.includes(MAC_0) && nics.includes(MAC_1), `virtio-net took the NICs back: ${nics.join(', ')}`);
  await conn!.client.createContainer({ id: 'next', image: 'builtin:busybox', command: ['sh', '-c', 'sleep 600'], hostNetwork: true });
  await conn!.client.startContainer('next');
  try {
    // the guest-wide views: hugepage count, functions still on vfio-pci, the NICs' drivers
    const out = await sh('next', `cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages; echo "vfio:$(ls /sys/bus/pci/drivers/vfio-pci 2>/dev/null | grep -c :)"; for p in ${pci.dp0} ${pci.dp1}; do basename $(readlink /sys/bus/pci/devices/$p/driver); done`);
    const [nr, vfio, d0, d1] = out.trim().split('\n');
    assert.equal(nr, '0', `hugepages freed: ${out}`);
    assert.equal(vfio, 'vfio:0', `no function left on vfio-pci: ${out}`);
    assert.deepEqual([d0, d1], ['virtio-pci', 'virtio-pci']);
  } finally {
    await conn!.client.deleteContainer('next', true).catch(() => {});
  }
});
