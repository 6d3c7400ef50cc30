/** Test helpers: a real network namespace with veth pairs, torn down in `after` even when a test fails. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function sh(argv: string[]): string {
  return execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

let seq = 0;
export function makeNetns(tag: string): { name: string; ip(...args: string[]): string; json<T>(...args: string[]): T; remove(): void } {
  const name = `ga-${tag}-${process.pid}-${seq++}`;
  sh(['ip', 'netns', 'add', name]);
  sh(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
  return {
    name,
    ip: (...args) => sh(['ip', '-n', name, ...args]),
    json: <T,>(...args: string[]) => JSON.parse(sh(['ip', '-n', name, '-json', ...args])) as T,
    remove: () => {
      try {
        sh(['ip', 'netns', 'del', name]);
      } catch {
        /* already gone */
      }
    },
  };
}

/** A fake sysfs root where each listed netdev name has a `device` link to a PCI function folder. */
export function fakeSysfs(devs: Record<string, string>): { root: string; remove(): void } {
  const root = mkdtempSync(join(tmpdir(), 'ga-sysfs-'));
  for (const [ifname, pci] of Object.entries(devs)) {
    const dev = join(root, 'devices', 'pci0000:00', pci);
    mkdirSync(join(dev, 'net'), { recursive: true });
    mkdirSync(join(root, 'class', 'net', ifname), { recursive: true });
    symlinkSync(`../../../devices/pci0000:00/${pci}`, join(root, 'class', 'net', ifname, 'device'));
  }
  return { root, remove: () => rmSync(root, { recursive: true, force: true }) };
}

/**
 * crun refuses this host's hybrid cgroup v1/v2 layout; the guest has a pure cgroup2 mount. This wrapper runs each
 * crun call in a private mount namespace with cgroup2 mounted on /sys/fs/cgroup, as in the guest.
 */
export function crunWrapper(dir: string): string {
  const path = join(dir, 'crun-cgroup2');
  writeFileSync(path, `#!/bin/sh\nexec unshare -m sh -c 'mount -t cgroup2 none /sys/fs/cgroup && exec crun "$@"' crun "$@"\n`, { mode: 0o755 });
  return path;
}
