import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { unpackTarFile } from '../src/containers/unpack.js';

type Entry = { name: string; type?: '0' | '1' | '2' | '5'; data?: string; link?: string; mode?: number };

/** A ustar archive written byte by byte (the system tar refuses to write the hostile entries these tests need). */
function tar(entries: Entry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const h = Buffer.alloc(512);
    const data = Buffer.from(e.data ?? '');
    h.write(e.name, 0, 100);
    h.write(((e.mode ?? (e.type === '5' ? 0o755 : 0o644)).toString(8).padStart(7, '0')) + '\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(data.length.toString(8).padStart(11, '0') + '\0', 124);
    h.write('00000000000\0', 136);
    h.write('        ', 148);
    h.write(e.type ?? '0', 156);
    if (e.link) h.write(e.link, 157, 100);
    h.write('ustar\0', 257);
    h.write('00', 263);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    blocks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

function withDir(fn: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'unpack-'));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test(
  'layers: files, symlinks resolved inside the root, whiteouts and opaque folders of lower layers',
  withDir(async (dir) => {
    const root = join(dir, 'root');
    const l1 = join(dir, 'l1.tar.gz');
    writeFileSync(
      l1,
      gzipSync(
        tar([
          { name: 'etc/', type: '5' },
          { name: 'etc/passwd', data: 'root:x:0:0\n' },
          { name: 'etc/old', data: 'old\n' },
          { name: 'usr/lib/', type: '5' },
          { name: 'lib', type: '2', link: '/usr/lib' },
          { name: 'var/cache/a', data: 'a' },
          { name: 'bin/tool', data: '#!/bin/sh\n', mode: 0o4755 },
          { name: 'bin/tool2', type: '1', link: 'bin/tool' },
        ]),
      ),
    );
    const l2 = join(dir, 'l2.tar');
    writeFileSync(
      l2,
      tar([
        { name: 'etc/.wh.old' },
        { name: 'lib/libx.so', data: 'x' },
        { name: 'var/cache/.wh..wh..opq' },
        { name: 'var/cache/b', data: 'b' },
      ]),
    );
    await unpackTarFile(l1, root, { whiteouts: true, what: 'layer 1' });
    await unpackTarFile(l2, root, { whiteouts: true, what: 'layer 2' });
    assert.equal(readFileSync(join(root, 'etc/passwd'), 'utf8'), 'root:x:0:0\n');
    assert.equal(existsSync(join(root, 'etc/old')), false, 'whited out');
    assert.equal(readlinkSync(join(root, 'lib')), '/usr/lib');
    assert.equal(readFileSync(join(root, 'usr/lib/libx.so'), 'utf8'), 'x', 'written through the symlink, inside the root');
    assert.equal(existsSync(join(root, 'var/cache/a')), false, 'opaque folder dropped the lower layer');
    assert.equal(readFileSync(join(root, 'var/cache/b'), 'utf8'), 'b', 'the same layer keeps its own');
    assert.equal(lstatSync(join(root, 'bin/tool')).mode & 0o7777, 0o755, 'setuid dropped');
    assert.equal(lstatSync(join(root, 'bin/tool2')).ino, lstatSync(join(root, 'bin/tool')).ino, 'hard link');
  }),
);

test(
  'hostile archives: .. is refused, a symlink out of the root is resolved inside it, a hard link out is refused',
  withDir(async (dir) => {
    const root = join(dir, 'root');
    const outside = join(dir, 'outside');
    const a = join(dir, 'a.tar');
    writeFileSync(a, tar([{ name: '../outside', data: 'pwned' }]));
    await assert.rejects(unpackTarFile(a, root, { whiteouts: true, what: 'layer 1' }), /layer 1: entry "..\/outside" climbs out of the root/);
    assert.equal(existsSync(outside), false);

    const b = join(dir, 'b.tar');
    writeFileSync(b, tar([{ name: 'esc', type: '2', link: '../../../..' + dir }, { name: 'esc/outside', data: 'pwned' }, { name: 'abs', type: '2', link: dir }, { name: 'abs/outside2', data: 'pwned' }]));
    await unpackTarFile(b, root, { whiteouts: true, what: 'layer 2' });
    assert.equal(existsSync(outside), false, 'nothing written outside the root');
    assert.equal(existsSync(join(dir, 'outside2')), false);
    assert.equal(readFileSync(join(root, dir, 'outside'), 'utf8'), 'pwned', 'landed inside the root instead');

    const c = join(dir, 'c.tar');
    writeFileSync(join(dir, 'secret'), 'secret');
    writeFileSync(c, tar([{ name: 'link', type: '1', link: '../secret' }]));
    await assert.rejects(unpackTarFile(c, root, { whiteouts: true, what: 'layer 3' }), /hard-links out of the root/);

    const d = join(dir, 'd.tar');
    writeFileSync(d, tar([{ name: 'x', type: '2', link: '/etc' }, { name: 'x', data: 'replaced' }]));
    await unpackTarFile(d, root, { whiteouts: true, what: 'layer 4' });
    assert.equal(readFileSync(join(root, 'x'), 'utf8'), 'replaced', 'a file replaces a symlink instead of writing through it');
    assert.notEqual(readFileSync('/etc/hostname', 'utf8'), 'replaced');
  }),
);
