/**
 * IPAM: address leases in JetStream KV (bucket `edgenfv_ipam`), every write a compare-and-set.
 *   `<network>.<address>`        -> IpLease   (IPv6 ':' written as '_': KV keys allow no ':')
 *   `<network>.owner.<owner>`    -> IpLease   (the owner's index: allocate is idempotent per owner and network)
 * An address is taken by `create` on its key, which the server refuses when the key exists: two allocators
 * (processes, nodes, scheduler replicas) never hand out one address twice. Leases never expire: they are freed by
 * `release(owner)` (terminate) or by `gc(liveOwners)` (owner deleted or fenced), so node loss and restarts keep them.
 */
import { randomInt } from 'node:crypto';
import type { KV, NatsConnection } from 'nats';
import { AppError, InvalidArgumentError, NotFoundError, UnschedulableError, type IpLease, type NetworkConfig } from '@edgenfv/contracts';
import { capacity, formatIp, parseIp, parseNetworks, type ParsedNetwork } from './networks.js';

export const IPAM_BUCKET = 'edgenfv_ipam';
export const OWNER_RE = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/;

export class IpPoolExhaustedError extends UnschedulableError {
  constructor(network: ParsedNetwork, leased: number) {
    super(
      `network ${network.config.name}: no free address left in ${network.config.cidr}` +
        ` (range ${formatIp(network.family, network.first)}-${formatIp(network.family, network.last)}, ${leased} leased)`,
      { network: network.config.name, leased },
    );
  }
}

export interface AllocateOptions {
  nodeId?: string;
  epoch?: number;
  /** Ask for this exact address (a fixed IP from the VNFD); CONFLICT when someone else holds it. */
  address?: string;
}

