/**
 * Typed JSON access to the JetStream KV buckets that hold the scheduler's state.
 * Every write is a compare-and-set on the entry's revision (`create` for new keys, `update` with the revision
 * read); `mutate` wraps the read-modify-CAS loop so that concurrent writers never lose an update.
 */
import type { JetStreamClient, KV, KvOptions, NatsConnection } from 'nats';
import {
  asAppError,
  KV_BUCKETS,
  UnavailableError,
  EVENTS_STREAM,
  subjects,
  type Allocation,
  type NodeRecord,
  type OpOcc,
  type ReplicaStatus,
  type Tenant,
  type Vnf,
} from '@edgenfv/contracts';


export interface Versioned<T> {
  value: T;
  revision: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export function isCasConflict(err: unknown): boolean {
  const msg = err instanceof Error ? err.message : String(err);
  return /wrong last sequence|key exists/i.test(msg);
}

/**
 * The message id that makes a compare-and-set serializable on a NATS cluster: nats-server before 2.9.21 checks
 * `Nats-Expected-Last-Subject-Sequence` of a replicated stream only before proposing the write, so two writes based
 * on the same revision that arrive together can both be stored (nats-server issue #4320) — the second overwriting
 * the first (the 3-server cluster test lost quota charges that way). Duplicate detection by `Nats-Msg-Id` does
 * count the writes in flight: with the id `<bucket>/<key>@<revision read>`, at most one write per revision read is
 * stored; the other gets `duplicate` in its ack and is a lost CAS. Within the stream's duplicate window (2 min);
 * writes from one revision further apart than that are caught by the sequence check itself.
 */
export function casMsgId(bucket: string, key: string, expected: number): string {
  return `${bucket}/${key}@${expected}`;
}

export class JsonBucket<T> {
  constructor(
    readonly kv: KV,
    readonly name: string,
    private readonly js?: JetStreamClient,
  ) {}

  async get(key: string): Promise<Versioned<T> | null> {
    const e = await this.kv.get(key);
    if (!e || e.operation !== 'PUT' || e.value.length === 0) return null;
    return { value: JSON.parse(dec.decode(e.value)) as T, revision: e.revision };
  }

  /** CAS-create: resolves to the revision, or null when the key already exists. */
  async create(key: string, value: T): Promise<number | null> {
    try {
      return await this.kv.create(key, enc.encode(JSON.stringify(value)));
    } catch (err) {
      if (isCasConflict(err)) return null;
      throw err;
    }
  }

  /** CAS-update: resolves to the new revision, or null when the revision is stale. */
  async update(key: string, value: T, revision: number): Promise<number | null> {
    try {
      if (this.js) {
        const ack = await this.js.publish(`$KV.${this.name}.${key}`, enc.encode(JSON.stringify(value)), {
          expect: { lastSubjectSequence: revision },
          msgID: casMsgId(this.name, key, revision),
        });
        return ack.duplicate ? null : ack.seq;
      }
      return await this.kv.update(key, enc.encode(JSON.stringify(value)), revision);
    } catch (err) {
      if (isCasConflict(err)) return null;
      throw err;
    }
  }

  /** Unconditional write: only for values a single writer owns. */
  async put(key: string, value: T): Promise<number> {
    return this.kv.put(key, enc.encode(JSON.stringify(value)));
  }

  /** Deletes; with `revision`, only if the entry is still at that revision. Missing keys are fine. */
  async delete(key: string, revision?: number): Promise<boolean> {
    try {
      await this.kv.delete(key, revision === undefined ? undefined : { previousSeq: revision });
      return true;
    } catch (err) {
      if (isCasConflict(err)) return false;
      throw err;
    }
  }

  /** Each live key once (nats.js may yield a key twice when it is updated during the listing). */
  async keys(filter = '>'): Promise<string[]> {
    const out = new Set<string>();
    const it = await this.kv.keys(filter);
    for await (const k of it) out.add(k);
    return [...out];
  }

  /** Every live value under `filter` (e.g. `tenant-a.>`). */
  async list(filter = '>'): Promise<Versioned<T>[]> {
    const keys = await this.keys(filter);
    const got = await Promise.all(keys.map((k) => this.get(k)));
    return got.filter((v): v is Versioned<T> => v !== null);
  }

