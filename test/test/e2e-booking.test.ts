/**
 * What a VM books, on a real node (issue 15 item 3): the appliance with its node agent and one real QEMU (TCG here).
 * Through the message API, a tenant's first replica boots its VM on a dedicated core, a second VNF of the same tenant
 * joins that VM by vCPU hotplug on the node's remaining cores: the node's pinnable CPUs are then all booked, and a
 * further replica is UNSCHEDULABLE with the reason. On the host: each vCPU thread of the real QEMU (named
 * `CPU <i>/<accel>` with debug-threads=on) runs on exactly the core the ledger gave it, every other QEMU thread on the
 * VM's cores only, and QEMU's resident memory stays within what the ledger booked for the VM (replicas + overhead).
 * The joined VNF's terminate shrinks the VM: its threads are re-pinned onto the remaining core. One VM boot.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCpuList } from '@edgenfv/node-agent/internal/inventory';
import { freePort, startAppliance, type RunningAppliance } from '../src/appliance.js';

const tag = String(process.pid % 100000);
const tenant = `bk${tag}`;
const nodeId = `bk-node-${tag}`;
let appliance: RunningAppliance | undefined;
let home: string | undefined;

const cgroupParent = `edgenfv-bk${tag}`;

after(async () => {
  await appliance?.stop();
  if (home) rmSync(home, { recursive: true, force: true });
  // the node agent's cgroup parent (its sandboxes' cgroups are gone with them)
  for (const root of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) {
    if (existsSync(join(root, cgroupParent))) rmdirSync(join(root, cgroupParent));
  }
});

function qemuPidOf(sandboxId: string): number {
  const pids = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(`guest=${sandboxId},`);
      } catch {
        return false;
      }
    });
  assert.equal(pids.length, 1, `one QEMU for ${sandboxId}`);
  return Number(pids[0]);
}

/** Every thread of the process: name and allowed CPUs. */
function threads(pid: number): { tid: number; name: string; cpus: number[] }[] {
  return readdirSync(`/proc/${pid}/task`).flatMap((t) => {
    try {
      const name = readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim();
      const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/task/${t}/status`, 'utf8'));
      return [{ tid: Number(t), name, cpus: parseCpuList(m![1]!) }];
    } catch {
      return []; // a thread that just ended
    }
  });
}

function rssMiB(pid: number): number {
  return Number(/^VmRSS:\s*(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

test('a real node booked to its last core: the next replica is UNSCHEDULABLE, QEMU threads run on the ledger cores', { timeout: 30 * 60_000 }, async () => {
  home = mkdtempSync(join(tmpdir(), 'edgenfv-bk-'));
  appliance = await startAppliance(home, {
    ports: { nats: await freePort(), dashboard: await freePort(), schedulerMetrics: await freePort(), nodeAgentMetrics: await freePort() },
    networks: [],
    services: { dashboard: false },
    nodeAgent: { nodeId, heartbeatIntervalMs: 1000, isolation: { cgroupParent }, qemu: { maxVcpus: 8, maxMemoryMiB: 2048 } },
  });
  const api = appliance.api;
  let node: any;
  for (let i = 0; ; i++) {
    const r = await api.admin('nodes.get', { id: nodeId });
    if (r.ok && r.result.free) {
      node = r.result;
      break;
    }
    if (i > 600) throw new Error(`node ${nodeId} never registered: ${JSON.stringify(r)}`);
    await new Promise((res) => setTimeout(res, 500));
  }
  const numa = Object.keys(node.free.dedicatedCpus).sort()[0]!;
  const cores: number = node.free.dedicatedCpus[numa];
  assert.ok(cores >= 2, `this test needs 2 pinnable CPUs on NUMA node ${numa} (found ${cores})`);
  await api.ok('nfv.v1.admin.tenants.create', { id: tenant });
  const run = async (name: string, vcpus: number) => {
    const inst = await api.ok(`nfv.v1.tenant.${tenant}.vnfs.instantiate`, {
      descriptor: { name, replicas: 1, resources: { vcpus, memoryMiB: 256, cpuPolicy: 'dedicated' }, image: { ref: 'builtin:busybox' }, command: ['sleep', '86400'] },
    });
    return { vnfId: inst.vnfId as string, op: await api.waitOp(tenant, inst.opOccId, 20 * 60_000) };
  };
  // 1 core boots the VM; the rest of the NUMA node's cores join it by hotplug: every pinnable CPU booked
  const first = await run('pin-a', 1);
  assert.equal(first.op.operationState, 'COMPLETED', JSON.stringify(first.op.error));
  const second = await run('pin-b', cores - 1);
  assert.equal(second.op.operationState, 'COMPLETED', JSON.stringify(second.op.error));
  const full = await run('pin-c', 1);
  assert.equal(full.op.operationState, 'FAILED');
  assert.equal(full.op.error.code, 'UNSCHEDULABLE');
  assert.match(full.op.error.message, /fewer than 1 free vCPUs|no NUMA node with 1 free dedicated CPUs/);

  node = (await api.admin('nodes.get', { id: nodeId })).result;
  const mine = node.reservations.filter((r: any) => r.tenantId === tenant);
  const byVnf = (id: string) => mine.find((r: any) => r.vnfId === id);
  const ledgerCores: number[] = [...byVnf(first.vnfId).cpus, ...byVnf(second.vnfId).cpus];
  assert.equal(new Set(ledgerCores).size, cores);
  const booking = mine.find((r: any) => r.vmOverhead);
  assert.ok(booking, 'the first replica booked the VM overhead');
  assert.equal(mine.filter((r: any) => r.vmOverhead).length, 1, 'once per tenant VM');

  const vnf = await api.ok(`nfv.v1.tenant.${tenant}.vnfs.get`, { id: first.vnfId });
  const sandboxId = vnf.replicas[0].sandboxId;
  const pid = qemuPidOf(sandboxId);
  const ts = threads(pid);
  const vcpu = ts.filter((t) => /^CPU \d+\//.test(t.name)).sort((a, b) => parseInt(a.name.slice(4)) - parseInt(b.name.slice(4)));
  assert.equal(vcpu.length, cores, `vCPU threads: ${ts.map((t) => t.name).join(', ')}`);
  // vCPU i on ledger core i (the booting replica's core first, the hotplugged ones after)
  assert.deepEqual(vcpu.map((t) => t.cpus), ledgerCores.map((c) => [c]), JSON.stringify(ts));
  const union = [...ledgerCores].sort((a, b) => a - b);
  for (const t of ts) for (const c of t.cpus) assert.ok(union.includes(c), `thread ${t.name} (${t.tid}) may run on CPU ${c}, not a core of this VM`);

  // host memory: QEMU's resident memory within the ledger's booking for the VM
  const booked = mine.reduce((s: number, r: any) => s + r.memoryMiB, 0) + booking.vmOverhead.memoryMiB;
  const rss = rssMiB(pid);
  assert.ok(rss <= booked, `QEMU RSS ${rss.toFixed(0)} MiB > booked ${booked} MiB`);
  console.log(JSON.stringify({ cores: ledgerCores, vcpuAffinity: vcpu.map((t) => t.cpus), qemuRssMiB: Math.round(rss), bookedMiB: booked, vmOverhead: booking.vmOverhead }));

  const terminate = async (v: string) => {
    const t = await api.ok(`nfv.v1.tenant.${tenant}.vnfs.terminate`, { id: v });
    const op = await api.waitOp(tenant, t.opOccId, 10 * 60_000);
    assert.equal(op.operationState, 'COMPLETED', JSON.stringify(op.error));
  };
  // the joined VNF leaves, the VM shrinks: every QEMU thread left (a vCPU whose unplug the guest has not finished
  // included) runs on the first VNF's core only
  await terminate(second.vnfId);
  const left = byVnf(first.vnfId).cpus as number[];
  for (const t of threads(pid)) assert.deepEqual(t.cpus, left, `after the shrink, thread ${t.name} (${t.tid})`);
  await terminate(first.vnfId);
  for (let i = 0; existsSync(`/proc/${pid}`); i++) {
    if (i > 600) throw new Error(`QEMU ${pid} still there after terminate`);
    await new Promise((res) => setTimeout(res, 200));
  }
});
