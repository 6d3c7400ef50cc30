/** Process facts from /proc: start time (guards against pid reuse), liveness (zombies count as dead), RSS. */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

function stat(pid: number): string[] | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may contain spaces and parentheses: fields start after the last ')'.
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return rest; // rest[0] = state (field 3), rest[19] = starttime (field 22)
  } catch {
    return null;
  }
}

export function procStartTicks(pid: number): number | null {
  const f = stat(pid);
  return f ? Number(f[19]) : null;
}

/** The process exists, is not a zombie, and (when given) started at `startTicks`. */
export function processAlive(pid: number, startTicks?: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  const f = stat(pid);
  if (!f) return false;
  if (f[0] === 'Z' || f[0] === 'X') return false;
  return startTicks === undefined || Number(f[19]) === startTicks;
}

export function procCmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((x) => x !== '');
  } catch {
    return [];
  }
}

export function procRssBytes(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** Resolves true once the process is gone, false after timeoutMs. */
export async function waitGone(pid: number, startTicks: number | undefined, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (processAlive(pid, startTicks)) {
    if (Date.now() >= end || signal?.aborted) return false;
    await sleep(25);
  }
  return true;
}

export function killQuiet(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}
