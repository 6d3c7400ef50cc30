/**
 * Sandbox manager with real QEMU (TCG, no guest kernel: the VM idles in firmware), real netns + taps through
 * netplugins, real cgroup v2 placement, and a recording stand-in for the guest agent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AllocInterface } from '@edgenfv/contracts';
import { silentLogger } from '@edgenfv/telemetry';
import { parseConfig } from '../../src/config.js';
import { QemuDriver } from '../../src/hypervisor/qemu.js';
import { withQmp } from '../../src/hypervisor/qmp.js';
import { Cgroups } from '../../src/sandbox/cgroup.js';
import { NetpluginsAttachments } from '../../src/sandbox/attachments.js';
import { SandboxManager } from '../../src/sandbox/manager.js';
import { processAlive, waitGone, killQuiet } from '../../src/proc.js';
import { makeAlloc } from '../helpers/alloc.js';
import { RecordingGuest } from '../helpers/recording-guest.js';
import { removeCgroupParent } from '../helpers/cleanup.js';
import { firmwareSandboxManager } from '../helpers/real-manager.js';

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function quiet(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
  } catch {
    /* already gone */
  }
}

/** A q35 TCG node with room for hotplug (4 vCPUs, 1 GiB per VM), its cgroups under `cgParent`. */
function q35Config(stateDir: string, cgParent: string, extra: Record<string, unknown> = {}): ReturnType<typeof parseConfig> {
  return parseConfig({ nodeId: 'n1', stateDir, vmBaseMemoryMiB: 128, qemu: { machine: 'q35', accel: 'tcg', maxVcpus: 4, maxMemoryMiB: 1024 }, isolation: { cgroupParent: cgParent }, ...extra });
}

