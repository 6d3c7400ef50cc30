/**
 * A lean JetStream publisher for KV compare-and-set writes on the leader's hot path. nats.js's `kv.update`/`create`
 * cost a timer, an Error with a stack trace (a "Cancelled" error even on success) and several promise layers per
 * write, which made the client, not the server, the limit of placements per second on a 2-core machine. This
 * publishes to `$KV.<bucket>.<key>` with the `Nats-Expected-Last-Subject-Sequence` header and a reply subject on
 * one shared inbox subscription, parses the PubAck, and sweeps timeouts with one interval timer.
 */
import { createInbox, headers, type NatsConnection, type Subscription } from 'nats';
import { casMsgId } from '../state/store.js';

const dec = new TextDecoder();

interface Pending {
  resolve: (rev: number | null) => void;
  reject: (err: Error) => void;
  deadline: number;
}

/** An Error with nats.js's `code` for the same condition (see isTransientNatsError in contracts). */
function publishError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

export class KvPublisher {
  private readonly prefix: string;
  private readonly sub: Subscription;
  private readonly pending = new Map<string, Pending>();
  private readonly sweeper: NodeJS.Timeout;
  private next = 0;
  private outbox: { subject: string; data: Uint8Array; h: ReturnType<typeof headers>; token: string }[] = [];
  private flushScheduled = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs = 5000,
  ) {
    // under the connection's inbox prefix: a restricted principal may only subscribe there (docs/security.md)
    this.prefix = createInbox((nc as NatsConnection & { options?: { inboxPrefix?: string } }).options?.inboxPrefix);
    this.sub = nc.subscribe(`${this.prefix}.*`, {
      callback: (err, msg) => {
        if (err) return;
        const token = msg.subject.slice(this.prefix.length + 1);
        const p = this.pending.get(token);
        if (!p) return;
        this.pending.delete(token);
        if (msg.headers && msg.headers.code >= 300) {
          // 503 (no responders: the stream's leader is away) and 408 carry nats.js's codes, so that they are
          // transient (UNAVAILABLE, retried) like the same failure through nats.js's own KV calls
          p.reject(publishError(`JetStream publish failed: ${msg.headers.code} ${msg.headers.description}`, String(msg.headers.code)));
          return;
        }
        try {
          const ack = JSON.parse(dec.decode(msg.data)) as { seq?: number; duplicate?: boolean; error?: { err_code?: number; description?: string } };
          if (ack.error) {
            // 10071: wrong last sequence (the CAS lost)
            if (ack.error.err_code === 10071 || /wrong last sequence/i.test(ack.error.description ?? '')) p.resolve(null);
            else p.reject(new Error(`JetStream publish failed: ${ack.error.description ?? 'unknown error'}`));
          } else if (ack.duplicate) p.resolve(null); // another write from the same revision won
          else if (typeof ack.seq === 'number') p.resolve(ack.seq);
          else p.reject(new Error('JetStream publish: malformed ack'));
        } catch (e) {
          p.reject(e as Error);
        }
      },
    });
    this.sweeper = setInterval(() => {
      const now = Date.now();
      for (const [t, p] of this.pending) {
        if (p.deadline <= now) {
          this.pending.delete(t);
          p.reject(publishError(`JetStream publish timed out after ${this.timeoutMs} ms`, 'TIMEOUT'));
        }
      }
    }, Math.min(1000, this.timeoutMs));
    this.sweeper.unref();
  }

  /**
   * Writes `<bucket>.<key>` if its last revision is `expected` (0: the key must not exist). Resolves to the new
   * revision, or null when the CAS lost (also when a deleted key's marker is in the way: callers fall back).
   */
  cas(bucket: string, key: string, data: Uint8Array, expected: number): Promise<number | null> {
    const token = (this.next++).toString(36);
    const h = headers();
    h.set('Nats-Expected-Last-Subject-Sequence', String(expected));
    // the same CAS made serializable on a NATS cluster (see casMsgId in state/store.ts)
    h.set('Nats-Msg-Id', casMsgId(bucket, key, expected));
    return new Promise<number | null>((resolve, reject) => {
      this.pending.set(token, { resolve, reject, deadline: Date.now() + this.timeoutMs });
      this.outbox.push({ subject: `$KV.${bucket}.${key}`, data, h, token });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /**
   * Publishes everything queued in this turn of the event loop together: nats.js writes its buffer to the socket
   * once per microtask checkpoint, so publishing from many independent promise chains meant one small socket
   * write per message.
   */
  private flush(): void {
    this.flushScheduled = false;
    const batch = this.outbox;
    this.outbox = [];
    for (const m of batch) {
      try {
        this.nc.publish(m.subject, m.data, { headers: m.h, reply: `${this.prefix}.${m.token}` });
      } catch (err) {
        const p = this.pending.get(m.token);
        this.pending.delete(m.token);
        p?.reject(err as Error);
      }
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    this.sub.unsubscribe();
    for (const p of this.pending.values()) p.reject(new Error('publisher closed'));
    this.pending.clear();
  }
}
