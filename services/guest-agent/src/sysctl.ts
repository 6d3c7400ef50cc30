/** Sysctls through /proc/sys (root path configurable for tests); keys checked against an allow-list first. */
import { writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError, type FieldIssue } from '@edgenfv/contracts/internal/errors';

const KEY_RE = /^[a-z0-9_]+([./][A-Za-z0-9_:-]+)+$/;
const ALLOWED = [/^net[./]/, /^vm[./]nr_hugepages$/, /^vm[./]overcommit_memory$/, /^kernel[./]pid_max$/];

export function parseSysctls(sysctls: unknown): Array<[string, string]> {
  if (!sysctls || typeof sysctls !== 'object' || Array.isArray(sysctls)) {
    throw new InvalidArgumentError([{ field: 'sysctls', message: 'must be a map of key to value' }]);
  }
  const issues: FieldIssue[] = [];
  const out: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(sysctls as Record<string, unknown>)) {
    const f = `sysctls.${k}`;
    if (!KEY_RE.test(k) || k.includes('..')) issues.push({ field: f, message: 'not a sysctl key' });
    else if (!ALLOWED.some((re) => re.test(k))) issues.push({ field: f, message: 'not allowed (net.*, vm.nr_hugepages, vm.overcommit_memory, kernel.pid_max)' });
    else if (typeof v !== 'string' || v.length === 0 || /[\n\0]/.test(v)) issues.push({ field: f, message: 'value must be a one-line string' });
    else out.push([k, v]);
  }
  if (issues.length > 0) throw new InvalidArgumentError(issues);
  return out;
}

/** `net.ipv4.ip_forward` -> sys/net/ipv4/ip_forward; with '/' separators, dots stay (interface names like eth0.100). */
export function sysctlPath(key: string): string {
  return key.includes('/') ? key : key.replace(/\./g, '/');
}

export class ProcSysctl {
  constructor(private readonly procRoot = '/proc') {}
  async set(sysctls: unknown): Promise<void> {
    const list = parseSysctls(sysctls);
    for (const [k, v] of list) await writeFile(join(this.procRoot, 'sys', sysctlPath(k)), v + '\n');
  }
  async get(key: string): Promise<string> {
    return (await readFile(join(this.procRoot, 'sys', sysctlPath(key)), 'utf8')).trim();
  }
}