test('one VM per tenant: boot, a second replica joins by hotplug, restart re-adopts, teardown leaves nothing', async (t) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'na-sbm-'));
  const cgParent = `edgenfv-t${process.pid}`;
  const bridge = `enfvb${process.pid % 100000}`;
  const cfg = q35Config(stateDir, cgParent);
  const log = silentLogger();
  const guest = new RecordingGuest();
  const mk = (): SandboxManager => firmwareSandboxManager({ cfg, stateDir, cgParent, guest, log, extra: { hotplugSlots: 2 } });
  const pids: number[] = [];
  const nss: string[] = [];
  t.after(async () => {
    for (const p of pids) {
      killQuiet(p, 'SIGKILL');
      await waitGone(p, undefined, 5000);
    }
    for (const ns of nss) quiet('ip', ['netns', 'del', ns]);
    quiet('ip', ['link', 'del', bridge]);
    await removeCgroupParent(cgParent);
    rmSync(stateDir, { recursive: true, force: true });
  });

  const tapIf = (name: string, mac: string, ip: string) => ({ name, type: 'tap' as const, mac, bridge, ips: [ip], gateway: '10.77.0.1' });
  const a1 = makeAlloc({ allocId: 'a1', tenantId: 'acme', routes: [{ dst: '10.99.0.0/16', via: '10.77.0.1', dev: 'mgmt' }] }, [tapIf('mgmt', '02:00:00:00:00:a1', '10.77.0.11/24')]);
  // a2 is placed while its VNF is OPERATEd STOPPED (a scale-out of a stopped VNF): its container is created, not started
  const a2 = makeAlloc({ allocId: 'a2', tenantId: 'acme', operationalState: 'STOPPED' }, [tapIf('mgmt', '02:00:00:00:00:a2', '10.77.0.12/24')]);

  const m1 = mk();
  await m1.init();
  const r1 = await m1.ensureReplica(a1);
  assert.equal(r1.booted, true);
  assert.deepEqual(r1.interfaces, [{ name: 'mgmt', mac: '02:00:00:00:00:a1', ips: ['10.77.0.11/24'] }]);
  const [rec] = m1.sandboxes();
  assert.ok(rec);
  const vm = m1.vmOf(rec.sandboxId)!;
  pids.push(vm.pid);
  nss.push(rec.netns);
  assert.equal(rec.state, 'running');
  assert.equal(rec.tenantId, 'acme');
  // isolation: own uid, tenant folders 0700, own cgroup, own netns with the tap in it
  assert.match(readFileSync(`/proc/${vm.pid}/status`, 'utf8'), new RegExp(`^Uid:\\s+${rec.uid}\\s`, 'm'));
  assert.equal(statSync(rec.tenantDir).mode & 0o777, 0o700);
  assert.equal(statSync(rec.runDir).mode & 0o777, 0o700);
  assert.equal(statSync(rec.runDir).uid, 0, "the run folder is root's: QEMU's uid can write nothing there");
  assert.ok(rec.cgroupDir && readFileSync(join(rec.cgroupDir, 'cgroup.procs'), 'utf8').includes(String(vm.pid)));
  assert.match(sh('ip', ['-n', rec.netns, 'link', 'show']), /mgmt|n[0-9a-f]{10}/);
  // the guest was told MAC + IPs + routes, and runs the container
  const nics = guest.nics.get(vm.agentSocket!)!;
  assert.deepEqual(nics.map((n) => [n.name, n.mac, n.addresses]), [['mgmt', '02:00:00:00:00:a1', ['10.77.0.11/24']]]);
  assert.deepEqual(guest.routes.get(vm.agentSocket!), [{ dst: '10.99.0.0/16', via: '10.77.0.1', dev: 'mgmt' }]);
  assert.equal(guest.containers.get(vm.agentSocket!)!.size, 1);

  // idempotent
  const again = await m1.ensureReplica(a1);
  assert.equal(again.sandboxId, rec.sandboxId);
  assert.equal(m1.sandboxes().length, 1);

  // second replica of the same tenant: same VM, grown by hotplug, its NIC hotplugged, guest name de-duplicated
  const r2 = await m1.ensureReplica(a2);
  assert.equal(r2.booted, false);
  assert.equal(r2.sandboxId, rec.sandboxId);
  assert.equal(m1.sandboxes().length, 1);
  const cpus = await withQmp(vm.apiSocket, (q) => q.queryCpusFast());
  assert.equal(cpus.length, 2);
  assert.equal(vm.memoryMiB, 128 + 128 + 128);
  assert.deepEqual(guest.nics.get(vm.agentSocket!)!.map((n) => n.name), ['mgmt', 'mgmt1']);
  assert.equal(guest.containers.get(vm.agentSocket!)!.size, 2);
  const c2 = m1.sandboxes()[0]!.replicas.a2!;
  assert.deepEqual([...guest.stopped.get(vm.agentSocket!)!], [c2.containerId], 'the STOPPED replica\'s container was created, never started');
  assert.equal(c2.containersStopped, true);
  await m1.setOperationalState('acme', 'a2', 'STARTED');
  assert.deepEqual([...guest.stopped.get(vm.agentSocket!)!], [], 'OPERATE STARTED starts it');
  assert.equal(m1.sandboxes()[0]!.replicas.a2!.containersStopped, undefined);
  const periph = await withQmp(vm.apiSocket, (q) => q.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' }));
  assert.equal(periph.filter((p) => p.name.endsWith('-nic')).length, 2);

  // "restart": a new manager over the same state folder re-adopts the live VM, nothing duplicated
  await m1.close();
  const m2 = mk();
  const { adopted, cleaned } = await m2.init();
  assert.deepEqual(adopted, [rec.sandboxId]);
  assert.deepEqual(cleaned, []);
  assert.equal(m2.vmOf(rec.sandboxId)!.pid, vm.pid);
  assert.equal((await m2.ensureReplica(a1)).sandboxId, rec.sandboxId);
  assert.equal(m2.sandboxes().length, 1);

  const hostVeths = Object.values(m2.sandboxes()[0]!.replicas).flatMap((r) => Object.values(r.attachments).flatMap((a) => (a.kind === 'tap' && a.hostVeth ? [a.hostVeth] : [])));
  assert.equal(hostVeths.length, 2);
  // remove one: the VM stays; remove the last: nothing left
  await m2.removeReplica('acme', 'a2');
  assert.ok(processAlive(vm.pid));
  assert.deepEqual(Object.keys(m2.sandboxes()[0]!.replicas), ['a1']);
  await m2.removeReplica('acme', 'a1');
  await m2.removeReplica('acme', 'a1'); // repeat: no-op
  assert.equal(processAlive(vm.pid), false);
  assert.deepEqual(m2.sandboxes(), []);
  assert.equal(existsSync(rec.runDir), false);
  assert.equal(existsSync(rec.tenantDir), false);
  assert.equal(existsSync(`/var/run/netns/${rec.netns}`), false);
  assert.equal(existsSync(rec.cgroupDir!), false);
  const links = sh('ip', ['-o', 'link', 'show']);
  for (const v of hostVeths) assert.ok(!links.includes(`${v}@`) && !links.includes(`${v}:`), `host veth ${v} is gone`);
  assert.deepEqual(readdirSync(join(stateDir, 'sandboxes')), []);
});

