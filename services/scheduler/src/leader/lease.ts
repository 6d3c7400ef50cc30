/**
 * Leader election with a lease in JetStream KV (`edgenfv_leader`, key `scheduler`): a candidate becomes leader by
 * CAS-creating the key (or CAS-replacing a lease whose expiry passed), renews it with CAS every ttl/3, and steps
 * down by deleting it with CAS. The bucket's TTL (max_age) removes the key of a leader that died, so another
 * candidate takes over within about one TTL. A leader that cannot renew deposes itself before its lease could
 * expire (renewedAt + ttl - margin), so two leaders never overlap as long as clocks agree within the margin.
 * The lease's KV revision at election is the leader's `term`: it only grows, a fencing token for its writes.
 */
import type { JetStreamClient, KV } from 'nats';
import type { Logger } from 'pino';
import { UnavailableError } from '@edgenfv/contracts';
import { casPut, getJson } from '../placement/kv.js';

export const LEADER_BUCKET = 'edgenfv_leader';
export const LEADER_KEY = 'scheduler';

export interface LeaseValue {
  holder: string;
  term: number;
  acquiredAt: string;
  renewedAt: string;
  expiresAt: string;
  ttlMs: number;
}

export interface LeaderLeaseOptions {
  /** This replica's id (unique among the candidates). */
  candidateId: string;
  /** Lease time to live; default 5,000 ms. The bucket's TTL should be the same. */
  ttlMs?: number;
  /** How often the lease is renewed (leader) or watched for (candidates); default ttl/3. */
  tickMs?: number;
  /** A leader deposes itself this long before its lease would expire; default ttl/5. */
  marginMs?: number;
  logger?: Logger;
  now?: () => number;
  onElected?: (term: number) => void | Promise<void>;
  onDeposed?: (reason: string) => void | Promise<void>;
}

/** Opens (creates when missing) the leader bucket with its TTL. */
export async function openLeaderBucket(js: JetStreamClient, opts: { ttlMs?: number; replicas?: number } = {}): Promise<KV> {
  return js.views.kv(LEADER_BUCKET, { history: 1, ttl: opts.ttlMs ?? 5000, replicas: opts.replicas ?? 1 });
}

export class LeaderLease {
  private readonly ttlMs: number;
  private readonly tickMs: number;
  private readonly marginMs: number;
  private readonly now: () => number;
  private readonly log: Logger | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private leading = false;
  private revision = 0;
  private currentTerm = 0;
  private validUntil = 0;
  private seen: LeaseValue | undefined;
  private stopped = false;

  constructor(
    private readonly kv: KV,
    private readonly opts: LeaderLeaseOptions,
  ) {
    this.ttlMs = opts.ttlMs ?? 5000;
    this.tickMs = opts.tickMs ?? Math.max(50, Math.floor(this.ttlMs / 3));
    this.marginMs = opts.marginMs ?? Math.floor(this.ttlMs / 5);
    this.now = opts.now ?? Date.now;
    this.log = opts.logger?.child({ component: 'leader-lease', candidate: opts.candidateId });
  }

  /** Starts campaigning (first attempt right away). */
  async start(): Promise<void> {
    this.stopped = false;
    await this.tick();
    this.timer = setInterval(() => void this.tick(), this.tickMs);
    this.timer.unref();
  }

  /** Stops campaigning; a leader steps down (deletes its lease with CAS) so that another takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.leading) await this.stepDown('stopped');
  }

  /** Leader now, and the lease cannot have expired yet. */
  isLeader(): boolean {
    if (this.leading && this.now() >= this.validUntil) void this.depose('lease could not be renewed in time');
    return this.leading;
  }
  /** The term of this replica's leadership (0 when not leader). */
  term(): number {
    return this.leading ? this.currentTerm : 0;
  }
  /** The lease as last seen (who leads). */
  leader(): LeaseValue | undefined {
    return this.seen;
  }
  /** Throws UNAVAILABLE unless this replica holds a valid lease: call before a leader-only write. */
  assertLeader(): number {
    if (!this.isLeader()) throw new UnavailableError('this scheduler replica is not the leader', { details: { leader: this.seen?.holder } });
    return this.currentTerm;
  }

  async stepDown(reason = 'stepped down'): Promise<void> {
    if (!this.leading) return;
    const rev = this.revision;
    await this.depose(reason);
    try {
      await this.kv.delete(LEADER_KEY, { previousSeq: rev });
    } catch (err) {
      this.log?.debug({ err }, 'lease delete failed (already replaced or expired)');
    }
  }

  private lease(term: number, acquiredAt: string): LeaseValue {
    const now = this.now();
    return {
      holder: this.opts.candidateId,
      term,
      acquiredAt,
      renewedAt: new Date(now).toISOString(),
      expiresAt: new Date(now + this.ttlMs).toISOString(),
      ttlMs: this.ttlMs,
    };
  }

  private async depose(reason: string): Promise<void> {
    if (!this.leading) return;
    this.leading = false;
    this.currentTerm = 0;
    this.log?.warn({ reason }, 'deposed');
    try {
      await this.opts.onDeposed?.(reason);
    } catch (err) {
      this.log?.error({ err }, 'onDeposed failed');
    }
  }

  private async elected(term: number, revision: number, value: LeaseValue, startedAt: number): Promise<void> {
    this.leading = true;
    this.revision = revision;
    this.currentTerm = term;
    this.validUntil = startedAt + this.ttlMs - this.marginMs;
    this.seen = value;
    this.log?.info({ term }, 'elected leader');
    try {
      await this.opts.onElected?.(term);
    } catch (err) {
      this.log?.error({ err }, 'onElected failed; stepping down');
      await this.stepDown('onElected failed');
    }
  }

  private async tick(): Promise<void> {
    if (this.ticking || this.stopped) return;
    this.ticking = true;
    try {
      if (this.leading) await this.renew();
      else await this.campaign();
    } catch (err) {
      this.log?.debug({ err }, 'lease tick failed');
      if (this.leading && this.now() >= this.validUntil) await this.depose('lease could not be renewed in time');
    } finally {
      this.ticking = false;
    }
  }

  private async renew(): Promise<void> {
    const started = this.now();
    if (started >= this.validUntil) {
      await this.depose('lease could not be renewed in time');
      return;
    }
    const value = { ...this.lease(this.currentTerm, this.seen?.acquiredAt ?? new Date(started).toISOString()) };
    const rev = await casPut(this.kv, LEADER_KEY, value, this.revision);
    if (rev === null) {
      await this.depose('lease taken over');
      return;
    }
    this.revision = rev;
    this.validUntil = started + this.ttlMs - this.marginMs;
    this.seen = value;
  }

  private async campaign(): Promise<void> {
    const started = this.now();
    const cur = await getJson<LeaseValue>(this.kv, LEADER_KEY);
    if (cur) {
      this.seen = cur.value;
      if (Date.parse(cur.value.expiresAt) > started) return; // a live leader
      this.log?.info({ holder: cur.value.holder }, 'lease expired; taking over');
    }
    // Create (no lease) or replace the expired one; the winner's revision is its term.
    const acquiredAt = new Date(started).toISOString();
    const provisional = this.lease(0, acquiredAt);
    const rev = await casPut(this.kv, LEADER_KEY, provisional, cur?.revision);
    if (rev === null) return; // another candidate won
    // Record the term (= the revision that won) in the lease itself.
    const value = { ...provisional, term: rev };
    const rev2 = await casPut(this.kv, LEADER_KEY, value, rev);
    if (rev2 === null) return;
    await this.elected(rev, rev2, value, started);
  }
}
