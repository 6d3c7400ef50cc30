/**
 * Anti-spoofing of a tap attachment's port on the shared network bridge (docs/security.md): an nftables table of
 * the bridge family per attachment, in the host netns, that drops frames entering the bridge from the attachment's
 * host veth unless they carry the attachment's own MAC, and ARP or IPv4/IPv6 packets that claim an address of the
 * network's subnet other than the attachment's own. Routed traffic (a router VNF forwarding other subnets' packets)
 * keeps passing; impersonating another port of the same network does not. Created with the attachment (named after
 * it, so a DEL finds it from the attachment id alone), deleted with it.
 */
import type { AttachmentIp } from '@edgenfv/contracts';
import { ExecError, mustRun, runProcess, type Runner } from './exec.js';

/** The nft table of one attachment (derived from the names tap.ts derives from the attachment id). */
export function antispoofTable(hostVeth: string): string {
  return `edgenfv_as_${hostVeth}`;
}

/** The nft script that makes (or remakes) the table; `mac` is the guest NIC's, `ips` its addresses with prefix. */
export function antispoofScript(hostVeth: string, mac: string, ips: readonly AttachmentIp[]): string {
  const t = antispoofTable(hostVeth);
  const port = `iifname "${hostVeth}"`;
  const lines = [
    `table bridge ${t} {}`,
    `delete table bridge ${t}`,
    `table bridge ${t} {`,
    '  chain in {',
    '    type filter hook prerouting priority -300; policy accept;',
    `    ${port} ether saddr != ${mac} counter drop`,
    `    ${port} ether type arp arp saddr ether != ${mac} counter drop`,
  ];
  const v4 = ips.filter((i) => !i.address.includes(':'));
  if (v4.length) {
    const own = `{ ${v4.map((i) => i.address.split('/')[0]).join(', ')} }`;
    lines.push(`    ${port} ether type arp arp saddr ip != ${own} counter drop`);
    // an address with its prefix length is its subnet to nft: another port's address in the subnet is refused
    for (const i of v4) lines.push(`    ${port} ether type ip ip saddr ${i.address} ip saddr != ${own} counter drop`);
  }
  const v6 = ips.filter((i) => i.address.includes(':'));
  if (v6.length) {
    const own = `{ ${v6.map((i) => i.address.split('/')[0]).join(', ')} }`;
    for (const i of v6) lines.push(`    ${port} ether type ip6 ip6 saddr ${i.address} ip6 saddr != ${own} counter drop`);
  }
  lines.push('  }', '}');
  return lines.join('\n') + '\n';
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
