/**
 * Anti-spoofing of a vhost-user port on an OVS(-DPDK) bridge: OpenFlow rules on the port, the same policy as the
 * nftables rules of tap and macvtap ports (../antispoof.ts). Table 0 checks the source: frames from the port must carry
 * its MAC (Ethernet and ARP sender); ARP may only claim its IPv4 addresses; IPv4/IPv6 sources inside its subnets
 * must be its own (routed traffic from other subnets passes). What passes goes on to table 1, the ND/RA guard: no
 * router advertisement or redirect; a neighbour advertisement for an address of its IPv6 subnets must be for its
 * own; the link-layer address option of a neighbour solicitation or advertisement must be its MAC (or absent). Then
 * NORMAL (VLAN tags and learning as before). Every flow of the port carries a cookie derived from the port's name,
 * so they are deleted with it; table 1 ends with a shared `priority=0 NORMAL` (cookie 0, never deleted). Flows live in
 * ovs-vswitchd's memory: a restarted switch has none, and restoring the port (restorePorts) puts them back.
 */
import { createHash } from 'node:crypto';
import { dirname } from 'node:path';
import type { AttachmentIp } from '@edgenfv/contracts';
import { ExecError, mustRun, runProcess, type Runner } from '../exec.js';

export interface PortGuard {
  mac: string;
  ips: readonly AttachmentIp[];
}

/** The cookie of a port's flows. */
export function portCookie(portName: string): string {
  return `0x${createHash('sha256').update(`edgenfv-as/${portName}`).digest('hex').slice(0, 16)}`;
}

/** The OpenFlow target of a bridge: its management socket beside the ovsdb socket `db` (unix:<rundir>/db.sock). */
export function ofTarget(bridge: string, db?: string): string {
  return db?.startsWith('unix:') ? `unix:${dirname(db.slice(5))}/${bridge}.mgmt` : bridge;
}

/** The flows (ovs-ofctl add-flows syntax) of one port. */
export function portFlows(port: string, g: PortGuard): string[] {
  const c = `cookie=${portCookie(port)}`;
  const mac = g.mac.toLowerCase();
  const v4 = g.ips.filter((i) => !i.address.includes(':'));
  const v6 = g.ips.filter((i) => i.address.includes(':'));
  const own = (a: AttachmentIp) => a.address.split('/')[0]!;
  const next = 'actions=resubmit(,1)';
  const f: string[] = [
    `${c},table=0,priority=1000,in_port=${port},actions=drop`,
    `${c},table=0,priority=1010,in_port=${port},dl_src=${mac},${next}`,
    `${c},table=0,priority=1020,in_port=${port},arp,actions=drop`,
  ];
  if (v4.length) for (const i of v4) f.push(`${c},table=0,priority=1030,in_port=${port},dl_src=${mac},arp,arp_sha=${mac},arp_spa=${own(i)},${next}`);
  else f.push(`${c},table=0,priority=1030,in_port=${port},dl_src=${mac},arp,arp_sha=${mac},${next}`);
  for (const i of v4) f.push(`${c},table=0,priority=1020,in_port=${port},ip,nw_src=${i.address},actions=drop`);
  for (const i of v4) f.push(`${c},table=0,priority=1030,in_port=${port},dl_src=${mac},ip,nw_src=${own(i)},${next}`);
  for (const i of v6) f.push(`${c},table=0,priority=1020,in_port=${port},ipv6,ipv6_src=${i.address},actions=drop`);
  for (const i of v6) f.push(`${c},table=0,priority=1030,in_port=${port},dl_src=${mac},ipv6,ipv6_src=${own(i)},${next}`);
  // table 1: ND/RA guard
  const icmp6 = `in_port=${port},icmp6`;
  f.push(`${c},table=1,priority=1000,${icmp6},icmpv6_type=134,actions=drop`, `${c},table=1,priority=1000,${icmp6},icmpv6_type=137,actions=drop`);
  f.push(`${c},table=1,priority=1000,${icmp6},icmpv6_type=135,actions=drop`);
  for (const ll of [mac, '00:00:00:00:00:00']) f.push(`${c},table=1,priority=1010,${icmp6},icmpv6_type=135,nd_sll=${ll},actions=NORMAL`);
  f.push(`${c},table=1,priority=1000,${icmp6},icmpv6_type=136,actions=drop`);
  for (const ll of [mac, '00:00:00:00:00:00']) f.push(`${c},table=1,priority=1010,${icmp6},icmpv6_type=136,nd_tll=${ll},actions=NORMAL`);
  for (const i of v6) f.push(`${c},table=1,priority=1020,${icmp6},icmpv6_type=136,nd_target=${i.address},actions=drop`);
  for (const i of v6) for (const ll of [mac, '00:00:00:00:00:00']) f.push(`${c},table=1,priority=1030,${icmp6},icmpv6_type=136,nd_target=${own(i)},nd_tll=${ll},actions=NORMAL`);
  f.push('cookie=0,table=1,priority=0,actions=NORMAL');
  return f;
}

/** Replaces the port's flows (idempotent). */
export async function addPortGuard(bridge: string, db: string | undefined, port: string, g: PortGuard, run: Runner = runProcess): Promise<void> {
  const target = ofTarget(bridge, db);
  await delPortGuard(bridge, db, port, run);
  await mustRun(run, ['ovs-ofctl', 'add-flows', target, '-'], portFlows(port, g).join('\n') + '\n');
}

/** Deletes the port's flows; a bridge or switch that is gone has none left (success). */
export async function delPortGuard(bridge: string, db: string | undefined, port: string, run: Runner = runProcess): Promise<void> {
  const r = await run(['ovs-ofctl', 'del-flows', ofTarget(bridge, db), `cookie=${portCookie(port)}/-1`]);
  if (r.code !== 0 && !/No such file or directory|not a bridge|Connection refused/i.test(r.stderr)) {
    throw new ExecError(['ovs-ofctl', 'del-flows', ofTarget(bridge, db)], r.code, r.stderr || r.stdout);
  }
}

/** Whether the port's flows are on the bridge (CHECK). */
export async function hasPortGuard(bridge: string, db: string | undefined, port: string, run: Runner = runProcess): Promise<boolean> {
  const r = await run(['ovs-ofctl', 'dump-flows', ofTarget(bridge, db), `cookie=${portCookie(port)}/-1`]);
  return r.code === 0 && /actions=drop/.test(r.stdout);
}
