/**
 * Root filesystems for VNF containers. Built-in images are made from the guest's static busybox on first use:
 * `builtin:vrouter` (turns on IPv4 forwarding between the interfaces it shares with the VM and waits),
 * `builtin:busybox` (a shell) and `builtin:testpmd` (dpdk-testpmd forwarding between the VNF's DPDK ports: the files
 * the guest image lists in /etc/edgenfv/dpdk.files, hard-linked in; EAL args from the node agent in $EDGENFV_EAL_ARGS). `oci:<dir>:<tag>` unpacks an OCI image layout (index.json -> manifest -> layers,
 * tar or tar+gzip) that the node agent shipped into the guest (`oci-disk:<serial>`: on a read-only disk). Archives
 * are unpacked by unpack.ts: nothing lands outside the root, whiteouts are applied; each blob's digest is checked.
 */
import { mkdir, writeFile, copyFile, symlink, readFile, rm, rename, access, chmod, readdir, link } from 'node:fs/promises';
import { join, isAbsolute, dirname } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ConflictError, InvalidArgumentError, NotFoundError } from '@edgenfv/contracts/internal/errors';
import { createReadStream } from 'node:fs';
import { createHash } from 'node:crypto';
import { unpackTarFile } from './unpack.js';

const pexec = promisify(execFile);

export const BUILTIN_IMAGES = ['builtin:vrouter', 'builtin:busybox', 'builtin:testpmd'] as const;
/** The list of DPDK files the guest image carries (written by the node agent's image builder, dpdk-files.ts). */
export const DPDK_MANIFEST = '/etc/edgenfv/dpdk.files';

export interface ImageRef {
  kind: 'builtin' | 'oci' | 'oci-disk';
  name: string; // vrouter | busybox | <layout dir> | <disk serial>
  tag?: string;
  ref: string;
}

export interface ImageConfig {
  rootfs: string;
  args: string[];
  env: string[];
  cwd: string;
}

export function parseImageRef(ref: unknown, field = 'image'): ImageRef {
  if (typeof ref !== 'string' || ref.length === 0) throw new InvalidArgumentError([{ field, message: 'must be a non-empty image reference' }]);
  if ((BUILTIN_IMAGES as readonly string[]).includes(ref)) return { kind: 'builtin', name: ref.slice('builtin:'.length), ref };
  const m = /^oci:(\/[^:]+)(?::([A-Za-z0-9_.-]+))?$/.exec(ref);
  if (m && isAbsolute(m[1]) && !m[1].split('/').includes('..')) return { kind: 'oci', name: m[1], ...(m[2] ? { tag: m[2] } : {}), ref };
  const d = /^oci-disk:([A-Za-z0-9_-]{1,20})(?::([A-Za-z0-9_.-]+))?$/.exec(ref);
  if (d) return { kind: 'oci-disk', name: d[1], ...(d[2] ? { tag: d[2] } : {}), ref };
  throw new InvalidArgumentError([
    { field, message: `unknown image ${JSON.stringify(ref)} (builtin:vrouter, builtin:busybox, builtin:testpmd, oci:/abs/layout[:tag] or oci-disk:<serial>[:tag])` },
  ]);
}

const VROUTER_SH = `#!/bin/sh
# builtin:vrouter: a router VNF made of busybox. It shares the VM's network namespace and forwards IPv4 between
# the interfaces the guest agent configured; on SIGTERM it turns forwarding off again and exits 0.
echo 1 > /proc/sys/net/ipv4/ip_forward || { echo "vrouter: cannot enable ip_forward" >&2; exit 3; }
echo "vrouter: forwarding on"
ip -o -4 addr show | grep -v ' lo ' | while read -r n dev fam addr rest; do echo "vrouter: $dev $addr"; done
trap 'echo "vrouter: stopping"; echo 0 > /proc/sys/net/ipv4/ip_forward; exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
`;

