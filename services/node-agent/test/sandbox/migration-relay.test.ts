/**
 * The migration stream relay (sandbox/migration-relay.ts): QEMU's unix socket on the source -> the source agent ->
 * TCP -> the destination agent -> the destination QEMU's unix socket. Real sockets on loopback; "QEMU" on each
 * end is a plain unix socket peer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { incomingRelay, outgoingRelay } from '../../src/sandbox/migration-relay.js';

test('everything the source sent reaches the destination, also when the source has closed long before the destination has read it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mgrelay-'));
  const destSock = join(dir, 'in.sock');
  const srcSock = join(dir, 'out.sock');
  let dest: Socket | undefined;
  // the destination (a QEMU loading the state) reads slower than the source sends: the relays hold the rest
  const received = new Promise<Buffer>((resolve) => {
    const srv = createServer((s) => {
      dest = s;
      srv.close();
      const got: Buffer[] = [];
      s.on('data', (c: Buffer) => {
        got.push(c);
        s.pause();
        setTimeout(() => s.resume(), 2);
      });
      s.once('end', () => resolve(Buffer.concat(got)));
    });
    srv.listen(destSock);
  });
  const inRelay = await incomingRelay('127.0.0.1', destSock);
  const outRelay = await outgoingRelay(srcSock, inRelay.uri, inRelay.token);
  t.after(() => {
    inRelay.close();
    outRelay.close();
    dest?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });
  const payload = randomBytes(24 * 1024 * 1024);
  const src = createConnection({ path: srcSock });
  await new Promise<void>((resolve) => src.once('connect', () => resolve()));
  let sourceClosedFirst = false;
  src.once('close', () => (sourceClosedFirst = dest !== undefined && !dest.readableEnded));
  src.end(payload);
  const all = await received;
  assert.ok(sourceClosedFirst, 'the source closed while the destination was still reading (the case under test)');
  assert.equal(all.length, payload.length, 'every byte arrived');
  assert.equal(createHash('sha256').update(all).digest('hex'), createHash('sha256').update(payload).digest('hex'));
});

test('a connection without the token reaches nothing', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mgrelay-'));
  const destSock = join(dir, 'in.sock');
  let reached = false;
  const srv = createServer((s) => {
    reached = true;
    s.destroy();
  });
  await new Promise<void>((resolve) => srv.listen(destSock, resolve));
  const inRelay = await incomingRelay('127.0.0.1', destSock);
  t.after(() => {
    inRelay.close();
    srv.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const port = Number(/:(\d+)$/.exec(inRelay.uri)![1]);
  const c = createConnection({ host: '127.0.0.1', port });
  c.on('error', () => undefined);
  c.write(Buffer.alloc(32, 7));
  await new Promise<void>((resolve) => c.once('close', () => resolve()));
  assert.equal(reached, false);
});
