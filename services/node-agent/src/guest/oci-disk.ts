/**
 * Ships an OCI image layout from the node into a tenant VM without sharing the host's filesystem: the layout is
 * packed into a plain tar archive (sorted names, zero mtimes, numeric root ownership: reproducible), attached
 * read-only as a virtio-blk disk whose serial is a content hash, and the guest agent unpacks it when a container
 * uses `oci-disk:<serial>[:tag]`. QEMU: `-drive file=<path>,format=raw,if=none,readonly=on,id=<id>
 * -device virtio-blk-pci,drive=<id>,serial=<serial>` (microvm: virtio-blk-device).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { promisify } from 'node:util';
import { InternalError, InvalidArgumentError } from '@edgenfv/contracts';

const pexec = promisify(execFile);

export interface OciDisk {
  path: string;
  /** virtio-blk serial (at most 20 characters): `oci-` + 16 hex digits of the archive's sha256. */
  serial: string;
  sizeBytes: number;
}

/** `oci:/abs/layout[:tag]` (the VNFD's image ref) -> layout folder and tag. */
export function parseOciRef(ref: string): { layoutDir: string; tag?: string } {
  const m = /^oci:(\/[^:]+)(?::([A-Za-z0-9_.-]+))?$/.exec(ref);
  if (!m || !isAbsolute(m[1]!) || m[1]!.split('/').includes('..')) {
    throw new InvalidArgumentError([{ field: 'image.ref', message: `not an OCI layout reference oci:/abs/path[:tag]: ${JSON.stringify(ref)}` }]);
  }
  return { layoutDir: m[1]!, ...(m[2] ? { tag: m[2] } : {}) };
}

/** The image reference the guest agent understands for a packed layout. */
export function guestImageRef(disk: OciDisk, tag?: string): string {
  return `oci-disk:${disk.serial}${tag ? `:${tag}` : ''}`;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await new Promise<void>((resolve, reject) => createReadStream(path).on('data', (d) => h.update(d)).on('end', () => resolve()).on('error', reject));
  return h.digest('hex');
}

/** Packs (once per content) the layout into `<outDir>/<serial>.tar`. */
export async function packOciLayoutDisk(opts: { layoutDir: string; outDir: string }): Promise<OciDisk> {
  const { layoutDir, outDir } = opts;
  if (!existsSync(join(layoutDir, 'index.json')) || !existsSync(join(layoutDir, 'oci-layout'))) {
    throw new InvalidArgumentError([{ field: 'image.ref', message: `${layoutDir} is not an OCI image layout (index.json, oci-layout)` }]);
  }
  await mkdir(outDir, { recursive: true });
  const tmp = join(outDir, `.pack-${process.pid}-${Date.now()}.tar`);
  try {
    await pexec('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '--format=gnu', '-cf', tmp, '-C', layoutDir, '.']);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new InternalError(`packing ${layoutDir}: ${(err as Error).message}`, { cause: err });
  }
  const serial = `oci-${(await sha256File(tmp)).slice(0, 16)}`;
  const path = join(outDir, `${serial}.tar`);
  if (existsSync(path)) await rm(tmp, { force: true });
  else await rename(tmp, path);
  return { path, serial, sizeBytes: (await stat(path)).size };
}
