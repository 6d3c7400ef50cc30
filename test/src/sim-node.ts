/**
 * A simulated edge node for scheduler-scale tests: its inventory is made by the node agent's own inventory code
 * from a fake sysfs tree of its own, and it speaks the real node protocol (register, heartbeat requests, watch of
 * `edgenfv_allocs <node>.>`, status writes into `edgenfv_status`). In place of booting a VM per allocation it
 * books the allocation's pinned CPUs and VFs in its own ledger, so that a double booking shows as a conflict here,
 * on the node, whatever the scheduler believed.
 */
import type { KvEntry, NatsConnection, QueuedIterator, KV, Subscription } from 'nats';
import { internalSubjects, KV_BUCKETS, type Allocation, type NodeMigrateReply, type NodeMigrateRequest, type NodeInventory, type ReplicaStatus } from '@edgenfv/contracts';
import { collectInventory } from '@edgenfv/node-agent/internal/inventory';
import { makeFakeSysfs } from '@edgenfv/node-agent/internal/testing/fake-sysfs';
import { waitNodeKnown } from './state-fixtures.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

export interface NodeShape {
  numaNodes: number;
  cpusPerNuma: number;
  /** per NUMA node, how many of its CPUs are isolated (the highest-numbered ones) */
  isolatedPerNuma: number;
  vfsPerNuma: number;
  physnet: string;
}

function cpuRange(from: number, n: number): string {
  return n <= 0 ? '' : n === 1 ? String(from) : `${from}-${from + n - 1}`;
}

export async function simulatedNodeInventory(nodeId: string, shape: NodeShape): Promise<{ inventory: NodeInventory; cleanup: () => void }> {
  const numa = [];
  const pfs = [];
  const isolated: string[] = [];
  for (let n = 0; n < shape.numaNodes; n++) {
    const first = n * shape.cpusPerNuma;
    numa.push({ cpus: cpuRange(first, shape.cpusPerNuma), memKiB: 64 * 1024 * 1024, hugepages: { 2048: { total: 1024, free: 1024 } } });
    isolated.push(cpuRange(first + shape.cpusPerNuma - shape.isolatedPerNuma, shape.isolatedPerNuma));
    const bus = (0x10 + n).toString(16).padStart(2, '0');
    pfs.push({
      pci: `0000:${bus}:00.0`,
      ifName: `ens${n}f0`,
      numaNode: n,
      totalVfs: shape.vfsPerNuma,
      driver: 'igb',
      vfs: Array.from({ length: shape.vfsPerNuma }, (_, i) => ({ pci: `0000:${bus}:${(0x10 + (i >> 3)).toString(16)}.${i & 7}`, driver: 'igbvf', iommuGroup: 100 * (n + 1) + i })),
    });
  }
  const fake = makeFakeSysfs({ numa, isolated: isolated.filter(Boolean).join(','), pfs });
  const inventory = await collectInventory(
    { nodeId, labels: { site: 'edge-1' }, sysfsRoot: fake.root, devRoot: fake.root, physnets: Object.fromEntries(pfs.map((p) => [p.pci, shape.physnet])), dataplanes: [] },
    { kvm: false, system: async () => ({ cpuCount: shape.numaNodes * shape.cpusPerNuma, memoryMiB: shape.numaNodes * 65536, hostname: nodeId }) },
  );
  return { inventory, cleanup: fake.cleanup };
}

/** A simulated node of the one-NUMA-node shape most tests use (8 CPUs, 4 isolated, 2 VFs on physnet1), started
 * and known to the scheduler; `cleanup` removes its fake sysfs tree. */
export async function startSimNode(nc: NatsConnection, nodeId: string, heartbeatMs: number): Promise<{ node: SimNode; cleanup: () => void }> {
  const { inventory, cleanup } = await simulatedNodeInventory(nodeId, { numaNodes: 1, cpusPerNuma: 8, isolatedPerNuma: 4, vfsPerNuma: 2, physnet: 'physnet1' });
  const node = new SimNode(nc, inventory, heartbeatMs);
  await node.start();
  await waitNodeKnown(nc, nodeId);
  return { node, cleanup };
}

