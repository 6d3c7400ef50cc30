/**
 * Anti-spoofing of a tenant port (docs/security.md). A tap attachment's port on the shared network bridge: an nftables table of
 * the bridge family per attachment, in the host netns, that drops frames entering the bridge from the attachment's
 * host veth unless they carry the attachment's own MAC, and ARP or IPv4/IPv6 packets that claim an address of the
 * network's subnet other than the attachment's own. Routed traffic (a router VNF forwarding other subnets' packets)
 * keeps passing; impersonating another port of the same network does not. Created with the attachment (named after
 * it, so a DEL finds it from the attachment id alone), deleted with it. A macvtap: the same rules on the macvtap's
 * own egress (netdev family, in the sandbox's netns). An OVS-DPDK vhost-user port: vhostuser/ovs-antispoof.ts.
 */
import type { AttachmentIp } from '@edgenfv/contracts';
import { ExecError, mustRun, runProcess, type Runner } from './exec.js';

/** The nft table of one attachment (derived from the names tap.ts derives from the attachment id). */
export function antispoofTable(hostVeth: string): string {
  return `edgenfv_as_${hostVeth}`;
}

/** The 128-bit value of an IPv6 address (no prefix) as nft raw-payload hex. */
export function ipv6Hex(addr: string): string {
  const [head = '', tail] = addr.split('::') as [string, string | undefined];
  const parse = (p: string): string[] => (p ? p.split(':') : []);
  const h = parse(head);
  const t = tail === undefined ? [] : parse(tail);
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8 || groups.some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) throw new Error(`not an IPv6 address: ${addr}`);
  return groups.map((g) => g.toLowerCase().padStart(4, '0')).join('');
}

/**
 * The rules of one port (each starts with `port`, the match of frames from it: `iifname "x" ` on a bridge, empty on a
 * device's own egress hook). Frames must carry the port's MAC (Ethernet and ARP sender); ARP may only claim the
 * port's IPv4 addresses; IPv4/IPv6 sources inside the port's subnets must be its own. ND/RA guard: no router
 * advertisement or redirect from a tenant port; a neighbour advertisement for an address of the port's IPv6 subnets
 * must be for its own, and the link-layer address option (first option) of a neighbour advertisement or
 * solicitation must be the port's MAC.
 */
export function antispoofRules(port: string, mac: string, ips: readonly AttachmentIp[]): string[] {
  const macHex = `0x${mac.replace(/:/g, '').toLowerCase()}`;
  const lines = [
    `${port}ether saddr != ${mac} counter drop`,
    `${port}ether type arp arp saddr ether != ${mac} counter drop`,
  ];
  const v4 = ips.filter((i) => !i.address.includes(':'));
  if (v4.length) {
    const own = `{ ${v4.map((i) => i.address.split('/')[0]).join(', ')} }`;
    lines.push(`${port}ether type arp arp saddr ip != ${own} counter drop`);
    // an address with its prefix length is its subnet to nft: another port's address in the subnet is refused
    for (const i of v4) lines.push(`${port}ether type ip ip saddr ${i.address} ip saddr != ${own} counter drop`);
  }
  lines.push(`${port}ether type ip6 icmpv6 type { nd-router-advert, nd-redirect } counter drop`);
  // option at ICMPv6 offset 24 (after the 16-byte target): type 1 (source) / 2 (target link-layer address), its MAC
  lines.push(`${port}ether type ip6 icmpv6 type nd-neighbor-solicit @th,192,8 1 @th,208,48 != ${macHex} counter drop`);
  lines.push(`${port}ether type ip6 icmpv6 type nd-neighbor-advert @th,192,8 2 @th,208,48 != ${macHex} counter drop`);
  const v6 = ips.filter((i) => i.address.includes(':'));
  if (v6.length) {
    const own = `{ ${v6.map((i) => i.address.split('/')[0]).join(', ')} }`;
    for (const i of v6) lines.push(`${port}ether type ip6 ip6 saddr ${i.address} ip6 saddr != ${own} counter drop`);
    for (const i of v6) {
      const [addr = '', len = '128'] = i.address.split('/');
      const plen = Number(len);
      const prefix = BigInt(`0x${ipv6Hex(addr)}`) >> BigInt(128 - plen);
      const notOwn = v6.map((o) => `@th,64,128 != 0x${ipv6Hex(o.address.split('/')[0]!)}`).join(' ');
      // the target (ICMPv6 offset 8) inside this subnet (its first plen bits) and none of the port's own addresses
      lines.push(`${port}ether type ip6 icmpv6 type nd-neighbor-advert @th,64,${plen} 0x${prefix.toString(16)} ${notOwn} counter drop`);
    }
  }
  return lines;
}

