/**
 * The node's state folder: one JSON record per sandbox, written before acting (atomic: write a temporary file,
 * fsync, rename), so that a restarted agent knows every VM it started and everything each one held.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';

export function writeFileAtomic(path: string, data: string, mode = 0o600): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', mode);
  try {
    try {
      writeSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true }); // a failed write (disk full) leaves no partial file behind
    throw err;
  }
}

export class StateStore<T extends { sandboxId: string }> {
  readonly dir: string;
  constructor(
    stateDir: string,
    private readonly log: Logger,
  ) {
    this.dir = join(stateDir, 'sandboxes');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }
  private path(id: string): string {
    return join(this.dir, `${id}.json`);
  }
  put(rec: T): void {
    writeFileAtomic(this.path(rec.sandboxId), JSON.stringify(rec, null, 2) + '\n');
  }
  get(id: string): T | undefined {
    try {
      return JSON.parse(readFileSync(this.path(id), 'utf8')) as T;
    } catch {
      return undefined;
    }
  }
  list(): T[] {
    const out: T[] = [];
    for (const f of readdirSync(this.dir)) {
      if (f.includes('.tmp-')) {
        rmSync(join(this.dir, f), { force: true }); // a write interrupted before its rename
        continue;
      }
      if (!f.endsWith('.json')) continue;
      try {
        out.push(JSON.parse(readFileSync(join(this.dir, f), 'utf8')) as T);
      } catch (err) {
        this.log.error({ err, file: f }, 'unreadable sandbox record: left in place for an operator');
      }
    }
    return out;
  }
  delete(id: string): void {
    rmSync(this.path(id), { force: true });
  }
}
