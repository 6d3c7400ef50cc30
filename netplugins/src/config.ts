/**
 * Config parsing helpers: every parser walks the whole input, collects one issue per bad field and throws
 * a single InvalidArgumentError listing all of them (closed schemas: unknown keys are issues too).
 */
import { InvalidArgumentError, isMacAddress, isPciAddress, parseMacAddress, parsePciAddress } from '@edgenfv/contracts';
import type { FieldIssue, MacAddress, PciAddress } from '@edgenfv/contracts';

export class ConfigError extends InvalidArgumentError {}

export class Issues {
  readonly list: FieldIssue[] = [];
  add(field: string, message: string): void {
    this.list.push({ field, message });
  }
  get ok(): boolean {
    return this.list.length === 0;
  }
  throwIfAny(): void {
    if (this.list.length > 0) throw new ConfigError(this.list);
  }
}

export type Obj = Record<string, unknown>;

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The field reader over a plugin's whole config; a config that is not an object is the one issue, thrown at once. */
export function configFields(raw: unknown): Fields {
  const issues = new Issues();
  if (!isObj(raw)) {
    issues.add('', 'config must be an object');
    issues.throwIfAny();
  }
  return new Fields(raw as Record<string, unknown>, issues);
}

/** A field reader over one object, recording issues under `prefix`. */
export class Fields {
  private readonly seen = new Set<string>();
  constructor(
    readonly obj: Obj,
    readonly issues: Issues,
    readonly prefix = '',
  ) {}
  path(k: string): string {
    return this.prefix ? `${this.prefix}.${k}` : k;
  }
  private get(k: string): unknown {
    this.seen.add(k);
    return this.obj[k];
  }
  /** The value of `k`; when it is absent and `required`, records `missing` first. */
  private present(k: string, required: boolean | undefined, missing = 'is required'): unknown {
    const v = this.get(k);
    if (v === undefined && required) this.issues.add(this.path(k), missing);
    return v;
  }
  has(k: string): boolean {
    return this.obj[k] !== undefined;
  }
  /** Marks keys as known without reading them (CNI keys the plugin ignores). */
  allow(...keys: string[]): void {
    for (const k of keys) this.seen.add(k);
  }
  string(k: string, opts: { required?: boolean; re?: RegExp; reHint?: string; maxLen?: number } = {}): string | undefined {
    const v = this.present(k, opts.required);
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v.length === 0) {
      this.issues.add(this.path(k), 'must be a non-empty string');
      return undefined;
    }
    if (opts.maxLen !== undefined && v.length > opts.maxLen) {
      this.issues.add(this.path(k), `must be at most ${opts.maxLen} characters`);
      return undefined;
    }
    if (opts.re && !opts.re.test(v)) {
      this.issues.add(this.path(k), `must match ${opts.reHint ?? opts.re.source} (got ${JSON.stringify(v)})`);
      return undefined;
    }
    return v;
  }
  int(k: string, opts: { required?: boolean; min?: number; max?: number } = {}): number | undefined {
    const v = this.present(k, opts.required);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v)) {
      this.issues.add(this.path(k), `must be an integer (got ${JSON.stringify(v)})`);
      return undefined;
    }
    if ((opts.min !== undefined && v < opts.min) || (opts.max !== undefined && v > opts.max)) {
      this.issues.add(this.path(k), `must be in ${opts.min ?? '-inf'}..${opts.max ?? 'inf'} (got ${v})`);
      return undefined;
    }
    return v;
  }
  bool(k: string): boolean | undefined {
    const v = this.get(k);
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') {
      this.issues.add(this.path(k), `must be true or false (got ${JSON.stringify(v)})`);
      return undefined;
    }
    return v;
  }
  oneOf<T extends string>(k: string, values: readonly T[], opts: { required?: boolean } = {}): T | undefined {
    const v = this.present(k, opts.required, `is required (one of ${values.join(', ')})`);
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) {
      this.issues.add(this.path(k), `must be one of ${values.join(', ')} (got ${JSON.stringify(v)})`);
      return undefined;
    }
    return v as T;
  }
  mac(k: string): MacAddress | undefined {
    const v = this.get(k);
    if (v === undefined) return undefined;
    if (!isMacAddress(v)) {
      this.issues.add(this.path(k), `must be a MAC address aa:bb:cc:dd:ee:ff (got ${JSON.stringify(v)})`);
      return undefined;
    }
    const mac = parseMacAddress(v);
    if (parseInt(mac.slice(0, 2), 16) & 1) {
      this.issues.add(this.path(k), `must be a unicast MAC (got ${mac})`);
      return undefined;
    }
    return mac;
  }
  pci(k: string, opts: { required?: boolean } = {}): PciAddress | undefined {
    const v = this.present(k, opts.required);
    if (v === undefined) return undefined;
    if (!isPciAddress(v)) {
      this.issues.add(this.path(k), `must be a PCI address dddd:bb:dd.f (got ${JSON.stringify(v)})`);
      return undefined;
    }
    return parsePciAddress(v);
  }
  object(k: string, opts: { required?: boolean } = {}): Fields | undefined {
    const v = this.present(k, opts.required);
    if (v === undefined) return undefined;
    if (!isObj(v)) {
      this.issues.add(this.path(k), 'must be an object');
      return undefined;
    }
    return new Fields(v, this.issues, this.path(k));
  }
  array(k: string, opts: { required?: boolean } = {}): unknown[] | undefined {
    const v = this.present(k, opts.required);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) {
      this.issues.add(this.path(k), 'must be an array');
      return undefined;
    }
    return v as unknown[];
  }
  raw(k: string): unknown {
    return this.get(k);
  }
  /** Reports every key that no reader asked for. */
  closed(): void {
    for (const k of Object.keys(this.obj)) if (!this.seen.has(k)) this.issues.add(this.path(k), 'unknown field');
  }
}