/** The nft script that makes (or remakes) the table; `mac` is the guest NIC's, `ips` its addresses with prefix. */
export function antispoofScript(hostVeth: string, mac: string, ips: readonly AttachmentIp[]): string {
  const t = antispoofTable(hostVeth);
  const lines = [
    `table bridge ${t} {}`,
    `delete table bridge ${t}`,
    `table bridge ${t} {`,
    '  chain in {',
    '    type filter hook prerouting priority -300; policy accept;',
    ...antispoofRules(`iifname "${hostVeth}" `, mac, ips).map((r) => `    ${r}`),
    '  }',
    '}',
  ];
  return lines.join('\n') + '\n';
}

/**
 * The same rules for a device whose guest-sent frames the device itself transmits (a macvtap: QEMU writes them into
 * /dev/tapN, the macvtap sends them to its parent or, in bridge mode, to its siblings): a netdev table with an egress
 * hook on the device, in the device's netns (run `nft` there).
 */
export function deviceAntispoofTable(dev: string): string {
  return `edgenfv_as_${dev}`;
}

export function deviceAntispoofScript(dev: string, mac: string, ips: readonly AttachmentIp[]): string {
  const t = deviceAntispoofTable(dev);
  const lines = [
    `table netdev ${t} {}`,
    `delete table netdev ${t}`,
    `table netdev ${t} {`,
    '  chain out {',
    `    type filter hook egress device "${dev}" priority -300; policy accept;`,
    ...antispoofRules('', mac, ips).map((r) => `    ${r}`),
    '  }',
    '}',
  ];
  return lines.join('\n') + '\n';
}

/** argv run inside `netns` (a name under /var/run/netns or a namespace path). */
function inNetns(netns: string, argv: string[]): string[] {
  return ['nsenter', `--net=${netns.includes('/') ? netns : `/var/run/netns/${netns}`}`, '--', ...argv];
}

export async function addDeviceAntispoof(netns: string, dev: string, mac: string, ips: readonly AttachmentIp[], run: Runner = runProcess): Promise<void> {
  await mustRun(run, inNetns(netns, ['nft', '-f', '-']), deviceAntispoofScript(dev, mac, ips));
}

/** Deletes a device's table in its netns; one that is already gone is success. */
export async function delDeviceAntispoof(netns: string, dev: string, run: Runner = runProcess): Promise<void> {
  try {
    await mustRun(run, inNetns(netns, ['nft', 'delete', 'table', 'netdev', deviceAntispoofTable(dev)]));
  } catch (err) {
    if (err instanceof ExecError && /No such file or directory|does not exist|cannot open/i.test(err.message)) return;
    throw err;
  }
}

/** Whether the device's table is there (CHECK). */
export async function hasDeviceAntispoof(netns: string, dev: string, run: Runner = runProcess): Promise<boolean> {
  return (await run(inNetns(netns, ['nft', 'list', 'table', 'netdev', deviceAntispoofTable(dev)]))).code === 0;
}

export async function addAntispoof(hostVeth: string, mac: string, ips: readonly AttachmentIp[], run: Runner = runProcess): Promise<void> {
  await mustRun(run, ['nft', '-f', '-'], antispoofScript(hostVeth, mac, ips));
}

/** Deletes the table; one that is already gone is success. */
export async function delAntispoof(hostVeth: string, run: Runner = runProcess): Promise<void> {
  try {
    await mustRun(run, ['nft', 'delete', 'table', 'bridge', antispoofTable(hostVeth)]);
  } catch (err) {
    if (err instanceof ExecError && /No such file or directory|does not exist/i.test(err.message)) return;
    throw err;
  }
}
