// The CI-sized part of issue 10 in an emulated edge node (test/src/edge-node.ts, docs/sriov.md): our node agent,
// from the built tree, in a q35 TCG machine with intel-iommu and an igb PF, joins the scheduler on this host over
// NATS with its node credentials. Through the message API a VNF with one `sriov` interface on physnet1 gets a VF:
// the node agent binds it to vfio-pci with the operator's VLAN/spoofchk/trust (network `radio`), and starts the
// tenant VM with that VF on its own root port. Then the node agent is killed with SIGKILL, the VNF is terminated
// through the API, the agent comes back (as a service manager would restart it): the VF is back on igbvf with the
// MAC, VLAN, spoofchk and trust it had before. The nested tenant VM's boot (many minutes: TCG inside TCG) and the
// data path are `npm run demo:sriov`'s; this test does not wait for them. The second test hot-plugs both VFs into
// a chrooted QEMU that dropped to a uid (a later replica's VF), through the node agent's QEMU driver in the node.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { EDGE_PF_PCI, startEdgeNode, type EdgeNode } from '../src/edge-node.js';
import { REPO_ROOT } from '../src/harness.js';

const NETWORK = { name: 'radio', cidr: '10.79.0.0/24', gateway: '10.79.0.1', range: { start: '10.79.0.10', end: '10.79.0.50' }, vlan: 100, spoofchk: true, trust: false };
let node: EdgeNode | undefined;

before(async () => {
  node = await startEdgeNode({ networks: [NETWORK], log: (m) => console.log(`edge-node: ${m}`), testpmd: false });
});

after(async () => {
  if (!node) return;
  const t = await node.teardown();
  assert.deepEqual(t.leftovers, [], 'the emulated node left nothing behind');
});

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what}: not seen after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

test('an emulated edge node joins over NATS; a VF through the API to vfio-pci and the tenant VM; VF restored after the node agent is SIGKILLed and the VNF terminated', { timeout: 1_500_000 }, async () => {
  const n = node!;
  await n.waitReady();
  // the node's inventory, as the scheduler got it over NATS: the real igb PF, its VFs, their IOMMU groups
  const got = await n.api.ok<{ inventory: { sriovPfs: Array<{ pciAddress: string; physnet?: string; numVfs: number; totalVfs: number; vfs: Array<{ pciAddress: string; driver?: string; iommuGroup?: number }> }> } }>('nfv.v1.admin.nodes.get', { id: n.nodeId });
  const pf = got.inventory.sriovPfs.find((p) => p.pciAddress === EDGE_PF_PCI);
  assert.ok(pf, `the igb PF in the inventory: ${JSON.stringify(got.inventory.sriovPfs)}`);
  assert.equal(pf.physnet, 'physnet1');
  assert.equal(pf.numVfs, 2);
  assert.equal(pf.totalVfs, 7);
  assert.ok(pf.vfs.every((v) => v.driver === 'igbvf' && typeof v.iommuGroup === 'number'), JSON.stringify(pf.vfs));
  const before = await n.vfTable();
  assert.equal(before.length, 2);

  await n.api.ok('nfv.v1.admin.tenants.create', { id: 'radio' });
  // the tenant may repeat the operator's VLAN, never change it (PERMISSION_DENIED naming the field, nothing placed)
  const denied = await n.api.tenant('radio', 'vnfs.instantiate', {
    descriptor: { name: 'du-bad', replicas: 1, resources: { vcpus: 1, memoryMiB: 128 }, image: { ref: 'builtin:busybox' }, interfaces: [{ name: 'up', type: 'sriov', physnet: 'physnet1', network: 'radio', vlan: 200 }] },
  });
  if (!denied.ok) {
    assert.equal(denied.error.code, 'PERMISSION_DENIED');
    assert.match(JSON.stringify(denied.error), /vlan/);
  } else {
    const op = await n.api.waitOp('radio', denied.result.opOccId, 300_000);
    assert.notEqual(op.operationState, 'COMPLETED', 'another VLAN than the operator\'s is refused');
    assert.match(JSON.stringify(op.error ?? op), /vlan/);
    const term = await n.api.tenant('radio', 'vnfs.terminate', { id: denied.result.vnfId });
    if (term.ok) await n.api.waitOp('radio', term.result.opOccId, 300_000);
  }
  assert.deepEqual(await n.vfTable(), before, 'the refused request changed no VF');

  const inst = await n.api.ok<{ vnfId: string; opOccId: string }>('nfv.v1.tenant.radio.vnfs.instantiate', {
    descriptor: { name: 'du', replicas: 1, resources: { vcpus: 1, memoryMiB: 128 }, image: { ref: 'builtin:busybox' }, interfaces: [{ name: 'up', type: 'sriov', physnet: 'physnet1', network: 'radio' }] },
  });
  // the node agent's SR-IOV attachment in the node's real kernel: vfio-pci, the operator's VLAN 100, the plan's MAC
  const bound = await until('a VF on vfio-pci', async () => (await n.vfTable()).find((v) => v.driver === 'vfio-pci'), 600_000);
  assert.equal(bound.vlan, 100);
  assert.equal(bound.spoofchk, true);
  assert.equal(bound.trust, false);
  const orig = before.find((v) => v.pciAddress === bound.pciAddress);
  assert.ok(orig, `the bound VF ${bound.pciAddress} is one of the PF's`);
  assert.notEqual(bound.mac, orig.mac, 'the allocation\'s MAC is set on the PF');
  const group = (await n.exec(['readlink', `/sys/bus/pci/devices/${bound.pciAddress}/iommu_group`])).stdout.trim().split('/').pop();
  assert.equal((await n.exec(['test', '-e', `/dev/vfio/${group}`])).code, 0, `/dev/vfio/${group} exists`);
  // the tenant VM's QEMU in the node has the VF on a root port at the fixed slot (PCI path 10.0/00.0)
  const args = await until('the tenant VM\'s QEMU with the VF', async () => {
    const ps = (await n.exec(['sh', '-c', 'for p in /proc/[0-9]*; do tr "\\0" " " < $p/cmdline 2>/dev/null; echo; done | grep -- "-name guest=" | grep -v grep || true'])).stdout.trim();
    return ps.includes(`vfio-pci,host=${bound.pciAddress}`) ? ps : undefined;
  }, 600_000);
  assert.match(args, new RegExp(`vfio-pci,host=${bound.pciAddress},id=[^, ]+,bus=rp0\\b`));
  assert.match(args, /pcie-root-port,[^ ]*id=rp0[^ ]*addr=0x10\b|pcie-root-port,[^ ]*addr=0x10[^ ]*id=rp0/);

  // kill -9 of the node agent (the VM keeps booting), a FORCEFUL terminate through the API (it takes over from the
  // instantiate still waiting for the nested boot), the agent comes back
  await n.killAgent();
  const term = await n.api.ok<{ opOccId: string }>('nfv.v1.tenant.radio.vnfs.terminate', { id: inst.vnfId, mode: 'FORCEFUL' });
  await n.startAgent();
  const op = await n.api.waitOp('radio', term.opOccId, 900_000);
  assert.equal(op.operationState, 'COMPLETED', JSON.stringify(op));
  const back = await until('the VF back on igbvf', async () => {
    const vf = (await n.vfTable()).find((v) => v.pciAddress === bound.pciAddress);
    return vf?.driver === 'igbvf' ? vf : undefined;
  }, 300_000);
  assert.deepEqual(back, orig, 'driver, MAC, VLAN, spoofchk and trust as before');
  const left = (await n.exec(['sh', '-c', 'ls /run/edge/node-agent/netplugins/records/sriov 2>/dev/null; pgrep -c qemu-system || true'])).stdout.trim();
  assert.equal(left, '0', 'no SR-IOV record and no tenant VM left in the node');
});

