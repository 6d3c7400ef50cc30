/** Input checks for the network RPCs: every issue collected, named by field, before anything is touched. */
import { isIP } from 'node:net';
import type { FieldIssue } from '@edgenfv/contracts/internal/errors';

export const IFNAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,14}$/;

export function isIfName(s: unknown): s is string {
  return typeof s === 'string' && IFNAME_RE.test(s) && s !== '.' && s !== '..';
}

/** "10.0.0.1/24" or "fd00::1/64" (a bare address counts as a host prefix when allowBare). */
export function checkCidr(s: unknown, field: string, issues: FieldIssue[], opts: { allowBare?: boolean } = {}): void {
  if (typeof s !== 'string') {
    issues.push({ field, message: 'must be a string CIDR' });
    return;
  }
  const [addr, len, extra] = s.split('/');
  const fam = isIP(addr ?? '');
  if (extra !== undefined || fam === 0 || (len === undefined && !opts.allowBare)) {
    issues.push({ field, message: `not a CIDR: ${JSON.stringify(s)}` });
    return;
  }
  if (len !== undefined) {
    const n = Number(len);
    if (!/^\d{1,3}$/.test(len) || n > (fam === 4 ? 32 : 128)) issues.push({ field, message: `bad prefix length in ${JSON.stringify(s)}` });
  }
}

export function checkIp(s: unknown, field: string, issues: FieldIssue[]): void {
  if (typeof s !== 'string' || isIP(s) === 0) issues.push({ field, message: `not an IP address: ${JSON.stringify(s)}` });
}

export function familyOf(cidrOrIp: string): 4 | 6 {
  return isIP(cidrOrIp.split('/')[0]!) === 6 ? 6 : 4;
}
