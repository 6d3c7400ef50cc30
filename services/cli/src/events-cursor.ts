/**
 * Where `edgenfv events --follow` left off: the last stream sequence printed, per tenant (and VNF filter), in
 * `$EDGENFV_HOME/events-cursor.json` (0600). The next `--follow` resumes after it; `--from-start` replays all.
 */
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export class EventsCursor {
  readonly path: string;
  #dirty = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    home: string,
    readonly key: string,
  ) {
    this.path = join(home, 'events-cursor.json');
  }

  #all(): Record<string, number> {
    try {
      const v = JSON.parse(readFileSync(this.path, 'utf8')) as unknown;
      return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, number>) : {};
    } catch {
      return {};
    }
  }

  get(): number | undefined {
    const v = this.#all()[this.key];
    return Number.isInteger(v) && v! > 0 ? v : undefined;
  }

  #seq = 0;
  /** Remembers `seq` (written at most every 300 ms, and on flush). */
  set(seq: number): void {
    this.#seq = seq;
    this.#dirty = true;
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      this.flush();
    }, 300);
  }

  flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (!this.#dirty) return;
    this.#dirty = false;
    const all = { ...this.#all(), [this.key]: this.#seq };
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(all, null, 2) + '\n', { mode: 0o600 });
    chmodSync(tmp, 0o600);
    renameSync(tmp, this.path);
  }
}
