import { execFileSync } from 'node:child_process';
import { tapNames } from '../src/tap.js';
import { mkdtempSync, rmSync, readdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DeviceLocks } from '../src/lock.js';
import { RecordStore } from '../src/records.js';

export function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
export function tryIp(...args: string[]): void {
  try {
    ip(...args);
  } catch {
    /* already gone */
  }
}
export function uniq(prefix: string): string {
  return `${prefix}${randomBytes(3).toString('hex')}`;
}
export function linkNames(netns?: string): string[] {
  const out = netns ? ip('-n', netns, '-j', 'link', 'show') : ip('-j', 'link', 'show');
  return (JSON.parse(out) as { ifname: string }[]).map((l) => l.ifname);
}

/**
 * The links a tap attachment could have made in the host namespace (its host veth, or the tap itself), as far as
 * they are there. Asked by name, not by comparing the whole host before and after: other tests running at the same
 * time make host links of their own.
 */
export function tapLinksOnHost(ctx: { containerId: string; ifName: string; netns: string }): string[] {
  const mine = new Set([tapNames(ctx).hostVeth, ctx.ifName]);
  return linkNames().filter((n) => mine.has(n));
}

/** A temp state dir with records + locks, removed by cleanup(). */
/** Every file left in the given subfolders of a state folder (`<sub>/<name>` or `<sub>/<type>/<name>`). */
export function stateLeftovers(dir: string, subs: readonly string[]): string[] {
  const out: string[] = [];
  for (const sub of subs) {
    const d = join(dir, sub);
    if (!existsSync(d)) continue;
    for (const t of readdirSync(d, { withFileTypes: true })) {
      if (t.isDirectory()) for (const f of readdirSync(join(d, t.name))) out.push(`${sub}/${t.name}/${f}`);
      else out.push(`${sub}/${t.name}`);
    }
  }
  return out;
}

export function tempState(): { dir: string; records: RecordStore; locks: DeviceLocks; cleanup(): void; leftovers(): string[] } {
  const dir = mkdtempSync(join(tmpdir(), 'np-state-'));
  return {
    dir,
    records: new RecordStore(join(dir, 'records')),
    locks: new DeviceLocks(join(dir, 'locks')),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
    leftovers: () => stateLeftovers(dir, ['records', 'locks']),
  };
}
