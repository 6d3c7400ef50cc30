/**
 * The sandbox's record (one JSON file per tenant VM, written before every step) and the checks an allocation
 * passes before anything is touched.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import {
  InvalidArgumentError,
  parseMacAddress,
  type Allocation,
  type AttachmentResult,
  type ErrorBody,
  type HypervisorKind,
  type ReplicaInterfaceStatus,
} from '@edgenfv/contracts';
import type { VmRecord, VmSpec } from '../hypervisor/types.js';
import type { ReplicaImage } from '../images/delivery.js';

export type SandboxState = 'creating' | 'running' | 'stopping' | 'failed';
export type ReplicaState = 'starting' | 'running' | 'stopping' | 'failed';

export interface ReplicaRecord {
  allocId: string;
  alloc: Allocation;
  state: ReplicaState;
  /** Interface name in the allocation -> what netplugins handed back for it (recorded one by one). */
  attachments: Record<string, AttachmentResult>;
  /** Interface name in the allocation -> host attachment name (= VM device id). */
  hostIfNames: Record<string, string>;
  /** Interface name in the allocation -> name inside the guest. */
  guestIfNames: Record<string, string>;
  containerId: string;
  /** true when this replica's devices were hotplugged (not part of the VM's boot spec). */
  hotplugged: boolean;
  /** Interface name in the allocation -> the PCI address the guest agent found it at (VFs: found by PCI path). */
  guestPciAddresses?: Record<string, string>;
  /** The image as delivered (guest ref, digest, disk serial); absent before it was resolved. */
  image?: ReplicaImage;
  /** OPERATE STOPPED: the container is stopped; the VM, NICs and addresses are kept. */
  containersStopped?: boolean;
  error?: ErrorBody;
}

export interface SandboxRecord {
  version: 1;
  sandboxId: string;
  tenantId: string;
  hypervisor: HypervisorKind;
  state: SandboxState;
  uid: number;
  gid: number;
  tenantDir: string;
  runDir: string;
  netns: string;
  /** QEMU's root (`-run-with chroot=`, hypervisor/vm-root.ts); absent in records of VMs started without one. */
  vmRoot?: string;
  cgroupDir?: string;
  cgroupSkipped?: string[];
  spec?: VmSpec;
  vm?: VmRecord;
  replicas: Record<string, ReplicaRecord>;
  /** Serials of the image disks attached to the VM. */
  disks?: string[];
  /** An idle VM of the node's warm pool (no tenant yet): its flavour (warm-pool.ts). */
  warm?: { flavour: string };
  /** The VM came from the warm pool: when a tenant claimed it. */
  claimedAt?: string;
  /**
   * Live migration source: when the VM switched over to its destination. It stays paused here until each of its
   * replicas' allocations is released; nothing is done inside it any more (its guest runs elsewhere).
   */
  movedAway?: string;
  createdAt: string;
  updatedAt: string;
}

/**
 * A new VM's record before anything is done for it (state `creating`, no replica): the one place its uid, folders
 * and netns name are derived. `parentDir`: the tenant's folder, or the warm pool's for a tenant-less VM.
 */
export function newSandboxRecord(p: { sandboxId: string; tenantId: string; hypervisor: HypervisorKind; uid: number; parentDir: string }): SandboxRecord {
  const now = new Date().toISOString();
  return {
    version: 1,
    sandboxId: p.sandboxId,
    tenantId: p.tenantId,
    hypervisor: p.hypervisor,
    state: 'creating',
    uid: p.uid,
    gid: p.uid,
    tenantDir: p.parentDir,
    runDir: join(p.parentDir, p.sandboxId),
    netns: `enfv-${hash(p.sandboxId, 10)}`,
    replicas: {},
    createdAt: now,
    updatedAt: now,
  };
}

export interface ReplicaResult {
  sandboxId: string;
  interfaces: ReplicaInterfaceStatus[];
  /** The VM was booted for this replica (false: it joined a running VM). */
  booted: boolean;
  /** The replica claimed a warm pool VM (warm-pool.ts). */
  warm?: boolean;
  /** Manifest digest of the replica's image (registry and OCI layout images). */
  imageDigest?: string;
}

export function hash(s: string, n: number): string {
  return createHash('sha256').update(s).digest('hex').slice(0, n);
}