  /**
   * Read-modify-write with CAS, retried on conflict. `fn` gets the current value (or null) and returns the new
   * value, or `undefined` to write nothing. Throws what `fn` throws (nothing is written then).
   */
  async mutate(
    key: string,
    fn: (cur: T | null) => T | undefined | Promise<T | undefined>,
    opts: { attempts?: number } = {},
  ): Promise<Versioned<T> | null> {
    const attempts = opts.attempts ?? 200;
    for (let i = 0; i < attempts; i++) {
      const cur = await this.get(key);
      const next = await fn(cur ? structuredClone(cur.value) : null);
      if (next === undefined) return cur;
      const rev = cur ? await this.update(key, next, cur.revision) : await this.create(key, next);
      if (rev !== null) return { value: next, revision: rev };
      // lost the race: back off a little (jittered) and read again
      await new Promise((r) => setTimeout(r, Math.random() * Math.min(2 + i, 20)));
    }
    throw new UnavailableError(`too much contention on ${this.name}/${key}; retry`);
  }
}

export interface StoreLimits {
  /** max_bytes of each state bucket (default 256 MiB): past it a write fails instead of filling the disk. */
  bucketMaxBytes?: number;
  /** max_bytes of the notifications stream (default 1 GiB; the oldest are dropped first, like max_age). */
  eventsMaxBytes?: number;
}

export interface StoreOptions {
  /** JetStream replicas of each bucket (1 on one machine; 3 or 5 in a NATS cluster). */
  replicas?: number;
  limits?: StoreLimits;
}

export const DEFAULT_BUCKET_MAX_BYTES = 256 * 1024 * 1024;
export const DEFAULT_EVENTS_MAX_BYTES = 1024 * 1024 * 1024;

/** All scheduler buckets, opened (and created when missing) once. */
export class Store {
  private constructor(
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly tenants: JsonBucket<StoredTenant>,
    readonly vnfs: JsonBucket<Vnf>,
    readonly opoccs: JsonBucket<OpOcc>,
    readonly requests: JsonBucket<StoredReply>,
    readonly names: JsonBucket<NameClaim>,
    readonly nodes: JsonBucket<NodeRecord>,
    readonly allocs: JsonBucket<Allocation>,
    readonly status: JsonBucket<ReplicaStatus>,
    /** Tenants' issued and revoked NATS user keys (api/credentials.ts). */
    readonly credentials: JsonBucket<CredentialRecord>,
  ) {}

  static async open(nc: NatsConnection, opts: StoreOptions = {}): Promise<Store> {
    const js = nc.jetstream();
    const replicas = opts.replicas ?? 1;
    const max_bytes = opts.limits?.bucketMaxBytes ?? DEFAULT_BUCKET_MAX_BYTES;
    // allow_direct off: a read goes to the stream leader, never to a replica still catching up (a restarted
    // server of an R3 cluster would otherwise answer a read-modify-CAS with an old value, or none).
    const open = async <T>(name: string, extra: Partial<KvOptions> = {}): Promise<JsonBucket<T>> =>
      new JsonBucket<T>(await js.views.kv(name, { history: 1, replicas, max_bytes, allow_direct: false, ...extra }), name, js);
    const [tenants, vnfs, opoccs, requests, names, nodes, allocs, status, credentials] = await Promise.all([
      open<StoredTenant>(KV_BUCKETS.tenants),
      open<Vnf>(KV_BUCKETS.vnfs),
      open<OpOcc>(KV_BUCKETS.opoccs),
      open<StoredReply>(KV_BUCKETS.requests, { ttl: 24 * 3600 * 1000 }),
      open<NameClaim>('edgenfv_names'),
      open<NodeRecord>(KV_BUCKETS.nodes),
      open<Allocation>(KV_BUCKETS.allocs),
      open<ReplicaStatus>(KV_BUCKETS.status),
      open<CredentialRecord>(KV_BUCKETS.credentials),
    ]);
    await ensureEventsStream(nc, replicas, opts.limits?.eventsMaxBytes ?? DEFAULT_EVENTS_MAX_BYTES);
    return new Store(nc, js, tenants, vnfs, opoccs, requests, names, nodes, allocs, status, credentials);
  }
}

/** The tenant record as kept in KV: the API's Tenant plus the op occurrences whose quota was already given back. */
export interface StoredTenant extends Tenant {
  /** Op occurrence ids refunded (latest last, bounded): a refund retried by a new leader is not given twice. */
  refunded?: string[];
  /** Op occurrence ids whose acceptance charged quota (latest last, bounded): what a failed request undoes. */
  charged?: string[];
}

/** The first reply to a request that carried a requestId (or a marker while it is being handled). */
/** One tenant's credential record in `edgenfv_credentials` (public keys and times only). */
export interface CredentialRecord {
  tenantId: string;
  /** Users issued and not revoked: public key -> issued at (seconds). */
  active: Record<string, number>;
  /** Revoked users: public key -> revoked at (seconds); JWTs of that key issued at or before are refused. */
  revoked: Record<string, number>;
}

export interface StoredReply {
  op: string;
  state: 'pending' | 'done';
  since: string;
  reply?: unknown;
  /** sha256 of the request (idempotency.ts bodyHash): another body with the same requestId is a CONFLICT. */
  bodyHash?: string;
}

/** A tenant's claim on a VNF name (names are unique within a tenant while the VNF is instantiated). */
export interface NameClaim {
  vnfId: string;
  at: string;
}

async function ensureEventsStream(nc: NatsConnection, replicas: number, maxBytes: number): Promise<void> {
  const jsm = await nc.jetstreamManager();
  const cfg = {
    name: EVENTS_STREAM,
    subjects: [subjects.eventsWildcard],
    max_age: 7 * 24 * 3600 * 1_000_000_000, // nanoseconds: a week of notifications
    max_msgs: 1_000_000,
    max_bytes: maxBytes,
    num_replicas: replicas,
  };
  try {
    await jsm.streams.info(EVENTS_STREAM);
  } catch {
    try {
      await jsm.streams.add(cfg);
    } catch (err) {
      // another replica created it at the same time
      if (!/already in use|already exists/i.test(String(err))) throw err;
    }
  }
}

/**
 * Retries a store call through transient failures (a NATS server or stream leader away; about 15 s), for steps
 * whose outcome must be known: the last failure is thrown.
 */
export async function persistently<T>(call: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await call();
    } catch (err) {
      if (i >= 30 || !asAppError(err).retryable) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}
