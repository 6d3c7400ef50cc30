/**
 * VNF containers with crun: one OCI bundle per container (rootfs from the image store, config.json rendered
 * here), run by `crun run` as a child of the agent so that the exit code is the container's own (crun run waits
 * for the container and exits with its status; 128+n after signal n). stdout/stderr go to files kept under the
 * container's state folder and can be read or followed. Namespaces: pid, ipc, uts, mount, and network unless the
 * container shares the VM's network (VNFs do by default: they forward between the NICs the agent configured).
 * cgroups: one per container under /edgenfv, with an optional memory limit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, open, rm, writeFile, stat, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AlreadyExistsError,
  ConflictError,
  InvalidArgumentError,
  NotFoundError,
  type FieldIssue,
} from '@edgenfv/contracts/internal/errors';
import { isDnsLabel } from '@edgenfv/contracts/internal/values';
import {
  CONTAINER_SIGNALS,
  type ContainerStatus,
  type CreateContainerRequest,
  type ExecProcessResponse,
  type LogChunk,
} from '@edgenfv/contracts/internal/agent';
import type { Log } from '../log.js';
import { ImageStore, parseImageRef } from './images.js';
import { runCommand, CommandError, type Runner } from '../exec.js';

export interface ContainerRuntimeOptions {
  /** Folder for bundles, logs and unpacked images (e.g. /run/edgenfv). */
  stateDir: string;
  crun?: string;
  busybox?: string;
  /** Network namespace that "host network" containers join (default: share the agent's). Tests use a netns path. */
  networkNamespacePath?: string;
  /** The guest's root is the initramfs (rootfs), where pivot_root(2) fails: crun then moves the root instead. */
  noPivot?: boolean;
  /** Where oci-disk images are looked up (default /sys and /dev). */
  disks?: { sysRoot: string; devRoot: string; waitMs: number };
  /**
   * What PrepareDataplane prepared (dataplane.ts): a `dataplane` container gets those device nodes and the hugepage
   * mount, and deleting it releases them.
   */
  dataplane?: { exposure(): { devices: string[]; hugepageMount?: string }; release(): Promise<void> };
  /** Runs crun's short commands (state, kill, delete, exec); default runCommand. */
  runner?: Runner;
  log: Log;
}

interface Entry {
  status: ContainerStatus;
  dataplane: boolean;
  bundle: string;
  child?: ChildProcess;
  exited: Promise<void>;
  markExited: () => void;
}

/** DPDK's extra needs: physical addresses from /proc/self/pagemap (uio: IOVA as PA) and port I/O (legacy virtio). */
const DATAPLANE_CAPS = ['CAP_SYS_ADMIN', 'CAP_SYS_RAWIO'];

const CAPS = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_NET_RAW', 'CAP_NET_ADMIN', 'CAP_SYS_CHROOT', 'CAP_AUDIT_WRITE',
  'CAP_IPC_LOCK', 'CAP_SYS_NICE',
];

export class ContainerRuntime {
  private readonly entries = new Map<string, Entry>();
  private readonly images: ImageStore;
  private readonly crun: string;
  private readonly run: Runner;
  constructor(private readonly opts: ContainerRuntimeOptions) {
    this.crun = opts.crun ?? 'crun';
    this.run = opts.runner ?? runCommand;
    this.images = new ImageStore(join(opts.stateDir, 'images'), opts.busybox ?? '/bin/busybox', opts.disks);
  }

  private get root(): string {
    return join(this.opts.stateDir, 'crun');
  }

  /** crun's global options. */
  private get g(): string[] {
    return ['--root', this.root];
  }