/**
 * Simulated nodes that serve live migrations (`serveMigration`), one NUMA node of `cpusPerNuma` CPUs each, started
 * and known to the scheduler; `stop` stops them and removes their fake sysfs trees.
 */
export async function startMigratingSimNodes(nc: NatsConnection, ids: string[], cpusPerNuma: number): Promise<{ nodes: Map<string, SimNode>; stop: () => void }> {
  const nodes = new Map<string, SimNode>();
  const cleanups: (() => void)[] = [];
  for (const id of ids) {
    const { inventory, cleanup } = await simulatedNodeInventory(id, { numaNodes: 1, cpusPerNuma, isolatedPerNuma: 4, vfsPerNuma: 0, physnet: 'physnet1' });
    cleanups.push(cleanup);
    const n = new SimNode(nc, inventory, 300);
    n.serveMigration = true;
    await n.start();
    nodes.set(id, n);
  }
  for (const id of ids) await waitNodeKnown(nc, id);
  return {
    nodes,
    stop: () => {
      for (const n of nodes.values()) n.stop();
      for (const c of cleanups) c();
    },
  };
}

export class SimNode {
  epoch = 0;
  /** allocId -> what it holds */
  readonly running = new Map<string, { cpus: number[]; vfs: string[]; vnfId: string; replica: number; tenantId?: string }>();
  /** Every double booking the node saw (must stay empty). */
  readonly conflicts: string[] = [];
  private watch: QueuedIterator<KvEntry> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private status!: KV;
  private allocs!: KV;
  private partitioned = false;
  /** Allocations torn down because the scheduler no longer gave them to this node (fencing). */
  readonly tornDown: string[] = [];
  /** While true, new allocations stay STARTING (a slow boot): a test can kill the node in the middle. */
  holdStarts = false;
  /** Allocations whose containers OPERATE stopped (the sandbox and what it holds stay). */
  readonly containersStopped = new Set<string>();
  /** Allocations whose containers were ever started (a replica placed while its VNF is STOPPED is not, until STARTED). */
  readonly containersStarted = new Set<string>();
  /**
   * Serve `nodes.<n>.migrate` as a node agent with live migration does (set before start()): an allocation with
   * `migration` waits as an incoming VM (STARTING, `migration.state: incoming`) until its source node is asked to
   * `continue`, then runs (RUNNING, `completed`). Off: the node does not answer, as an agent without migration.
   * A tenant's allocations on one node stand for one tenant VM: `check` on the source lists them (`members`), and an
   * incoming group (`migration.group`) is reported `incoming` once every member is here, switched over as one.
   */
  serveMigration = false;
  /** Every `nodes.<n>.migrate` request this node answered or was asked (in order). */
  readonly migrateLog: NodeMigrateRequest[] = [];
  /** Called before a `nodes.<n>.migrate` request is answered (a test can hold the answer, e.g. to kill the leader). */
  beforeMigrateReply: ((req: NodeMigrateRequest) => Promise<void>) | undefined;
  /** Called once a `nodes.<n>.migrate` request was carried out, before its answer: throwing turns the answer into an error. */
  afterMigrate: ((req: NodeMigrateRequest) => Promise<void>) | undefined;
  /** While true, an incoming VM fails right after the switchover (reported FAILED and torn down) instead of running. */
  failAfterSwitchover = false;
  /** Source side: allocId -> where its VM's outgoing migration is (`pre-switchover` after start, `completed` after continue). */
  private readonly outgoing = new Map<string, 'pre-switchover' | 'completed'>();
  /** While true, an allocation set `desired: stopped` is not torn down (a slow teardown): a test can lose the node then. */
  holdStops = false;
  /** While true, an incoming allocation (`migration`) is taken but never reported (a destination stuck preparing). */
  holdIncoming = false;
  private migrateSub: Subscription | undefined;
  /** incoming allocations: allocId -> the allocation (waiting for the source's switchover) */
  private readonly incoming = new Map<string, Allocation>();
  private static readonly byId = new Map<string, SimNode>();

