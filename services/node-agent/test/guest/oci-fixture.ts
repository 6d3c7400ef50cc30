/** Test fixture: a small OCI image layout (one tar.gz layer: static busybox as /bin/sh), tagged v1. */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export function makeOciLayout(root: string, entrypoint: string[]): string {
  const layout = join(root, 'layout');
  const fs = join(root, 'layerfs');
  mkdirSync(join(fs, 'bin'), { recursive: true });
  copyFileSync('/usr/bin/busybox', join(fs, 'bin', 'busybox'));
  for (const a of ['sh', 'echo', 'cat', 'sleep']) symlinkSync('busybox', join(fs, 'bin', a));
  writeFileSync(join(fs, 'motd'), 'hello from an oci disk\n');
  const blobs = join(layout, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const put = (b: Buffer) => {
    const d = createHash('sha256').update(b).digest('hex');
    writeFileSync(join(blobs, d), b);
    return { digest: `sha256:${d}`, size: b.length };
  };
  const layer = put(execFileSync('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '-C', fs, '-czf', '-', '.']));
  const config = put(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Entrypoint: entrypoint, Env: ['PATH=/bin'], WorkingDir: '/' } })));
  const manifest = put(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }],
      }),
    ),
  );
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }] }),
  );
  return layout;
}
