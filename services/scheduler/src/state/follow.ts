/**
 * Following a KV bucket for as long as its owner runs. One malformed value must not end the watch (a throw inside
 * `for await` ends the iterator for good): each entry is handled on its own, a bad one is skipped and reported (log
 * and `edgenfv_kv_entries_skipped_total`); a watch that ends while its owner still runs (server restart, consumer
 * lost) is opened again from the revision after the last one seen (`edgenfv_kv_watch_restarts_total`).
 */
import type { KvEntry, QueuedIterator } from 'nats';
import { Counter, type Registry } from 'prom-client';
import type { Logger } from 'pino';

/** Where skipped entries and restarted watches are counted (one per scheduler process). */
export interface WatchReport {
  skipped(bucket: string, key: string, err: unknown): void;
  restarted(bucket: string): void;
}

export function watchMetrics(registry: Registry): WatchReport {
  const skipped = new Counter({
    name: 'edgenfv_kv_entries_skipped_total',
    help: 'KV entries a watch skipped because their value is malformed.',
    labelNames: ['bucket'],
    registers: [registry],
  });
  const restarts = new Counter({
    name: 'edgenfv_kv_watch_restarts_total',
    help: 'KV watches opened again after they ended.',
    labelNames: ['bucket'],
    registers: [registry],
  });
  return {
    skipped: (bucket) => skipped.inc({ bucket }),
    restarted: (bucket) => restarts.inc({ bucket }),
  };
}

export interface FollowOptions {
  bucket: string;
  /** Opens the watch: from `resumeFromRevision` when given (a restart), else as the caller's first watch. */
  open: (resumeFromRevision?: number) => Promise<QueuedIterator<KvEntry>>;
  /** Handles one entry; a throw skips this entry only. */
  onEntry: (e: KvEntry) => void;
  /** False once the owner stopped: an ended watch is then not opened again. */
  running: () => boolean;
  logger?: Logger | undefined;
  report?: WatchReport | undefined;
  /** Wait between attempts to open the watch again; default 500 ms. */
  retryMs?: number;
}

/** A followed bucket: `stop()` ends the current watch and prevents restarts. */
export class KvFollower {
  private current: QueuedIterator<KvEntry> | undefined;
  private lastRevision = 0;
  private stopped = false;
  readonly done: Promise<void>;
  private resolveDone!: () => void;

  private constructor(private readonly o: FollowOptions) {
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  /** Opens the first watch (its errors are the caller's) and keeps following in the background. */
  static async start(o: FollowOptions): Promise<KvFollower> {
    const f = new KvFollower(o);
    f.current = await o.open();
    void f.loop();
    return f;
  }

  stop(): void {
    this.stopped = true;
    this.current?.stop();
  }

  private alive(): boolean {
    return !this.stopped && this.o.running();
  }

  private async loop(): Promise<void> {
    while (this.current) {
      const it = this.current;
      try {
        for await (const e of it) {
          if (e.revision > this.lastRevision) this.lastRevision = e.revision;
          try {
            this.o.onEntry(e);
          } catch (err) {
            this.o.report?.skipped(this.o.bucket, e.key, err);
            this.o.logger?.error({ err, bucket: this.o.bucket, key: e.key, revision: e.revision }, 'malformed KV entry skipped');
          }
        }
      } catch (err) {
        if (this.alive()) this.o.logger?.warn({ err, bucket: this.o.bucket }, 'KV watch failed');
      }
      this.current = undefined;
      while (this.alive() && !this.current) {
        await new Promise((r) => setTimeout(r, this.o.retryMs ?? 500));
        if (!this.alive()) break;
        try {
          this.current = await this.o.open(this.lastRevision + 1);
          this.o.report?.restarted(this.o.bucket);
          this.o.logger?.warn({ bucket: this.o.bucket, fromRevision: this.lastRevision + 1 }, 'KV watch ended: opened again');
        } catch (err) {
          this.o.logger?.warn({ err, bucket: this.o.bucket }, 'KV watch could not be opened again: retrying');
        }
      }
    }
    this.resolveDone();
  }
}

/** Parses a PUT entry's JSON value and checks it with `valid`; throws (the entry is skipped) when either fails. */
export function entryJson<T>(e: KvEntry, valid: (v: unknown) => boolean, what: string): T {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder().decode(e.value));
  } catch (err) {
    throw new Error(`${what} ${e.key} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  if (!valid(v)) throw new Error(`${what} ${e.key} does not have the expected shape`);
  return v as T;
}

export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
export const hasStrings = (v: unknown, ...keys: string[]): boolean => isObject(v) && keys.every((k) => typeof v[k] === 'string');
