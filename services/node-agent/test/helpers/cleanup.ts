/** Test cleanup helpers: remove a cgroup tree (retrying while zombies are reaped) and a netns, never throwing. */
import { existsSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export async function removeCgroupParent(name: string): Promise<void> {
  for (const m of ['/sys/fs/cgroup/unified', '/sys/fs/cgroup']) {
    const d = join(m, name);
    if (!existsSync(d)) continue;
    for (let i = 0; i < 200; i++) {
      try {
        for (const c of readdirSync(d, { withFileTypes: true })) if (c.isDirectory()) rmdirSync(join(d, c.name));
        rmdirSync(d);
        break;
      } catch {
        await sleep(50); // EBUSY while an exited QEMU waits to be reaped
      }
    }
  }
}
