/**
 * Live updates for the page, as server-sent events (`GET /api/events/stream`):
 * - `notification` events: the tenants' notifications from the JetStream stream EDGENFV_EVENTS, each with its
 *   stream sequence as the SSE `id`, so a client that reconnects with `Last-Event-ID: <seq>` gets every event
 *   after it (replayed from the stream by sequence) and then the live ones. A tenant's stream carries its own only.
 * - `node` events (operator only): a node's record, pushed when its heartbeat arrives (at most every
 *   `nodeRefreshMs` per node), when one of its replicas changes, after an action on it, and when a node that
 *   heartbeated falls silent (so a lost node shows as lost).
 * - `gap`: the events after Last-Event-ID are no longer in the stream (limits): reload the overview.
 */
import type { ServerResponse } from 'node:http';
import { consumerOpts, type JetStreamSubscription, type NatsConnection, type Subscription } from 'nats';
import { EVENTS_STREAM, internalSubjects, type EventPayload, type NodeRecord } from '@edgenfv/contracts';
import type { ApiClient, StoredEvent } from '@edgenfv/api-client';
import type { Logger } from 'pino';
import type { Principal } from './auth.js';

export interface SseClient {
  principal: Principal;
  send(event: string, data: unknown, id?: number): void;
}

/** Writes SSE frames to a hijacked response; comments every `keepAliveMs` keep proxies from closing it. */
export function sseWriter(res: ServerResponse, keepAliveMs = 15_000): { send: SseClient['send']; close: () => void } {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  res.write('retry: 1000\n\n');
  const timer = setInterval(() => res.write(': keep-alive\n\n'), keepAliveMs);
  timer.unref();
  return {
    send(event, data, id) {
      if (res.writableEnded) return;
      res.write(`${id !== undefined ? `id: ${id}\n` : ''}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    },
    close() {
      clearInterval(timer);
      if (!res.writableEnded) res.end();
    },
  };
}

/** The stream's current first and last sequence (0, 0 when empty). */
export async function streamBounds(nc: NatsConnection): Promise<{ first: number; last: number }> {
  const jsm = await nc.jetstreamManager();
  const { state } = await jsm.streams.info(EVENTS_STREAM);
  return { first: state.first_seq, last: state.last_seq };
}

/**
 * Follows the notifications matching `filter` from sequence `fromSeq` (inclusive; undefined: only new ones),
 * with an ordered push consumer (works with nats-server 2.9). Returns a stop function.
 */
export async function followEvents(
  nc: NatsConnection,
  filter: string,
  fromSeq: number | undefined,
  onEvent: (e: StoredEvent) => void,
): Promise<() => void> {
  const co = consumerOpts();
  co.orderedConsumer();
  // named, not looked up by subject ($JS.API.STREAM.NAMES is not among the dashboard principal's rights)
  co.bindStream(EVENTS_STREAM);
  co.filterSubject(filter);
  if (fromSeq === undefined) co.deliverNew();
  else co.startSequence(Math.max(1, fromSeq));
  const sub: JetStreamSubscription = await nc.jetstream().subscribe(filter, co);
  void (async () => {
    for await (const m of sub) {
      let event: EventPayload;
      try {
        event = m.json<EventPayload>();
      } catch {
        continue;
      }
      onEvent({ seq: m.seq, subject: m.subject, tenantId: m.subject.split('.')[3] ?? '', event });
    }
  })().catch(() => undefined);
  return () => sub.unsubscribe();
}

/** Node records pushed to the operator's streams, driven by heartbeats (no polling while nodes beat). */
export class NodeFeed {
  readonly #clients = new Set<SseClient>();
  readonly #lastPush = new Map<string, number>();
  readonly #lastBeat = new Map<string, number>();
  readonly #pending = new Map<string, NodeJS.Timeout>();
  #sub: Subscription | undefined;
  #silenceTimer: NodeJS.Timeout | undefined;
  #warned = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly api: ApiClient,
    private readonly logger: Logger,
    private readonly nodeRefreshMs = 2_000,
    /** A node that beat before and has been silent this long is re-read (to show it NotReady/lost). */
    private readonly silenceMs = 5_000,
  ) {}

  add(client: SseClient): void {
    this.#clients.add(client);
    if (!this.#sub) this.#start();
  }

  remove(client: SseClient): void {
    this.#clients.delete(client);
    if (this.#clients.size === 0) this.#stop();
  }

  /** Re-read a node soon (debounced) and push it. */
  touch(nodeId: string, delayMs = 150): void {
    if (this.#clients.size === 0 || this.#pending.has(nodeId)) return;
    const t = setTimeout(() => {
      this.#pending.delete(nodeId);
      void this.#push(nodeId);
    }, delayMs);
    t.unref();
    this.#pending.set(nodeId, t);
  }

  /** Push a record we already have (the reply of an action). */
  publish(node: NodeRecord): void {
    this.#lastPush.set(node.id, Date.now());
    for (const c of this.#clients) if (c.principal.role === 'operator') c.send('node', node);
  }

  close(): void {
    this.#clients.clear();
    this.#stop();
  }

  #start(): void {
    this.#sub = this.nc.subscribe(internalSubjects.allHeartbeats, {
      callback: (err, m) => {
        if (err) {
          // e.g. a NATS principal without subscribe rights on the heartbeats: nodes then update on events and actions only
          if (!this.#warned) this.logger.warn({ err: err.message }, `cannot follow node heartbeats (${internalSubjects.allHeartbeats}): node pictures update on replica events and actions only`);
          this.#warned = true;
          return;
        }
        const nodeId = m.subject.split('.')[4];
        if (!nodeId) return;
        const now = Date.now();
        this.#lastBeat.set(nodeId, now);
        if (now - (this.#lastPush.get(nodeId) ?? 0) >= this.nodeRefreshMs) this.touch(nodeId, 0);
      },
    });
    this.#silenceTimer = setInterval(() => {
      const now = Date.now();
      for (const [nodeId, at] of this.#lastBeat) {
        if (now - at >= this.silenceMs && now - (this.#lastPush.get(nodeId) ?? 0) >= this.silenceMs) this.touch(nodeId, 0);
      }
    }, this.silenceMs);
    this.#silenceTimer.unref();
  }

  #stop(): void {
    this.#sub?.unsubscribe();
    this.#sub = undefined;
    if (this.#silenceTimer) clearInterval(this.#silenceTimer);
    for (const t of this.#pending.values()) clearTimeout(t);
    this.#pending.clear();
  }

  async #push(nodeId: string): Promise<void> {
    try {
      this.publish(await this.api.getNode(nodeId));
    } catch (err) {
      this.logger.debug({ err, nodeId }, 'node refresh failed');
    }
  }
}
