/**
 * A lock per device (a VF's PCI address, a tap's name, a socket path), so ADD and DEL never race on one device:
 * an in-process queue (the node agent calls the plugins as a library, concurrently) plus a lock file created with
 * O_EXCL (CNI executables are separate processes). A lock file whose holder died is taken over.
 */
import { mkdirSync, openSync, closeSync, writeSync, readFileSync, unlinkSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { UnavailableError } from '@edgenfv/contracts';

const inProcess = new Map<string, Promise<void>>();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function lockFileName(device: string): string {
  return device.replace(/[^A-Za-z0-9_.-]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`) + '.lock';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function acquireFile(path: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let wait = 2;
  for (;;) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      try {
        writeSync(fd, String(process.pid));
      } finally {
        closeSync(fd);
      }
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let holder: number;
    try {
      holder = Number(readFileSync(path, 'utf8'));
    } catch {
      continue; // released between open and read
    }
    if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && !alive(holder)) {
      // The holder died: move its file aside (atomic), so only one waiter takes the lock over.
      const aside = `${path}.stale.${process.pid}`;
      try {
        renameSync(path, aside);
        const moved = Number(readFileSync(aside, 'utf8'));
        unlinkSync(aside);
        if (moved !== holder) {
          // We moved a live holder's fresh file: give it back.
          try {
            renameSync(aside, path);
          } catch {
            /* gone */
          }
        }
      } catch {
        /* someone else took it over */
      }
      continue;
    }
    if (Date.now() > deadline) throw new UnavailableError(`device lock ${path} held by pid ${holder} for more than ${timeoutMs} ms`);
    await sleep(wait);
    wait = Math.min(wait * 2, 50);
  }
}

export class DeviceLocks {
  constructor(
    readonly lockDir: string,
    readonly timeoutMs = 30_000,
  ) {}

  /** Runs fn while holding the lock on `device` (in this process and across processes). */
  async with<T>(device: string, fn: () => Promise<T>): Promise<T> {
    const key = join(this.lockDir, lockFileName(device));
    const prev = inProcess.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chained = prev.then(() => mine);
    inProcess.set(key, chained);
    await prev;
    try {
      mkdirSync(this.lockDir, { recursive: true, mode: 0o700 });
      await acquireFile(key, this.timeoutMs);
      try {
        return await fn();
      } finally {
        try {
          unlinkSync(key);
        } catch {
          /* already gone */
        }
      }
    } finally {
      release();
      if (inProcess.get(key) === chained) inProcess.delete(key);
    }
  }
}
