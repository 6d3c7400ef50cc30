/** Reads of guest-written files (the console log): no symlink followed, no FIFO or device opened, size capped. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guestFileTail } from '../../src/hypervisor/guest-file.js';

test('guestFileTail: the last lines of a regular file, capped; a symlink, a FIFO, a folder or nothing give nothing', () => {
  const dir = mkdtempSync(join(tmpdir(), 'na-gf-'));
  try {
    const log = join(dir, 'console.log');
    writeFileSync(log, Array.from({ length: 100 }, (_, i) => `line ${i}`).join('\n'));
    assert.equal(guestFileTail(log, 2), 'line 98\nline 99');
    // a guest that filled its console: only the last maxBytes are read
    writeFileSync(log, 'x'.repeat(10_000) + '\nend');
    assert.equal(guestFileTail(log, 5, 100).length, 100);
    assert.match(guestFileTail(log, 1, 100), /^end$/);
    // a symlink put in the log's place (towards a host secret) is not followed
    const secret = join(dir, 'secret');
    writeFileSync(secret, 'host secret');
    const link = join(dir, 'link.log');
    symlinkSync(secret, link);
    assert.equal(guestFileTail(link, 5), '');
    // a FIFO would block a read forever: refused (opened non-blocking, not a regular file)
    const fifo = join(dir, 'fifo.log');
    execFileSync('mkfifo', [fifo]);
    assert.equal(guestFileTail(fifo, 5), '');
    assert.equal(guestFileTail(dir, 5), '');
    assert.equal(guestFileTail(join(dir, 'missing'), 5), '');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
