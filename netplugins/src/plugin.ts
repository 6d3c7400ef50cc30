/**
 * The attachment contract every type implements (after the CNI contract and sriov-cni):
 * parseConfig throws one error listing every issue; add records the original host state first, rolls back in
 * reverse order on failure, and returns the same result when called twice; del works from the record, is safe to
 * repeat and treats "already gone" as success; check compares the record with the live state.
 */
import { createHash } from 'node:crypto';
import { ConflictError, InternalError, NotFoundError, localMac, type AttachmentResult, type AttachmentType, type MacAddress } from '@edgenfv/contracts';
import type { Logger } from 'pino';
import { attachmentId, validateCtx, type AttachCtx } from './config.js';
import type { DeviceLocks } from './lock.js';
import type { RecordStore } from './records.js';

export interface AttachmentPlugin<C, R extends AttachmentResult = AttachmentResult> {
  readonly type: AttachmentType;
  parseConfig(raw: unknown): C;
  add(ctx: AttachCtx, cfg: C): Promise<R>;
  del(ctx: AttachCtx): Promise<void>;
  /** The recorded result of a completed ADD, if any (a repeated CNI ADD skips the IPAM with it). */
  existing(ctx: AttachCtx): R | undefined;
  /** Throws a CheckError naming what differs; `prev` (CNI prevResult) must match the record when given. */
  check(ctx: AttachCtx, prev?: R): Promise<void>;
  /** Deletes every recorded attachment whose `<containerId>/<ifName>` is not in `valid`; returns the ones it deleted. */
  gc(valid: ReadonlySet<string>): Promise<string[]>;
}

export interface PluginDeps {
  records: RecordStore;
  locks: DeviceLocks;
  logger?: Logger;
}

/** What differs between a record and the live state (CHECK). */
export class CheckError extends InternalError {
  constructor(readonly problems: string[]) {
    super(`check failed: ${problems.join('; ')}`, { details: { problems } });
  }
}

/** Record of one attachment: the parsed config, the original host state, and the result handed back. */
export interface AttachmentRecord<C, R, O = unknown> {
  version: 1;
  containerId: string;
  ifName: string;
  netns?: string;
  config: C;
  original: O;
  result: R;
  createdAt: string;
}

export function shortHash(s: string, hexChars = 8): string {
  return createHash('sha256').update(s).digest('hex').slice(0, hexChars);
}

/** A stable locally administered MAC for an attachment that was not given one. */
export function derivedMac(ctx: AttachCtx, salt = ''): MacAddress {
  const h = createHash('sha256').update(`${ctx.containerId}/${ctx.ifName}/${salt}`).digest();
  return localMac(h.subarray(0, 5));
}

function stable(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)))
      : x,
  );
}

/** ADD twice: same config -> same result; a different config for the same attachment is a conflict. */
export function sameConfigOrConflict<C>(type: string, ctx: AttachCtx, recorded: C, asked: C, recNetns?: string): void {
  if (stable(recorded) !== stable(asked) || (recNetns ?? '') !== (ctx.netns ?? '')) {
    throw new ConflictError(
      `${type} attachment ${ctx.containerId}/${ctx.ifName} already exists with another configuration: DEL it first`,
      { recorded, asked },
    );
  }
}

/** One step of an ADD that rollback can undo. */
export interface UndoStep {
  what: string;
  undo: () => Promise<void>;
}

/** Runs `steps`; when it throws, undoes what it pushed onto `undo` (after `first`) in reverse order, then rethrows. */
export async function withRollback<T>(logger: Logger | undefined, steps: (undo: UndoStep[]) => Promise<T>, first: UndoStep[] = []): Promise<T> {
  const undo = [...first];
  try {
    return await steps(undo);
  } catch (err) {
    await rollback(undo, logger);
    throw err;
  }
}

/** A new record of an attachment of `ctx` (netns only when the call had one). */
export function newRecord<C, R, O>(ctx: AttachCtx, config: C, original: O, result: R): AttachmentRecord<C, R, O> {
  return {
    version: 1, containerId: ctx.containerId, ifName: ctx.ifName, ...(ctx.netns ? { netns: ctx.netns } : {}),
    config, original, result, createdAt: new Date().toISOString(),
  };
}

