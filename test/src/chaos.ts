/**
 * Chaos under load (issue 12, item 2): a steady workload of instantiate / scale / heal / terminate through the API
 * (each request retried with its requestId until answered) while faults are injected, bounded in count and time:
 * kill -9 of the scheduler leader (restarted), a nats-server restart (same store), a paused node (its heartbeats
 * and KV view stop past the grace: fenced, healed elsewhere; then back: it tears its stale sandboxes down).
 * Most nodes are simulated (test/src/sim-node.ts: the real node protocol, no VMs); with `realNodes` the run also
 * has real node agents with real QEMU VMs (a virtual site, test/src/site.ts; their faults in chaos-real.ts): kill -9
 * of a node agent, of a QEMU process, of a guest agent inside a VM (through the operator-only debug console),
 * SIGSTOP of a node agent past the grace. At the end: every op occurrence final,
 * nothing double-booked, no orphan allocation or sandbox (on a real node: no record, QEMU process or cgroup that no
 * allocation owns; after its VNF's terminate, nothing at all; the site's teardown leaves nothing behind).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, credsAuthenticator, type ConnectionOptions, type NatsConnection } from 'nats';
import { KV_BUCKETS, type Allocation, type OpOcc, type Vnf } from '@edgenfv/contracts';
import { startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';
import { startScheduler, type SchedulerProc } from './harness.js';
import { SimNode, simulatedNodeInventory } from './sim-node.js';
import { waitNodeKnown } from './state-fixtures.js';
import { RetryingClient } from './retrying-client.js';
import { startSite, type VirtualSite } from './site.js';
import { realChaos, realOrphans, type RealChaos } from './chaos-real.js';

export interface ChaosOptions {
  jobs: number;
  nodes: number;
  graceMs: number;
  /** Real node agents with real VMs (a virtual site; needs root, QEMU and the guest image). */
  realNodes?: number;
  log?: (line: string) => void;
}

