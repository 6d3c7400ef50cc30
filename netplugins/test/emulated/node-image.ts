// Builds (and caches by content hash) what the emulated-edge-node test boots: the generic Debian kernel (it has
// igb/igbvf; the cloud kernel does not), and an initramfs with busybox, iproute2's `ip` (busybox's has no `vf`),
// the host's node binary with its libraries, the needed modules, and an esbuild bundle of a guest script.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

export const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url));
const cacheRoot = join(repoRoot, '.cache', 'netplugins-sriov');
const MODULE_DIRS = ['drivers/net/ethernet/intel/igb', 'drivers/net/ethernet/intel/igbvf', 'drivers/vfio', 'drivers/dca', 'drivers/i2c/algos', 'drivers/ptp', 'drivers/pps', 'virt/lib'];

function sh(cmd: string, args: string[], opts: { cwd?: string } = {}): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

/** The generic kernel package (what linux-image-amd64 depends on), downloaded with apt-get and partly unpacked. */
export function genericKernel(): { vmlinuz: string; root: string; version: string } {
  const kdir = join(cacheRoot, 'kernel');
  mkdirSync(kdir, { recursive: true });
  let deb = readdirSync(kdir).find((f) => /^linux-image-[0-9.]+-[0-9]+-amd64_.*\.deb$/.test(f));
  if (!deb) {
    const dep = sh('apt-cache', ['depends', 'linux-image-amd64']).match(/Depends: (linux-image-[0-9.]+-[0-9]+-amd64)\b/);
    if (!dep) throw new Error('apt-cache cannot name the generic kernel package (linux-image-amd64): is apt configured?');
    sh('apt-get', ['download', dep[1]!], { cwd: kdir }); // fails loudly without a Debian mirror
    deb = readdirSync(kdir).find((f) => f.startsWith(dep[1]!) && f.endsWith('.deb'));
    if (!deb) throw new Error(`apt-get download ${dep[1]} produced no .deb`);
  }
  const version = /^linux-image-([0-9.]+-[0-9]+-amd64)_/.exec(deb)![1]!;
  const root = join(kdir, `root-${version}`);
  if (!existsSync(join(root, '.done'))) {
    rmSync(root, { recursive: true, force: true });
    mkdirSync(root, { recursive: true });
    const wild = ['./boot/vmlinuz-*', ...MODULE_DIRS.map((d) => `./lib/modules/${version}/kernel/${d}/*`), `./lib/modules/${version}/modules.*`];
    execFileSync('sh', ['-c', `dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --wildcards ${wild.map((w) => `'${w}'`).join(' ')} 2>/dev/null; test -e "$2/boot/vmlinuz-${version}"`, 'sh', join(kdir, deb), root]);
    writeFileSync(join(root, '.done'), '');
  }
  return { vmlinuz: join(root, 'boot', `vmlinuz-${version}`), root, version };
}

function libsOf(bin: string): string[] {
  return sh('ldd', [bin])
    .split('\n')
    .map((l) => /=>\s*(\/\S+)/.exec(l)?.[1] ?? /^\s*(\/\S+ld-linux\S*)/.exec(l)?.[1])
    .filter((x): x is string => !!x);
}

function copyWithLibs(bin: string, stage: string, dest = bin): void {
  mkdirSync(join(stage, dirname(dest)), { recursive: true });
  copyFileSync(bin, join(stage, dest));
  chmodSync(join(stage, dest), 0o755);
  for (const l of libsOf(bin)) {
    mkdirSync(join(stage, dirname(l)), { recursive: true });
    if (!existsSync(join(stage, l))) copyFileSync(l, join(stage, l));
  }
}