const TESTPMD_SH = `#!/bin/sh
# builtin:testpmd: dpdk-testpmd forwarding between the VNF's DPDK ports. The node agent renders the EAL arguments
# with dpdk-config (lcores, memory, the PCI allow-list of the VNF's interfaces) into EDGENFV_EAL_ARGS; the
# application's come from EDGENFV_TESTPMD_ARGS (default: io forwarding), the mbuf pool size from
# EDGENFV_TESTPMD_MBUFS (default 8192). Port statistics every
# EDGENFV_STATS_PERIOD seconds (default 1) on stdout; SIGTERM stops it cleanly.
if [ -z "$EDGENFV_EAL_ARGS" ]; then
  echo "testpmd: EDGENFV_EAL_ARGS is empty: the VNFD needs resources.dataplane {kind: dpdk}" >&2
  exit 2
fi
# testpmd's default mbuf pool (sized for RTE_MAX_LCORE lcores: ~155k mbufs, 330 MiB) does not fit a guest's hugepages
exec /usr/bin/dpdk-testpmd $EDGENFV_EAL_ARGS -- \${EDGENFV_TESTPMD_ARGS:---forward-mode=io} \\
  --total-num-mbufs=\${EDGENFV_TESTPMD_MBUFS:-8192} --stats-period=\${EDGENFV_STATS_PERIOD:-1}
`;

export class ImageStore {
  constructor(
    private readonly dir: string,
    private readonly busybox: string,
    /** Where block devices are listed (`<sysRoot>/block/<dev>/serial`) and found (`<devRoot>/<dev>`). */
    private readonly disks: { sysRoot: string; devRoot: string; waitMs: number } = { sysRoot: '/sys', devRoot: '/dev', waitMs: 10_000 },
    /** builtin:testpmd's file list (default /etc/edgenfv/dpdk.files). */
    private readonly dpdkManifest: string = DPDK_MANIFEST,
  ) {}

  async prepare(ref: ImageRef): Promise<ImageConfig> {
    if (ref.kind === 'builtin') return this.builtin(ref.name);
    if (ref.kind === 'oci-disk') return this.oci({ ...ref, name: await this.unpackDisk(ref.name) });
    return this.oci(ref);
  }

