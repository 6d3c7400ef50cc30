/**
 * The guest image builder: a Debian kernel (apt-get download + dpkg-deb -x into the cache, never installed on the
 * host) and one uncompressed initramfs holding busybox, the modules the devices need (closure over modules.dep,
 * indexed with busybox depmod), the host's Node.js with its shared libraries, the guest agent bundled into one file
 * by esbuild together with agent.proto, crun and iproute2's ip with their libraries, and /init
 * (deploy/guest-image/init). The host's filesystem is never shared into a guest: everything is copied in.
 *
 * Reproducible and cached by content hash: the hash covers every input's bytes (kernel package, binaries,
 * libraries, bundle, proto, init, module list, builder version); an image whose hash exists is reused, a changed
 * input makes a new one. Archives are written with sorted names, zero mtimes and `cpio --reproducible`.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, symlink, writeFile, lstat, stat, utimes, lutimes } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { AGENT_PORT_NAME, GUEST_RESEED_HELPER, agentProtoPath, InternalError, InvalidArgumentError } from '@edgenfv/contracts';
import { silentLogger, type Logger } from '@edgenfv/telemetry';
import { DPDK_MANIFEST, dpdkFileSet, dpdkManifest } from './dpdk-files.js';
import { connectAgent, type AgentConnection } from './connection.js';

const pexec = promisify(execFile);
export const IMAGE_BUILDER_VERSION = '3';
export const REPO_ROOT = fileURLToPath(new URL('../../../../../', import.meta.url));

export type KernelFlavor = 'cloud' | 'generic';

/** The system disk (read-only erofs: Node.js, the agent, crun, ip, DPDK, modules) in the image folder. */
export const SYSTEM_DISK_FILE = 'system.erofs';
/** Its virtio-blk serial: /init finds it by this (deploy/guest-image/init). */
export const SYSTEM_DISK_SERIAL = 'edgenfv-system';

export interface GuestImageOptions {
  /** Cache root: `$EDGENFV_CACHE`, else `<repo>/.cache`. */
  cacheDir?: string;
  /**
   * cloud (default, or `$EDGENFV_GUEST_KERNEL_FLAVOR`: boots faster; of the VF drivers only ixgbevf and mlx5_core) or
   * generic (every VF driver: igbvf, iavf, ixgbevf, i40e, mlx5_core, ice). A node with SR-IOV PFs uses generic.
   */
  kernelFlavor?: KernelFlavor;
  /** Never download: the kernel package must be in the cache or in `debDirs` (default: `$EDGENFV_OFFLINE` = 1). */
  offline?: boolean;
  /** Where else a kernel package may already be on disk (default: /var/cache/apt/archives). */
  debDirs?: string[];
  /** Exact kernel package (default: what linux-image-<flavor>-amd64 depends on). */
  kernelPackage?: string;
  /** More modules (each must exist in the kernel). */
  extraModules?: string[];
  /** The guest agent's compiled entry point (default: services/guest-agent/dist/src/main.js in this repo). */
  guestAgentEntry?: string;
  /** Host binaries to copy in with their shared libraries (default: node, crun, ip). */
  nodeBinary?: string;
  /** Carry dpdk-testpmd and the guest PMDs for builtin:testpmd (default true; dpdk-files.ts). */
  testpmd?: boolean;
  log?: Logger;
}

export interface GuestImage {
  /** Bytes builtin:testpmd adds to the initramfs (dpdk-testpmd, its libraries and PMDs not already carried); 0 without. */
  testpmdBytes: number;
  hash: string;
  dir: string;
  kernelPath: string;
  initrdPath: string;
  kernelRelease: string;
  kernelPackage: string;
  flavor: KernelFlavor;
  /** Modules carried in the image (optional ones the kernel lacks are listed in missingOptionalModules). */
  modules: string[];
  missingOptionalModules: string[];
  /** VF drivers carried, not loaded at boot: the guest agent loads one when a VF appears (modules.alias). */
  vfDrivers: string[];
  /** Name of the virtio-serial port the agent looks for. */
  agentPortName: string;
  /** Kernel command line the image expects (add `tsc_early_khz=` for microvm under TCG). */
  kernelArgs: string;
  /**
   * The read-only system disk every VM of this image gets (virtio-blk, serial `systemDisk.serial`): /init mounts
   * it at /sysroot; the initramfs holds only busybox, /init, /etc and the modules that reach the disk.
   */
  systemDisk: { path: string; serial: string };
  /** Guest RAM the image needs at least. */
  minMemoryMiB: number;
  /**
   * The image carries GUEST_RESEED_HELPER (deploy/guest-image/reseed.c, built with the host's cc): its guest agent can
   * reseed the kernel RNG after a snapshot restore (Reidentify), so its VMs may be restored from a template
   * (node config guest.snapshotBoot). false when the host that built it had no C compiler.
   */
  reseedHelper: boolean;
}

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.EDGENFV_CACHE || join(REPO_ROOT, '.cache');
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await new Promise<void>((resolve, reject) => {
    createReadStream(path).on('data', (d) => h.update(d)).on('end', () => resolve()).on('error', reject);
  });
  return h.digest('hex');
}

