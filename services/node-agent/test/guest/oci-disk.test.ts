import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '@edgenfv/contracts';
import { packOciLayoutDisk, parseOciRef, guestImageRef } from '../../src/guest/index.js';
import { makeOciLayout } from './oci-fixture.js';

test('an OCI layout packs into a reproducible tar disk named by its content', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'na-oci-'));
  try {
    const layout = makeOciLayout(dir, ['/bin/sh']);
    const a = await packOciLayoutDisk({ layoutDir: layout, outDir: join(dir, 'a') });
    const b = await packOciLayoutDisk({ layoutDir: layout, outDir: join(dir, 'b') });
    assert.equal(a.serial, b.serial);
    assert.ok(a.serial.length <= 20);
    assert.deepEqual(readFileSync(a.path), readFileSync(b.path));
    assert.equal(a.sizeBytes % 512, 0);
    assert.equal(guestImageRef(a, 'v1'), `oci-disk:${a.serial}:v1`);
    await assert.rejects(packOciLayoutDisk({ layoutDir: dir, outDir: join(dir, 'c') }), InvalidArgumentError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('oci references parse; others are refused by field', () => {
  assert.deepEqual(parseOciRef('oci:/srv/images/vr:v2'), { layoutDir: '/srv/images/vr', tag: 'v2' });
  assert.deepEqual(parseOciRef('oci:/srv/images/vr'), { layoutDir: '/srv/images/vr' });
  for (const bad of ['oci:rel/x', 'oci:/a/../b', 'builtin:vrouter']) assert.throws(() => parseOciRef(bad), /image\.ref/);
});