  constructor(
    private readonly nc: NatsConnection,
    readonly inventory: NodeInventory,
    private readonly heartbeatMs = 1000,
  ) {}

  get nodeId(): string {
    return this.inventory.nodeId;
  }

  async start(): Promise<void> {
    const js = this.nc.jetstream();
    // as the node agent: the scheduler makes the buckets, a node only binds (a node's credentials cannot create)
    for (let i = 0; ; i++) {
      try {
        this.status = await js.views.kv(KV_BUCKETS.status, { bindOnly: true });
        this.allocs = await js.views.kv(KV_BUCKETS.allocs, { bindOnly: true });
        break;
      } catch (err) {
        if (i > 300) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await this.register();
    await this.openWatch();
    this.timer = setInterval(() => void this.heartbeat(), this.heartbeatMs);
    if (this.serveMigration) {
      SimNode.byId.set(this.nodeId, this);
      this.migrateSub = this.nc.subscribe(internalSubjects.migrate(this.nodeId), {
        callback: (_err, m) => {
          if (this.partitioned) return; // cut off: no answer
          const req = JSON.parse(dec.decode(m.data)) as NodeMigrateRequest;
          this.migrateLog.push(req);
          void (this.beforeMigrateReply ?? (async () => undefined))(req)
            .then(() => this.onMigrate(req))
            .then(async (result) => {
              await this.afterMigrate?.(req); // done, and the answer may still fail (a lost answer)
              return result;
            })
            .then(
            (result) => m.respond(enc.encode(JSON.stringify({ ok: true, result }))),
            (e: unknown) => m.respond(enc.encode(JSON.stringify({ ok: false, error: { code: 'UNAVAILABLE', message: (e as Error).message, retryable: true } }))),
          );
        },
      });
    }
  }

  private beats = 0;

  private async openWatch(): Promise<void> {
    this.watch?.stop();
    const w = await this.allocs.watch({ key: `${this.nodeId}.>` });
    this.watch = w;
    void (async () => {
      for await (const e of w) await this.onAlloc(e);
    })().catch(() => undefined);
  }

  /** Acts on every allocation of this node not running here (what a node agent's listing finds). */
  private async resync(): Promise<void> {
    const keys: string[] = [];
    for await (const k of await this.allocs.keys(`${this.nodeId}.>`)) keys.push(k);
    for (const k of keys) {
      if (this.running.has(k.slice(this.nodeId.length + 1))) continue;
      const e = await this.allocs.get(k);
      if (e) await this.onAlloc(e);
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.watch?.stop();
    this.migrateSub?.unsubscribe();
    SimNode.byId.delete(this.nodeId);
  }

  /** One `nodes.<n>.migrate` request, as a node agent with live migration answers it. */
  private async onMigrate(req: NodeMigrateRequest): Promise<NodeMigrateReply> {
    const mine = this.running.has(req.allocId);
    switch (req.action) {
      case 'check': {
        if (!mine) throw new Error(`no VM of allocation ${req.allocId} here`);
        if (this.incoming.has(req.allocId)) return { state: 'inmigrate' };
        // the tenant VM's replicas: the tenant's allocations here (the incoming ones are another VM)
        const members = [...this.running].filter(([id, r]) => r.tenantId === req.tenantId && !this.incoming.has(id)).map(([id]) => id);
        // what a node agent reports of the VM for its destination (a made-up layout: the scheduler copies it unread)
        const vm = {
          boot: { vcpus: 1, maxVcpus: 8, memoryMiB: 512, maxMemoryMiB: 8192 },
          vcpus: members.length,
          memoryMiB: 512 * members.length,
          rootPorts: 8,
          pci: {},
          cpus: [],
          dimms: [],
          hotplugged: [],
          members: members.map((allocId) => ({ allocId, guestIfNames: {} })),
        };
        return { state: 'running', members, vm };
      }
      case 'start':
        if (!mine) throw new Error(`no VM of allocation ${req.allocId} here`);
        if (this.outgoing.get(req.allocId) === 'completed') throw new Error(`the VM of ${req.allocId} switched over already`);
        this.outgoing.set(req.allocId, 'pre-switchover'); // a start resent (a new leader) leaves it as it is
        return { state: 'pre-switchover', transferredBytes: 1 << 20 };
      case 'continue': {
        // the switchover: the destination holding the incoming copy of this allocation runs it
        for (const n of SimNode.byId.values()) {
          for (const [id, a] of n.incoming) {
            // a group switches over as one: any member's source names the VM
            if (a.migration?.fromAllocId !== req.allocId && !a.migration?.group?.some((g) => g.fromAllocId === req.allocId)) continue;
            n.incoming.delete(id);
            if (n.failAfterSwitchover) {
              // the state loaded, then the destination VM died: torn down, FAILED
              n.running.delete(id);
              await n.report(a, 'FAILED');
            } else await n.report(a, 'RUNNING', false, { state: 'completed', uri: `sim:${n.nodeId}` });
          }
        }
        this.outgoing.set(req.allocId, 'completed');
        return { state: 'completed', downtimeMs: 1, totalMs: 2 };
      }
      case 'cancel':
        // on a source that switched over already, cancel resumes nothing
        if (this.outgoing.get(req.allocId) === 'completed') return { state: 'completed' };
        this.outgoing.delete(req.allocId);
        return { state: 'cancelled' };
      case 'resume':
        this.outgoing.delete(req.allocId);
        return { state: 'running' };
    }
  }

  private async register(): Promise<void> {
    const req = { nodeId: this.nodeId, inventory: this.inventory, running: [...this.running.keys()], startedAt: new Date().toISOString() };
    for (let i = 0; ; i++) {
      try {
        const m = await this.nc.request(internalSubjects.register(this.nodeId), enc.encode(JSON.stringify(req)), { timeout: 3000 });
        const env = JSON.parse(dec.decode(m.data));
        if (!env.ok) throw new Error(env.error.message);
        this.epoch = env.result.epoch;
        return;
      } catch (err) {
        if (i > 40) throw err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  /** A network partition: no heartbeats, nothing seen of KV; the sandboxes keep running meanwhile. */
  partition(): void {
    this.partitioned = true;
  }

  /**
   * The node is back: register again (learning its new epoch if it was declared lost), tear down every sandbox
   * whose allocation is gone or was made under an older epoch, then heartbeat with what still runs.
   */
  async rejoin(): Promise<void> {
    this.partitioned = false;
    await this.register();
    for (const [allocId] of [...this.running]) {
      const e = await this.allocs.get(`${this.nodeId}.${allocId}`);
      const alloc = e && e.operation === 'PUT' && e.value.length ? (JSON.parse(dec.decode(e.value)) as Allocation) : null;
      if (!alloc || alloc.epoch < this.epoch || alloc.desired === 'stopped') {
        this.running.delete(allocId);
        this.tornDown.push(allocId);
      }
    }
    // what was written while it was cut off, as a node agent's periodic listing finds it (onAlloc skips what an
    // older epoch made)
    await this.resync();
    await this.heartbeat();
  }

  private async heartbeat(): Promise<void> {
    if (this.partitioned) return;
    // as the node agent's periodic key listing: an allocation the watch missed (its consumer lost with a killed
    // nats-server of a cluster) is found and started
    if (++this.beats % 4 === 0) await this.resync().catch(() => undefined);
    const hb = { nodeId: this.nodeId, epoch: this.epoch, at: new Date().toISOString(), sandboxes: this.running.size, replicas: this.running.size, running: [...this.running.keys()] };
    try {
      const m = await this.nc.request(internalSubjects.heartbeat(this.nodeId), enc.encode(JSON.stringify(hb)), { timeout: 2000 });
      const env = JSON.parse(dec.decode(m.data));
      if (env.ok && env.result?.reregister) await this.register();
    } catch {
      /* no leader right now (a takeover): the next beat tries again */
    }
  }

  private async onAlloc(e: KvEntry): Promise<void> {
    if (this.partitioned) return;
    const allocId = e.key.slice(this.nodeId.length + 1);
    const alloc = e.operation === 'PUT' && e.value.length ? (JSON.parse(dec.decode(e.value)) as Allocation) : null;
    if (alloc?.desired === 'stopped' && this.holdStops && this.running.has(allocId)) return;
    if (!alloc || alloc.desired === 'stopped') {
      this.incoming.delete(allocId);
      const had = this.running.get(allocId);
      this.running.delete(allocId);
      if (alloc && had) await this.report(alloc, 'STOPPED');
      return;
    }
    if (this.running.has(allocId)) {
      // OPERATE: containers stopped or started, everything else kept
      const stop = alloc.operationalState === 'STOPPED';
      if (stop === this.containersStopped.has(allocId)) return;
      if (stop) this.containersStopped.add(allocId);
      else {
        this.containersStopped.delete(allocId);
        this.containersStarted.add(allocId);
      }
      await this.report(alloc, stop ? 'STOPPED' : 'RUNNING', stop);
      return;
    }
    if (alloc.epoch < this.epoch) return;
    const cpus = alloc.resources.cpus ?? [];
    const vfs = alloc.interfaces.flatMap((i) => (i.type === 'sriov' ? [i.sriov.vfPciAddress] : []));
    for (const [other, held] of this.running) {
      const cpu = cpus.find((c) => held.cpus.includes(c));
      const vf = vfs.find((v) => held.vfs.includes(v));
      if (cpu !== undefined || vf !== undefined) this.conflicts.push(`${allocId} and ${other} both hold ${cpu !== undefined ? `CPU ${cpu}` : `VF ${vf}`}`);
      if (held.vnfId === alloc.vnfId && held.replica === alloc.replica) this.conflicts.push(`${allocId} and ${other} are the same replica`);
    }
    this.running.set(allocId, { cpus, vfs, vnfId: alloc.vnfId, replica: alloc.replica, tenantId: alloc.tenantId });
    if (alloc.migration && this.serveMigration) {
      this.incoming.set(allocId, alloc);
      if (this.holdIncoming) return;
      // one VM for the group: it waits for the state once every member's allocation is here
      const group = alloc.migration.group?.map((g) => g.allocId) ?? [allocId];
      if (!group.every((id) => this.incoming.has(id))) return;
      for (const id of group) await this.report(this.incoming.get(id)!, 'STARTING', false, { state: 'incoming', uri: `sim:${this.nodeId}` });
    } else if (this.holdStarts) await this.report(alloc, 'STARTING');
    else if (alloc.operationalState === 'STOPPED') {
      // placed while its VNF is OPERATEd STOPPED: the sandbox is made, the container created and not started
      this.containersStopped.add(allocId);
      await this.report(alloc, 'STOPPED', true);
    } else {
      this.containersStarted.add(allocId);
      await this.report(alloc, 'RUNNING');
    }
  }

  private async report(alloc: Allocation, state: ReplicaStatus['state'], containersStopped = false, migration?: ReplicaStatus['migration']): Promise<void> {
    const st: ReplicaStatus = {
      allocId: alloc.allocId,
      nodeId: this.nodeId,
      epoch: alloc.epoch,
      tenantId: alloc.tenantId,
      vnfId: alloc.vnfId,
      replica: alloc.replica,
      state,
      sandboxId: `sim-${alloc.tenantId}`,
      interfaces: alloc.interfaces.map((i) => ({ name: i.name, mac: i.mac, ips: i.ips ?? [], ...(i.type === 'sriov' ? { pciAddress: i.sriov.vfPciAddress } : {}) })),
      updatedAt: new Date().toISOString(),
      ...(containersStopped ? { containersStopped } : {}),
      ...(migration ? { migration } : {}),
    };
    await this.status.put(`${this.nodeId}.${alloc.allocId}`, enc.encode(JSON.stringify(st)));
  }
}