/**
 * Records written by an agent that kept a replica's attachments as a list (matched to interfaces by the id's
 * suffix) are read as the map keyed by interface name.
 */
export function upgradeRecord(rec: SandboxRecord): SandboxRecord {
  for (const r of Object.values(rec.replicas)) {
    const old = r.attachments as unknown;
    if (!Array.isArray(old)) continue;
    const byName: Record<string, AttachmentResult> = {};
    for (const a of old as AttachmentResult[]) {
      const name = Object.entries(r.hostIfNames).find(([, h]) => a.id.endsWith(`/${h}`))?.[0];
      if (name) byName[name] = a;
    }
    r.attachments = byName;
  }
  return rec;
}

/** Serializes work per key (one tenant's sandbox is changed by one operation at a time). */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();
  /** true while something runs or waits under the key. */
  busy(key: string): boolean {
    return this.tails.has(key);
  }
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }
}

/** Runs cleanup steps to the end, collecting what failed (the caller keeps the record when anything did). */
export class Steps {
  readonly errors: unknown[] = [];
  constructor(private readonly onError: (err: unknown, step: string) => void) {}
  async run(what: string, fn: () => Promise<void> | void): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.errors.push(err);
      this.onError(err, what);
    }
  }
}

const TENANT_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Rejects a malformed allocation before anything is touched; names every bad field. */
export function validateAlloc(a: Allocation): void {
  const issues: { field: string; message: string }[] = [];
  if (typeof a !== 'object' || a === null) throw new InvalidArgumentError('allocation must be an object');
  if (typeof a.allocId !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(a.allocId)) issues.push({ field: 'allocId', message: 'must be 1..64 of [A-Za-z0-9_-]' });
  if (typeof a.tenantId !== 'string' || !TENANT_RE.test(a.tenantId)) issues.push({ field: 'tenantId', message: 'must be a DNS label' });
  if (typeof a.vnfId !== 'string' || a.vnfId === '') issues.push({ field: 'vnfId', message: 'required' });
  const r = a.resources as Allocation['resources'] | undefined;
  if (!r || !Number.isInteger(r.vcpus) || r.vcpus < 1) issues.push({ field: 'resources.vcpus', message: 'must be an integer >= 1' });
  if (!r || !Number.isInteger(r.memoryMiB) || r.memoryMiB < 16) issues.push({ field: 'resources.memoryMiB', message: 'must be an integer >= 16' });
  if (r?.hugepages && r.hugepages.sizeKiB !== 2048 && r.hugepages.sizeKiB !== 1048576) issues.push({ field: 'resources.hugepages.sizeKiB', message: 'must be 2048 or 1048576' });
  if (!a.image || typeof a.image.ref !== 'string' || a.image.ref === '') issues.push({ field: 'image.ref', message: 'required' });
  if (!Array.isArray(a.interfaces)) issues.push({ field: 'interfaces', message: 'must be a list' });
  else {
    const names = new Set<string>();
    a.interfaces.forEach((i, n) => {
      const f = `interfaces[${n}]`;
      if (typeof i.name !== 'string' || !/^[A-Za-z0-9_.-]{1,15}$/.test(i.name)) issues.push({ field: `${f}.name`, message: 'must be a Linux interface name' });
      if (names.has(i.name)) issues.push({ field: `${f}.name`, message: 'duplicate' });
      names.add(i.name);
      try {
        parseMacAddress(i.mac);
      } catch {
        issues.push({ field: `${f}.mac`, message: 'must be a MAC address' });
      }
      switch (i.type) {
        case 'tap':
          break;
        case 'macvtap':
          if (typeof i.parent !== 'string' || i.parent === '') issues.push({ field: `${f}.parent`, message: 'the host parent link is required (the VNFD\'s or the network\'s)' });
          break;
        case 'sriov':
          if (typeof i.sriov !== 'object' || i.sriov === null) issues.push({ field: `${f}.sriov`, message: 'the reserved VF is required' });
          break;
        case 'vhostuser':
          if (!Number.isInteger(i.queues) || i.queues < 1) issues.push({ field: `${f}.queues`, message: 'must be an integer >= 1' });
          break;
        default:
          issues.push({ field: `${f}.type`, message: 'must be tap, macvtap, sriov or vhostuser' });
      }
    });
  }
  if (issues.length) throw new InvalidArgumentError(issues);
}