  async create(req: CreateContainerRequest): Promise<ContainerStatus> {
    const issues: FieldIssue[] = [];
    if (!isDnsLabel(req?.id)) issues.push({ field: 'id', message: 'must be a DNS label' });
    let image;
    try {
      image = parseImageRef(req?.image);
    } catch (err) {
      issues.push(...((err as InvalidArgumentError).issues ?? []));
    }
    const command = req?.command ?? [];
    if (!Array.isArray(command) || command.some((c) => typeof c !== 'string' || c.includes('\0'))) issues.push({ field: 'command', message: 'must be a list of strings' });
    const env = req?.env ?? [];
    env.forEach((e, i) => {
      if (typeof e !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*=/.test(e)) issues.push({ field: `env[${i}]`, message: 'must be NAME=value' });
    });
    if (req?.cwd && !req.cwd.startsWith('/')) issues.push({ field: 'cwd', message: 'must be an absolute path' });
    const mem = req?.memoryLimitMib ?? 0;
    if (!Number.isInteger(mem) || mem < 0 || (mem > 0 && mem < 4)) issues.push({ field: 'memoryLimitMib', message: 'must be 0 (no limit) or >= 4' });
    const dataplane = req?.dataplane === true;
    const exposure = dataplane ? this.opts.dataplane?.exposure() : undefined;
    if (dataplane && (!exposure || (exposure.devices.length === 0 && !exposure.hugepageMount))) {
      issues.push({ field: 'dataplane', message: 'nothing is prepared for a data plane: call PrepareDataplane first' });
    }
    if (issues.length > 0 || !image) throw new InvalidArgumentError(issues);
    if (this.entries.has(req.id)) throw new AlreadyExistsError(`container ${req.id} exists`);

    const t0 = performance.now();
    const img = await this.images.prepare(image);
    this.opts.log.debug({ containerId: req.id, ms: Math.round(performance.now() - t0) }, 'image prepared');
    const bundle = join(this.opts.stateDir, 'containers', req.id);
    await rm(bundle, { recursive: true, force: true });
    await mkdir(bundle, { recursive: true });
    const hostNetwork = req.hostNetwork ?? true;
    const namespaces: Array<{ type: string; path?: string }> = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }];
    if (!hostNetwork) namespaces.push({ type: 'network' });
    else if (this.opts.networkNamespacePath) namespaces.push({ type: 'network', path: this.opts.networkNamespacePath });
    const config = {
      ociVersion: '1.0.2',
      process: {
        terminal: false,
        user: { uid: 0, gid: 0 },
        args: command.length > 0 ? command : img.args,
        env: [...img.env, ...env],
        cwd: req.cwd || img.cwd,
        capabilities: { bounding: CAPS, effective: CAPS, permitted: CAPS, ambient: CAPS },
        noNewPrivileges: true,
      },
      root: { path: img.rootfs, readonly: true },
      hostname: req.id,
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc' },
        { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
        { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
        { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
        { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
        { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] },
        { destination: '/run', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=755'] },
        { destination: '/var/log', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=755'] },
      ],
      linux: {
        namespaces,
        cgroupsPath: `/edgenfv/${req.id}`,
        resources: mem > 0 ? { memory: { limit: mem * 1024 * 1024 } } : {},
        maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/sys/firmware'],
        readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sysrq-trigger'],
      },
    };
    if (exposure) await exposeDataplane(config, exposure);
    await writeFile(join(bundle, 'config.json'), JSON.stringify(config, null, 2));
    let markExited!: () => void;
    const exited = new Promise<void>((r) => (markExited = r));
    const status: ContainerStatus = { id: req.id, state: 'CREATED', pid: 0, exitCode: 0, image: image.ref, startedAtMs: 0, finishedAtMs: 0 };
    this.entries.set(req.id, { status, dataplane, bundle, exited, markExited });
    this.opts.log.info({ containerId: req.id, image: image.ref }, 'container created');
    return { ...status };
  }

  private get(id: string): Entry {
    const e = this.entries.get(id);
    if (!e) throw new NotFoundError(`no container ${JSON.stringify(id)}`);
    return e;
  }

  async start(id: string): Promise<ContainerStatus> {
    const e = this.get(id);
    if (e.status.state === 'RUNNING') return { ...e.status };
    if (e.status.state === 'STOPPED') {
      // a restart (OPERATE STARTED): the same bundle runs again, its logs go on in the same files
      await this.run([this.crun, ...this.g, 'delete', '--force', id]).catch(() => {});
      e.exited = new Promise<void>((r) => (e.markExited = r));
      e.status.exitCode = 0;
      e.status.finishedAtMs = 0;
    } else if (e.status.state !== 'CREATED') throw new ConflictError(`container ${id} is ${e.status.state}`);
    const t0 = performance.now();
    const pidFile = join(e.bundle, 'container.pid');
    await mkdir(this.root, { recursive: true });
    const out = await open(join(e.bundle, 'stdout.log'), 'a');
    const err = await open(join(e.bundle, 'stderr.log'), 'a');
    try {
      await rm(pidFile, { force: true });
      const child = spawn(this.crun, [...this.g, 'run', ...(this.opts.noPivot ? ['--no-pivot'] : []), '--pid-file', pidFile, '--bundle', e.bundle, id], {
        stdio: ['ignore', out.fd, err.fd],
      });
      e.child = child;
      e.status.state = 'RUNNING';
      e.status.startedAtMs = Date.now();
      const spawned = new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      });
      child.once('exit', (code, signal) => {
        e.status.state = 'STOPPED';
        e.status.exitCode = code ?? 128 + (signal ? signalNumber(signal) : 0);
        e.status.finishedAtMs = Date.now();
        e.status.pid = 0;
        this.opts.log.info({ containerId: id, exitCode: e.status.exitCode }, 'container exited');
        e.markExited();
      });
      await spawned;
      this.opts.log.debug({ containerId: id, ms: Math.round(performance.now() - t0) }, 'crun run spawned');
    } finally {
      await out.close();
      await err.close();
    }
    // the container's own pid, once crun has created it (for metrics and exec); not needed for correctness. Read from
    // crun's pid file: a `crun state` process per look cost 50-1200 ms each in an emulated guest (beside crun run)
    for (let i = 0; i < 100 && e.status.state === 'RUNNING' && e.status.pid === 0; i++) {
      const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(pid) && pid > 0) e.status.pid = pid;
      else await sleep(10);
    }
    this.opts.log.debug({ containerId: id, pid: e.status.pid, ms: Math.round(performance.now() - t0) }, 'container pid known');
    return { ...e.status };
  }

  async signal(id: string, signal: string): Promise<void> {
    if (!(CONTAINER_SIGNALS as readonly string[]).includes(signal)) {
      throw new InvalidArgumentError([{ field: 'signal', message: `one of ${CONTAINER_SIGNALS.join(', ')}` }]);
    }
    const e = this.get(id);
    if (e.status.state !== 'RUNNING') throw new ConflictError(`container ${id} is ${e.status.state}`);
    try {
      await this.run([this.crun, ...this.g, 'kill', id, signal], { timeoutMs: 10_000 });
    } catch (err) {
      if (e.status.state === 'RUNNING') throw err; // exited meanwhile: fine
    }
  }

  async wait(id: string): Promise<ContainerStatus> {
    const e = this.get(id);
    if (e.status.state === 'CREATED') throw new ConflictError(`container ${id} was not started`);
    await e.exited;
    return { ...e.status };
  }

  /** Deletes a stopped (or, with force, a running) container; deleting an unknown one succeeds. */
  async delete(id: string, force = false): Promise<void> {
    const e = this.entries.get(id);
    if (!e) return;
    if (e.status.state === 'RUNNING') {
      if (!force) throw new ConflictError(`container ${id} is running (use force)`);
      await this.signal(id, 'SIGKILL').catch(() => {});
      await e.exited;
    }
    await this.run([this.crun, ...this.g, 'delete', '--force', id]).catch(() => {});
    await rm(e.bundle, { recursive: true, force: true });
    this.entries.delete(id);
    if (e.dataplane) await this.opts.dataplane?.release(); // NICs back to the kernel, hugepages freed: nothing left for the next one
    this.opts.log.info({ containerId: id }, 'container deleted');
  }

  list(): ContainerStatus[] {
    return [...this.entries.values()].map((e) => ({ ...e.status }));
  }

  status(id: string): ContainerStatus {
    return { ...this.get(id).status };
  }

  /** Last `lines` lines of stdout+stderr (for FAILED reports). */
  async tail(id: string, lines: number): Promise<string[]> {
    const e = this.get(id);
    const out: string[] = [];
    for (const f of ['stdout.log', 'stderr.log']) {
      const text = await readFile(join(e.bundle, f), 'utf8').catch(() => '');
      out.push(...text.split('\n').filter(Boolean));
    }
    return out.slice(-lines);
  }

  /** Log chunks: what is kept (optionally only the last tailLines lines of each stream), then, with follow, new output until the container stops. */
  async *logs(id: string, opts: { follow?: boolean; tailLines?: number; signal?: AbortSignal } = {}): AsyncGenerator<LogChunk> {
    const e = this.get(id);
    const files = { stdout: join(e.bundle, 'stdout.log'), stderr: join(e.bundle, 'stderr.log') } as const;
    const offsets = { stdout: 0, stderr: 0 };
    if (opts.tailLines) {
      for (const s of ['stdout', 'stderr'] as const) {
        const text = await readFile(files[s]).catch(() => Buffer.alloc(0));
        let pos = text.length;
        let n = 0;
        if (pos > 0 && text[pos - 1] === 0x0a) pos--;
        while (pos > 0 && n < opts.tailLines) {
          pos = text.lastIndexOf(0x0a, pos - 1);
          if (pos < 0) { pos = 0; break; }
          n++;
          if (n < opts.tailLines) continue;
          pos += 1;
          break;
        }
        offsets[s] = Math.max(0, pos);
      }
    }
    for (;;) {
      const stoppedBefore = e.status.state !== 'RUNNING';
      for (const s of ['stdout', 'stderr'] as const) {
        const size = await stat(files[s]).then((st) => st.size, () => 0);
        if (size > offsets[s]) {
          const fh = await open(files[s], 'r');
          try {
            const buf = Buffer.alloc(size - offsets[s]);
            await fh.read(buf, 0, buf.length, offsets[s]);
            offsets[s] = size;
            yield { stream: s, data: buf };
          } finally {
            await fh.close();
          }
        }
      }
      if (!opts.follow || stoppedBefore || opts.signal?.aborted) return;
      await Promise.race([sleep(100), e.exited]);
    }
  }

  async exec(id: string, argv: string[], timeoutMs = 30_000): Promise<ExecProcessResponse> {
    if (!Array.isArray(argv) || argv.length === 0 || argv.some((a) => typeof a !== 'string')) {
      throw new InvalidArgumentError([{ field: 'argv', message: 'must be a non-empty list of strings' }]);
    }
    const e = this.get(id);
    if (e.status.state !== 'RUNNING') throw new ConflictError(`container ${id} is ${e.status.state}`);
    try {
      const r = await this.run([this.crun, ...this.g, 'exec', id, ...argv], { timeoutMs: timeoutMs || 30_000 });
      return { exitCode: 0, stdout: Buffer.from(r.stdout), stderr: Buffer.from(r.stderr) };
    } catch (err) {
      if (err instanceof CommandError && err.exitCode !== null) {
        return { exitCode: err.exitCode, stdout: Buffer.alloc(0), stderr: Buffer.from(err.stderr) };
      }
      throw err;
    }
  }

  /** SIGTERM to every running container, SIGKILL to those still running after graceMs; then deletes all. */
  async stopAll(graceMs: number): Promise<void> {
    const running = [...this.entries.values()].filter((e) => e.status.state === 'RUNNING');
    await Promise.all(running.map((e) => this.signal(e.status.id, 'SIGTERM').catch(() => {})));
    const timer = new Promise<'late'>((r) => setTimeout(() => r('late'), graceMs).unref());
    const late = await Promise.race([Promise.all(running.map((e) => e.exited)).then(() => 'done' as const), timer]);
    if (late === 'late') this.opts.log.warn({ graceMs }, 'containers did not stop within the grace period: killing');
    await this.close();
  }

  /** Kills and deletes everything (agent shutdown, tests). */
  async close(): Promise<void> {
    for (const id of [...this.entries.keys()]) await this.delete(id, true).catch((err: unknown) => this.opts.log.warn({ err, containerId: id }, 'delete failed'));
  }
}