test('VFs hot-plugged into a chrooted QEMU in the node: the driver stages each VF\'s vfio group and sysfs link in the VM root, and removes them on unplug', { timeout: 900_000 }, async () => {
  const n = node!;
  const before = await n.vfTable();
  const vfs = before.map((v) => v.pciAddress);
  assert.equal(vfs.length, 2);
  const r = await n.exec([process.execPath, join(REPO_ROOT, 'test/dist/src/vf-hotplug-probe.js'), ...vfs], 600_000);
  assert.equal(r.code, 0, `probe: ${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown> & { staged: string[]; afterUnplug: string[]; peripherals: string[]; vfioFds: string[] };
  console.log(`vf-hotplug-probe: ${JSON.stringify(out)}`);
  assert.equal(out.error, undefined, JSON.stringify(out));
  assert.deepEqual(out.bound, ['vfio-pci', 'vfio-pci']);
  assert.equal(out.qemuUid, 64123, 'QEMU runs as the VM uid');
  assert.match(String(out.qemuRoot), /^\/tmp\/vfhp-[^/]+\/vm$/, 'QEMU is chrooted in its VM root');
  // without the staging QEMU cannot find the VF from inside its root (what addNic refused before)
  assert.match(String(out.unstaged), /no such host device|No such file or directory/);
  assert.deepEqual(out.hotplugged, vfs);
  // both VFs realized: QEMU (chrooted, as the uid) holds the staged group nodes, the container and a vfio device fd each
  assert.deepEqual(out.peripherals.filter((p) => /^vf\d$/.test(p)), ['vf0', 'vf1']);
  assert.equal(out.vfioFds.filter((f) => f === 'anon_inode:[vfio-device]').length, 2, JSON.stringify(out.vfioFds));
  const groups = await Promise.all(vfs.map(async (v) => (await n.exec(['readlink', `/sys/bus/pci/devices/${v}/iommu_group`])).stdout.trim().split('/').pop()!));
  for (const [i, v] of vfs.entries()) {
    assert.ok(out.staged.includes(`dev/vfio/${groups[i]} c 64123 600`), `group node of ${v}: ${JSON.stringify(out.staged)}`);
    assert.ok(out.staged.includes(`sys/bus/pci/devices/${v}/iommu_group l 0 777`), `sysfs link of ${v}`);
  }
  assert.ok(out.staged.includes('dev/vfio/vfio c 0 660'));
  for (const g of groups) assert.ok(out.vfioFds.some((f) => f.endsWith(`/dev/vfio/${g}`)), `QEMU opened the staged group ${g}`);
  // vf0 unplugged: its stand-in is gone and its group node too (unless vf1 shares the group), vf1's stay
  assert.ok(!out.afterUnplug.some((l) => l.includes(vfs[0]!)), JSON.stringify(out.afterUnplug));
  assert.equal(out.afterUnplug.some((l) => l.startsWith(`dev/vfio/${groups[0]} `)), groups[0] === groups[1], JSON.stringify(out.afterUnplug));
  assert.ok(out.afterUnplug.includes(`dev/vfio/${groups[1]} c 64123 600`));
  assert.ok(out.afterUnplug.includes(`sys/bus/pci/devices/${vfs[1]}/iommu_group l 0 777`));
  assert.equal(out.restored, true);
  assert.equal(out.leftover, false);
  assert.deepEqual(await n.vfTable(), before, 'both VFs back on igbvf with their settings');
});
