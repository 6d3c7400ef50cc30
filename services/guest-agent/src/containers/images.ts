/**
 * Root filesystems for VNF containers. Built-in images are made from the guest's static busybox on first use:
 * `builtin:vrouter` (turns on IPv4 forwarding between the interfaces it shares with the VM and waits) and
 * `builtin:busybox` (a shell). `oci:<dir>:<tag>` unpacks an OCI image layout (index.json -> manifest -> layers,
 * tar or tar+gzip) that the node agent shipped into the guest.
 */
import { mkdir, writeFile, copyFile, symlink, readFile, rm, rename, access, chmod } from 'node:fs/promises';
import { join, isAbsolute } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { InvalidArgumentError, NotFoundError } from '@edgenfv/contracts/internal/errors';

const pexec = promisify(execFile);

export const BUILTIN_IMAGES = ['builtin:vrouter', 'builtin:busybox'] as const;

export interface ImageRef {
  kind: 'builtin' | 'oci';
  name: string; // vrouter | busybox | <layout dir>
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
  if (m && isAbsolute(m[1]!) && !m[1]!.split('/').includes('..')) return { kind: 'oci', name: m[1]!, tag: m[2] ?? 'latest', ref };
  throw new InvalidArgumentError([{ field, message: `unknown image ${JSON.stringify(ref)} (builtin:vrouter, builtin:busybox or oci:/abs/layout[:tag])` }]);
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

export class ImageStore {
  constructor(private readonly dir: string, private readonly busybox: string) {}

  async prepare(ref: ImageRef): Promise<ImageConfig> {
    return ref.kind === 'builtin' ? this.builtin(ref.name) : this.oci(ref);
  }

  private async builtin(name: string): Promise<ImageConfig> {
    const root = join(this.dir, 'builtin', name, 'rootfs');
    const cfg: ImageConfig = {
      rootfs: root,
      args: name === 'vrouter' ? ['/bin/vrouter'] : ['/bin/sh'],
      env: ['PATH=/bin:/sbin:/usr/bin:/usr/sbin'],
      cwd: '/',
    };
    if (await exists(join(root, '.complete'))) return cfg;
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
    await writeFile(join(tmp, '.complete'), '');
    await mkdir(join(root, '..'), { recursive: true });
    await rm(root, { recursive: true, force: true });
    await rename(tmp, root);
    return cfg;
  }

  private async oci(ref: ImageRef): Promise<ImageConfig> {
    const layout = ref.name;
    const index = await readJson<{ manifests?: Array<{ digest: string; annotations?: Record<string, string> }> }>(join(layout, 'index.json'), ref.ref);
    const manifests = index.manifests ?? [];
    const m = manifests.find((x) => x.annotations?.['org.opencontainers.image.ref.name'] === ref.tag) ?? (manifests.length === 1 && !/:[A-Za-z0-9_.-]+$/.test(ref.ref) ? manifests[0] : undefined);
    if (!m) throw new NotFoundError(`image ${ref.ref}: no manifest tagged ${ref.tag}`);
    const manifest = await readJson<{ config: { digest: string }; layers: Array<{ digest: string }> }>(blob(layout, m.digest), ref.ref);
    const config = await readJson<{ config?: { Entrypoint?: string[]; Cmd?: string[]; Env?: string[]; WorkingDir?: string } }>(blob(layout, manifest.config.digest), ref.ref);
    const root = join(this.dir, 'oci', m.digest.replace(':', '-'), 'rootfs');
    if (!(await exists(join(root, '..', '.complete')))) {
      await rm(root, { recursive: true, force: true });
      await mkdir(root, { recursive: true });
      for (const layer of manifest.layers) await pexec('tar', ['-xf', blob(layout, layer.digest), '-C', root]);
      await writeFile(join(root, '..', '.complete'), '');
    }
    const c = config.config ?? {};
    return { rootfs: root, args: [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])], env: c.Env ?? ['PATH=/bin:/sbin:/usr/bin:/usr/sbin'], cwd: c.WorkingDir || '/' };
  }
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
