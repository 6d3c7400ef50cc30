/**
 * The real-VM side of the chaos run (test/src/chaos.ts): real node agents of a virtual site (test/src/site.ts: own
 * netns, NATS principal, cgroup parent and state folder each) running real QEMU VMs (TCG here), and the faults only
 * they can have: kill -9 of a node agent (its VMs keep running and are re-adopted), kill -9 of a QEMU process (the
 * agent finds the VM gone and boots the replica again), kill -9 of the guest agent inside a VM (through the VM's
 * operator-only debug console: the node agent's guest liveness watch finds the replica's container gone with the
 * old agent, tears the VM down and reports the replica FAILED; the engine heals it), and SIGSTOP of a node agent past the grace (the scheduler
 * fences the node and heals its replica elsewhere), then SIGCONT (the agent registers, learns its new epoch and
 * tears its stale VM down). What is left on a real node is checked against the allocations: every sandbox record,
 * QEMU process and cgroup must belong to an allocation of that node.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { VirtualSite, SiteNode } from './site.js';
import type { RetryingClient } from './retrying-client.js';
import { killGuestAgent } from './guest-debug.js';

/** Two tenants, so two VMs per real node: one for the QEMU kill, one that goes stale while its node is paused. */
export const REAL_TENANTS = ['chaosr', 'chaosq'] as const;
type RealTenant = (typeof REAL_TENANTS)[number];
const CGROUP_ROOTS = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface RecordView {
  sandboxId: string;
  tenantId: string;
  runDir?: string;
  pid?: number;
  cgroupDir?: string;
  allocIds: string[];
  /** Booted, its guest agent connected, every replica's container started (what the node agent records). */
  ready: boolean;
}

/** The node agent's sandbox records (what it believes it runs). */
export function sandboxRecords(n: SiteNode): RecordView[] {
  const dir = join(n.stateDir, 'sandboxes');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .flatMap((f) => {
      try {
        const r = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { sandboxId: string; tenantId: string; state?: string; runDir?: string; vm?: { pid?: number }; cgroupDir?: string; replicas?: Record<string, { state?: string }> };
        const replicas = Object.values(r.replicas ?? {});
        const ready = r.state === 'running' && replicas.length > 0 && replicas.every((x) => x.state === 'running');
        return [{ sandboxId: r.sandboxId, tenantId: r.tenantId, ...(r.runDir ? { runDir: r.runDir } : {}), ...(r.vm?.pid ? { pid: r.vm.pid } : {}), ...(r.cgroupDir ? { cgroupDir: r.cgroupDir } : {}), allocIds: Object.keys(r.replicas ?? {}), ready }];
      } catch {
        return []; // being rewritten
      }
    });
}