export interface ChaosResult {
  faults: number;
  requests: number;
  lost: number;
  answeredTwice: number;
  doubleBooked: number;
  orphans: number;
  realVms: number;
  simulatedNodes: number;
  /** Node ids: which were real node agents (with real VMs) and which simulated. */
  nodeIds: { real: string[]; simulated: string[] };
  /** What a real-VM fault did not do as it should (empty when all went as expected). */
  realProblems: string[];
  notFinal: number;
  failedTemp: number;
  faultsByKind: Record<string, number>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runChaos(o: ChaosOptions): Promise<ChaosResult> {
  const log = o.log ?? (() => undefined);
  const dir = mkdtempSync(join(tmpdir(), 'edgenfv-chaos-'));
  let nats: NatsServerHandle | undefined;
  let site: VirtualSite | undefined;
  let real: RealChaos | undefined;
  let realNodeIds: string[] = [];
  const scheds: (SchedulerProc | undefined)[] = [];
  const nodes: SimNode[] = [];
  const conns: NatsConnection[] = [];
  const cleanups: (() => void)[] = [];
  const faultsByKind: Record<string, number> = {};
  const fault = (k: string): void => {
    faultsByKind[k] = (faultsByKind[k] ?? 0) + 1;
    log(`fault: ${k}`);
  };
  try {
    // where NATS and the schedulers run: plain, or the virtual site of the real nodes (JWT auth, its own scheduler
    // config; the second scheduler replica joins it)
    let url: string;
    let connOpts: ConnectionOptions;
    let startSched: (i: number) => Promise<SchedulerProc>;
    let restartNats: () => Promise<void>;
    if (o.realNodes) {
      site = await startSite({ nodes: o.realNodes, heartbeatGraceMs: o.graceMs, heartbeatIntervalMs: Math.max(250, Math.floor(o.graceMs / 4)), nodeConfig: { fencing: { stopAfterMs: 600_000 }, guest: { debugConsole: true, livenessIntervalMs: 5000 } }, log: (l) => log(`site: ${l}`) });
      await site.waitReady();
      url = site.natsUrl;
      connOpts = { servers: url, authenticator: credsAuthenticator(new TextEncoder().encode(site.connect.creds)), inboxPrefix: site.connect.inboxPrefix };
      startSched = (i) => site!.startScheduler(`chaos-${i}`);
      restartNats = () => site!.restartNats(1000);
      scheds.push(site.scheduler, await startSched(1));
    } else {
      nats = await startNatsServer({ storeDir: join(dir, 'js') });
      const port = nats.port;
      const config = join(dir, 'scheduler.json');
      writeFileSync(config, JSON.stringify({ networks: [] }));
      url = `nats://127.0.0.1:${port}`;
      connOpts = { servers: url };
      startSched = (i) =>
        startScheduler({ EDGENFV_NATS_URL: url, EDGENFV_CONFIG: config, EDGENFV_INSTANCE_ID: `chaos-${i}`, EDGENFV_HEARTBEAT_GRACE_MS: String(o.graceMs) });
      restartNats = async () => {
        await nats!.stop();
        await sleep(1000);
        nats = await startNatsServer({ storeDir: join(dir, 'js'), port });
      };
      for (const i of [0, 1]) scheds.push(await startSched(i));
    }
    const nc = await connect({ ...connOpts, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    conns.push(nc);
    for (let i = 0; i < o.nodes; i++) {
      const id = `chaos-${i}`;
      // sized so that the workload (at most 4x jobs VNFs, half of them kept, 3 vCPUs each) never fills them: the real
      // VMs' faults heal onto these nodes (the real ones are cordoned), and a heal finding no room ends FAILED (the
      // first full run with the guest agent kill: `0/6 nodes fit`, the simulated nodes full of the workload's VNFs)
      const { inventory, cleanup } = await simulatedNodeInventory(id, { numaNodes: 1, cpusPerNuma: 64, isolatedPerNuma: 8, vfsPerNuma: 4, physnet: 'physnet1' });
      cleanups.push(cleanup);
      const conn = await connect({ ...connOpts, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
      conns.push(conn);
      const n = new SimNode(conn, inventory, Math.max(100, Math.floor(o.graceMs / 4)));
      await n.start();
      nodes.push(n);
      await waitNodeKnown(nc, id);
    }
    const client = new RetryingClient(nc, { giveUpMs: 180_000 });
    await client.call('nfv.v1.admin.tenants.create', { id: 'chaos', quota: { vcpus: 1000 } });
    if (site) {
      realNodeIds = site.nodes.map((n) => n.id);
      real = realChaos(site, client, nodes.map((n) => n.nodeId), o.graceMs, log);
      await real.setup();
    }

    const leaderIndex = async (): Promise<number> => {
      const kv = await nc.jetstream().views.kv('edgenfv_leader');
      const e = await kv.get('scheduler');
      const holder = e && e.operation === 'PUT' ? (e.json<{ holder: string }>().holder ?? '') : '';
      return holder === 'chaos-1' ? 1 : 0;
    };

    const job = async (i: number): Promise<void> => {
      try {
        const descriptor = { name: `cf-${i}`, replicas: 2, resources: { vcpus: 1, memoryMiB: 64 }, image: { ref: 'builtin:vrouter' } };
        const inst = await client.mutate('chaos', 'vnfs.instantiate', { requestId: `ci-${i}`, descriptor });
        // an instantiate that failed (its node lost mid-way: FAILED_TEMP, then failed) leaves nothing to scale
        if ((await client.waitOp('chaos', inst.opOccId)).operationState !== 'COMPLETED') return;
        const sc = await client.mutate('chaos', 'vnfs.scale', { requestId: `cs-${i}`, id: inst.vnfId, replicas: 3 }).catch(() => undefined);
        if (sc) await client.waitOp('chaos', sc.opOccId);
        const h = await client.mutate('chaos', 'vnfs.heal', { requestId: `ch-${i}`, id: inst.vnfId }).catch(() => undefined);
        if (h) await client.waitOp('chaos', h.opOccId);
        if (i % 2 === 0) {
          const t = await client.mutate('chaos', 'vnfs.terminate', { requestId: `ct-${i}`, id: inst.vnfId });
          await client.waitOp('chaos', t.opOccId);
        }
      } catch (err) {
        // a request refused for the VNF's state (answered) is the workload's business; unanswered ones are counted
        // by the client
        log(`job ${i} stopped: ${(err as Error).message}`);
      }
    };

    let faultsDone = false;
    const faults = (async () => {
      await sleep(2000);
      // 1. kill -9 of the leader, restarted
      const li = await leaderIndex();
      scheds[li]!.child.kill('SIGKILL');
      await scheds[li]!.exited;
      fault('scheduler-leader-kill9');
      scheds[li] = await startSched(li);
      await sleep(2000);
      // 2. a paused node past the grace: fenced and healed elsewhere, then back
      const paused = nodes[0]!;
      paused.partition();
      fault('node-paused-past-grace');
      await sleep(o.graceMs + 3000);
      await paused.rejoin();
      // 3. nats-server restart (same store and port)
      fault('nats-server-restart');
      await restartNats();
      // 4. the real VMs' faults (node agent, QEMU, paused real node)
      await real?.inject(fault);
      faultsDone = true;
    })();

    const workers = 3;
    let next = 0;
    // the workload goes on while faults are injected (the real VMs' take minutes), at least `jobs`, at most 4x
    await Promise.all([
      faults,
      ...Array.from({ length: workers }, async () => {
        while (next < o.jobs || (!faultsDone && next < 4 * o.jobs)) await job(next++);
      }),
    ]);

    // settle: the engine finishes what is open, stale sandboxes are torn down, fenced reservations freed
    const js = nc.jetstream();
    const readAll = async <T>(kv: Awaited<ReturnType<typeof js.views.kv>>): Promise<Map<string, T>> => {
      const keys: string[] = [];
      for await (const k of await kv.keys()) keys.push(k);
      const out = new Map<string, T>();
      for (const k of keys) {
        const e = await kv.get(k);
        if (e && e.operation === 'PUT' && e.value.length) out.set(k, e.json<T>());
      }
      return out;
    };
    let notFinal = 0;
    let open: OpOcc[] = [];
    let orphans = 0;
    let realLeft: string[] = [];
    for (let attempt = 0; attempt < 120; attempt++) {
      let ops: Map<string, OpOcc>;
      let allocs: Map<string, Allocation>;
      let vnfs: Map<string, Vnf>;
      try {
        ops = await readAll<OpOcc>(await js.views.kv(KV_BUCKETS.opoccs));
        allocs = await readAll<Allocation>(await js.views.kv(KV_BUCKETS.allocs));
        vnfs = await readAll<Vnf>(await js.views.kv(KV_BUCKETS.vnfs));
      } catch (err) {
        log(`settle read failed (retrying): ${(err as Error).message}`);
        await sleep(500);
        continue;
      }
      open = [...ops.values()].filter((op) => !['COMPLETED', 'FAILED', 'ROLLED_BACK'].includes(op.operationState));
      notFinal = open.length;
      // operations the scheduler started itself (heals of a lost node's replicas) that wait in FAILED_TEMP are
      // decided like the client's own: failed
      for (const op of ops.values()) {
        if (op.operationState === 'FAILED_TEMP' && !op.pendingAction) await client.call(`nfv.v1.tenant.${op.tenantId}.opoccs.fail`, { id: op.id }).catch(() => undefined);
      }
      const referenced = new Set([...vnfs.values()].flatMap((v) => v.replicas.map((r) => r.allocId).filter(Boolean) as string[]));
      const allocIds = new Set([...allocs.values()].map((a) => a.allocId));
      orphans = 0;
      for (const a of allocIds) if (!referenced.has(a)) orphans++; // an allocation no replica owns
      for (const n of nodes) for (const id of n.running.keys()) if (!allocIds.has(id)) orphans++; // a sandbox nobody wants
      realLeft = site ? site.nodes.flatMap((n) => realOrphans(n, new Set([...allocs.values()].filter((a) => a.nodeId === n.id).map((a) => a.allocId)))) : [];
      orphans += realLeft.length;
      if (notFinal === 0 && orphans === 0) break;
      await sleep(500);
    }
    for (const l of realLeft) log(`orphan: ${l}`);
    for (const op of open) log(`not final: ${op.operation} ${op.id} ${op.operationState} (vnf ${op.vnfId}): ${op.steps.map((s) => s.message).join(' | ')}`);
    // the real VNF terminated: nothing of it may be left on the real nodes; then the site's teardown checks the rest
    if (real) {
      const left = await real.finish();
      for (const l of left) log(`orphan after terminate: ${l}`);
      orphans += left.length;
      // clients and the extra scheduler replicas first: a nats.js connection still writing while the site's
      // nats-server stops can throw from its socket (write after end) and end this process
      for (const n of nodes) n.stop();
      for (const c of conns.splice(1)) await c.close().catch(() => undefined);
      for (const sc of scheds) if (sc !== site!.scheduler) await sc?.stop().catch(() => undefined);
      await nc.close().catch(() => undefined);
      const t = await site!.teardown();
      site = undefined;
      for (const l of t.leftovers) log(`orphan after teardown: ${l}`);
      orphans += t.leftovers.length;
    }
    const realIds = real ? realNodeIds : [];
    const doubleBooked = nodes.reduce((s, n) => s + n.conflicts.length, 0);
    return {
      faults: Object.values(faultsByKind).reduce((a, b) => a + b, 0),
      requests: client.requests,
      lost: client.unanswered,
      answeredTwice: client.answeredDifferently().length,
      doubleBooked,
      orphans,
      realVms: real?.vms() ?? 0,
      simulatedNodes: nodes.length,
      nodeIds: { real: realIds, simulated: nodes.map((n) => n.nodeId) },
      realProblems: real?.problems ?? [],
      notFinal,
      failedTemp: client.failedTemp,
      faultsByKind,
    };
  } finally {
    for (const n of nodes) n.stop();
    for (const c of conns) await c.close().catch(() => undefined);
    for (const s of scheds) await s?.stop().catch(() => undefined);
    await nats?.stop();
    await site?.teardown().catch(() => undefined);
    for (const c of cleanups) c();
    rmSync(dir, { recursive: true, force: true });
  }
}
