/**
 * A DPDK VNF in a real guest (QEMU TCG, the built guest image, one boot): the VM has two virtio-net NICs on taps;
 * the guest agent prepares them for DPDK (PrepareDataplane: uio_pci_generic, 2 MiB hugepages), builtin:testpmd runs
 * with the EAL arguments dpdk-config renders for the guest (sandbox/dataplane.ts, as the node agent does) and
 * forwards between its two ports: N frames written into one tap come out of the other, and testpmd's own counters
 * say the same. Deleting the container gives the NICs back to the kernel and frees the hugepages: the next
 * container sees neither.
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
const NS = { vm: `dvm-${tag}`, left: `dl-${tag}`, right: `dr-${tag}` };
const MAC_0 = '52:54:00:62:01:02';
const MAC_1 = '52:54:00:62:02:02';
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
    `f=bytes.fromhex('ffffffffffff'+'020000000001'+'88b5')+b'edgenfv-dpdk'*5`,
    'for i in range(int(sys.argv[2])): s.send(f)',
  ].join('\n');
  execFileSync('ip', ['netns', 'exec', ns, 'python3', '-c', py, dev, String(count)]);
}

async function logsOf(id: string): Promise<string> {
  let out = '';
  for await (const chunk of conn!.client.readLogs({ id, follow: false })) out += chunk.data.toString('utf8');
  return out;
}

/** The last statistics block's counter for a port: `RX-packets` / `TX-packets`. */
function lastCounter(logs: string, port: number, counter: 'RX-packets' | 'TX-packets'): number | undefined {
  const blocks = logs.split(`NIC statistics for port ${port} `);
  if (blocks.length < 2) return undefined;
  const m = new RegExp(`${counter}: (\\d+)`).exec(blocks[blocks.length - 1]);
  return m ? Number(m[1]) : undefined;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'na-dvm-'));
  image = await buildGuestImage({ log: silentLogger() });
  for (const n of Object.values(NS)) ip('netns', 'add', n);
  vm = bootTestVm({ image, dir, netns: NS.vm, smp: 2, memoryMiB: 768, taps: [{ ifname: 'tap0', mac: MAC_0 }, { ifname: 'tap1', mac: MAC_1 }] });
  try {
    conn = await connectAgent({ chardevPath: vm.chardevPath, timeoutMs: 240_000, log: silentLogger() });
  } catch (err) {
    throw new Error(`guest agent did not come up: ${(err as Error).message}\n--- console ---\n${vm.console().slice(-3000)}`, { cause: err });
  }
  // QEMU holds the taps open: one into each network, no IPv6 (its own frames would be counted)
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

test('the guest sees both virtio NICs with their PCI addresses', async () => {
  const d = await conn!.client.guestDetails();
  const byMac = new Map(d.nics.map((n) => [n.mac, n.pciAddress]));
  assert.ok(byMac.get(MAC_0) && byMac.get(MAC_1), JSON.stringify(d.nics));
  pci = { dp0: byMac.get(MAC_0)!, dp1: byMac.get(MAC_1)! };
  assert.ok(d.cpus >= 2, `${d.cpus} vCPUs`);
});

test('PrepareDataplane hands both NICs to uio_pci_generic and reserves hugepages; builtin:testpmd forwards frames from one port to the other', async (t) => {
  const dp = { prefix: 'tp1', vcpus: 2, hugepagesMiB: 128, nics: [{ name: 'dp0', pciAddress: pci.dp0 }, { name: 'dp1', pciAddress: pci.dp1 }] };
  const res = await conn!.client.prepareDataplane(prepareRequest(dp), { timeoutMs: 120_000 });
  assert.deepEqual(res.bound.map((b) => [b.pciAddress, b.driver]), [[pci.dp0, 'uio_pci_generic'], [pci.dp1, 'uio_pci_generic']]);
  assert.equal(res.hugepageMount, '/dev/hugepages');
  const after = await conn!.client.guestDetails();
  assert.ok(!after.nics.some((n) => n.mac === MAC_0 || n.mac === MAC_1), `the kernel let go of the NICs: ${JSON.stringify(after.nics)}`);

  const eal = guestEalArgs(dp);
  assert.deepEqual(eal, ['-l', '0-1', '--main-lcore', '0', '--file-prefix', 'tp1', '--socket-mem', '128', '--huge-dir', '/dev/hugepages', '-a', pci.dp0, '-a', pci.dp1]);
  await conn!.client.createContainer({ id: 'tp1', image: 'builtin:testpmd', env: [`${EAL_ARGS_ENV}=${eal.join(' ')}`], hostNetwork: true, dataplane: true });
  await conn!.client.startContainer('tp1');
  t.after(async () => {
    await conn?.client.deleteContainer('tp1', true).catch(() => {});
  });

  // testpmd is up when it prints statistics for both ports (EAL init, two virtio ports started, forwarding)
  let logs = '';
  for (let i = 0; i < 600 && lastCounter(logs, 1, 'RX-packets') === undefined; i++) {
    const st = (await conn!.client.listContainers()).containers.find((c) => c.id === 'tp1');
    logs = await logsOf('tp1');
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
  for (let i = 0; i < 240 && arrived < FRAMES; i++) {
    await sleep(500);
    arrived = rxPackets(NS.right, 'tap1') - before;
  }
  assert.equal(arrived, FRAMES, `frames sent into port 0 (tap0) that came out of port 1 (tap1)`);
  // testpmd's counters agree once its next statistics block is printed
  for (let i = 0; i < 60; i++) {
    logs = await logsOf('tp1');
    if ((lastCounter(logs, 0, 'RX-packets') ?? 0) - rx0 >= FRAMES && (lastCounter(logs, 1, 'TX-packets') ?? 0) - tx1 >= FRAMES) break;
    await sleep(500);
  }
  assert.equal(lastCounter(logs, 0, 'RX-packets')! - rx0, FRAMES, 'testpmd port 0 RX');
  assert.equal(lastCounter(logs, 1, 'TX-packets')! - tx1, FRAMES, 'testpmd port 1 TX');
});

test('deleting the data plane container gives the NICs back to the kernel and frees the hugepages: the next container sees neither', async () => {
  await conn!.client.deleteContainer('tp1', true);
  let nics: string[] = [];
  for (let i = 0; i < 60; i++) {
    nics = (await conn!.client.guestDetails()).nics.map((n) => n.mac);
    if (nics.includes(MAC_0) && nics.includes(MAC_1)) break;
    await sleep(500);
  }
  assert.ok(nics.includes(MAC_0) && nics.includes(MAC_1), `virtio-net took the NICs back: ${nics.join(', ')}`);
  await conn!.client.createContainer({ id: 'next', image: 'builtin:busybox', command: ['sh', '-c', 'sleep 600'], hostNetwork: true });
  await conn!.client.startContainer('next');
  try {
    // the guest-wide views: hugepage count, uio devices, what is left in the hugepage mount
    const r = await conn!.client.execProcess('next', ['sh', '-c', 'cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages; echo "uio:$(ls /sys/class/uio 2>/dev/null)"'], { timeoutMs: 30_000 });
    const out = Buffer.from(r.stdout).toString('utf8');
    const [nr, uio] = out.trim().split('\n');
    assert.equal(nr, '0', `hugepages freed: ${out}`);
    assert.equal(uio, 'uio:', `no uio device left: ${out}`);
  } finally {
    await conn!.client.deleteContainer('next', true).catch(() => {});
  }
});