const INIT = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
while read -r m args; do modprobe $m $args || echo "MARK_MODPROBE_FAIL $m"; done < /etc/modules
echo MARK_BOOTED
PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/ node /guest.cjs
echo "MARK_EXIT $?"
poweroff -f
`;

/** Builds the initramfs for `guestEntry` (a compiled JS file); returns its path (cached by content hash). */
export interface ImageExtras {
  /** Host binaries copied with their libraries (same path in the image). */
  bins?: string[];
  /** Host files copied to a path in the image. */
  files?: Array<[src: string, dest: string]>;
}

export async function nodeInitramfs(guestEntry: string, modules: string[], extras: ImageExtras = {}): Promise<{ kernel: string; initrd: string }> {
  const k = genericKernel();
  const bundle = await build({ entryPoints: [guestEntry], bundle: true, platform: 'node', target: 'node20', format: 'cjs', write: false, logLevel: 'error', logOverride: { 'empty-import-meta': 'silent' } });
  const code = bundle.outputFiles[0]!.text;
  const node = process.execPath;
  const ip = sh('sh', ['-c', 'command -v ip']).trim();
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((b) => existsSync(b));
  if (!busybox) throw new Error('busybox is missing: apt-get install busybox-static');
  const h = createHash('sha256');
  const extraIds = [...(extras.bins ?? []), ...(extras.files ?? []).map(([s, d]) => `${s}>${d}`)].map((x) => `${x}:${statSync(x.split('>')[0]!).size}`);
  for (const part of [code, INIT, k.version, modules.join(' '), String(statSync(node).size), String(statSync(ip).size), String(statSync(busybox).size), ...extraIds]) h.update(part).update('\0');
  const initrd = join(cacheRoot, `sriov-node-${h.digest('hex').slice(0, 16)}.cpio`);
  if (existsSync(initrd)) return { kernel: k.vmlinuz, initrd };
  const stage = join(cacheRoot, `stage-${process.pid}`);
  rmSync(stage, { recursive: true, force: true });
  try {
    mkdirSync(join(stage, 'bin'), { recursive: true });
    copyFileSync(busybox, join(stage, 'bin/busybox'));
    chmodSync(join(stage, 'bin/busybox'), 0o755);
    copyWithLibs(node, stage, '/usr/bin/node');
    copyWithLibs(ip, stage, '/usr/sbin/ip');
    for (const b of extras.bins ?? []) copyWithLibs(b, stage);
    for (const [src, dest] of extras.files ?? []) {
      mkdirSync(join(stage, dirname(dest)), { recursive: true });
      copyFileSync(src, join(stage, dest));
    }
    mkdirSync(join(stage, 'lib/modules', k.version), { recursive: true });
    for (const d of MODULE_DIRS) {
      const src = join(k.root, 'lib/modules', k.version, 'kernel', d);
      if (existsSync(src)) execFileSync('cp', ['-a', '--parents', `kernel/${d}`, join(stage, 'lib/modules', k.version)], { cwd: join(k.root, 'lib/modules', k.version) });
    }
    for (const f of readdirSync(join(k.root, 'lib/modules', k.version)).filter((f) => f.startsWith('modules.')))
      copyFileSync(join(k.root, 'lib/modules', k.version, f), join(stage, 'lib/modules', k.version, f));
    execFileSync(busybox, ['depmod', '-b', stage, k.version]);
    mkdirSync(join(stage, 'etc'), { recursive: true });
    writeFileSync(join(stage, 'etc/modules'), modules.join('\n') + '\n');
    writeFileSync(join(stage, 'etc/passwd'), 'root:x:0:0:root:/:/bin/sh\n');
    writeFileSync(join(stage, 'init'), INIT);
    chmodSync(join(stage, 'init'), 0o755);
    writeFileSync(join(stage, 'guest.cjs'), code);
    execFileSync('sh', ['-c', `cd "$1" && find . | cpio -o -H newc --quiet > "$2.tmp"`, 'sh', stage, initrd]);
    renameSync(`${initrd}.tmp`, initrd);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  void readFileSync;
  return { kernel: k.vmlinuz, initrd };
}

/**
 * The generic kernel uncompressed (vmlinux, booted through PVH: ~35 s faster in a nested TCG guest than the
 * compressed bzImage, ENVIRONMENT.md), cached next to the kernel.
 */
export function genericVmlinux(): string {
  const k = genericKernel();
  const out = join(k.root, `vmlinux-${k.version}`);
  if (existsSync(out)) return out;
  const bz = readFileSync(k.vmlinuz);
  const at = bz.indexOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])); // the xz stream inside the bzImage
  if (at < 0) throw new Error(`${k.vmlinuz}: no xz payload found (Debian's amd64 kernels are xz-compressed)`);
  execFileSync('sh', ['-c', 'tail -c +"$1" "$2" | xz -dc > "$3.tmp" 2>/dev/null; test -s "$3.tmp"', 'sh', String(at + 1), k.vmlinuz, out]);
  renameSync(`${out}.tmp`, out);
  return out;
}

/**
 * The minimal tenant VM's initramfs (busybox + igbvf): finds its NIC by PCI path (the device behind the root port at
 * 00:10.0, where the node agent puts a VF), gives it `addr`, prints `MARK_L2 <json>`, and stays up for the host side's
 * ping (powers off after `stayS` seconds).
 */
export function tenantInitramfs(addr: string, stayS = 240): string {
  const k = genericKernel();
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((b) => existsSync(b))!;
  const ko = join(k.root, 'lib/modules', k.version, 'kernel/drivers/net/ethernet/intel/igbvf/igbvf.ko');
  const init = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev; mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "MARK_L2_INIT $(cut -d' ' -f1 /proc/uptime)"
insmod /igbvf.ko || echo MARK_L2_INSMOD_FAIL
RP=/sys/devices/pci0000:00/0000:00:10.0
for i in $(seq 1 600); do
  for d in $RP/0000:*; do [ -d "$d/net" ] && IF=$(ls $d/net | head -1) && PCI=$(basename $d); done
  [ -n "$IF" ] && break; sleep 0.1
done
ip link set "$IF" up; ip addr add ${addr} dev "$IF"
printf 'MARK_L2 {"foundBy":"pci","pciPath":"10.0/00.0","guestPciAddress":"%s","ifName":"%s","mac":"%s","uptime":%s}\\n' "$PCI" "$IF" "$(cat /sys/class/net/$IF/address)" "$(cut -d' ' -f1 /proc/uptime)"
sleep ${stayS}; poweroff -f
`;
  const h = createHash('sha256').update(init).update(String(statSync(ko).size)).update(String(statSync(busybox).size)).digest('hex').slice(0, 16);
  const out = join(cacheRoot, `tenant-${h}.cpio`);
  if (existsSync(out)) return out;
  const stage = join(cacheRoot, `tstage-${process.pid}`);
  rmSync(stage, { recursive: true, force: true });
  try {
    mkdirSync(join(stage, 'bin'), { recursive: true });
    copyFileSync(busybox, join(stage, 'bin/busybox'));
    chmodSync(join(stage, 'bin/busybox'), 0o755);
    copyFileSync(ko, join(stage, 'igbvf.ko'));
    writeFileSync(join(stage, 'init'), init);
    chmodSync(join(stage, 'init'), 0o755);
    execFileSync('sh', ['-c', 'cd "$1" && find . | cpio -o -H newc --quiet > "$2.tmp"', 'sh', stage, out]);
    renameSync(`${out}.tmp`, out);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  return out;
}