export const IFNAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/;
export const IFNAME_HINT = 'a Linux interface name (1-15 of A-Za-z0-9_.-)';
export const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** The common attachment context (the CNI triple). */
export interface AttachCtx {
  /** CNI_CONTAINERID: the sandbox id. */
  containerId: string;
  /** CNI_IFNAME: the interface's name inside the sandbox. */
  ifName: string;
  /** CNI_NETNS: a netns name (`ip netns`) or path (`/var/run/netns/x`, `/proc/<pid>/ns/net`). Optional for sriov/vhostuser. */
  netns?: string;
}

export function validateCtx(ctx: AttachCtx, needNetns: boolean): void {
  const issues = new Issues();
  if (typeof ctx.containerId !== 'string' || !CONTAINER_ID_RE.test(ctx.containerId) || ctx.containerId.length > 200)
    issues.add('containerId', `must match ${CONTAINER_ID_RE.source} (got ${JSON.stringify(ctx.containerId)})`);
  if (typeof ctx.ifName !== 'string' || !IFNAME_RE.test(ctx.ifName)) issues.add('ifName', `must be ${IFNAME_HINT} (got ${JSON.stringify(ctx.ifName)})`);
  if (needNetns && (typeof ctx.netns !== 'string' || ctx.netns.length === 0)) issues.add('netns', 'is required');
  issues.throwIfAny();
}

export function attachmentId(ctx: AttachCtx): string {
  return `${ctx.containerId}/${ctx.ifName}`;
}

import { isIP } from 'node:net';
import type { AttachmentIp } from '@edgenfv/contracts';

/** `owner: {uid, gid}`: the VM's user (tap, vhostuser); undefined when absent or incomplete (the issues are recorded). */
export function readOwner(f: Fields, k = 'owner'): { uid: number; gid: number } | undefined {
  const o = f.object(k);
  const uid = o?.int('uid', { required: true, min: 0 });
  const gid = o?.int('gid', { required: true, min: 0 });
  o?.closed();
  return uid !== undefined && gid !== undefined ? { uid, gid } : undefined;
}

/** `ips: [{address: "10.0.0.5/24", gateway?: "10.0.0.1"}]` (from the IPAM or the caller). */
export function readIps(f: Fields, k = 'ips'): AttachmentIp[] {
  const arr = f.array(k);
  if (!arr) return [];
  const out: AttachmentIp[] = [];
  arr.forEach((v, i) => {
    const p = `${f.path(k)}[${i}]`;
    if (!isObj(v)) return f.issues.add(p, 'must be an object {address, gateway?}');
    const g = new Fields(v, f.issues, p);
    const address = g.string('address', { required: true });
    const gateway = g.string('gateway');
    g.closed();
    if (address) {
      const [a, len, extra] = address.split('/');
      const fam = isIP(a ?? '');
      const max = fam === 6 ? 128 : 32;
      if (!fam || len === undefined || extra !== undefined || !/^\d+$/.test(len) || Number(len) > max)
        return f.issues.add(`${p}.address`, `must be an address with prefix length, e.g. 10.0.0.5/24 (got ${JSON.stringify(address)})`);
    }
    if (gateway && !isIP(gateway)) return f.issues.add(`${p}.gateway`, `must be an IP address (got ${JSON.stringify(gateway)})`);
    if (address) out.push(gateway ? { address, gateway } : { address });
  });
  return out;
}