/** QEMU processes in the node's cgroup subtree. */
export function qemuPidsOf(n: SiteNode): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/comm`, 'utf8').startsWith('qemu') && readFileSync(`/proc/${d}/cgroup`, 'utf8').includes(`/${n.cgroupParent}/`);
      } catch {
        return false;
      }
    })
    .map(Number);
}

function cgroupChildren(n: SiteNode): string[] {
  return CGROUP_ROOTS.flatMap((root) => {
    const d = join(root, n.cgroupParent);
    if (!existsSync(d)) return [];
    return readdirSync(d, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => join(d, e.name));
  });
}

/** What is on the node that no allocation of it owns: records, QEMU processes, cgroups. */
export function realOrphans(n: SiteNode, allocIds: Set<string>): string[] {
  const out: string[] = [];
  const recs = sandboxRecords(n);
  for (const r of recs) {
    const foreign = r.allocIds.filter((a) => !allocIds.has(a));
    if (foreign.length) out.push(`${n.id}: sandbox ${r.sandboxId} runs ${foreign.join(',')} (no allocation)`);
    if (r.allocIds.length === 0) out.push(`${n.id}: sandbox ${r.sandboxId} without replicas`);
  }
  const pids = new Set(recs.map((r) => r.pid).filter(Boolean));
  for (const pid of qemuPidsOf(n)) if (!pids.has(pid)) out.push(`${n.id}: QEMU pid ${pid} without a record`);
  const cgs = new Set(recs.map((r) => r.cgroupDir).filter(Boolean));
  for (const d of cgroupChildren(n)) if (![...cgs].some((c) => c === d || c!.startsWith(`${d}/`))) out.push(`${n.id}: cgroup ${d} without a record`);
  return out;
}

export interface RealChaos {
  /** Instantiates, for each real tenant, one replica per real node (two VMs per node) and waits until they run. */
  setup(): Promise<void>;
  /** The VM-level faults, one after the other; `fault(kind)` counts each. */
  inject(fault: (kind: string) => void): Promise<void>;
  /** Terminates the real VNFs and checks the real nodes are empty: what is left, named. */
  finish(): Promise<string[]>;
  /** Distinct VMs (sandboxes) seen on real nodes. */
  vms(): number;
  problems: string[];
}

export function realChaos(site: VirtualSite, client: RetryingClient, simNodes: string[], graceMs: number, log: (l: string) => void): RealChaos {
  const api = (op: string, body: unknown): Promise<any> => client.call(op, body);
  const seen = new Set<string>();
  const problems: string[] = [];
  const vnfIds: Partial<Record<RealTenant, string>> = {};
  const note = (): void => {
    for (const n of site.nodes) for (const r of sandboxRecords(n)) seen.add(r.sandboxId);
  };
  const vnf = async (t: RealTenant): Promise<any> => (await api(`nfv.v1.tenant.${t}.vnfs.get`, { id: vnfIds[t] })).result;
  const until = async <T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined> | T | undefined): Promise<T | undefined> => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const v = await probe();
      if (v !== undefined) return v;
      if (Date.now() > end) {
        problems.push(`${what}: not within ${timeoutMs} ms`);
        log(`real: ${what}: not within ${timeoutMs} ms`);
        return undefined;
      }
      await sleep(500);
    }
  };
  const replicaOn = async (t: RealTenant, nodeId: string): Promise<any> => ((await vnf(t))?.replicas ?? []).find((r: any) => r.nodeId === nodeId);

  return {
    problems,
    vms: () => seen.size,
    async setup() {
      const real = site.nodes.map((n) => n.id);
      // the real VNF goes on the real nodes (simulated ones cordoned meanwhile), one replica (one VM) per node
      for (const id of simNodes) await api('nfv.v1.admin.nodes.cordon', { id });
      const started = [];
      for (const t of REAL_TENANTS) {
        await api('nfv.v1.admin.tenants.create', { id: t });
        const inst = await client.mutate(t, 'vnfs.instantiate', {
          requestId: `real-${t}`,
          descriptor: {
            name: 'rv',
            replicas: real.length,
            placement: { antiAffinity: 'node' },
            resources: { vcpus: 1, memoryMiB: 128 },
            image: { ref: 'builtin:busybox' },
            command: ['sleep', '86400'],
          },
        });
        vnfIds[t] = inst.vnfId;
        started.push({ t, opOccId: inst.opOccId as string });
      }
      for (const { t, opOccId } of started) {
        const op = await client.waitOp(t, opOccId, 20 * 60_000);
        if (op.operationState !== 'COMPLETED') throw new Error(`the real VNF of ${t} did not start: ${JSON.stringify(op.error)}`);
      }
      note();
      log(`real: VNFs ${Object.values(vnfIds).join(', ')} run on ${real.join(', ')} (${seen.size} VMs)`);
      // from here the workload and the heals go to the simulated nodes: the real nodes keep the VMs they have
      for (const id of real) await api('nfv.v1.admin.nodes.cordon', { id });
      for (const id of simNodes) await api('nfv.v1.admin.nodes.uncordon', { id });
    },

    async inject(fault) {
      const first = site.nodes[0]!;
      const last = site.nodes[site.nodes.length - 1]!;
      // 1. kill -9 of a QEMU process: the agent finds the VM gone; the replica runs again (booted again on the node
      // or healed onto another) and nothing of the dead VM stays
      const victim = sandboxRecords(last).find((r) => r.tenantId === 'chaosq');
      const rep = await replicaOn('chaosq', last.id);
      if (!victim?.pid || !rep) problems.push(`${last.id}: no VM of chaosq to kill`);
      else {
        process.kill(victim.pid, 'SIGKILL');
        fault('real-qemu-kill9');
        await until(`${last.id}: chaosq replica ${rep.index} running again after its QEMU was killed`, 15 * 60_000, async () => {
          note();
          const v = await vnf('chaosq');
          const r = v?.replicas?.find((x: any) => x.index === rep.index);
          if (r?.state !== 'RUNNING') return undefined;
          const rebooted = sandboxRecords(last).find((x) => x.ready && x.allocIds.includes(r.allocId) && x.pid && x.pid !== victim.pid && qemuPidsOf(last).includes(x.pid));
          const healedAway = r.allocId !== rep.allocId && !sandboxRecords(last).some((x) => x.sandboxId === victim.sandboxId);
          return rebooted || healedAway ? r : undefined;
        }).then((r) => r && log(`real: ${last.id} QEMU ${victim.pid} killed; replica running again on ${r.nodeId} (${r.allocId})`));
      }
      // 2. kill -9 of the guest agent inside a VM (the debug console's shell): /init starts a new agent that knows
      // no container; the node agent's liveness watch tears the VM down and reports the replica FAILED
      // (`replicaLost`), the engine heals it (onto a simulated node: the real ones are cordoned)
      // a VM whose guest agent the node agent is connected to and whose container runs: killed before that (a VM
      // still booting), the agent the node agent first meets is already the restarted one, and nothing is lost
      const gvictim = await until(`${last.id}: a ready VM to kill the guest agent of`, 15 * 60_000, async () => {
        const recs = sandboxRecords(last).filter((r) => r.ready);
        return recs.find((r) => r.tenantId === 'chaosq') ?? recs.find((r) => r.tenantId === 'chaosr');
      }).catch(() => undefined);
      const gtenant = gvictim?.tenantId as RealTenant | undefined;
      const grep = gtenant ? await replicaOn(gtenant, last.id) : undefined;
      if (!gvictim?.runDir || !gtenant || !grep) problems.push(`${last.id}: no VM to kill the guest agent of`);
      else {
        const killed = await killGuestAgent(gvictim.runDir).catch((err: Error) => {
          problems.push(`${last.id}: guest agent of ${gvictim.sandboxId} not killed: ${err.message}`);
          return undefined;
        });
        if (killed !== undefined) {
          fault('real-guest-agent-kill9');
          await until(`${last.id}: ${gtenant} replica ${grep.index} healed after its guest agent was killed`, 15 * 60_000, async () => {
            note();
            const v = await vnf(gtenant);
            const r = v?.replicas?.find((x: any) => x.index === grep.index);
            // a heal that ended without placing it (no room): said at once, not after the timeout
            if (r?.state === 'STOPPED' && !r.allocId && !v.activeOpOccId && v.lastOpOutcome?.state === 'FAILED') {
              problems.push(`${last.id}: the heal of ${gtenant} replica ${grep.index} failed: ${v.lastOpOutcome.error?.message}`);
              return null;
            }
            const vmGone = !sandboxRecords(last).some((x) => x.sandboxId === gvictim.sandboxId) && !(gvictim.pid && qemuPidsOf(last).includes(gvictim.pid));
            return r?.state === 'RUNNING' && r.allocId !== grep.allocId && vmGone ? r : undefined;
          }).then((r) => {
            const lost = last.logs.some((l) => l.includes('"msg":"replicas lost: guest agent restarted') && l.includes(gvictim.sandboxId));
            if (r && !lost) problems.push(`${last.id}: ${gvictim.sandboxId} healed but the node agent never logged its replicas lost (guest agent restarted)`);
            if (r) log(`real: ${last.id} guest agent (pid ${killed} in ${gvictim.sandboxId}) killed; replica FAILED, VM torn down, healed onto ${r.nodeId} (${r.allocId})`);
          });
        }
      }
      // 3. kill -9 of a node agent: its VM keeps running and is re-adopted by the restarted agent
      const before = sandboxRecords(first).map((r) => r.sandboxId);
      await site.killAgent(first.id);
      fault('real-node-agent-kill9');
      await site.startAgent(first.id);
      // the restarted agent adopts the running VMs before it registers (logged `re-adoption done {adopted}`)
      const adoption = first.logs.map((l) => {
        try {
          return JSON.parse(l) as { msg?: string; adopted?: string[] };
        } catch {
          return {};
        }
      }).find((l) => l.msg === 're-adoption done');
      if (!before.every((id) => adoption?.adopted?.includes(id))) problems.push(`${first.id}: VMs ${before.join(',')} not re-adopted: ${JSON.stringify(adoption)}`);
      else log(`real: ${first.id} agent killed and restarted, VM(s) ${before.join(',')} re-adopted`);
      // 4. SIGSTOP of a node agent past the grace: the node is declared lost, its replica healed onto a simulated
      // node; SIGCONT: the agent tears its stale VM down
      const paused = first;
      const pid = paused.child!.pid!;
      const staleRep = await replicaOn('chaosr', paused.id);
      // (if the agent's restart above outlasted the grace, the node was fenced then and its VMs healed away already)
      if (!staleRep) log(`real: ${paused.id} has no replica left to go stale (fenced during the agent restart)`);
      process.kill(pid, 'SIGSTOP');
      fault('real-node-paused-past-grace');
      await sleep(graceMs);
      if (staleRep) await until(`${paused.id}: NotReady and its replica healed elsewhere`, 5 * 60_000, async () => {
        const node = (await api('nfv.v1.admin.nodes.get', { id: paused.id })).result;
        const v = await vnf('chaosr');
        const healed = v?.replicas?.find((r: any) => r.index === staleRep?.index);
        return node?.health === 'NotReady' && healed && healed.nodeId !== paused.id && healed.state === 'RUNNING' ? true : undefined;
      });
      process.kill(pid, 'SIGCONT');
      await until(`${paused.id}: stale VM torn down after SIGCONT`, 5 * 60_000, () => (sandboxRecords(paused).length === 0 && qemuPidsOf(paused).length === 0 ? true : undefined));
      log(`real: ${paused.id} paused past the grace, replica healed elsewhere; after SIGCONT its VM is gone`);
    },

    async finish() {
      for (const tn of REAL_TENANTS) {
        const t = await client.mutate(tn, 'vnfs.terminate', { requestId: `real-term-${tn}`, id: vnfIds[tn] });
        await client.waitOp(tn, t.opOccId, 10 * 60_000);
      }
      await until('real nodes empty after the terminate', 5 * 60_000, () =>
        site.nodes.every((n) => sandboxRecords(n).length === 0 && qemuPidsOf(n).length === 0) ? true : undefined,
      );
      return site.nodes.flatMap((n) => realOrphans(n, new Set()));
    },
  };
}
