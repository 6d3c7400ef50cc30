/**
 * A VM restored from the node's template snapshot (docs/node-agent.md "Snapshot boot") holds the same memory as every
 * other VM restored from it: the kernel's CRNG state, this agent's instance id, a wall clock that stopped when the
 * template was saved. Reidentify gives it its own: the host's entropy goes into the kernel's input pool (credited,
 * RNDADDENTROPY) and the CRNG is reseeded from it at once (RNDRESEEDCRNG: without it the CRNG would keep the template's
 * key until its next scheduled reseed, and two restored VMs would read the same bytes from /dev/urandom), the wall
 * clock is set to the host's, and the new instance id is read from the reseeded kernel RNG. Node.js has no ioctl: a
 * small helper the image builder compiles (deploy/guest-image/reseed.c) does the two ioctls and clock_settime.
 *
 * Not re-seeded (caveat): this agent process's own user-space generators (V8's Math.random, OpenSSL's DRBG behind
 * node:crypto) are the template's; the agent uses neither for anything secret. Containers are new processes and draw
 * from the reseeded kernel RNG.
 */
import { open } from 'node:fs/promises';
import { ConflictError, InvalidArgumentError } from '@edgenfv/contracts/internal/errors';
import { GUEST_RESEED_HELPER, type ReidentifyRequest, type ReidentifyResponse } from '@edgenfv/contracts/internal/agent';
import type { Runner } from './exec.js';


export interface IdentityDeps {
  run: Runner;
  helper?: string;
  /** The kernel RNG to read the new instance id from. */
  urandom?: string;
  exists: (path: string) => boolean;
}

/** UUID (version 4 layout) from 16 random bytes. */
export function uuidFromBytes(b: Buffer): string {
  const x = Buffer.from(b.subarray(0, 16));
  x[6] = (x[6]! & 0x0f) | 0x40;
  x[8] = (x[8]! & 0x3f) | 0x80;
  const h = x.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export class Identity {
  /** When this instance started (Health's uptime): the process start, or the last Reidentify (a new instance). */
  private startedMs = Date.now();

  constructor(
    private id: string,
    private readonly deps: IdentityDeps,
  ) {}

  get instanceId(): string {
    return this.id;
  }

  get uptimeSeconds(): number {
    return (Date.now() - this.startedMs) / 1000;
  }

  async reidentify(req: ReidentifyRequest | undefined): Promise<ReidentifyResponse> {
    const entropy = req?.entropy ?? Buffer.alloc(0);
    const unixTimeMs = Number(req?.unixTimeMs ?? 0);
    const issues = [];
    if (entropy.length < 32 || entropy.length > 512) issues.push({ field: 'entropy', message: 'must be 32..512 bytes' });
    if (!Number.isSafeInteger(unixTimeMs) || unixTimeMs <= 0) issues.push({ field: 'unixTimeMs', message: 'must be ms since the epoch (> 0)' });
    if (issues.length) throw new InvalidArgumentError(issues);
    const helper = this.deps.helper ?? GUEST_RESEED_HELPER;
    if (!this.deps.exists(helper)) throw new ConflictError(`this guest image has no ${helper}: its kernel RNG cannot be reseeded, a restored VM must not be used`);
    await this.deps.run([helper, String(unixTimeMs)], { input: entropy, timeoutMs: 10_000 });
    const fh = await open(this.deps.urandom ?? '/dev/urandom', 'r');
    const buf = Buffer.alloc(16);
    try {
      await fh.read(buf, 0, 16, null);
    } finally {
      await fh.close();
    }
    const previousInstanceId = this.id;
    this.id = uuidFromBytes(buf);
    this.startedMs = Date.now(); // the clock was just set: a restored instance's uptime counts from here
    return { instanceId: this.id, previousInstanceId };
  }
}
