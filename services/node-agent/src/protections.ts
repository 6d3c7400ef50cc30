/**
 * What keeps tenants' sandboxes apart on this node, and what this host leaves unprotected: published in the
 * inventory (`nodes.get` -> inventory.protections), so an operator sees a missing protection before a tenant
 * relies on it (docs/security.md).
 */
import type { HostProtection } from '@edgenfv/contracts';
import { runProcess } from '@edgenfv/netplugins/internal/exec';
import { GUEST_FILE_MAX_BYTES } from './hypervisor/guest-file.js';

export interface ProtectionFacts {
  /** cgroup v2 controllers enabled for the sandboxes' parent; null: no cgroup v2 hierarchy at all. */
  cgroupControllers: readonly string[] | null;
  seccomp: boolean;
  uidBase: number;
  /** nftables bridge family usable (tap anti-spoofing). */
  nftBridge: boolean;
}

export function hostProtections(f: ProtectionFacts): HostProtection[] {
  const out: HostProtection[] = [];
  for (const c of ['cpu', 'memory', 'cpuset'] as const) {
    const on = f.cgroupControllers?.includes(c) ?? false;
    out.push({
      name: `cgroup.${c}`,
      enforced: on,
      detail: on
        ? `each sandbox's ${c} limit is set in its cgroup; a write that fails stops the sandbox (fail closed)`
        : f.cgroupControllers === null
          ? 'no cgroup v2 hierarchy: sandboxes run without cgroup limits'
          : `the cgroup v2 ${c} controller is not available to the sandboxes' parent: no ${c} limit per sandbox (a hybrid cgroup host?)`,
    });
  }
  out.push({
    name: 'vmm.seccomp',
    enforced: f.seccomp,
    detail: f.seccomp ? 'QEMU runs with -sandbox on (no spawn, no resource control, no elevated privileges after start)' : 'isolation.sandbox is false: QEMU runs without seccomp',
  });
  out.push({ name: 'vmm.uid', enforced: true, detail: `each sandbox's QEMU runs as a uid of its own from ${f.uidBase}` });
  out.push({ name: 'vmm.env', enforced: true, detail: "QEMU starts with an environment of its own (PATH only): nothing of the agent's" });
  out.push({ name: 'vmm.guest-files', enforced: true, detail: `console log reads refuse symlinks and non-regular files and read at most ${GUEST_FILE_MAX_BYTES} bytes` });
  out.push({
    name: 'vmm.chroot',
    enforced: true,
    detail: "QEMU runs chrooted (-run-with chroot=) in its sandbox's own root (<stateDir>/vm/<id>: its tun device, image disks, vhost-user sockets): the host's / is out of its reach",
  });
  out.push({ name: 'vmm.run-folder', enforced: true, detail: "a sandbox's run folder is root's (0700): QEMU makes its sockets before dropping to its uid, which can write nothing there" });
  out.push({
    name: 'bridge.antispoof',
    enforced: f.nftBridge,
    detail: f.nftBridge
      ? 'tap ports (nftables bridge family), macvtap ports (netdev egress hook) and OVS-DPDK vhost-user ports (OpenFlow rules) may only send their own MAC and addresses; no IPv6 router advertisement or redirect, neighbour advertisements only for their own addresses (networks with antispoof: false excepted)'
      : 'nftables bridge family unusable here: tap ports could spoof MAC/IP',
  });
  return out;
}

/** Whether `nft` can use the bridge family here. */
export async function nftBridgeUsable(): Promise<boolean> {
  try {
    return (await runProcess(['nft', 'list', 'tables', 'bridge'])).code === 0;
  } catch {
    return false;
  }
}
