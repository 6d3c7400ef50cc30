/**
 * A VNF with a vhost-user interface: its guest NIC exchanges packets with a real dpdk-testpmd on the host (the
 * data plane, `--forward-mode=5tswap`: every frame comes back with addresses swapped). The tenant VM's memory is a
 * shared memfd backend (no hugepages asked; the hugepage backend is covered by the argument tests). QEMU connects
 * as the vhost-user client of testpmd's socket.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { silentLogger } from '@edgenfv/telemetry';
import { buildGuestImage } from '../../src/guest/index.js';
import { parseConfig } from '../../src/config.js';
import { QemuDriver } from '../../src/hypervisor/qemu.js';
import { probeKvm } from '../../src/hypervisor/kvm-probe.js';
import { hostCpuKHz } from '../../src/app.js';
import { findBinary } from '../../src/inventory.js';
import { Cgroups } from '../../src/sandbox/cgroup.js';
import { NetpluginsAttachments } from '../../src/sandbox/attachments.js';
import { GrpcGuestPort } from '../../src/sandbox/grpc-guest.js';
import { SandboxManager } from '../../src/sandbox/manager.js';
import { makeAlloc } from '../helpers/alloc.js';
import { removeCgroupParent } from '../helpers/cleanup.js';


const NR_HUGEPAGES = '/proc/sys/vm/nr_hugepages';

test('vhost-user NIC backed by dpdk-testpmd, guest memory in a shared memfd: packets go out and come back', async (t) => {
  await vhostUserScenario(t, undefined);
});

test('vhost-user NIC backed by dpdk-testpmd, guest memory on 2 MiB hugepages as the VNFD asks', async (t) => {
  // reserve pages for the VM (576 MiB = 288 pages) and give them back afterwards
  const pages = 300;
  const before = Number(readFileSync(NR_HUGEPAGES, 'utf8'));
  writeFileSync(NR_HUGEPAGES, String(before + pages));
  t.after(() => {
    const now = Number(readFileSync(NR_HUGEPAGES, 'utf8'));
    writeFileSync(NR_HUGEPAGES, String(Math.max(0, now - pages)));
  });
  const got = Number(readFileSync(NR_HUGEPAGES, 'utf8')) - before;
  assert.ok(got >= 288, `could reserve only ${got} hugepages of 2 MiB (need 288)`);
  await vhostUserScenario(t, { sizeKiB: 2048, count: 32 });
});

async function vhostUserScenario(t: TestContext, hugepages: { sizeKiB: 2048; count: number } | undefined): Promise<void> {
  const testpmd = findBinary('dpdk-testpmd');
  assert.ok(testpmd, 'dpdk-testpmd is required (apt-get install dpdk-dev librte-net-vhost23; npm run setup)');
  const dir = mkdtempSync(join(tmpdir(), 'na-vhu-'));
  const stateDir = join(dir, 'state');
  const sock = join(dir, 'vhu0.sock');
  const prefix = `edgenfv-vhu-${process.pid}-${hugepages ? 'h' : 'm'}`;
  const cgParent = `edgenfv-v${process.pid}${hugepages ? 'h' : 'm'}`;
  const log = silentLogger();
  let pmd: ChildProcess | undefined;
  let pmdOut = '';
  let manager: SandboxManager | undefined;
  t.after(async () => {
    await manager?.stopAll().catch(() => undefined);
    await manager?.close();
    if (pmd && pmd.exitCode === null) {
      pmd.kill('SIGINT');
      await Promise.race([new Promise((r) => pmd!.once('exit', r)), sleep(5000)]);
      if (pmd.exitCode === null) pmd.kill('SIGKILL');
    }
    rmSync(`/var/run/dpdk/${prefix}`, { recursive: true, force: true });
    await removeCgroupParent(cgParent);
    rmSync(dir, { recursive: true, force: true });
  });

  // the data plane: testpmd serves the vhost-user socket, no hugepages, no NICs, its own runtime prefix
  pmd = spawn(testpmd, ['-l', '0-1', '--no-huge', '-m', '256', '--no-pci', '--file-prefix', prefix, '--vdev', `net_vhost0,iface=${sock},client=0`,
    '--', '--total-num-mbufs=8192', '--forward-mode=5tswap', '--auto-start'], { stdio: ['pipe', 'pipe', 'pipe'] }); // testpmd exits at EOF on stdin: keep it open
  pmd.stdout!.on('data', (d: Buffer) => (pmdOut += d.toString()));
  pmd.stderr!.on('data', (d: Buffer) => (pmdOut += d.toString()));
  for (let i = 0; !existsSync(sock); i++) {
    assert.ok(pmd.exitCode === null && i < 600, `testpmd did not create its socket: ${pmdOut.slice(-1500)}`);
    await sleep(50);
  }

  const image = await buildGuestImage({ log });
  const accel = (await probeKvm({ qemuBinary: 'qemu-system-x86_64', kernelPath: image.kernelPath })).ok ? 'kvm' : 'tcg';
  const cfg = parseConfig({ nodeId: 'n1', stateDir, qemu: { accel, maxVcpus: 2, maxMemoryMiB: 1024 }, isolation: { cgroupParent: cgParent }, guest: { bootTimeoutMs: 240_000 } });
  const cpuKHz = hostCpuKHz();
  manager = new SandboxManager({
    cfg,
    driver: new QemuDriver({ logger: log }),
    accel,
    guest: new GrpcGuestPort(log),
    attachments: new NetpluginsAttachments({ stateDir, sysfsRoot: '/sys', physnets: {}, logger: log }),
    cgroups: new Cgroups(cfg.isolation.cgroupRoot, cgParent, log),
    logger: log,
    image: { kernelPath: image.kernelPath, initrdPath: image.initrdPath },
    kernelArgs: image.kernelArgs,
    ...(cpuKHz ? { hostCpuKHz: cpuKHz } : {}),
  });
  await manager.init();
  const alloc = makeAlloc({ allocId: 'v1', tenantId: 'vhu', image: { ref: 'builtin:vrouter' }, resources: { vcpus: 1, memoryMiB: 64, ...(hugepages ? { hugepages } : {}) } }, [
    { name: 'dp0', type: 'vhostuser', mac: '02:00:00:00:0e:01', ips: ['10.88.0.2/24'], vhostuser: { dataplane: 'testpmd', socketPath: sock, queues: 1 } },
  ]);
  const r = await manager.ensureReplica(alloc);
  assert.deepEqual(r.interfaces, [{ name: 'dp0', mac: '02:00:00:00:0e:01', ips: ['10.88.0.2/24'], socketPath: sock }]);
  const rec = manager.sandboxes()[0]!;
  assert.deepEqual(rec.spec!.memory, hugepages ? { kind: 'hugepages', sizeKiB: 2048 } : { kind: 'memfd' });
  if (hugepages) {
    const cmd = readFileSync(`/proc/${manager.vmOf(r.sandboxId)!.pid}/cmdline`, 'utf8');
    assert.match(cmd, /memory-backend-memfd,id=mem0,size=576M,hugetlb=on,hugetlbsize=2M,share=on,prealloc=on/);
    assert.match(readFileSync('/proc/meminfo', 'utf8'), /HugePages_Free:\s+\d+/);
  }
  const s = await manager.guestSession(r.sandboxId);
  const nic = (await s.details()).nics.find((n) => n.mac === '02:00:00:00:0e:01');
  assert.ok(nic, 'the vhost-user NIC is in the guest');
  assert.equal(nic.name, 'dp0');
  await s.addArpNeighbors([{ ip: '10.88.0.1', mac: '02:00:00:00:0e:ff', device: 'dp0' }]);
  const rx0 = (await s.metrics()).nics.find((n) => n.name === 'dp0')?.rxPackets ?? 0;
  const containerId = rec.replicas.v1!.containerId;
  const ping = await s.exec(containerId, ['ping', '-c', '5', '-W', '2', '10.88.0.1'], 60_000);
  const m = (await s.metrics()).nics.find((n) => n.name === 'dp0');
  assert.ok(m, 'counters of dp0');
  assert.ok(m.txPackets >= 5, `guest sent: ${JSON.stringify(m)} ${ping.stdout}${ping.stderr}`);
  assert.ok(m.rxPackets - rx0 >= 5, `frames came back from testpmd: ${JSON.stringify(m)} ${ping.stdout}${ping.stderr}\n${pmdOut.slice(-1500)}`);
  assert.match(pmdOut, /VHOST_CONFIG|virtio is now ready|Port 0/);
}