  /**
   * An OCI image layout the node agent shipped as a read-only virtio-blk disk holding a plain tar archive, found by
   * the disk's serial (waited for: it may be hotplugged). Unpacked once per serial (the serial is a content hash).
   */
  private async unpackDisk(serial: string): Promise<string> {
    const layout = join(this.dir, 'layouts', serial);
    if (await exists(join(layout, '.complete'))) return layout;
    const deadline = Date.now() + this.disks.waitMs;
    let dev: string | undefined;
    for (;;) {
      dev = await findDiskBySerial(this.disks.sysRoot, serial);
      if (dev || Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    if (!dev) throw new NotFoundError(`no disk with serial ${serial} (oci-disk image)`);
    const tmp = `${layout}.tmp${process.pid}`;
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { recursive: true });
    await unpackTarFile(join(this.disks.devRoot, dev), tmp, { whiteouts: false, what: `disk ${serial}` });
    await writeFile(join(tmp, '.complete'), '');
    await rm(layout, { recursive: true, force: true });
    await rename(tmp, layout);
    return layout;
  }

  private async builtin(name: string): Promise<ImageConfig> {
    const root = join(this.dir, 'builtin', name, 'rootfs');
    const cfg: ImageConfig = {
      rootfs: root,
      args: name === 'vrouter' ? ['/bin/vrouter'] : name === 'testpmd' ? ['/bin/testpmd-vnf'] : ['/bin/sh'],
      env: ['PATH=/bin:/sbin:/usr/bin:/usr/sbin'],
      cwd: '/',
    };
    if (await exists(join(root, '.complete'))) return cfg;
    const dpdk = name === 'testpmd' ? await this.readDpdkManifest() : undefined;
    const tmp = `${root}.tmp${process.pid}`;
    await rm(tmp, { recursive: true, force: true });
    for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'proc', 'sys', 'dev', 'tmp', 'run', 'etc', 'root', 'var/log']) {
      await mkdir(join(tmp, d), { recursive: true });
    }
    await copyFile(this.busybox, join(tmp, 'bin/busybox'));
    await chmod(join(tmp, 'bin/busybox'), 0o755);
    const { stdout } = await pexec(this.busybox, ['--list']);
    for (const applet of stdout.split('\n').filter((a) => a && a !== 'busybox')) {
      await symlink('busybox', join(tmp, 'bin', applet)).catch(() => {});
    }
    await writeFile(join(tmp, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    await writeFile(join(tmp, 'etc/group'), 'root:x:0:\n');
    if (name === 'vrouter') await writeFile(join(tmp, 'bin/vrouter'), VROUTER_SH, { mode: 0o755 });
    if (dpdk) {
      for (const f of dpdk.files) {
        await mkdir(join(tmp, dirname(f)), { recursive: true });
        // the guest's root and the image store share one filesystem: a hard link costs no RAM
        await link(f, join(tmp, f)).catch(() => copyFile(f, join(tmp, f)));
      }
      for (const [p, t] of dpdk.links) {
        await mkdir(join(tmp, dirname(p)), { recursive: true });
        await symlink(t, join(tmp, p)).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw err;
        });
      }
      await writeFile(join(tmp, 'bin/testpmd-vnf'), TESTPMD_SH, { mode: 0o755 });
      await symlink('../run', join(tmp, 'var/run')); // DPDK's runtime folder /var/run/dpdk lands on the container's /run tmpfs
    }
    await writeFile(join(tmp, '.complete'), '');
    await mkdir(join(root, '..'), { recursive: true });
    await rm(root, { recursive: true, force: true });
    await rename(tmp, root);
    return cfg;
  }

  private async readDpdkManifest(): Promise<{ files: string[]; links: Array<[string, string]> }> {
    let text: string;
    try {
      text = await readFile(this.dpdkManifest, 'utf8');
    } catch {
      throw new ConflictError(`builtin:testpmd: this guest image carries no DPDK (${this.dpdkManifest} missing: build the image with testpmd)`);
    }
    const files: string[] = [];
    const links: Array<[string, string]> = [];
    for (const line of text.split('\n').filter(Boolean)) {
      const l = /^L (\/\S+) (\S+)$/.exec(line);
      if (l) links.push([l[1], l[2]]);
      else if (line.startsWith('/') && !line.split('/').includes('..')) files.push(line);
    }
    return { files, links };
  }

  private async oci(ref: ImageRef): Promise<ImageConfig> {
    const layout = ref.name;
    const index = await readJson<{ manifests?: Array<{ digest: string; annotations?: Record<string, string> }> }>(join(layout, 'index.json'), ref.ref);
    const manifests = index.manifests ?? [];
    const tag = ref.tag ?? 'latest';
    // untagged reference and a single manifest: that one
    const m = manifests.find((x) => x.annotations?.['org.opencontainers.image.ref.name'] === tag) ?? (ref.tag === undefined && manifests.length === 1 ? manifests[0] : undefined);
    if (!m) throw new NotFoundError(`image ${ref.ref}: no manifest tagged ${tag}`);
    const manifest = await readJson<{ config: { digest: string }; layers: Array<{ digest: string }> }>(blob(layout, m.digest), ref.ref);
    const config = await readJson<{ config?: { Entrypoint?: string[]; Cmd?: string[]; Env?: string[]; WorkingDir?: string } }>(blob(layout, manifest.config.digest), ref.ref);
    const root = join(this.dir, 'oci', m.digest.replace(':', '-'), 'rootfs');
    if (!(await exists(join(root, '..', '.complete')))) {
      await rm(root, { recursive: true, force: true });
      await mkdir(root, { recursive: true });
      for (const [i, layer] of manifest.layers.entries()) {
        const file = blob(layout, layer.digest);
        await verifyDigest(file, layer.digest, ref.ref);
        await unpackTarFile(file, root, { whiteouts: true, what: `image ${ref.ref} layer ${i + 1}` });
      }
      await writeFile(join(root, '..', '.complete'), '');
    }
    const c = config.config ?? {};
    return { rootfs: root, args: [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])], env: c.Env ?? ['PATH=/bin:/sbin:/usr/bin:/usr/sbin'], cwd: c.WorkingDir || '/' };
  }
}

async function findDiskBySerial(sysRoot: string, serial: string): Promise<string | undefined> {
  let devs: string[];
  try {
    devs = await readdir(join(sysRoot, 'block'));
  } catch {
    return undefined;
  }
  for (const d of devs.sort()) {
    const s = await readFile(join(sysRoot, 'block', d, 'serial'), 'utf8').catch(() => '');
    if (s.trim() === serial) return d;
  }
  return undefined;
}

async function verifyDigest(file: string, digest: string, ref: string): Promise<void> {
  if (!digest.startsWith('sha256:')) return;
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  const got = `sha256:${h.digest('hex')}`;
  if (got !== digest) throw new InvalidArgumentError([{ field: 'image', message: `image ${ref}: blob ${digest} hashes to ${got}` }]);
}

function blob(layout: string, digest: string): string {
  const [alg, hex] = digest.split(':');
  if (!alg || !hex || !/^[a-f0-9]+$/.test(hex)) throw new InvalidArgumentError([{ field: 'image', message: `bad digest ${digest}` }]);
  return join(layout, 'blobs', alg, hex);
}

async function readJson<T>(path: string, ref: string): Promise<T> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch (err) {
    throw new NotFoundError(`image ${ref}: cannot read ${path}: ${(err as Error).message}`);
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}