test('a VM that died while the agent was away is cleaned up at start', async (t) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'na-sbm-'));
  const cgParent = `edgenfv-u${process.pid}`;
  const cfg = parseConfig({ nodeId: 'n1', stateDir, vmBaseMemoryMiB: 128, qemu: { accel: 'tcg', maxVcpus: 2, maxMemoryMiB: 512 }, isolation: { cgroupParent: cgParent } });
  const log = silentLogger();
  const mk = (): SandboxManager => firmwareSandboxManager({ cfg, stateDir, cgParent, guest: new RecordingGuest(), log });
  let pid = 0;
  let ns = '';
  t.after(async () => {
    if (pid) killQuiet(pid, 'SIGKILL');
    if (ns) quiet('ip', ['netns', 'del', ns]);
    await removeCgroupParent(cgParent);
    rmSync(stateDir, { recursive: true, force: true });
  });
  const m1 = mk();
  await m1.init();
  await m1.ensureReplica(makeAlloc({ allocId: 'b1', tenantId: 'beta' }));
  const rec = m1.sandboxes()[0]!;
  pid = m1.vmOf(rec.sandboxId)!.pid;
  ns = rec.netns;
  await m1.close();
  process.kill(pid, 'SIGKILL');
  await waitGone(pid, undefined, 5000);
  const m2 = mk();
  const { adopted, cleaned } = await m2.init();
  assert.deepEqual(adopted, []);
  assert.deepEqual(cleaned, [rec.sandboxId]);
  assert.deepEqual(m2.sandboxes(), []);
  assert.equal(existsSync(`/var/run/netns/${rec.netns}`), false);
  assert.equal(existsSync(rec.runDir), false);
});

test('a malformed allocation is refused before anything is touched, naming each field', async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'na-sbm-'));
  try {
    const cfg = parseConfig({ nodeId: 'n1', stateDir });
    const log = silentLogger();
    const m = new SandboxManager({
      cfg,
      driver: new QemuDriver({ logger: log }),
      accel: 'tcg',
      guest: new RecordingGuest(),
      attachments: new NetpluginsAttachments({ stateDir, sysfsRoot: '/sys', physnets: {}, logger: log }),
      cgroups: new Cgroups(cfg.isolation.cgroupRoot, 'edgenfv-never', log),
      logger: log,
      image: {},
    });
    const bad = makeAlloc({ allocId: 'x y', tenantId: 'Bad_Tenant', resources: { vcpus: 0, memoryMiB: 64 } }, [
      { name: 'eth0', type: 'sriov', mac: 'zz' } as unknown as AllocInterface, // what a broken writer could leave in KV
    ]);
    await assert.rejects(
      () => m.ensureReplica(bad),
      (e: Error & { issues?: { field: string }[] }) => {
        const f = (e.issues ?? []).map((i) => i.field);
        return ['allocId', 'tenantId', 'resources.vcpus', 'interfaces[0].mac', 'interfaces[0].sriov'].every((x) => f.includes(x));
      },
    );
    assert.deepEqual(m.sandboxes(), []);
  } finally {
    rmSync(stateDir, { recursive: true, force: true });
  }
});

