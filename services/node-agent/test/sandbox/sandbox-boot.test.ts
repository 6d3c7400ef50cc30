/**
 * A real tenant VM through the sandbox manager: the guest image (buildGuestImage) boots under QEMU (KVM when the
 * host has it, else TCG), the guest agent answers health over virtio-serial, gets its NIC (MAC + IP) and runs the
 * VNF container; its second NIC is a macvtap on a host link (a veth whose peer sits in a namespace of its own
 * standing in for the outside network), reached by a ping from there; a second replica of the same tenant joins the same VM by vCPU/memory/NIC hotplug; removing both
 * leaves nothing on the host. One VM for the whole file (boots are slow under TCG).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger, silentLogger } from '@edgenfv/telemetry';
import { buildGuestImage } from '../../src/guest/index.js';
import { parseConfig } from '../../src/config.js';
import { pciPathOf } from '../../src/hypervisor/qemu.js';
import { probeKvm } from '../../src/hypervisor/kvm-probe.js';
import { killQuiet, processAlive } from '../../src/proc.js';
import { makeAlloc } from '../helpers/alloc.js';
import { realSandboxManager } from '../helpers/real-manager.js';
import { removeCgroupParent } from '../helpers/cleanup.js';

test('tenant VM boots with the guest image, gets NICs and containers, grows for a second replica, leaves nothing', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'na-boot-'));
  const stateDir = join(dir, 'state');
  const cgParent = `edgenfv-b${process.pid}`;
  const bridge = `enfvg${process.pid % 100000}`;
  // macvtap parent: a host veth; its peer in a namespace is "the network outside"
  const mvParent = `enfvm${process.pid % 100000}`;
  const mvPeer = `enfvn${process.pid % 100000}`;
  const mvNs = `enfv-mv-${process.pid}`;
  const log = process.env.EDGENFV_TEST_LOG ? createLogger({ service: 'test', level: process.env.EDGENFV_TEST_LOG }) : silentLogger();
  const image = await buildGuestImage({ log });
  const accel = (await probeKvm({ qemuBinary: 'qemu-system-x86_64', kernelPath: image.kernelPath })).ok ? 'kvm' : 'tcg';
  const cfg = parseConfig({
    nodeId: 'n1',
    stateDir,
    vmBaseMemoryMiB: Math.max(512, image.minMemoryMiB),
    qemu: { accel, maxVcpus: 2, maxMemoryMiB: 1536 },
    isolation: { cgroupParent: cgParent },
    guest: { bootTimeoutMs: 240_000 },
  });
  const manager = realSandboxManager({ cfg, accel, stateDir, cgParent, image, log, extra: { hotplugSlots: 2 } });
  let pid = 0;
  t.after(async () => {
    await manager.stopAll().catch(() => undefined);
    await manager.close();
    if (pid) killQuiet(pid, 'SIGKILL');
    for (const args of [['link', 'del', bridge], ['link', 'del', mvParent], ['netns', 'del', mvNs]]) {
      try {
        execFileSync('ip', args, { stdio: 'ignore' });
      } catch {
        /* gone */
      }
    }
    await removeCgroupParent(cgParent);
    rmSync(dir, { recursive: true, force: true });
  });
  execFileSync('ip', ['netns', 'add', mvNs]);
  execFileSync('ip', ['link', 'add', mvParent, 'type', 'veth', 'peer', 'name', mvPeer, 'netns', mvNs]);
  execFileSync('ip', ['link', 'set', mvParent, 'up']);
  execFileSync('ip', ['-n', mvNs, 'addr', 'add', '10.56.0.1/24', 'dev', mvPeer]);
  execFileSync('ip', ['-n', mvNs, 'link', 'set', mvPeer, 'up']);
  await manager.init();
  let stepName = '';
  const step = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    stepName = name;
    try {
      return await fn();
    } catch (err) {
      const sb = manager.sandboxes()[0];
      let console = '';
      try {
        console = sb ? readFileSync(join(sb.runDir, 'console.log'), 'utf8').slice(-2500) + '\n--- qemu.log ---\n' + readFileSync(join(sb.runDir, 'qemu.log'), 'utf8').slice(-1500) : '';
      } catch {
        /* gone */
      }
      throw new Error(`step "${stepName}" failed: ${(err as Error).message}\n--- guest console ---\n${console}`, { cause: err });
    }
  };
  const a1 = makeAlloc({ allocId: 'g1', tenantId: 'gamma', image: { ref: 'builtin:vrouter' }, resources: { vcpus: 1, memoryMiB: 64 } }, [
    { name: 'mgmt', type: 'tap', mac: '02:00:00:00:0b:01', bridge, ips: ['10.55.0.11/24'] },
    { name: 'ext', type: 'macvtap', mac: '02:00:00:00:0b:11', parent: mvParent, ips: ['10.56.0.11/24'] },
  ]);
  const r1 = await step('boot with replica 1', () => manager.ensureReplica(a1));
  assert.equal(r1.booted, true);
  const vm = manager.vmOf(r1.sandboxId)!;
  pid = vm.pid;
  // QEMU runs chrooted in the sandbox's VM root (docs/security.md): the hotplugs below go through paths in it
  const vmRoot = manager.sandboxes()[0]!.vmRoot!;
  assert.equal(readlinkSync(`/proc/${pid}/root`), vmRoot);
  const s = await manager.guestSession(r1.sandboxId);
  const d1 = await step('details 1', () => s.details());
  const nic = d1.nics.find((n) => n.mac === '02:00:00:00:0b:01');
  assert.ok(nic, JSON.stringify(d1.nics));
  assert.equal(nic.name, 'mgmt');
  assert.deepEqual(nic.addresses, ['10.55.0.11/24']);
  // the PCI path the node agent knows for a device (how VFs are found: root port 00:10.0, the device behind it)
  // leads the guest agent to this same NIC; the bus number is the guest's own
  const hostIf1 = manager.sandboxes()[0]!.replicas.g1!.hostIfNames.mgmt!;
  assert.equal(pciPathOf(vm, hostIf1), '10.0/00.0');
  const byPath = await step('find by PCI path', () => s.updateInterfaces([{ mac: '02:00:00:00:0b:01', pciPath: pciPathOf(vm, hostIf1)!, name: 'mgmt', addresses: ['10.55.0.11/24'] }], 0));
  assert.deepEqual(byPath, [{ name: 'mgmt', pciAddress: nic.pciAddress }]);
  assert.match(nic.pciAddress, /^0000:[0-9a-f]{2}:00\.0$/);
  // the host end of the tap's network reaches the guest: ping from the host bridge
  execFileSync('ip', ['addr', 'add', '10.55.0.1/24', 'dev', bridge]);
  execFileSync('ip', ['link', 'set', bridge, 'up']);
  const ping = execFileSync('busybox', ['ping', '-c', '2', '-W', '5', '10.55.0.11'], { encoding: 'utf8' });
  assert.match(ping, /2 packets received/);
  // the macvtap NIC: the guest has it by MAC with its address, and the network outside reaches it
  const ext = d1.nics.find((n) => n.mac === '02:00:00:00:0b:11');
  assert.ok(ext, `macvtap NIC in the guest: ${JSON.stringify(d1.nics)}`);
  assert.equal(ext.name, 'ext');
  assert.deepEqual(ext.addresses, ['10.56.0.11/24']);
  assert.equal(r1.interfaces.find((i) => i.name === 'ext')?.mac, '02:00:00:00:0b:11');
  const mvPing = execFileSync('ip', ['netns', 'exec', mvNs, 'busybox', 'ping', '-c', '2', '-W', '5', '10.56.0.11'], { encoding: 'utf8' });
  assert.match(mvPing, /2 packets received/);

  const a2 = makeAlloc({ allocId: 'g2', tenantId: 'gamma', image: { ref: 'builtin:vrouter' }, resources: { vcpus: 1, memoryMiB: 128 } }, [
    { name: 'mgmt', type: 'tap', mac: '02:00:00:00:0b:02', bridge, ips: ['10.55.0.12/24'] },
  ]);
  const r2 = await step('replica 2 joins', () => manager.ensureReplica(a2));
  assert.equal(r2.booted, false);
  assert.equal(r2.sandboxId, r1.sandboxId);
  assert.equal(manager.sandboxes().length, 1);
  const d2 = await step('details 2', () => s.details());
  const nic2 = d2.nics.find((n) => n.mac === '02:00:00:00:0b:02');
  assert.ok(nic2, `hotplugged NIC seen by the guest: ${JSON.stringify(d2.nics)}`);
  assert.equal(nic2.name, 'mgmt1');
  const hostIf2 = manager.sandboxes()[0]!.replicas.g2!.hostIfNames.mgmt!;
  // the boot NICs took root ports 00:10.0 (tap) and 00:11.0 (macvtap): the hotplugged one gets the next, 00:12.0
  assert.equal(pciPathOf(manager.vmOf(r1.sandboxId)!, hostIf2), '12.0/00.0', 'hotplugged NIC on the next root port');
  const byPath2 = await s.updateInterfaces([{ mac: '02:00:00:00:0b:02', pciPath: '12.0/00.0', name: 'mgmt1', addresses: ['10.55.0.12/24'] }], 0);
  assert.deepEqual(byPath2, [{ name: 'mgmt1', pciAddress: nic2.pciAddress }]);
  assert.ok(d2.memoryTotalBytes > d1.memoryTotalBytes, `guest memory grew: ${d1.memoryTotalBytes} -> ${d2.memoryTotalBytes}`);
  // the hotplugged vCPU is brought online by the guest agent (no udev in the guest)
  let cpus = d2.cpus;
  for (let i = 0; i < 40 && cpus <= d1.cpus; i++) {
    await sleep(250);
    cpus = (await s.details()).cpus;
  }
  assert.equal(cpus, d1.cpus + 1, `guest CPUs online: ${d1.cpus} -> ${cpus}`);

  await manager.removeReplica('gamma', 'g2');
  assert.ok(processAlive(pid));
  await manager.removeReplica('gamma', 'g1');
  for (let i = 0; i < 100 && processAlive(pid); i++) await sleep(50);
  assert.equal(processAlive(pid), false);
  assert.deepEqual(manager.sandboxes(), []);
  assert.deepEqual(readdirSync(join(stateDir, 'sandboxes')), []);
  assert.equal(existsSync(vmRoot), false, 'the VM root goes with the sandbox');
  assert.equal(existsSync(join(stateDir, 'tenants', 'gamma')), false);
  const macvtaps = JSON.parse(execFileSync('ip', ['-d', '-j', 'link', 'show'], { encoding: 'utf8' })).filter((l: { linkinfo?: { info_kind?: string } }) => l.linkinfo?.info_kind === 'macvtap');
  assert.deepEqual(macvtaps.filter((l: { link?: string }) => l.link === mvParent), [], 'no macvtap left on the parent');
  pid = 0;
});
