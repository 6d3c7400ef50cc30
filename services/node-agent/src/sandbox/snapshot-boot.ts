/**
 * Snapshot boot (docs/node-agent.md "Snapshot boot"; issue 15): instead of booting the kernel, the initramfs and
 * Node.js for every warm pool VM (most of a TCG boot), the node agent restores a template: the saved state of one
 * booted, pre-warmed, tenant-less VM of the same image and boot shape. One template per key (templateKey: the image's
 * files, the QEMU binary, the VM's boot shape: vCPUs/max, memory/max and backend, machine, accel, devices, kernel
 * command line), in `<stateDir>/snapshots/<key>.mig`, root's (0600).
 *
 * - Made lazily: the first refill of a key boots cold, pre-warms, then its VM is saved (QEMU `migrate` to a file with
 *   mapped-ram, inside the VM's root as its uid), QEMU quits, the file moves to the snapshots folder, and the same
 *   sandbox is restored from it at once (which also proves the template restores).
 * - Restored with `-incoming file:<template>`: QEMU opens the file as root before `-run-with chroot=,user=`, so each
 *   VM keeps its own root and uid and no copy or link of the template goes into the VM's root.
 * - Identity right after the restore (guest agent Reidentify): 64 bytes of the host's crypto.randomBytes into the
 *   guest kernel's RNG and a CRNG reseed, the wall clock set to the host's, a new agent instance id (the liveness
 *   watch's reference from then on). Pool VMs have no NIC (NICs, with their MACs, are hot-plugged at claim time), so
 *   no MAC is in a template; the guest has no machine-id. Not renewed: the guest agent process's own user-space PRNG
 *   state (V8, OpenSSL) — the agent uses it for nothing secret.
 * - A template whose restore fails is deleted (the next refill boots cold and makes a new one); after two failures
 *   in a row, or a guest that cannot reseed (an image without the helper), the key boots cold until the agent restarts.
 * - Teardown: templates of keys no configured flavour has now (another image, QEMU, flavour, or snapshot boot off)
 *   are deleted when the pool starts; a VM's own folders hold nothing of the template.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ConflictError } from '@edgenfv/contracts';
import { resumeRestored, saveToFile } from '../hypervisor/migration.js';
import type { VmHandle, VmSpec } from '../hypervisor/types.js';
import { pathInVmRoot } from '../hypervisor/vm-root.js';
import { hash, type SandboxRecord } from './records.js';

/** The template file's extension in the snapshots folder. */
const EXT = '.mig';
/** Restore failures of one key in a row after which it boots cold until the agent restarts. */
const MAX_FAILURES = 2;

function fileId(path: string | undefined): string {
  if (!path) return '-';
  try {
    const st = statSync(path);
    return `${path} ${st.size} ${Math.round(st.mtimeMs)}`;
  } catch {
    return `${path} missing`;
  }
}

/**
 * The template a VM of this spec can be restored from: what the guest's state depends on (image files, QEMU, boot
 * shape, devices, kernel command line), not the sandbox's own paths, uid, netns, cgroup or niceness.
 */
export function templateKey(spec: VmSpec, qemuBinary: string): string {
  const { sandboxId: _i, runDir: _r, runAs: _u, chrootDir: _c, netnsPath: _n, cgroupDir: _g, nice: _p, incoming: _m, layout: _l, devices, ...shape } = spec;
  const devs = devices.map((d) => (d.kind === 'agent-channel' ? { kind: d.kind, id: d.id, name: d.name, debugConsole: d.debugConsoleSocket !== undefined } : d));
  const files = [spec.kernelPath, spec.initrdPath, spec.systemDisk?.path, qemuBinary].map(fileId);
  return hash(JSON.stringify({ shape, devs, files }), 24);
}

export class SnapshotTemplates {
  readonly dir: string;
  private readonly failures = new Map<string, number>();
  private readonly disabled = new Set<string>();
  private readonly log: Logger;

  private readonly qemuBinary: string;

  constructor(o: { stateDir: string; qemuBinary: string; logger: Logger }) {
    this.dir = join(o.stateDir, 'snapshots');
    this.qemuBinary = o.qemuBinary;
    this.log = o.logger.child({ component: 'snapshot-boot' });
  }

  /** The key of the template a VM of this spec restores from (templateKey). */
  key(spec: VmSpec): string {
    return templateKey(spec, this.qemuBinary);
  }