function isCasConflict(err: unknown): boolean {
  const e = err as { message?: string; api_error?: { err_code?: number } };
  return e?.api_error?.err_code === 10071 || /wrong last sequence/i.test(e?.message ?? '');
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export class Ipam {
  private readonly nets = new Map<string, ParsedNetwork>();
  /** Addresses this instance has seen taken (a hint for choosing candidates; the KV decides). */
  private readonly seenUsed = new Map<string, Set<bigint>>();

  private constructor(
    private readonly kv: KV,
    networks: ParsedNetwork[],
    private readonly rand: (maxExclusive: number) => number,
  ) {
    for (const n of networks) {
      this.nets.set(n.config.name, n);
      this.seenUsed.set(n.config.name, new Set());
    }
  }

  /** Opens (creating when missing) the bucket. `networks`: raw config (validated here) or parsed networks. */
  static async open(
    nc: NatsConnection,
    networks: readonly NetworkConfig[] | ParsedNetwork[],
    opts: { bucket?: string; random?: (maxExclusive: number) => number; replicas?: number } = {},
  ): Promise<Ipam> {
    const parsed = networks.length > 0 && 'family' in (networks[0] as object) ? (networks as ParsedNetwork[]) : parseNetworks(networks);
    const kv = await nc.jetstream().views.kv(opts.bucket ?? IPAM_BUCKET, { history: 1, replicas: opts.replicas ?? 1 });
    return new Ipam(kv, parsed, opts.random ?? ((m) => randomInt(m)));
  }

  networks(): ParsedNetwork[] {
    return [...this.nets.values()];
  }

  private net(name: string): ParsedNetwork {
    const n = this.nets.get(name);
    if (!n) throw new NotFoundError(`network ${JSON.stringify(name)} is not configured (known: ${[...this.nets.keys()].join(', ') || 'none'})`);
    return n;
  }

  static addressKey(network: string, address: string): string {
    return `${network}.${address.replace(/:/g, '_')}`;
  }
  static ownerKey(network: string, owner: string): string {
    return `${network}.owner.${owner}`;
  }

  private async getLease(key: string): Promise<{ lease: IpLease; revision: number } | null> {
    const e = await this.kv.get(key);
    if (!e || e.operation !== 'PUT') return null;
    return { lease: JSON.parse(dec.decode(e.value)) as IpLease, revision: e.revision };
  }

  /** One address of `network` for `owner`; the same owner asking again gets the same lease. */
  async allocate(network: string, owner: string, opts: AllocateOptions = {}): Promise<IpLease> {
    if (typeof owner !== 'string' || !OWNER_RE.test(owner)) throw new InvalidArgumentError([{ field: 'owner', message: `must match ${OWNER_RE.source} (got ${JSON.stringify(owner)})` }]);
    const net = this.net(network);
    let fixed: bigint | undefined;
    if (opts.address !== undefined) {
      const p = parseIp(opts.address);
      if (!p || p.family !== net.family || p.value < net.first || p.value > net.last || net.excluded.has(p.value))
        throw new InvalidArgumentError([{ field: 'address', message: `${opts.address} is not an address network ${network} hands out` }]);
      fixed = p.value;
    }
    const ownerKey = Ipam.ownerKey(network, owner);
    const mine = await this.getLease(ownerKey);
    if (mine) {
      if (fixed !== undefined && parseIp(mine.lease.address)!.value !== fixed)
        throw new AppError('CONFLICT', `owner ${owner} already holds ${mine.lease.address} on ${network}, not ${opts.address}`);
      return mine.lease;
    }
    const used = this.seenUsed.get(network)!;
    const lease = (value: bigint): IpLease => {
      const address = formatIp(net.family, value);
      const l: IpLease = { network, address, cidr: `${address}/${net.prefixLen}`, owner, leasedAt: new Date().toISOString() };
      if (net.gateway) l.gateway = net.gateway;
      if (opts.nodeId !== undefined) l.nodeId = opts.nodeId;
      if (opts.epoch !== undefined) l.epoch = opts.epoch;
      return l;
    };
    let refreshed = false;
    for (;;) {
      const cand = fixed ?? this.candidate(net, used);
      if (cand === undefined) {
        if (refreshed) throw new IpPoolExhaustedError(net, used.size);
        await this.refreshUsed(net);
        refreshed = true;
        continue;
      }
      const l = lease(cand);
      const key = Ipam.addressKey(network, l.address);
      let rev: number;
      try {
        rev = await this.kv.create(key, enc.encode(JSON.stringify(l)));
      } catch (err) {
        if (!isCasConflict(err)) throw err;
        used.add(cand);
        if (fixed !== undefined) throw new AppError('CONFLICT', `${opts.address} on ${network} is leased to someone else`);
        continue;
      }
      used.add(cand);
      try {
        await this.kv.create(ownerKey, enc.encode(JSON.stringify(l)));
        return l;
      } catch (err) {
        // Lost a race with the same owner allocating concurrently: give ours back, return theirs.
        await this.kv.delete(key, { previousSeq: rev }).catch(() => undefined);
        used.delete(cand);
        if (!isCasConflict(err)) throw err;
        const theirs = await this.getLease(ownerKey);
        if (theirs) return theirs.lease;
      }
    }
  }

  /** A free-looking address: random start, linear probe (whole range for small ranges, 256 random tries for huge ones). */
  private candidate(net: ParsedNetwork, used: Set<bigint>): bigint | undefined {
    const size = net.last - net.first + 1n;
    const ok = (v: bigint) => !used.has(v) && !net.excluded.has(v);
    if (size <= 1n << 20n) {
      const n = Number(size);
      const start = this.rand(n);
      for (let i = 0; i < n; i++) {
        const v = net.first + BigInt((start + i) % n);
        if (ok(v)) return v;
      }
      return undefined;
    }
    for (let i = 0; i < 256; i++) {
      let off = 0n;
      for (let bits = 0n; bits < 128n; bits += 32n) off = (off << 32n) | BigInt(this.rand(2 ** 32));
      const v = net.first + (off % size);
      if (ok(v)) return v;
    }
    return undefined;
  }

  private async refreshUsed(net: ParsedNetwork): Promise<void> {
    const used = this.seenUsed.get(net.config.name)!;
    used.clear();
    for (const l of await this.leases(net.config.name)) used.add(parseIp(l.address)!.value);
    if (BigInt(used.size) < capacity(net)) return;
  }

  /** Every lease (of one network, or all). */
  async leases(network?: string): Promise<IpLease[]> {
    const out: IpLease[] = [];
    for (const key of await this.keys(network ? `${network}.>` : '>')) {
      if (key.split('.')[1] === 'owner') continue;
      const l = await this.getLease(key);
      if (l) out.push(l.lease);
    }
    return out;
  }

  /** Each live key once (nats.js may yield a key twice when it is updated during the listing). */
  private async keys(filter: string): Promise<string[]> {
    const out = new Set<string>();
    for await (const k of await this.kv.keys(filter)) out.add(k);
    return [...out];
  }

  /** Frees one lease if it is still the one we read (CAS), and its owner index entry. */
  private async free(network: string, lease: IpLease): Promise<boolean> {
    const key = Ipam.addressKey(network, lease.address);
    const cur = await this.getLease(key);
    let freed = false;
    if (cur && cur.lease.owner === lease.owner) {
      try {
        await this.kv.delete(key, { previousSeq: cur.revision });
        freed = true;
      } catch (err) {
        if (!isCasConflict(err)) throw err;
      }
    }
    const ok = Ipam.ownerKey(network, lease.owner);
    const idx = await this.getLease(ok);
    if (idx && idx.lease.address === lease.address) {
      await this.kv.delete(ok, { previousSeq: idx.revision }).catch((err: unknown) => {
        if (!isCasConflict(err)) throw err;
      });
    }
    this.seenUsed.get(network)?.delete(parseIp(lease.address)!.value);
    return freed;
  }

  /** Frees every lease of `owner` (VNF terminated). Safe to repeat; returns what it freed. */
  async release(owner: string): Promise<IpLease[]> {
    if (typeof owner !== 'string' || !OWNER_RE.test(owner)) throw new InvalidArgumentError([{ field: 'owner', message: `must match ${OWNER_RE.source}` }]);
    const freed: IpLease[] = [];
    for (const key of await this.keys(`*.owner.${owner}`)) {
      const idx = await this.getLease(key);
      if (!idx) continue;
      if (await this.free(idx.lease.network, idx.lease)) freed.push(idx.lease);
    }
    return freed;
  }

  /**
   * Frees leases whose owner is not live (its allocation was deleted, or its node fenced and the allocation moved).
   * `live`: the owners that still exist. Returns what it freed.
   */
  async gc(live: ReadonlySet<string> | ((owner: string) => boolean)): Promise<IpLease[]> {
    const isLive = typeof live === 'function' ? live : (o: string) => live.has(o);
    const freed: IpLease[] = [];
    for (const key of await this.keys('>')) {
      const [network, second] = key.split('.');
      const e = await this.getLease(key);
      if (!e || isLive(e.lease.owner)) continue;
      if (second === 'owner') {
        // an index entry left by a crash between the two creates, or whose address lease is gone
        const addr = await this.getLease(Ipam.addressKey(network!, e.lease.address));
        if (!addr || addr.lease.owner !== e.lease.owner) await this.kv.delete(key, { previousSeq: e.revision }).catch(() => undefined);
        else if (await this.free(network!, e.lease)) freed.push(e.lease);
        continue;
      }
      if (await this.free(network!, e.lease)) freed.push(e.lease);
    }
    return freed;
  }
}
