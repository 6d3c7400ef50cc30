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
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, symlink, writeFile, lstat, stat, utimes, lutimes } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { AGENT_PORT_NAME, agentProtoPath, InternalError, InvalidArgumentError } from '@edgenfv/contracts';
import type { Logger } from '@edgenfv/telemetry';
import { DPDK_MANIFEST, dpdkFileSet, dpdkManifest } from './dpdk-files.js';

const pexec = promisify(execFile);
export const IMAGE_BUILDER_VERSION = '1';
export const REPO_ROOT = fileURLToPath(new URL('../../../../../', import.meta.url));

export type KernelFlavor = 'cloud' | 'generic';

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
  /** Guest RAM the image needs at least (Node.js in an initramfs). */
  minMemoryMiB: number;
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
  required: string[];
  optional: string[];
  /** VF drivers: carried when the kernel has them, loaded by the guest agent when a VF appears (not at boot). */
  vf: string[];
}

export async function readModuleList(path = join(REPO_ROOT, 'deploy/guest-image/modules')): Promise<ModuleList> {
  const out: ModuleList = { required: [], optional: [], vf: [] };
  for (const line of (await readFile(path, 'utf8')).split('\n')) {
    const t = line.replace(/#.*/, '').trim();
    if (!t) continue;
    const [kind, name] = t.split(/\s+/);
    if ((kind === 'required' || kind === 'optional' || kind === 'vf') && name) out[kind].push(name);
  }
  return out;
}

/** Module name -> path in modules.dep, plus the closure over dependencies. */
async function moduleClosure(kroot: string, release: string, names: string[]): Promise<{ files: string[]; found: string[]; missing: string[] }> {
  const dep = await readFile(join(kroot, 'lib', 'modules', release, 'modules.dep'), 'utf8');
  const deps = new Map<string, string[]>();
  const byName = new Map<string, string>();
  for (const line of dep.split('\n')) {
    const [p, rest] = line.split(':');
    if (!p) continue;
    deps.set(p, (rest ?? '').trim().split(/\s+/).filter(Boolean));
    byName.set(basename(p).replace(/\.ko(\.[a-z]+)?$/, '').replace(/-/g, '_'), p);
  }
  const files = new Set<string>();
  const add = (p: string): void => {
    if (files.has(p)) return;
    files.add(p);
    for (const d of deps.get(p) ?? []) add(d);
  };
  const found: string[] = [];
  const missing: string[] = [];
  for (const n of names) {
    const p = byName.get(n.replace(/-/g, '_'));
    if (p) {
      add(p);
      found.push(n);
    } else missing.push(n);
  }
  return { files: [...files].sort(), found, missing };
}

// ---- agent bundle

/** One-file ESM bundle of the guest agent (esbuild), with a `require` for the CommonJS parts (grpc-js). */
export async function bundleGuestAgent(entry: string): Promise<Buffer> {
  if (!existsSync(entry)) throw new InternalError(`guest agent entry ${entry} missing: build services/guest-agent first (npx tsc -b)`);
  const esbuild = await import('esbuild');
  const res = await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    minify: true,
    legalComments: 'none',
    write: false,
    logLevel: 'silent',
    // The first statement of the bundle: the guest's uptime once Node.js has started and compiled the bundle
    // (`npm run bench:boot` reads it off the console to split Node.js start from the agent's own start).
    banner: {
      js:
        "import { createRequire as __edgCreateRequire } from 'node:module'; const require = __edgCreateRequire(import.meta.url);" +
        " try { process.stdout.write('EDGENFV_AGENT_JS uptime=' + require('node:fs').readFileSync('/proc/uptime', 'utf8').split(' ')[0] + '\\n'); } catch {}",
    },
  });
  return Buffer.from(res.outputFiles[0]!.contents);
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
  const req = await moduleClosure(kernel.root, kernel.release, wanted);
  if (req.missing.length > 0) throw new InvalidArgumentError([{ field: 'modules', message: `not in ${pkg}: ${req.missing.join(', ')}` }]);
  const opt = await moduleClosure(kernel.root, kernel.release, list.optional);
  const vf = await moduleClosure(kernel.root, kernel.release, list.vf);
  const modFiles = [...new Set([...req.files, ...opt.files, ...vf.files])].sort();
  const moduleNames = [...req.found, ...opt.found];

  const bundle = await bundleGuestAgent(opts.guestAgentEntry ?? join(REPO_ROOT, 'services/guest-agent/dist/src/main.js'));
  const protoPath = agentProtoPath();
  const initPath = join(REPO_ROOT, 'deploy/guest-image/init');
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

  // content hash of every input
  const h = createHash('sha256');
  h.update(`strip ${stripVersion}\n`);
  h.update(`builder ${IMAGE_BUILDER_VERSION}\nflavor ${flavor}\nmodules ${moduleNames.join(',')}\nvf ${vf.found.join(',')}\n`);
  h.update(`kernel ${await sha256File(kernel.deb)}\n`);
  h.update(`bundle ${createHash('sha256').update(bundle).digest('hex')}\n`);
  for (const f of [protoPath, initPath]) h.update(`${basename(f)} ${await sha256File(f)}\n`);
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
  };
  if (existsSync(join(dir, '.complete'))) return image;

  log?.info({ hash, kernel: pkg }, 'guest image: building');
  await mkdir(join(cache, 'images'), { recursive: true });
  const work = await mkdtemp(join(cache, 'images', `.build-${hash}-`));
  try {
    const root = join(work, 'root');
    for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'proc', 'sys', 'dev', 'tmp', 'run', 'root', 'mnt', 'etc/edgenfv', 'opt/edgenfv', 'var/log']) {
      await mkdir(join(root, d), { recursive: true });
    }
    await copyFile(bins['/bin/busybox'], join(root, 'bin/busybox'));
    const applets = (await run([bins['/bin/busybox'], '--list'])).split('\n').filter((a) => a && a !== 'busybox');
    for (const a of applets) await symlink('busybox', join(root, 'bin', a));
    for (const [dst, src] of Object.entries(bins)) {
      if (dst === '/bin/busybox') continue;
      await mkdir(join(root, dirname(dst)), { recursive: true });
      await copyFile(src, join(root, dst));
      await chmod(join(root, dst), 0o755);
    }
    // The host's node carries debug info and a symbol table (~12.6 MB of the 99 MB here) the guest never reads
    // (dynamic symbols stay: native addons link against them): stripped, the kernel
    // unpacks that much less at every boot and each VM holds that much less RAM (docs/guest-image.md).
    if (stripTool) await run([stripTool, '--strip-unneeded', join(root, '/usr/bin/node')]);
    for (const l of libs) {
      await mkdir(join(root, dirname(l)), { recursive: true });
      await copyFile(l, join(root, l));
    }
    for (const f of dpdk.files) {
      await mkdir(join(root, dirname(f)), { recursive: true });
      if (!existsSync(join(root, f))) await copyFile(f, join(root, f));
    }
    for (const [p, t] of dpdk.links) {
      await mkdir(join(root, dirname(p)), { recursive: true });
      await symlink(t, join(root, p)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
    }
    if (dpdk.files.length > 0) await writeFile(join(root, DPDK_MANIFEST.slice(1)), dpdkManifest(dpdk));
    // /lib64/ld-linux-x86-64.so.2 is how binaries name the loader
    const mdir = join(root, 'lib', 'modules', kernel.release);
    for (const f of modFiles) {
      await mkdir(join(mdir, dirname(f)), { recursive: true });
      await copyFile(join(kernel.root, 'lib', 'modules', kernel.release, f), join(mdir, f));
    }
    for (const f of ['modules.order', 'modules.builtin', 'modules.builtin.modinfo']) {
      const src = join(kernel.root, 'lib', 'modules', kernel.release, f);
      if (existsSync(src)) await copyFile(src, join(mdir, f));
    }
    await run(['busybox', 'depmod', '-b', root, kernel.release]);
    await writeFile(join(root, 'etc/edgenfv/modules'), moduleNames.join('\n') + '\n');
    await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    await writeFile(join(root, 'etc/group'), 'root:x:0:\n');
    await writeFile(join(root, 'etc/hosts'), '127.0.0.1 localhost\n');
    await writeFile(join(root, 'etc/edgenfv/image'), JSON.stringify({ hash, kernel: pkg, builder: IMAGE_BUILDER_VERSION }) + '\n');
    await writeFile(join(root, 'opt/edgenfv/guest-agent.mjs'), bundle);
    await copyFile(protoPath, join(root, 'opt/edgenfv/agent.proto'));
    await copyFile(initPath, join(root, 'init'));
    await chmod(join(root, 'init'), 0o755);
    // reproducible: zero mtimes, sorted names, no inode/device numbers
    await zeroMtimes(root);
    const names = (await run(['find', '.', '-mindepth', '1'], { cwd: root })).split('\n').filter(Boolean).sort();
    await new Promise<void>((resolve, reject) => {
      const child = execFile('sh', ['-c', `cpio -o -H newc --reproducible --quiet > "${join(work, 'initrd.cpio')}"`], { cwd: root }, (err) =>
        err ? reject(new InternalError(`cpio: ${err.message}`, { cause: err })) : resolve(),
      );
      child.stdin!.end(names.join('\n') + '\n');
    });
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