/** Runs undo steps in reverse order, logging (never throwing) their own failures. */
export async function rollback(steps: UndoStep[], logger?: Logger): Promise<void> {
  for (const s of [...steps].reverse()) {
    try {
      await s.undo();
    } catch (err) {
      logger?.error({ err, step: s.what }, 'rollback step failed');
    }
  }
}

export function compareResult(rec: unknown, prev: unknown, problems: string[]): void {
  if (prev === undefined) return;
  const r = rec as Record<string, unknown>;
  const p = prev as Record<string, unknown>;
  for (const k of ['mac', 'ifName', 'pciAddress', 'socketPath', 'tapName']) {
    if (p[k] !== undefined && p[k] !== r[k]) problems.push(`prevResult.${k} is ${JSON.stringify(p[k])}, the record says ${JSON.stringify(r[k])}`);
  }
}

/**
 * The record-and-lock flow every attachment type shares: ADD under a lock returns the recorded result of a completed
 * ADD of the same config (after checking it) and refuses another config; DEL under a lock works from the record and
 * treats "no record" as done; CHECK compares a completed record with the live state; GC DELs what is not valid.
 * A type supplies its own create/remove steps and `probe` (its part of CHECK).
 */
export abstract class RecordedPlugin<C, R extends AttachmentResult, Rec extends AttachmentRecord<C, R>, D extends PluginDeps = PluginDeps>
  implements AttachmentPlugin<C, R>
{
  abstract readonly type: AttachmentType;
  constructor(protected readonly deps: D) {}

  abstract parseConfig(raw: unknown): C;
  abstract add(ctx: AttachCtx, cfg: C): Promise<R>;
  abstract del(ctx: AttachCtx): Promise<void>;

  /** Adds this type's differences between the record and the live state to `problems`. */
  protected abstract probe(ctx: AttachCtx, rec: Rec, problems: string[]): Promise<void>;

  /** Whether a record is one of a completed ADD (default: every record is). */
  protected completed(_rec: Rec): boolean {
    return true;
  }

  /** The lock on one attachment: `<prefix>-<containerId>-<ifName>`. */
  protected attachmentLock(ctx: AttachCtx, prefix: string = this.type): string {
    return `${prefix}-${ctx.containerId}-${ctx.ifName}`;
  }

  protected record(ctx: AttachCtx): Rec | undefined {
    return this.deps.records.get<Rec>(this.type, ctx);
  }

  /** Under `lockKey`: the recorded result for the same config (checked), a conflict for another, else `create(prev)`. */
  protected addOnce(lockKey: string, ctx: AttachCtx, cfg: C, create: (prev: Rec | undefined) => Promise<R>): Promise<R> {
    return this.deps.locks.with(lockKey, async () => {
      const prev = this.record(ctx);
      if (prev && this.completed(prev)) {
        sameConfigOrConflict(this.type, ctx, prev.config, cfg, prev.netns);
        await this.verify(ctx, prev);
        return prev.result;
      }
      return create(prev);
    });
  }

  /** Under `lockKey`: `remove(rec)` when there is a record; no record is "already gone". */
  protected delOnce(lockKey: string, ctx: AttachCtx, remove: (rec: Rec) => Promise<void>): Promise<void> {
    return this.deps.locks.with(lockKey, async () => {
      const rec = this.record(ctx);
      if (!rec) return;
      await remove(rec);
    });
  }

  async check(ctx: AttachCtx, prev?: R): Promise<void> {
    validateCtx(ctx, false);
    const rec = this.record(ctx);
    if (!rec || !this.completed(rec)) throw new NotFoundError(`no ${this.type} attachment ${attachmentId(ctx)}`);
    await this.verify(ctx, rec, prev);
  }

  protected async verify(ctx: AttachCtx, rec: Rec, prev?: R): Promise<void> {
    const problems: string[] = [];
    compareResult(rec.result, prev, problems);
    await this.probe(ctx, rec, problems);
    if (problems.length) throw new CheckError(problems);
  }

  existing(ctx: AttachCtx): R | undefined {
    const r = this.record(ctx);
    return r && this.completed(r) ? r.result : undefined;
  }

  async gc(valid: ReadonlySet<string>): Promise<string[]> {
    const gone: string[] = [];
    for (const a of this.deps.records.list(this.type)) {
      const id = `${a.containerId}/${a.ifName}`;
      if (valid.has(id)) continue;
      await this.del(a);
      gone.push(id);
    }
    return gone;
  }
}

export type { AttachCtx };
