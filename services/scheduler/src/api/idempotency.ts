/**
 * `requestId` idempotency (API.md): the same requestId from the same tenant within 24 h returns the first reply
 * and does nothing again. A pending marker is created with CAS before the work, so two concurrent copies of one
 * request cannot both run; the reply replaces the marker. Retryable failures (UNAVAILABLE, INTERNAL) drop the
 * marker, so that a retry does the work. The same requestId with a different request (operation or body) is a
 * CONFLICT, never a replay of the first reply.
 */
import { createHash } from 'node:crypto';
import { ConflictError, UnavailableError, type Envelope } from '@edgenfv/contracts';
import { persistently, type JsonBucket, type StoredReply } from '../state/store.js';

const PENDING_STALE_MS = 60_000;

export function requestKey(tenantId: string, requestId: string): string {
  return `${tenantId}.${createHash('sha256').update(requestId).digest('hex').slice(0, 40)}`;
}

/** sha256 of the request with its keys sorted (the same request in any key order hashes the same). */
export function bodyHash(body: unknown): string {
  const canon = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(canon) : v && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon((v as Record<string, unknown>)[k])])) : v;
  return createHash('sha256').update(JSON.stringify(canon(body))).digest('hex');
}

export async function once(
  bucket: JsonBucket<StoredReply>,
  key: string,
  op: string,
  work: () => Promise<Envelope<unknown>>,
  hash?: string,
): Promise<Envelope<unknown>> {
  for (let attempt = 0; attempt < 300; attempt++) {
    const marker: StoredReply = { op, state: 'pending', since: new Date().toISOString(), ...(hash ? { bodyHash: hash } : {}) };
    const rev = await bucket.create(key, marker);
    if (rev !== null) {
      let reply: Envelope<unknown>;
      try {
        reply = await work();
      } catch (err) {
        await bucket.delete(key);
        throw err;
      }
      const retryable = !reply.ok && (reply.error.code === 'UNAVAILABLE' || reply.error.code === 'INTERNAL');
      // The work is done (or cleanly refused): its answer is stored even through a NATS server going away, or
      // a retry would find a stale 'pending' marker a minute later and do the work again.
      await persistently<unknown>(() => (retryable ? bucket.delete(key) : bucket.update(key, { ...marker, state: 'done', reply }, rev)));
      return reply;
    }
    const cur = await bucket.get(key);
    if (!cur) continue; // dropped meanwhile: try to take it
    if (cur.value.op !== op || (hash && cur.value.bodyHash && cur.value.bodyHash !== hash)) {
      throw new ConflictError(`requestId was already used for a different request (${cur.value.op}${cur.value.op === op ? ' with another body' : ''})`, { field: 'requestId' });
    }
    if (cur.value.state === 'done') return cur.value.reply as Envelope<unknown>;
    if (Date.now() - Date.parse(cur.value.since) > PENDING_STALE_MS) {
      // the replica handling it died: take over the marker
      await bucket.delete(key, cur.revision);
      continue;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new UnavailableError('the same requestId is still being handled; retry');
}

