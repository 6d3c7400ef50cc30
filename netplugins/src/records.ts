/**
 * Attachment records: what ADD changed and what the host looked like before, so DEL and CHECK work from the
 * record alone (after a restart, from another process). One JSON file per attachment, written atomically.
 */
import { mkdirSync, readFileSync, readdirSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AttachCtx } from './config.js';

export class RecordStore {
  constructor(readonly stateDir: string) {}

  private dir(type: string): string {
    return join(this.stateDir, type);
  }
  private file(type: string, ctx: Pick<AttachCtx, 'containerId' | 'ifName'>): string {
    return join(this.dir(type), `${ctx.containerId}~${ctx.ifName}.json`);
  }

  get<T>(type: string, ctx: Pick<AttachCtx, 'containerId' | 'ifName'>): T | undefined {
    try {
      return JSON.parse(readFileSync(this.file(type, ctx), 'utf8')) as T;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  put<T>(type: string, ctx: Pick<AttachCtx, 'containerId' | 'ifName'>, rec: T): void {
    mkdirSync(this.dir(type), { recursive: true, mode: 0o700 });
    const f = this.file(type, ctx);
    const tmp = `${f}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(rec, null, 1), { mode: 0o600 });
    renameSync(tmp, f);
  }

  delete(type: string, ctx: Pick<AttachCtx, 'containerId' | 'ifName'>): void {
    try {
      unlinkSync(this.file(type, ctx));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }

  /** Every attachment of a type: `{containerId, ifName}` pairs. */
  list(type: string): { containerId: string; ifName: string }[] {
    let names: string[];
    try {
      names = readdirSync(this.dir(type));
    } catch {
      return [];
    }
    return names
      .filter((n) => n.endsWith('.json'))
      .map((n) => {
        const base = n.slice(0, -5);
        const i = base.lastIndexOf('~');
        return { containerId: base.slice(0, i), ifName: base.slice(i + 1) };
      });
  }
}
