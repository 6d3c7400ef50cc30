/** Small JSON + CAS helpers over raw nats.js KV handles (the API's Store passes its `.kv` handles in). */
import type { JetStreamClient, KV, KvEntry } from 'nats';

const enc = new TextEncoder();
const dec = new TextDecoder();

export const LEDGER_BUCKET = 'edgenfv_ledger';

/** The buckets placement and the node registry work on. */
export interface SchedulerBuckets {
  nodes: KV; // edgenfv_nodes
  ledger: KV; // edgenfv_ledger (this module's own: one ledger per node)
  allocs: KV; // edgenfv_allocs
}

export async function openSchedulerBuckets(js: JetStreamClient, opts: { replicas?: number; maxBytes?: number } = {}): Promise<SchedulerBuckets> {
  // allow_direct off: reads from the stream leader only (see state/store.ts)
  const o = { history: 1, replicas: opts.replicas ?? 1, max_bytes: opts.maxBytes ?? 256 * 1024 * 1024, allow_direct: false };
  const [nodes, ledger, allocs] = await Promise.all([
    js.views.kv('edgenfv_nodes', o),
    js.views.kv(LEDGER_BUCKET, o),
    js.views.kv('edgenfv_allocs', o),
  ]);
  return { nodes, ledger, allocs };
}

export function isCasConflict(err: unknown): boolean {
  const msg = err instanceof Error ? err.message : String(err);
  return /wrong last sequence|key exists/i.test(msg);
}

export function encodeJson(v: unknown): Uint8Array {
  return enc.encode(JSON.stringify(v));
}

/**
 * A PUT entry's JSON value (null for deletes). With `valid`, a value of the wrong shape throws like bad JSON does:
 * a watch skips that entry (state/follow.ts), a read fails.
 */
export function decodeEntry<T>(e: KvEntry | null, valid?: (v: unknown) => boolean): { value: T; revision: number } | null {
  if (!e || e.operation !== 'PUT' || e.value.length === 0) return null;
  const value: unknown = JSON.parse(dec.decode(e.value));
  if (valid && !valid(value)) throw new Error(`${e.bucket}/${e.key} does not have the expected shape`);
  return { value: value as T, revision: e.revision };
}

export async function getJson<T>(kv: KV, key: string, valid?: (v: unknown) => boolean): Promise<{ value: T; revision: number } | null> {
  return decodeEntry<T>(await kv.get(key), valid);
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
/** The least a node record must have for the registry and the cluster state to use it. */
export const isNodeRecord = (v: unknown): boolean => isObj(v) && typeof v.id === 'string' && Number.isInteger(v.epoch) && isObj(v.inventory);
/** The least a node ledger must have. */
export const isLedger = (v: unknown): boolean => isObj(v) && typeof v.nodeId === 'string' && Number.isInteger(v.epoch) && isObj(v.reservations);

/** CAS write: create when `revision` is 0/undefined, else update. Resolves to the new revision, or null on conflict. */
export async function casPut(kv: KV, key: string, value: unknown, revision: number | undefined): Promise<number | null> {
  try {
    return revision ? await kv.update(key, encodeJson(value), revision) : await kv.create(key, encodeJson(value));
  } catch (err) {
    if (isCasConflict(err)) return null;
    throw err;
  }
}
