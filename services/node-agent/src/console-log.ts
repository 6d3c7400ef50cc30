/**
 * Bounded guest logs: a VM's serial console (`console.log`, written by QEMU with O_APPEND) and QEMU's own output
 * (`qemu.log`) would grow for as long as the VM runs. Past the cap, the file is copied to `<name>.1` (the one
 * older generation kept) and truncated in place; the writer, appending, carries on at the new end.
 */
import { copyFileSync, statSync, truncateSync } from 'node:fs';
import { join } from 'node:path';

export const CONSOLE_LOG_MAX_BYTES = 1024 * 1024;
export const GUEST_LOG_FILES = ['console.log', 'qemu.log'] as const;

/** Rotates `path` when it is over `capBytes`; true when it did. A missing file is fine. */
export function rotateIfOver(path: string, capBytes: number): boolean {
  let size: number;
  try {
    size = statSync(path).size;
  } catch {
    return false;
  }
  if (size <= capBytes) return false;
  copyFileSync(path, `${path}.1`);
  truncateSync(path, 0);
  return true;
}

/** Rotates the guest logs of each run folder; returns the files rotated. Errors (disk full) are the caller's to log. */
export function rotateGuestLogs(runDirs: Iterable<string>, capBytes = CONSOLE_LOG_MAX_BYTES): string[] {
  const done: string[] = [];
  for (const dir of runDirs) {
    for (const f of GUEST_LOG_FILES) {
      const p = join(dir, f);
      if (rotateIfOver(p, capBytes)) done.push(p);
    }
  }
  return done;
}