  path(key: string): string {
    return join(this.dir, `${key}${EXT}`);
  }

  /** A template exists for the key and restoring from it has not been given up. */
  usable(key: string): boolean {
    return !this.disabled.has(key) && existsSync(this.path(key));
  }

  /** Whether a template may be made for the key (not given up on). */
  makeable(key: string): boolean {
    return !this.disabled.has(key);
  }

  /** The spec that restores `spec`'s VM from the key's template instead of booting it. */
  restoreSpec(spec: VmSpec, key: string): VmSpec {
    return { ...spec, incoming: `file:${this.path(key)}` };
  }

  /**
   * Saves the running VM of `rec` (booted from `spec`, pre-warmed, its host session dropped) as the key's template;
   * QEMU is left paused (the caller stops it). The file is written by QEMU as the VM's uid into the VM's root, then
   * moved out, root's and 0600.
   */
  async save(rec: SandboxRecord, vm: VmHandle, key: string, alive: () => boolean): Promise<{ bytes: number; allocatedBytes: number }> {
    const base = rec.vmRoot ?? rec.runDir;
    const stage = join(base, 'snap');
    mkdirSync(stage, { recursive: true, mode: 0o700 });
    chownSync(stage, rec.uid, rec.gid);
    const hostPath = join(stage, `${key}${EXT}`);
    rmSync(hostPath, { force: true });
    try {
      await saveToFile(vm, pathInVmRoot(rec.vmRoot, hostPath, 'the template being saved'), 300_000, alive);
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      const tmp = `${this.path(key)}.tmp`;
      renameSync(hostPath, tmp);
      chownSync(tmp, 0, 0);
      chmodSync(tmp, 0o600);
      renameSync(tmp, this.path(key));
    } finally {
      rmSync(stage, { recursive: true, force: true });
    }
    const st = statSync(this.path(key));
    this.log.info({ key, bytes: st.size, allocatedBytes: st.blocks * 512, from: rec.sandboxId }, 'template snapshot saved');
    return { bytes: st.size, allocatedBytes: st.blocks * 512 };
  }

  /** A VM started from restoreSpec: its state loaded, it runs (QEMU only; the guest agent is the caller's). */
  async resume(vm: VmHandle, alive: () => boolean, signal: AbortSignal, timeoutMs: number): Promise<void> {
    await resumeRestored(vm, timeoutMs, alive, signal);
  }

  /**
   * The guest's own identity after the restore, through its agent: the host's entropy (the guest reseeds its kernel
   * RNG), the wall clock, a new instance id. A guest that cannot reseed disables snapshot boot for the key.
   */
  async reidentify(key: string, session: { reidentify(entropy: Buffer, unixTimeMs: number): Promise<{ instanceId: string; previousInstanceId: string }> }): Promise<{ instanceId: string; previousInstanceId: string }> {
    try {
      const r = await session.reidentify(randomBytes(64), Date.now());
      this.failures.delete(key);
      return r;
    } catch (err) {
      if (err instanceof ConflictError) this.giveUp(key, `the guest cannot reseed its RNG: ${err.message}`);
      throw err;
    }
  }

  /** A restore from the key's template failed: the template goes; the key boots cold for good after MAX_FAILURES. */
  failed(key: string, err: unknown): void {
    if (this.disabled.has(key)) return;
    const n = (this.failures.get(key) ?? 0) + 1;
    this.failures.set(key, n);
    rmSync(this.path(key), { force: true });
    if (n >= MAX_FAILURES) this.giveUp(key, `${n} restores failed in a row: ${(err as Error).message}`);
    else this.log.warn({ key, err }, 'restore from the template failed: template deleted (the next refill boots cold and makes a new one)');
  }

  private giveUp(key: string, why: string): void {
    this.disabled.add(key);
    rmSync(this.path(key), { force: true });
    this.log.warn({ key, why }, 'snapshot boot off for this image and VM shape until the agent restarts: cold boots');
  }

  /** Deletes every template (and leftover) whose key is not in `keep`; returns the names deleted. */
  prune(keep: ReadonlySet<string>): string[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return [];
    }
    const gone = names.filter((n) => !(n.endsWith(EXT) && keep.has(n.slice(0, -EXT.length))));
    for (const n of gone) rmSync(join(this.dir, n), { recursive: true, force: true });
    if (gone.length) this.log.info({ deleted: gone }, 'templates of no configured image/VM shape deleted');
    return gone;
  }
}