async function run(argv: string[], opts: { cwd?: string; input?: string } = {}): Promise<string> {
  try {
    const { stdout } = await pexec(argv[0]!, argv.slice(1), { cwd: opts.cwd, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new InternalError(`${argv.join(' ')}: ${(e.stderr || e.message).trim()}`, { cause: err });
  }
}

async function which(bin: string): Promise<string> {
  const out = await run(['sh', '-c', `command -v ${bin}`]).catch(() => '');
  if (!out.trim()) throw new InternalError(`${bin} not found on this host (scripts/setup.sh installs it)`);
  return (await run(['readlink', '-f', out.trim()])).trim();
}

/** Shared libraries of a dynamically linked binary (ldd), as absolute paths incl. the loader. */
async function sharedLibs(bin: string): Promise<string[]> {
  const out = await run(['ldd', bin]).catch(() => '');
  const libs = new Set<string>();
  for (const line of out.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.add(m[1]!);
  }
  return [...libs].sort();
}

// ---- kernel

const FLAVOR_RE: Record<KernelFlavor, RegExp> = {
  cloud: /^(linux-image-\d[\d.]*-\d+-cloud-amd64)_.*\.deb$/,
  generic: /^(linux-image-\d[\d.]*-\d+-amd64)_.*\.deb$/,
};

async function debsIn(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.deb')).sort();
}

/**
 * The kernel package behind linux-image-<flavor>-amd64 (apt-cache); offline, or when apt cannot say, the newest
 * package of that flavor already on disk.
 */
async function resolveKernelPackage(flavor: KernelFlavor, dirs: string[], offline: boolean): Promise<string> {
  const meta = flavor === 'cloud' ? 'linux-image-cloud-amd64' : 'linux-image-amd64'; // Debian's generic meta package has no flavour in its name
  if (!offline) {
    const out = await run(['apt-cache', 'depends', meta]).catch(() => '');
    const m = /Depends:\s+(linux-image-\S+)/.exec(out);
    if (m) return m[1]!;
  }
  const have: string[] = [];
  for (const d of dirs) for (const f of await debsIn(d)) if (FLAVOR_RE[flavor].test(f)) have.push(FLAVOR_RE[flavor].exec(f)![1]!);
  const newest = have.sort((a, b) => a.localeCompare(b, 'en', { numeric: true })).pop();
  if (!newest)
    throw new InternalError(`no ${flavor} guest kernel on this node: ${offline ? 'offline, and ' : 'apt-cache cannot resolve ' + meta + ', and '}no linux-image-*-${flavor === 'cloud' ? 'cloud-' : ''}amd64 .deb in ${dirs.join(', ')}`);
  return newest;
}

/**
 * Finds (cache, then `dirs`), else downloads unless offline, and unpacks (once) a kernel package; returns the
 * unpacked root and release. Offline without the package: an error naming the package and where to put it.
 */
async function ensureKernel(cache: string, pkg: string, dirs: string[], offline: boolean, log?: Logger): Promise<{ root: string; release: string; deb: string }> {
  const debs = join(cache, 'debs');
  await mkdir(debs, { recursive: true });
  const mine = (f: string) => f.startsWith(`${pkg}_`) && f.endsWith('.deb');
  let deb = (await debsIn(debs)).find(mine);
  for (const d of dirs) {
    if (deb) break;
    const found = (await debsIn(d)).find(mine);
    if (found) {
      await copyFile(join(d, found), join(debs, `.${found}.tmp${process.pid}`));
      await rename(join(debs, `.${found}.tmp${process.pid}`), join(debs, found));
      deb = found;
    }
  }
  if (!deb && offline)
    throw new InternalError(`kernel package ${pkg} is not on this node (looked in ${[debs, ...dirs].join(', ')}) and the node is offline: put ${pkg}_<version>_amd64.deb into ${debs}`);
  if (!deb) {
    log?.info({ pkg }, 'guest image: downloading kernel package');
    const tmp = await mkdtemp(join(debs, '.dl-'));
    try {
      await run(['apt-get', 'download', '-q', pkg], { cwd: tmp }).catch((err: Error) => {
        throw new InternalError(`kernel package ${pkg} is not on this node (looked in ${[debs, ...dirs].join(', ')}) and apt-get download failed: ${err.message}; put ${pkg}_<version>_amd64.deb into ${debs}`, { cause: err });
      });
      const got = (await readdir(tmp)).find((f) => f.endsWith('.deb'));
      if (!got) throw new InternalError(`apt-get download ${pkg} produced no .deb`);
      await rename(join(tmp, got), join(debs, got));
      deb = got;
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }
  const root = join(cache, 'kernels', deb.replace(/\.deb$/, ''));
  if (!existsSync(join(root, '.complete'))) {
    const tmp = `${root}.tmp${process.pid}`;
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { recursive: true });
    await run(['dpkg-deb', '-x', join(debs, deb), tmp]);
    const rel = (await readdir(join(tmp, 'lib', 'modules')))[0]!;
    await run(['busybox', 'depmod', '-b', tmp, rel]);
    await writeFile(join(tmp, '.complete'), '');
    await rm(root, { recursive: true, force: true });
    await rename(tmp, root).catch(async (err) => {
      if (!existsSync(join(root, '.complete'))) throw err;
      await rm(tmp, { recursive: true, force: true });
    });
  }
  const release = (await readdir(join(root, 'lib', 'modules')))[0]!;
  return { root, release, deb: join(debs, deb) };
}

interface ModuleList {
  /** Loaded by /init before the system disk is mounted (they are in the initramfs): must exist. */
  early: string[];
  required: string[];
  optional: string[];
  /** VF drivers: carried when the kernel has them, loaded by the guest agent when a VF appears (not at boot). */
  vf: string[];
}

export async function readModuleList(path = join(REPO_ROOT, 'deploy/guest-image/modules')): Promise<ModuleList> {
  const out: ModuleList = { early: [], required: [], optional: [], vf: [] };
  for (const line of (await readFile(path, 'utf8')).split('\n')) {
    const t = line.replace(/#.*/, '').trim();
    if (!t) continue;
    const [kind, name] = t.split(/\s+/);
    if ((kind === 'early' || kind === 'required' || kind === 'optional' || kind === 'vf') && name) out[kind].push(name);
  }
  return out;
}

/**
 * A kernel's module graph: modules.dep's hard dependencies plus each module's `softdep=pre:` (read from the .ko's
 * modinfo; Debian's packages ship no modules.softdep). A soft dependency names a module or an alias (libcrc32c:
 * `pre: crc32c`, which the generic kernel has as crc32c_generic.ko while the cloud kernel builds it in): it is
 * resolved through modules.alias, the `_generic` implementation first, and skipped when built in.
 */
class ModuleGraph {
  private readonly deps = new Map<string, string[]>();
  private readonly byName = new Map<string, string>();
  private readonly aliases = new Map<string, string[]>();
  private readonly soft = new Map<string, string[]>();

  private constructor(private readonly dir: string) {}

  static async load(kroot: string, release: string): Promise<ModuleGraph> {
    const g = new ModuleGraph(join(kroot, 'lib', 'modules', release));
    for (const line of (await readFile(join(g.dir, 'modules.dep'), 'utf8')).split('\n')) {
      const [p, rest] = line.split(':');
      if (!p) continue;
      g.deps.set(p, (rest ?? '').trim().split(/\s+/).filter(Boolean));
      g.byName.set(modName(p), p);
    }
    const alias = await readFile(join(g.dir, 'modules.alias'), 'utf8').catch(() => '');
    for (const line of alias.split('\n')) {
      const [kw, a, mod] = line.trim().split(/\s+/);
      if (kw !== 'alias' || !a || !mod) continue;
      const list = g.aliases.get(a) ?? [];
      list.push(mod.replace(/-/g, '_'));
      g.aliases.set(a, list);
    }
    return g;
  }

  path(name: string): string | undefined {
    return this.byName.get(name.replace(/-/g, '_'));
  }

  /** What `p` needs loaded before it: hard dependencies, then soft `pre:` ones. */
  async before(p: string): Promise<string[]> {
    let soft = this.soft.get(p);
    if (!soft) {
      soft = [];
      const info = (await readFile(join(this.dir, p)).catch(() => Buffer.alloc(0))).toString('latin1');
      for (const m of info.matchAll(/softdep=([^\0]*)/g)) {
        const pre = /pre:\s*([^:]*?)(?:\s+post:|$)/.exec(m[1]!)?.[1] ?? '';
        for (const name of pre.split(/\s+/).filter(Boolean)) {
          const direct = this.path(name);
          const targets = direct ? [direct] : (this.aliases.get(name) ?? []).map((n) => this.path(n)).filter((x): x is string => !!x);
          const pick = targets.find((t) => modName(t).endsWith('_generic')) ?? targets[0];
          if (pick && pick !== p) soft.push(pick);
        }
      }
      this.soft.set(p, soft);
    }
    return [...(this.deps.get(p) ?? []), ...soft];
  }
}

function modName(p: string): string {
  return basename(p).replace(/\.ko(\.[a-z]+)?$/, '').replace(/-/g, '_');
}

/** Module name -> path in modules.dep, plus the closure over dependencies (soft `pre:` ones included). */
async function moduleClosure(g: ModuleGraph, names: string[]): Promise<{ files: string[]; found: string[]; missing: string[] }> {
  const files = new Set<string>();
  const add = async (p: string): Promise<void> => {
    if (files.has(p)) return;
    files.add(p);
    for (const d of await g.before(p)) await add(d);
  };
  const found: string[] = [];
  const missing: string[] = [];
  for (const n of names) {
    const p = g.path(n);
    if (p) {
      await add(p);
      found.push(n);
    } else missing.push(n);
  }
  return { files: [...files].sort(), found, missing };
}

/** Module files (paths in modules.dep) of `names` and their dependencies, each after what it needs before it. */
async function loadOrder(g: ModuleGraph, names: string[]): Promise<string[]> {
  const { files } = await moduleClosure(g, names);
  const order: string[] = [];
  const visiting = new Set<string>();
  const visit = async (p: string): Promise<void> => {
    if (order.includes(p) || visiting.has(p)) return;
    visiting.add(p);
    for (const d of await g.before(p)) await visit(d);
    order.push(p);
  };
  for (const f of files) await visit(f);
  return order;
}

// ---- agent bundle

/**
 * One-file CommonJS bundle of the guest agent (esbuild). CommonJS, not ESM: the guest starts it through
 * deploy/guest-image/agent-loader.cjs with V8's code cache (vm.Script cachedData), which needs a classic script;
 * it also skips Node's ESM loader (measured on the host: ~30 % less CPU to the bundle's first statement).
 */
export async function bundleGuestAgent(entry: string): Promise<Buffer> {
  if (!existsSync(entry)) throw new InternalError(`guest agent entry ${entry} missing: build services/guest-agent first (npx tsc -b)`);
  const esbuild = await import('esbuild');
  const res = await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    minify: true,
    legalComments: 'none',
    write: false,
    logLevel: 'silent',
    // import.meta.url of the ESM sources (a default path the guest overrides, e.g. agent.proto's): the bundle's own URL
    define: { 'import.meta.url': '__edgImportMetaUrl' },
    // The first statement of the bundle: the guest's uptime once Node.js has started and compiled the bundle
    // (`npm run bench:boot` reads it off the console to split Node.js start from the agent's own start).
    banner: {
      js:
        "var __edgImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" +
        " try { require('node:fs').writeSync(1, 'EDGENFV_AGENT_JS uptime=' + require('node:fs').readFileSync('/proc/uptime', 'utf8').split(' ')[0] + '\\n'); } catch {}",
    },
  });
  // the entry's #! line: the loader compiles the bundle inside a function wrapper, where it is a syntax error
  return Buffer.from(res.outputFiles[0]!.text.replace(/^#![^\n]*\n/, ''));
}

/** Node.js flags of the guest agent (/etc/edgenfv/node-flags, read by /init); the code cache is made with the same. */
export function agentNodeFlags(imageHash: string): string[] {
  // --hash-seed: V8 otherwise picks a random string-hash seed per process, and the code cache's bytes (not its
  // use) depend on it; fixed per image (from its hash), the same inputs give the same cache bytes. The agent hashes
  // only what its host sends it (docs/guest-image.md).
  return ['--jitless', '--no-expose-wasm', '--max-semi-space-size=1', '--max-old-space-size=48', `--hash-seed=${parseInt(imageHash.slice(0, 8), 16)}`];
}

/**
 * The code cache of the guest agent bundle, "trained" on this host: the image's own (stripped) node runs the
 * image's loader and bundle with the guest's flags on a socket stand-in of the virtio port until the agent is
 * ready and a client has made the first RPCs (Health + Version: the handshake of every boot), then the loader writes
 * the cache of every function compiled so far (the start path and those RPCs' path). Not further: what runs later
 * depends on timing, and the cache's bytes would differ from build to build.
 * undefined when that fails (the guest then compiles the bundle as before).
 */
async function trainAgentCache(root: string, work: string, flags: string[], log?: Logger): Promise<Buffer | undefined> {
  const dir = join(work, 'train');
  await mkdir(dir, { recursive: true });
  const out = join(dir, 'agent.cache');
  const chardevPath = join(dir, 'agent.sock');
  const child = spawn(
    join(root, 'usr/bin/node'),
    [...flags, join(root, 'opt/edgenfv/agent-loader.cjs'), '--port', `socket:${chardevPath}`, '--state-dir', join(dir, 'state'), '--proto', join(root, 'opt/edgenfv/agent.proto')],
    { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, EDGENFV_AGENT_CACHE_OUT: out }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = new Promise<boolean>((resolve) => {
    const onData = (d: Buffer) => {
      output = (output + d.toString()).slice(-4096);
      if (output.includes('EDGENFV_AGENT_READY')) resolve(true);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exited.then(() => resolve(false));
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  let conn: AgentConnection | undefined;
  try {
    if (!(await ready)) throw new Error(`the agent did not start: ${output.trim().split('\n').slice(-3).join(' | ')}`);
    // then the first RPCs every boot's handshake makes (the channel, HTTP/2, Health and Version: compiled at the first
    // call otherwise, 0.4-1.8 s of a TCG boot): the node agent's own client connects over the socket stand-in of the
    // port; the cache is written while it is connected (what runs at its close is timing and stays out)
    conn = await connectAgent({ chardevPath, timeoutMs: 30_000, log: silentLogger() });
    child.kill('SIGUSR2');
    for (let i = 0; i < 200 && !existsSync(out); i++) await new Promise((r) => setTimeout(r, 25));
    if (!existsSync(out)) throw new Error(`the loader wrote no cache (exit ${child.exitCode ?? child.signalCode ?? 'none'}): ${output.trim().split('\n').slice(-3).join(' | ')}`);
    return await readFile(out);
  } catch (err) {
    log?.warn({ err }, 'guest image: no code cache for the agent (the guest compiles it at start)');
    return undefined;
  } finally {
    clearTimeout(timer);
    await conn?.close().catch(() => undefined);
    child.kill('SIGKILL');
    await exited;
    await rm(dir, { recursive: true, force: true });
  }
}

// ---- image

/** Builds (or finds in the cache) the guest image. Safe to call concurrently: the last rename wins, identically. */
export async function buildGuestImage(opts: GuestImageOptions = {}): Promise<GuestImage> {
  const log = opts.log;
  const flavor = opts.kernelFlavor ?? ((process.env.EDGENFV_GUEST_KERNEL_FLAVOR as KernelFlavor | undefined) || 'cloud');
  if (flavor !== 'cloud' && flavor !== 'generic') throw new InvalidArgumentError([{ field: 'kernelFlavor', message: 'cloud or generic' }]);
  for (const [i, m] of (opts.extraModules ?? []).entries()) {
    if (!/^[A-Za-z0-9_-]+$/.test(m)) throw new InvalidArgumentError([{ field: `extraModules[${i}]`, message: `not a module name: ${JSON.stringify(m)}` }]);
  }
  const cache = join(opts.cacheDir ?? defaultCacheDir(), 'guest-image');
  const offline = opts.offline ?? process.env.EDGENFV_OFFLINE === '1';
  const debDirs = opts.debDirs ?? ['/var/cache/apt/archives'];
  const pkg = opts.kernelPackage ?? (await resolveKernelPackage(flavor, [join(cache, 'debs'), ...debDirs], offline));
  const kernel = await ensureKernel(cache, pkg, debDirs, offline, log);
  const list = await readModuleList();
  const wanted = [...list.required, ...(opts.extraModules ?? [])];
  const graph = await ModuleGraph.load(kernel.root, kernel.release);
  const req = await moduleClosure(graph, wanted);
  if (req.missing.length > 0) throw new InvalidArgumentError([{ field: 'modules', message: `not in ${pkg}: ${req.missing.join(', ')}` }]);
  const opt = await moduleClosure(graph, list.optional);
  const vf = await moduleClosure(graph, list.vf);
  const early = await moduleClosure(graph, list.early);
  if (early.missing.length > 0) throw new InvalidArgumentError([{ field: 'modules', message: `not in ${pkg}: ${early.missing.join(', ')}` }]);
  const earlyOrder = await loadOrder(graph, early.found);
  const modFiles = [...new Set([...early.files, ...req.files, ...opt.files, ...vf.files])].sort();
  const moduleNames = [...req.found, ...opt.found];

  const bundle = await bundleGuestAgent(opts.guestAgentEntry ?? join(REPO_ROOT, 'services/guest-agent/dist/src/main.js'));
  const protoPath = agentProtoPath();
  const initPath = join(REPO_ROOT, 'deploy/guest-image/init');
  const loaderPath = join(REPO_ROOT, 'deploy/guest-image/agent-loader.cjs');
  const reseedPath = join(REPO_ROOT, 'deploy/guest-image/reseed.c');
  // the reseed helper's compiler (optional: without one the image cannot be restored from snapshots)
  const cc = await which('cc').catch(() => undefined);
  const ccVersion = cc ? `${(await run([cc, '--version'])).split('\n')[0]} ${await sha256File(cc)}` : 'none';
  const bins = {
    '/usr/bin/node': opts.nodeBinary ?? (await which('node')),
    '/usr/bin/crun': await which('crun'),
    '/usr/sbin/ip': await which('ip'),
    '/bin/busybox': await which('busybox'),
  };
  const libs = new Set<string>();
  for (const [dst, src] of Object.entries(bins)) if (dst !== '/bin/busybox') for (const l of await sharedLibs(src)) libs.add(l);
  // builtin:testpmd: dpdk-testpmd, its libraries and the guest's PMDs (dpdk-files.ts)
  const dpdk = opts.testpmd === false ? { files: [], links: [] } : await dpdkFileSet();

  // binutils' strip (for node's debug info); its version is an input of the image like the binaries'
  const stripTool = await which('strip').catch(() => undefined);
  const stripVersion = stripTool ? (await run([stripTool, '--version'])).split('\n')[0] : 'none';
  // erofs-utils' mkfs.erofs writes the system disk (scripts/setup.sh installs it); its version is an input too
  const mkfsErofs = await which('mkfs.erofs').catch(() => {
    throw new InternalError('mkfs.erofs not found on this host: the guest image\'s system disk needs erofs-utils (scripts/setup.sh installs it)');
  });
  const mkfsVersion = await sha256File(mkfsErofs); // 1.5 has no --version

  // content hash of every input
  const h = createHash('sha256');
  h.update(`strip ${stripVersion}\nmkfs.erofs ${mkfsVersion}\nearly ${earlyOrder.join(',')}\n`);
  h.update(`builder ${IMAGE_BUILDER_VERSION}\nflavor ${flavor}\nmodules ${moduleNames.join(',')}\nvf ${vf.found.join(',')}\n`);
  h.update(`kernel ${await sha256File(kernel.deb)}\n`);
  h.update(`bundle ${createHash('sha256').update(bundle).digest('hex')}\n`);
  h.update(`cc ${ccVersion}\n`);
  for (const f of [protoPath, initPath, loaderPath, reseedPath]) h.update(`${basename(f)} ${await sha256File(f)}\n`);
  for (const [dst, src] of Object.entries(bins)) h.update(`${dst} ${await sha256File(src)}\n`);
  for (const l of [...libs].sort()) h.update(`${l} ${await sha256File(l)}\n`);
  for (const f of dpdk.files) h.update(`dpdk ${f} ${await sha256File(f)}\n`);
  for (const [p, t] of dpdk.links) h.update(`dpdk link ${p} ${t}\n`);
  const hash = h.digest('hex').slice(0, 24);
  const dir = join(cache, 'images', hash);
  const image: GuestImage = {
    hash,
    dir,
    kernelPath: join(dir, 'vmlinuz'),
    initrdPath: join(dir, 'initrd.cpio'),
    systemDisk: { path: join(dir, SYSTEM_DISK_FILE), serial: SYSTEM_DISK_SERIAL },
    kernelRelease: kernel.release,
    kernelPackage: pkg,
    flavor,
    modules: moduleNames,
    missingOptionalModules: [...opt.missing, ...vf.missing],
    testpmdBytes: await sizeOf(dpdk.files.filter((f) => !libs.has(f))),
    vfDrivers: vf.found,
    agentPortName: AGENT_PORT_NAME,
    kernelArgs: 'console=ttyS0 quiet panic=-1',
    minMemoryMiB: 384,
    reseedHelper: cc !== undefined,
  };
  if (existsSync(join(dir, '.complete'))) return image;

  log?.info({ hash, kernel: pkg }, 'guest image: building');
  await mkdir(join(cache, 'images'), { recursive: true });
  const work = await mkdtemp(join(cache, 'images', `.build-${hash}-`));
  try {
    // root: the initramfs (busybox, /init, /etc, the modules that reach the system disk); sys: the system disk
    // (everything else), mounted read-only at /sysroot, its top-level folders linked from the initramfs' root
    const root = join(work, 'root');
    const sys = join(work, 'sys');
    for (const d of ['bin', 'sbin', 'proc', 'sys', 'dev', 'tmp', 'run', 'root', 'mnt', 'etc/edgenfv', 'var/log', 'sysroot', 'early']) {
      await mkdir(join(root, d), { recursive: true });
    }
    for (const d of ['usr/bin', 'usr/sbin', 'opt/edgenfv', 'lib']) await mkdir(join(sys, d), { recursive: true });
    await copyFile(bins['/bin/busybox'], join(root, 'bin/busybox'));
    const applets = (await run([bins['/bin/busybox'], '--list'])).split('\n').filter((a) => a && a !== 'busybox');
    for (const a of applets) await symlink('busybox', join(root, 'bin', a));
    for (const [dst, src] of Object.entries(bins)) {
      if (dst === '/bin/busybox') continue;
      await mkdir(join(sys, dirname(dst)), { recursive: true });
      await copyFile(src, join(sys, dst));
      await chmod(join(sys, dst), 0o755);
    }
    // The host's node carries debug info and a symbol table (~12.6 MB of the 99 MB here) the guest never reads
    // (dynamic symbols stay: native addons link against them): stripped, the guest reads less and each VM
    // holds less in its page cache (docs/guest-image.md).
    if (stripTool) await run([stripTool, '--strip-unneeded', join(sys, '/usr/bin/node')]);
    // /lib64/ld-linux-x86-64.so.2 is how binaries name the loader
    for (const l of libs) {
      await mkdir(join(sys, dirname(l)), { recursive: true });
      await copyFile(l, join(sys, l));
    }
    for (const f of dpdk.files) {
      await mkdir(join(sys, dirname(f)), { recursive: true });
      if (!existsSync(join(sys, f))) await copyFile(f, join(sys, f));
    }
    for (const [p, t] of dpdk.links) {
      await mkdir(join(sys, dirname(p)), { recursive: true });
      await symlink(t, join(sys, p)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
    }
    if (dpdk.files.length > 0) await writeFile(join(root, DPDK_MANIFEST.slice(1)), dpdkManifest(dpdk));
    const mdir = join(sys, 'lib', 'modules', kernel.release);
    for (const f of modFiles) {
      await mkdir(join(mdir, dirname(f)), { recursive: true });
      await copyFile(join(kernel.root, 'lib', 'modules', kernel.release, f), join(mdir, f));
    }
    for (const f of ['modules.order', 'modules.builtin', 'modules.builtin.modinfo']) {
      const src = join(kernel.root, 'lib', 'modules', kernel.release, f);
      if (existsSync(src)) await copyFile(src, join(mdir, f));
    }
    await run(['busybox', 'depmod', '-b', sys, kernel.release]);
    // the modules /init needs before the system disk is mounted: insmod'ed in dependency order from /early
    for (const f of earlyOrder) await copyFile(join(kernel.root, 'lib', 'modules', kernel.release, f), join(root, 'early', basename(f)));
    await writeFile(join(root, 'etc/edgenfv/early-modules'), earlyOrder.map((f) => basename(f)).join('\n') + '\n');
    await writeFile(join(root, 'etc/edgenfv/modules'), moduleNames.join('\n') + '\n');
    await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    await writeFile(join(root, 'etc/group'), 'root:x:0:\n');
    await writeFile(join(root, 'etc/hosts'), '127.0.0.1 localhost\n');
    await writeFile(join(root, 'etc/edgenfv/image'), JSON.stringify({ hash, kernel: pkg, builder: IMAGE_BUILDER_VERSION }) + '\n');
    await writeFile(join(sys, 'opt/edgenfv/guest-agent.cjs'), bundle);
    await copyFile(loaderPath, join(sys, 'opt/edgenfv/agent-loader.cjs'));
    await copyFile(protoPath, join(sys, 'opt/edgenfv/agent.proto'));
    if (cc) {
      // relative source name and -s: nothing of this host's paths in the binary (reproducible across checkouts)
      await mkdir(join(sys, dirname(GUEST_RESEED_HELPER)), { recursive: true });
      await run([cc, '-O2', '-s', '-o', join(sys, GUEST_RESEED_HELPER), basename(reseedPath)], { cwd: dirname(reseedPath) });
      await chmod(join(sys, GUEST_RESEED_HELPER), 0o755);
    }
    const nodeFlags = agentNodeFlags(hash);
    await writeFile(join(root, 'etc/edgenfv/node-flags'), nodeFlags.join(' ') + '\n');
    const codeCache = await trainAgentCache(sys, work, nodeFlags, log);
    if (codeCache) await writeFile(join(sys, 'opt/edgenfv/guest-agent.cjs.cache'), codeCache);
    for (const top of (await readdir(sys)).sort()) await symlink(`sysroot/${top}`, join(root, top));
    await copyFile(initPath, join(root, 'init'));
    await chmod(join(root, 'init'), 0o755);
    // reproducible: zero mtimes, sorted names, no inode/device numbers; the disk with a UUID from the hash
    await zeroMtimes(root);
    await zeroMtimes(sys);
    const names = (await run(['find', '.', '-mindepth', '1'], { cwd: root })).split('\n').filter(Boolean).sort();
    await new Promise<void>((resolve, reject) => {
      const child = execFile('sh', ['-c', `cpio -o -H newc --reproducible --quiet > "${join(work, 'initrd.cpio')}"`], { cwd: root }, (err) =>
        err ? reject(new InternalError(`cpio: ${err.message}`, { cause: err })) : resolve(),
      );
      child.stdin!.end(names.join('\n') + '\n');
    });
    const uuid = `${hash.slice(0, 8)}-${hash.slice(8, 12)}-4${hash.slice(13, 16)}-8${hash.slice(17, 20)}-${hash.slice(12, 13)}${hash.slice(16, 17)}${hash.slice(20, 24)}000000`;
    await run([mkfsErofs, '--quiet', '-T0', `-U${uuid}`, '--all-root', '-x-1', join(work, SYSTEM_DISK_FILE), sys]);
    await rm(sys, { recursive: true, force: true });
    await copyFile(join(kernel.root, 'boot', `vmlinuz-${kernel.release}`), join(work, 'vmlinuz'));
    await rm(root, { recursive: true, force: true });
    await writeFile(join(work, 'image.json'), JSON.stringify({ ...image, dir: undefined }, null, 2));
    await writeFile(join(work, '.complete'), '');
    await rename(work, dir).catch(async (err) => {
      if (!existsSync(join(dir, '.complete'))) throw err; // someone else finished the same image first
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  log?.info({ hash }, 'guest image: built');
  return image;
}

async function sizeOf(files: string[]): Promise<number> {
  let n = 0;
  for (const f of files) n += (await stat(f)).size; // the file's bytes (ldd paths may be links)
  return n;
}

async function zeroMtimes(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const p = join(dir, name);
    const st = await lstat(p);
    if (st.isDirectory()) await zeroMtimes(p);
    if (st.isSymbolicLink()) await lutimes(p, 0, 0);
    else await utimes(p, 0, 0);
  }
  await utimes(dir, 0, 0);
}