function signalNumber(sig: NodeJS.Signals): number {
  const n = (
    { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGUSR1: 10, SIGSEGV: 11, SIGUSR2: 12, SIGPIPE: 13, SIGTERM: 15 } as Record<string, number>
  )[sig];
  return n ?? 0;
}

/**
 * A data plane container: the bound NICs' device nodes (allowed in its device cgroup), the hugepage mount bound
 * in, /sys writable (DPDK maps the PCI BARs through resourceN files) and DPDK's capabilities.
 */
/** The parts of an OCI runtime config.json a data plane container changes. */
interface OciConfigParts {
  process: { capabilities: Record<string, string[]> };
  mounts: Array<{ destination: string; type?: string; source?: string; options?: string[] }>;
  linux: { devices?: object[]; resources: { memory?: { limit: number }; devices?: object[] } };
}

async function exposeDataplane(config: OciConfigParts, x: { devices: string[]; hugepageMount?: string }): Promise<void> {
  const devices: object[] = [];
  const allow: object[] = [];
  for (const path of x.devices) {
    const st = await stat(path);
    const major = Math.floor(st.rdev / 256) & 0xfff;
    const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
    devices.push({ path, type: 'c', major, minor, fileMode: 0o600, uid: 0, gid: 0 });
    allow.push({ allow: true, type: 'c', major, minor, access: 'rwm' });
  }
  config.linux.devices = devices;
  config.linux.resources.devices = allow;
  config.mounts = config.mounts.map((m) =>
    m.destination === '/sys' ? { ...m, options: (m.options ?? []).filter((o) => o !== 'ro') } : m,
  );
  if (x.hugepageMount) config.mounts.push({ destination: x.hugepageMount, type: 'bind', source: x.hugepageMount, options: ['rbind', 'rw'] });
  const caps = config.process.capabilities;
  for (const k of ['bounding', 'effective', 'permitted', 'ambient']) caps[k] = [...caps[k], ...DATAPLANE_CAPS];
}