test('a vfio-pci data plane does not join a VM booted without a vIOMMU (refused before anything changes, naming resources.dataplane); with guest.viommu always every VM has one and it joins', async (t) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'na-sbm-'));
  const cgParent = `edgenfv-v${process.pid}`;
  const bridge = `enfvv${process.pid % 100000}`;
  const log = silentLogger();
  const guest = new RecordingGuest();
  const mk = (viommu: 'on-demand' | 'always'): SandboxManager => {
    const cfg = q35Config(stateDir, cgParent, { guest: { viommu } });
    return firmwareSandboxManager({ cfg, stateDir, cgParent, guest, log, extra: { hotplugSlots: 2 } });
  };
  const managers: SandboxManager[] = [];
  t.after(async () => {
    for (const m of managers) for (const rec of m.sandboxes()) for (const id of Object.keys(rec.replicas)) await m.removeReplica(rec.tenantId, id).catch(() => undefined);
    quiet('ip', ['link', 'del', bridge]);
    await removeCgroupParent(cgParent);
    rmSync(stateDir, { recursive: true, force: true });
  });
  const tapIf = (name: string, mac: string, ip: string): AllocInterface => ({ name, type: 'tap', mac, bridge, ips: [ip], gateway: '10.78.0.1' });
  const plain = (allocId: string, tenantId: string, mac: string, ip: string) => makeAlloc({ allocId, tenantId }, [tapIf('mgmt', mac, ip)]);
  const dpdk = (allocId: string, tenantId: string, mac: string, ip: string) =>
    makeAlloc({ allocId, tenantId, resources: { vcpus: 2, memoryMiB: 256, dataplane: { kind: 'dpdk', driver: 'vfio-pci', interfaces: ['dp'] } } }, [tapIf('dp', mac, ip)]);

  // on demand: the first replica (no data plane) boots a VM without a vIOMMU; the DPDK replica cannot join it
  const m1 = mk('on-demand');
  managers.push(m1);
  await m1.init();
  await m1.ensureReplica(plain('p1', 'acme', '02:00:00:00:01:01', '10.78.0.11/24'));
  const [rec] = m1.sandboxes();
  assert.ok(rec && !rec.spec?.viommu, 'booted without a vIOMMU');
  assert.deepEqual(m1.noViommuTenants(), ['acme'], 'reported to the scheduler (inventory noViommuTenants)');
  const vm = m1.vmOf(rec.sandboxId)!;
  const before = await withQmp(vm.apiSocket, (q) => q.queryCpusFast());
  await assert.rejects(m1.ensureReplica(dpdk('d1', 'acme', '02:00:00:00:01:02', '10.78.0.12/24')), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'UNSCHEDULABLE');
    assert.match(err.message, /^resources\.dataplane: .*virtual IOMMU.*guest\.viommu: always/);
    return true;
  });
  assert.deepEqual(Object.keys(m1.sandboxes()[0]!.replicas), ['p1'], 'no replica record left');
  assert.equal((await withQmp(vm.apiSocket, (q) => q.queryCpusFast())).length, before.length, 'the VM did not grow');
  assert.equal((await withQmp(vm.apiSocket, (q) => q.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' }))).filter((p) => p.name.endsWith('-nic')).length, 1, 'no NIC hot-plugged');
  assert.equal(guest.dataplanes.length, 0);
  await m1.removeReplica('acme', 'p1');
  await m1.close();

  // always: the same first replica's VM has the vIOMMU (intel-iommu in QEMU), and the DPDK replica joins it
  const m2 = mk('always');
  managers.push(m2);
  await m2.init();
  await m2.ensureReplica(plain('p2', 'beta', '02:00:00:00:02:01', '10.78.0.21/24'));
  const rec2 = m2.sandboxes()[0]!;
  assert.equal(rec2.spec?.viommu, true);
  assert.deepEqual(m2.noViommuTenants(), [], 'every VM has one: nobody to report');
  const vm2 = m2.vmOf(rec2.sandboxId)!;
  assert.match(readFileSync(`/proc/${vm2.pid}/cmdline`, 'utf8').replace(/\0/g, ' '), /intel-iommu,intremap=on,caching-mode=on/);
  const r = await m2.ensureReplica(dpdk('d2', 'beta', '02:00:00:00:02:02', '10.78.0.22/24'));
  assert.equal(r.booted, false);
  assert.equal(r.sandboxId, rec2.sandboxId);
  assert.equal(guest.dataplanes.length, 1);
  assert.deepEqual(guest.dataplanes[0]!.nics.map((n) => n.driver), ['vfio-pci']);
  assert.equal(guest.dataplanes[0]!.allowNoIommu, undefined, 'behind the vIOMMU: no no-IOMMU mode asked for');
  await m2.removeReplica('beta', 'd2');
  await m2.removeReplica('beta', 'p2');
  assert.deepEqual(m2.sandboxes(), []);
});
