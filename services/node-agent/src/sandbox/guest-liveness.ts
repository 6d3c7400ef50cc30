/**
 * Guest liveness: the node agent's look at each running VM's guest agent (after Kata's agent health checks). QEMU
 * alive is not enough: a guest agent that died is started again by the guest's /init, and the new one knows none of
 * the containers its predecessor ran (they run on, orphaned, out of the node's reach). Each look asks the agent's
 * Health (its `instanceId` is random per agent process) and ListContainers: a replica is lost when its container
 * is gone (the agent restarted, or the container vanished) or when the agent has not answered for `failAfterMs`.
 * What to do about it is the caller's (agent.ts reports the replicas FAILED; the engine heals them).
 */
import type { ReplicaRecord, SandboxRecord } from './records.js';
import type { GuestSession } from './ports.js';

export interface GuestLivenessOptions {
  /** A Health or ListContainers call slower than this counts as no answer. */
  callTimeoutMs: number;
  /** The agent is lost when it has not answered for this long. */
  failAfterMs: number;
  now?: () => number;
}

/** The replicas of one sandbox that are lost, and why (one reason for all: they share the guest agent). */
export interface GuestVerdict {
  sandboxId: string;
  tenantId: string;
  reason: 'restarted' | 'container-gone' | 'silent';
  message: string;
  lost: ReplicaRecord[];
}

interface Seen {
  instanceId?: string;
  /** When the agent first failed to answer, since its last answer. */
  silentSince?: number;
}

export class GuestLiveness {
  private readonly seen = new Map<string, Seen>();
  private readonly now: () => number;

  constructor(private readonly o: GuestLivenessOptions) {
    this.now = o.now ?? (() => performance.now());
  }

  /**
   * One look at a running sandbox's guest agent. Undefined: nothing lost (or not yet: an agent that does not answer
   * is given `failAfterMs`; one in a VM that is not running, e.g. paused for a live migration's switchover, is not
   * silent: `vmRunning` is asked then). The replicas looked at are those `running`; the caller holds the sandbox's lock.
   */
  async check(rec: SandboxRecord, session: () => Promise<GuestSession>, vmRunning: () => Promise<boolean> = async () => true): Promise<GuestVerdict | undefined> {
    const running = Object.values(rec.replicas).filter((r) => r.state === 'running');
    const seen = this.seen.get(rec.sandboxId) ?? {};
    this.seen.set(rec.sandboxId, seen);
    if (running.length === 0) return undefined;
    const verdict = (reason: GuestVerdict['reason'], message: string, lost: ReplicaRecord[]): GuestVerdict => ({ sandboxId: rec.sandboxId, tenantId: rec.tenantId, reason, message, lost });
    let health: { instanceId: string };
    let containers: { id: string }[];
    try {
      const s = await session();
      // the agent the session was made with (the boot's): an agent killed before the first look is still seen restarted
      seen.instanceId ??= s.instanceIdAtConnect || undefined;
      health = await s.health(this.o.callTimeoutMs);
      containers = await s.containers(this.o.callTimeoutMs);
    } catch (err) {
      if (!(await vmRunning())) {
        delete seen.silentSince;
        return undefined;
      }
      seen.silentSince ??= this.now();
      const silentMs = this.now() - seen.silentSince;
      if (silentMs < this.o.failAfterMs) return undefined;
      return verdict('silent', `guest agent not answering for ${Math.round(silentMs / 1000)} s: ${(err as Error).message}`, running);
    }
    delete seen.silentSince;
    const before = seen.instanceId;
    seen.instanceId = health.instanceId;
    const gone = running.filter((r) => !containers.some((c) => c.id === r.containerId));
    if (gone.length === 0) return undefined;
    const ids = gone.map((r) => r.containerId).join(', ');
    // a restarted agent knows none of the containers before it: every replica of the VM is out of reach
    if (before !== undefined && before !== health.instanceId) return verdict('restarted', `guest agent restarted: container ${ids} gone`, running);
    return verdict('container-gone', `container ${ids} gone from the guest agent`, gone);
  }

  /** Forgets a sandbox (torn down). */
  forget(sandboxId: string): void {
    this.seen.delete(sandboxId);
  }

  /** Forgets every sandbox not in `live`. */
  prune(live: Set<string>): void {
    for (const id of this.seen.keys()) if (!live.has(id)) this.seen.delete(id);
  }
}
