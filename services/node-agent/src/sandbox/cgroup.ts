/**
 * cgroup v2 placement of each sandbox's hypervisor: `<mount>/<parent>/<sandboxId>` with cpu.max, memory.max and
 * cpuset (pinned CPUs and the NUMA node's memory) where those controllers are available and writable. Where they
 * are not (a hybrid host with only some controllers in v2), the process is still placed in its own cgroup, so that
 * teardown kills every process of the sandbox with `cgroup.kill`; what was skipped is returned and logged.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { UnavailableError } from '@edgenfv/contracts';
import { formatCpuList } from '../inventory.js';

/** The cgroup v2 mount under `root` (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host), or null. */
export function cgroupV2Mount(root: string): string | null {
  if (existsSync(join(root, 'cgroup.controllers'))) return root;
  if (existsSync(join(root, 'unified', 'cgroup.controllers'))) return join(root, 'unified');
  return null;
}

export interface CgroupLimits {
  vcpus: number;
  memoryMiB: number;
  cpus?: number[];
  numaNode?: number;
}

export interface CgroupPlacement {
  dir: string;
  applied: string[];
  skipped: string[];
}

const WANTED = ['cpu', 'memory', 'cpuset'] as const;

function readControllers(p: string): string[] {
  try {
    return readFileSync(p, 'utf8').trim().split(/\s+/).filter(Boolean);
  } catch {
    return [];
  }
}

export class Cgroups {
  readonly mount: string | null;
  readonly parentDir: string | null;
  private enabled: string[] = [];

  constructor(
    root: string,
    parent: string,
    private readonly log: Logger,
  ) {
    this.mount = cgroupV2Mount(root);
    this.parentDir = this.mount ? join(this.mount, parent) : null;
  }

  /** Creates the parent and enables what it can of cpu/memory/cpuset for its children. */
  init(): void {
    if (!this.mount || !this.parentDir) {
      this.log.warn({ component: 'cgroup' }, 'no cgroup v2 hierarchy: sandboxes run without cgroup limits');
      return;
    }
    mkdirSync(this.parentDir, { recursive: true });
    const avail = readControllers(join(this.mount, 'cgroup.controllers'));
    const want = WANTED.filter((c) => avail.includes(c));
    for (const dir of [this.mount, this.parentDir]) {
      for (const c of want) {
        try {
          writeFileSync(join(dir, 'cgroup.subtree_control'), `+${c}`);
        } catch (err) {
          this.log.debug({ err, controller: c, dir }, 'cannot enable controller');
        }
      }
    }
    this.enabled = readControllers(join(this.parentDir, 'cgroup.subtree_control'));
    const missing = WANTED.filter((c) => !this.enabled.includes(c));
    if (missing.length) this.log.warn({ component: 'cgroup', missing }, `cgroup v2 controllers not available here: ${missing.join(', ')}`);
  }

  /** The controllers the sandboxes get (after init); null when there is no cgroup v2 hierarchy. */
  enabledControllers(): readonly string[] | null {
    return this.parentDir ? [...this.enabled] : null;
  }

  available(): boolean {
    return this.parentDir !== null;
  }

  dirFor(sandboxId: string): string | null {
    return this.parentDir ? join(this.parentDir, sandboxId) : null;
  }

  /** Creates (or reuses) the sandbox's cgroup and writes the limits it can. */
  place(sandboxId: string, limits: CgroupLimits): CgroupPlacement | null {
    const dir = this.dirFor(sandboxId);
    if (!dir) return null;
    mkdirSync(dir, { recursive: true });
    return { dir, ...this.apply(dir, limits) };
  }

  /**
   * Writes the limit files that exist; returns which were applied and which skipped (no such controller here: the
   * node reports it in its inventory's protections). A limit whose controller exists but cannot be written fails
   * closed: the sandbox does not start unlimited (docs/security.md).
   */
  apply(dir: string, limits: CgroupLimits): { applied: string[]; skipped: string[] } {
    const applied: string[] = [];
    const skipped: string[] = [];
    const failed: string[] = [];
    const put = (file: string, value: string): void => {
      const p = join(dir, file);
      if (!existsSync(p)) {
        skipped.push(file);
        return;
      }
      try {
        writeFileSync(p, value);
        applied.push(file);
      } catch (err) {
        this.log.warn({ err, file }, 'cgroup write failed');
        failed.push(`${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      }
    };
    // QEMU's own threads (I/O, TCG) get headroom: one vCPU's worth beyond the guest's.
    const periodUs = 100_000;
    put('cpu.max', `${(limits.vcpus + 1) * periodUs} ${periodUs}`);
    // Guest RAM + the hypervisor's overhead (TCG translation cache, device state): 25 % + 256 MiB.
    const memBytes = Math.ceil(limits.memoryMiB * 1.25 + 256) * 1024 * 1024;
    put('memory.max', String(memBytes));
    if (limits.cpus?.length) put('cpuset.cpus', formatCpuList(limits.cpus));
    if (limits.numaNode !== undefined) put('cpuset.mems', String(limits.numaNode));
    if (failed.length) throw new UnavailableError(`cgroup limits could not be set in ${dir}: ${failed.join(', ')}; the sandbox is not started without them`);
    return { applied, skipped };
  }

  /** Sets the sandbox's cpuset to `cpus` when this host has the cpuset controller there (a VM that grew or shrank). */
  setCpus(sandboxId: string, cpus: readonly number[]): void {
    const dir = this.dirFor(sandboxId);
    const p = dir ? join(dir, 'cpuset.cpus') : null;
    if (p && cpus.length > 0 && existsSync(p)) writeFileSync(p, formatCpuList([...cpus]));
  }

  /** Kills every process left in the cgroup and removes it; safe to repeat. */
  async destroy(sandboxId: string): Promise<void> {
    const dir = this.dirFor(sandboxId);
    if (!dir || !existsSync(dir)) return;
    if (existsSync(join(dir, 'cgroup.kill'))) {
      try {
        writeFileSync(join(dir, 'cgroup.kill'), '1');
      } catch (err) {
        this.log.warn({ err, dir }, 'cgroup.kill failed');
      }
    }
    // A killed process stays a member until it is reaped (zombie): wait for `populated 0`, retry on EBUSY.
    for (let i = 0; ; i++) {
      try {
        rmdirSync(dir);
        return;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return;
        if (code !== 'EBUSY' || i >= 400) throw err;
      }
      await sleep(25);
    }
  }
}
