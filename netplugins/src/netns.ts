/** Netns references accepted by the plugins: a name, /var/run/netns/<name>, /run/netns/<name>, /proc/<pid>/ns/net. */
import { basename, dirname } from 'node:path';

const PROC_RE = /^\/proc\/(\d+)\/(?:task\/\d+\/)?ns\/net$/;

export function isSupportedNetns(ns: string): boolean {
  if (!ns.includes('/')) return /^[A-Za-z0-9_.-]+$/.test(ns);
  return ['/var/run/netns', '/run/netns'].includes(dirname(ns)) || PROC_RE.test(ns);
}

/** What `ip link set ... netns <X>` accepts: a netns name or a pid. */
export function netnsTarget(ns: string): string {
  if (!ns.includes('/')) return ns;
  const m = PROC_RE.exec(ns);
  return m ? m[1]! : basename(ns);
}
