import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@edgenfv/telemetry';
import { buildGuestImage, defaultCacheDir, type GuestImage } from '../../src/guest/index.js';

// A private cache (so that deleting images here cannot disturb a VM booting from the shared one), with the kernel
// package linked in from the shared cache once it is there (the first build downloads it).
let cache: string;
let first: GuestImage;
/** One file's content from an initramfs. */
const fileIn = (initrd: string, path: string) =>
  execFileSync('sh', ['-c', 'cpio -i --quiet --to-stdout "$1" < "$2"', 'sh', path, initrd], { encoding: 'utf8', maxBuffer: 16 << 20 });
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
/** Every path on an image's system disk (erofs), extracted with erofs-utils' fsck.erofs. */
function systemDiskFiles(img: GuestImage): { dir: string; names: string[] } {
  const dir = mkdtempSync(join(tmpdir(), 'na-img-sys-'));
  rmSync(dir, { recursive: true });
  execFileSync('fsck.erofs', [`--extract=${dir}`, img.systemDisk.path]);
  const names = execFileSync('find', ['.', '-mindepth', '1'], { cwd: dir, encoding: 'utf8', maxBuffer: 64 << 20 }).split('\n').map((n) => n.replace(/^\.\//, ''));
  return { dir, names };
}

before(async () => {
  const shared = await buildGuestImage({ log: silentLogger() }); // makes sure the shared cache has the .deb
  cache = mkdtempSync(join(tmpdir(), 'na-img-'));
  mkdirSync(join(cache, 'guest-image', 'debs'), { recursive: true });
  const debs = join(defaultCacheDir(), 'guest-image', 'debs');
  for (const f of readdirSync(debs).filter((f) => f.startsWith(`${shared.kernelPackage}_`))) symlinkSync(join(debs, f), join(cache, 'guest-image', 'debs', f));
  first = await buildGuestImage({ cacheDir: cache, log: silentLogger() });
});
after(() => rmSync(cache, { recursive: true, force: true }));

test('a small initramfs (init, busybox, the modules that reach the disk) and a system disk with the agent bundle, its code cache and proto, node, crun, ip and the modules, with modules.dep', () => {
  const initrd = execFileSync('sh', ['-c', `cpio -it --quiet < "${first.initrdPath}"`], { encoding: 'utf8', maxBuffer: 64 << 20 }).split('\n');
  for (const f of ['init', 'bin/busybox', 'etc/edgenfv/modules', 'etc/edgenfv/early-modules', 'etc/edgenfv/node-flags', 'early/virtio_blk.ko', 'early/erofs.ko', 'usr', 'lib', 'opt']) {
    assert.ok(initrd.includes(f), `${f} in the initramfs`);
  }
  assert.ok(!initrd.includes('usr/bin/node'), 'node is on the system disk, not in the initramfs');
  assert.ok(statSync(first.initrdPath).size < 8 << 20, `initramfs of ${statSync(first.initrdPath).size} bytes`);
  // dependencies before the modules that need them (insmod, no modprobe before the disk is mounted)
  const early = fileIn(first.initrdPath, 'etc/edgenfv/early-modules').trim().split('\n');
  for (const m of ['virtio_pci.ko', 'virtio_blk.ko', 'erofs.ko']) assert.ok(early.includes(m), `${m} in ${early.join(',')}`);
  assert.ok(early.indexOf('virtio_pci_modern_dev.ko') < early.indexOf('virtio_pci.ko'), early.join(','));
  assert.ok(early.indexOf('libcrc32c.ko') < early.indexOf('erofs.ko'), early.join(','));
  assert.equal(first.systemDisk.serial, 'edgenfv-system');
  const sys = systemDiskFiles(first);
  const names = sys.names;
  rmSync(sys.dir, { recursive: true, force: true });
  for (const f of ['opt/edgenfv/guest-agent.cjs', 'opt/edgenfv/guest-agent.cjs.cache', 'opt/edgenfv/agent-loader.cjs', 'opt/edgenfv/agent.proto', 'usr/bin/node', 'usr/bin/crun', 'usr/sbin/ip']) {
    assert.ok(names.includes(f), `${f} on the system disk`);
  }
  // snapshot boot's reseed helper, compiled with this host's cc (it has one: setup.sh's C shims need it)
  assert.equal(first.reseedHelper, true);
  assert.ok(names.includes('opt/edgenfv/bin/edgenfv-reseed'), 'the reseed helper on the system disk');
  assert.ok(names.includes(`lib/modules/${first.kernelRelease}/modules.dep`));
  assert.ok(names.some((n) => n.endsWith('/virtio_console.ko')));
  assert.ok(names.some((n) => n.endsWith('/vfio-pci.ko')));
  // VF drivers are carried but not loaded at boot (/etc/edgenfv/modules is what /init loads)
  assert.deepEqual(first.vfDrivers, ['ixgbevf', 'mlx5_core']);
  assert.ok(names.some((n) => n.endsWith('/ixgbevf.ko')));
  const bootList = fileIn(first.initrdPath, 'etc/edgenfv/modules');
  assert.doesNotMatch(fileIn(first.initrdPath, 'init'), /guest-agent\.mjs/);
  assert.match(bootList, /^virtio_pci$/m);
  assert.ok(!/ixgbevf|mlx5_core/.test(bootList), bootList);
  // the cloud kernel has no igbvf/iavf/i40e/ice: said, not hidden
  assert.deepEqual(first.missingOptionalModules.sort(), ['i40e', 'iavf', 'ice', 'igbvf']);
  assert.equal(first.agentPortName, 'edgenfv.agent.0');
});

test('reproducible and cached by content hash: a rebuild gives the same bytes; a changed input a new image', async () => {
  const again = await buildGuestImage({ cacheDir: cache, log: silentLogger() });
  assert.equal(again.hash, first.hash);
  const before = sha(first.initrdPath);
  const diskBefore = sha(first.systemDisk.path);
  rmSync(first.dir, { recursive: true, force: true });
  const rebuilt = await buildGuestImage({ cacheDir: cache, log: silentLogger() });
  assert.equal(rebuilt.hash, first.hash);
  assert.equal(sha(rebuilt.initrdPath), before, 'same inputs, same initramfs bytes');
  assert.equal(sha(rebuilt.systemDisk.path), diskBefore, 'same inputs, same system disk bytes (incl. the agent code cache)');

  const entry = join(cache, 'other-agent.mjs');
  writeFileSync(entry, 'console.log("another agent build");\n');
  const other = await buildGuestImage({ cacheDir: cache, guestAgentEntry: entry, log: silentLogger() });
  assert.notEqual(other.hash, first.hash);
  rmSync(other.dir, { recursive: true, force: true });
});

test('bad options are refused before anything is built', async () => {
  await assert.rejects(buildGuestImage({ cacheDir: cache, kernelFlavor: 'rt' as never }), /kernelFlavor/);
  await assert.rejects(buildGuestImage({ cacheDir: cache, extraModules: ['../etc/passwd'] }), /extraModules\[0\]/);
  await assert.rejects(buildGuestImage({ cacheDir: cache, extraModules: ['no_such_module_xyz'] }), /no_such_module_xyz/);
});

test('offline: the kernel package comes from the cache or a folder on disk; with none, the error names the package', async () => {
  const empty = mkdtempSync(join(tmpdir(), 'na-img-off-'));
  try {
    await assert.rejects(
      buildGuestImage({ cacheDir: empty, offline: true, debDirs: [], kernelPackage: first.kernelPackage, log: silentLogger() }),
      new RegExp(`kernel package ${first.kernelPackage} is not on this node \\(looked in ${empty}/guest-image/debs\\) and the node is offline: put ${first.kernelPackage}_<version>_amd64.deb into`),
    );
    await assert.rejects(buildGuestImage({ cacheDir: empty, offline: true, debDirs: [], log: silentLogger() }), /no cloud guest kernel on this node: offline, and no linux-image-\*-cloud-amd64 \.deb in/);
    // a folder on disk that has it (an apt archive, a USB stick): found without apt, same image as before
    const img = await buildGuestImage({ cacheDir: empty, offline: true, debDirs: [join(cache, 'guest-image', 'debs')], log: silentLogger() });
    assert.equal(img.kernelPackage, first.kernelPackage);
    assert.equal(img.hash, first.hash);
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});

test('the generic flavor carries all six VF drivers with modules.alias, none loaded at boot', async () => {
  const g = await buildGuestImage({ kernelFlavor: 'generic', log: silentLogger() });
  assert.deepEqual(g.vfDrivers, ['igbvf', 'iavf', 'ixgbevf', 'i40e', 'mlx5_core', 'ice']);
  assert.deepEqual(g.missingOptionalModules, []);
  // the generic kernel has crc32c as a module that libcrc32c (erofs needs it) asks for only as a softdep: without it
  // erofs does not load and /init finds no system disk
  const early = fileIn(g.initrdPath, 'etc/edgenfv/early-modules').trim().split('\n');
  assert.ok(early.includes('crc32c_generic.ko'), early.join(','));
  assert.ok(early.indexOf('crc32c_generic.ko') < early.indexOf('libcrc32c.ko'), early.join(','));
  assert.ok(early.indexOf('libcrc32c.ko') < early.indexOf('erofs.ko'), early.join(','));
  const sys = systemDiskFiles(g);
  const names = sys.names;
  const alias = readFileSync(join(sys.dir, `lib/modules/${g.kernelRelease}/modules.alias`), 'utf8');
  rmSync(sys.dir, { recursive: true, force: true });
  for (const m of ['igbvf', 'iavf', 'ixgbevf', 'i40e', 'mlx5_core', 'ice']) assert.ok(names.some((n) => n.endsWith(`/${m}.ko`)), `${m}.ko in the image`);
  // igb's VF (QEMU igb, 82576: 8086:10ca) and iavf's adaptive VF
  assert.match(alias, /^alias pci:v00008086d000010CAsv\*sd\*bc\*sc\*i\* igbvf$/m);
  assert.match(alias, /^alias pci:v00008086d00001889sv\*sd\*bc\*sc\*i\* iavf$/m);
});
