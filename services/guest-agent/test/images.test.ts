import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, statSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageStore, parseImageRef } from '../src/containers/images.js';

let dir: string;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A one-layer OCI image layout (index.json -> manifest -> config + tar.gz layer), tagged v1. */
function makeLayout(root: string): void {
  const blobs = join(root, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const fs = join(root, '..', 'layerfs');
  mkdirSync(join(fs, 'bin'), { recursive: true });
  writeFileSync(join(fs, 'bin', 'hello'), '#!/bin/sh\necho hello from oci\n', { mode: 0o755 });
  const layer = execFileSync('tar', ['-C', fs, '-czf', '-', '.']);
  const put = (b: Buffer) => {
    const d = sha(b);
    writeFileSync(join(blobs, d), b);
    return { digest: `sha256:${d}`, size: b.length };
  };
  const l = put(layer);
  const config = put(Buffer.from(JSON.stringify({ config: { Entrypoint: ['/bin/hello'], Env: ['PATH=/bin'], WorkingDir: '/tmp' } })));
  const manifest = put(Buffer.from(JSON.stringify({ schemaVersion: 2, config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...l }] })));
  writeFileSync(join(root, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(join(root, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }] }));
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'ga-img-'));
  makeLayout(join(dir, 'layout'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('image references: builtins and oci layouts parse; others are refused by field', () => {
  assert.equal(parseImageRef('builtin:vrouter').kind, 'builtin');
  assert.deepEqual(parseImageRef('oci:/srv/img:v2'), { kind: 'oci', name: '/srv/img', tag: 'v2', ref: 'oci:/srv/img:v2' });
  for (const bad of ['docker.io/x', 'oci:relative:v1', 'oci:/a/../b:v1', 'builtin:nope', '']) assert.throws(() => parseImageRef(bad, 'image'), /image/);
});

test('an OCI image layout is unpacked into a rootfs with its entrypoint, env and workdir', async () => {
  const store = new ImageStore(join(dir, 'store'), '/usr/bin/busybox');
  const cfg = await store.prepare(parseImageRef(`oci:${join(dir, 'layout')}:v1`));
  assert.deepEqual(cfg.args, ['/bin/hello']);
  assert.deepEqual(cfg.env, ['PATH=/bin']);
  assert.equal(cfg.cwd, '/tmp');
  assert.match(readFileSync(join(cfg.rootfs, 'bin', 'hello'), 'utf8'), /hello from oci/);
  await assert.rejects(store.prepare(parseImageRef(`oci:${join(dir, 'layout')}:v9`)), /no manifest tagged v9/);
  const vr = await store.prepare(parseImageRef('builtin:vrouter'));
  assert.ok(existsSync(join(vr.rootfs, 'bin', 'vrouter')) && existsSync(join(vr.rootfs, 'bin', 'busybox')));
});

test('oci-disk: a layout packed as a tar on a block device found by its serial is unpacked and used', async () => {
  const sys = join(dir, 'fake-sys');
  const dev = join(dir, 'fake-dev');
  mkdirSync(join(sys, 'block', 'vdb'), { recursive: true });
  mkdirSync(join(sys, 'block', 'vdc'), { recursive: true });
  writeFileSync(join(sys, 'block', 'vdb', 'serial'), 'other\n');
  writeFileSync(join(sys, 'block', 'vdc', 'serial'), 'oci-00112233aabbccdd\n');
  mkdirSync(dev, { recursive: true });
  execFileSync('tar', ['-cf', join(dev, 'vdc'), '-C', join(dir, 'layout'), '.']);
  const store = new ImageStore(join(dir, 'store2'), '/usr/bin/busybox', { sysRoot: sys, devRoot: dev, waitMs: 0 });
  const cfg = await store.prepare(parseImageRef('oci-disk:oci-00112233aabbccdd:v1'));
  assert.deepEqual(cfg.args, ['/bin/hello']);
  assert.match(readFileSync(join(cfg.rootfs, 'bin', 'hello'), 'utf8'), /hello from oci/);
  await assert.rejects(store.prepare(parseImageRef('oci-disk:oci-ffff')), /no disk with serial oci-ffff/);
  assert.throws(() => parseImageRef('oci-disk:this-serial-is-longer-than-20'), /image/);
});

test('builtin:testpmd: the files of the DPDK manifest hard-linked into its rootfs, its entry script; refused without a manifest', async () => {
  const src = join(dir, 'dpdk-src');
  mkdirSync(join(src, 'lib'), { recursive: true });
  writeFileSync(join(src, 'dpdk-testpmd'), '#!/bin/sh\n');
  writeFileSync(join(src, 'lib', 'librte_x.so.23.0'), 'lib');
  const manifest = join(dir, 'dpdk.files');
  writeFileSync(manifest, `${join(src, 'dpdk-testpmd')}\n${join(src, 'lib', 'librte_x.so.23.0')}\nL ${join(src, 'lib', 'librte_x.so')} librte_x.so.23.0\n`);
  const store = new ImageStore(join(dir, 'store-tp'), '/usr/bin/busybox', undefined, manifest);
  const cfg = await store.prepare(parseImageRef('builtin:testpmd'));
  assert.deepEqual(cfg.args, ['/bin/testpmd-vnf']);
  assert.equal(statSync(join(cfg.rootfs, src, 'dpdk-testpmd')).ino, statSync(join(src, 'dpdk-testpmd')).ino, 'hard-linked, not copied');
  assert.equal(readlinkSync(join(cfg.rootfs, src, 'lib', 'librte_x.so')), 'librte_x.so.23.0');
  assert.match(readFileSync(join(cfg.rootfs, 'bin', 'testpmd-vnf'), 'utf8'), /EDGENFV_EAL_ARGS/);
  const none = new ImageStore(join(dir, 'store-none'), '/usr/bin/busybox', undefined, join(dir, 'no-such-manifest'));
  await assert.rejects(none.prepare(parseImageRef('builtin:testpmd')), /carries no DPDK/);
});

