/** Netns references accepted by the plugins: a name, /var/run/netns/<name>, /run/netns/<name>, /proc/<pid>/ns/net. */
import { basename, dirname } from 'node:path';
import { ConflictError, NotFoundError } from '@edgenfv/contracts';
import { validateCtx, type AttachCtx } from './config.js';
import type { Netlink } from './netlink.js';

const PROC_RE = /^\/proc\/(\d+)\/(?:task\/\d+\/)?ns\/net$/;

export function isSupportedNetns(ns: string): boolean {
  if (!ns.includes('/')) return /^[A-Za-z0-9_.-]+$/.test(ns);
  return ['/var/run/netns', '/run/netns'].includes(dirname(ns)) || PROC_RE.test(ns);
}

/** The netns of an ADD that makes links in one (tap, macvtap): the CNI triple checked, the netns in a form we accept. */
export function addNetns(ctx: AttachCtx): string {
  validateCtx(ctx, true);
  const netns = ctx.netns!;
  if (!isSupportedNetns(netns)) throw new ConflictError(`netns ${netns}: use a name, /var/run/netns/<name> or /proc/<pid>/ns/net`);
  return netns;
}

export async function netnsMustExist(netlink: Netlink, netns: string): Promise<void> {
  if (!(await netlink.netnsExists(netns))) throw new NotFoundError(`netns ${netns} does not exist`);
}

/** What `ip link set ... netns <X>` accepts: a netns name or a pid. */
export function netnsTarget(ns: string): string {
  if (!ns.includes('/')) return ns;
  const m = PROC_RE.exec(ns);
  return m ? m[1]! : basename(ns);
}
