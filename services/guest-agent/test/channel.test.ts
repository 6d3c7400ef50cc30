import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FrameDecoder, FrameType, encodeFrame, type Frame } from '@edgenfv/contracts/internal/agent-channel';
import { setTimeout as sleep } from 'node:timers/promises';
import { GuestMux, unixConnector, type SerialPort } from '../src/channel.js';
import { SocketChardevPort } from '../src/socket-port.js';
import { silentLog } from '../src/log.js';

// The guest mux on the socket stand-in of its virtio-serial port, driven by a raw host written here with the frame
// codec: every byte on the wire is the test's own.
let dir: string;
let echo: Server;
let port: SocketChardevPort;
let mux: GuestMux;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ga-mux-'));
  echo = createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(join(dir, 'echo.sock'), () => r()));
  port = await SocketChardevPort.listen(join(dir, 'port.sock'));
  mux = new GuestMux({ port, connectLocal: unixConnector(join(dir, 'echo.sock')), log: silentLog });
  mux.start();
});
after(async () => {
  await mux?.stop();
  await new Promise<void>((r) => echo.close(() => r()));
  rmSync(dir, { recursive: true, force: true });
});

class RawHost {
  readonly sock: Socket;
  private readonly dec = new FrameDecoder();
  private frames: Frame[] = [];
  private waiter?: () => void;
  constructor(path: string) {
    this.sock = connect(path);
    this.sock.on('error', () => {});
    this.sock.on('data', (d: Buffer) => {
      this.frames.push(...this.dec.push(d));
      this.waiter?.();
    });
  }
  send(...frames: Buffer[]): void {
    this.sock.write(Buffer.concat(frames));
  }
  async next(pred: (f: Frame) => boolean): Promise<Frame> {
    for (;;) {
      const i = this.frames.findIndex(pred);
      if (i >= 0) return this.frames.splice(i, 1)[0]!;
      await new Promise<void>((r) => (this.waiter = r));
    }
  }
  close(): void {
    this.sock.destroy();
  }
}

test('HELLO after garbage is acknowledged; streams carry bytes both ways; PING answers', async () => {
  const h = new RawHost(port.path);
  try {
    h.send(Buffer.from('leftover bytes from nowhere'), encodeFrame(FrameType.HELLO, 11, 0));
    assert.equal((await h.next((f) => f.type === FrameType.HELLO_ACK)).epoch, 11);
    h.send(encodeFrame(FrameType.OPEN, 11, 1), encodeFrame(FrameType.DATA, 11, 1, Buffer.from('ping-pong')));
    const d = await h.next((f) => f.type === FrameType.DATA && f.stream === 1);
    assert.equal(d.payload.toString(), 'ping-pong');
    h.send(encodeFrame(FrameType.PING, 11, 0, Buffer.from('x')));
    assert.equal((await h.next((f) => f.type === FrameType.PONG)).payload.toString(), 'x');
    h.send(encodeFrame(FrameType.DATA, 11, 9, Buffer.from('nobody')));
    assert.equal((await h.next((f) => f.type === FrameType.RESET)).stream, 9);
  } finally {
    h.close();
  }
});

test('a new host session resets the old streams; frames of the old epoch are dropped', async () => {
  const h1 = new RawHost(port.path);
  h1.send(encodeFrame(FrameType.HELLO, 21, 0), encodeFrame(FrameType.OPEN, 21, 1));
  await h1.next((f) => f.type === FrameType.HELLO_ACK);
  h1.close();
  const h2 = new RawHost(port.path);
  try {
    // stale frames of epoch 21 first (as if still queued), then the new session
    h2.send(encodeFrame(FrameType.HELLO, 22, 0), encodeFrame(FrameType.DATA, 21, 1, Buffer.from('stale')), encodeFrame(FrameType.OPEN, 22, 1), encodeFrame(FrameType.DATA, 22, 1, Buffer.from('fresh')));
    await h2.next((f) => f.type === FrameType.HELLO_ACK && f.epoch === 22);
    const d = await h2.next((f) => f.type === FrameType.DATA && f.epoch === 22);
    assert.equal(d.payload.toString(), 'fresh');
    assert.equal(mux.sessionEpoch, 22);
    assert.ok(mux.stats.framesDropped >= 1);
  } finally {
    h2.close();
  }
});

test('a host that talks in a session the guest does not know (agent restarted) is told to start over', async () => {
  // a freshly started agent on its own port: it has no session yet
  const port2 = await SocketChardevPort.listen(join(dir, 'port2.sock'));
  const fresh = new GuestMux({ port: port2, connectLocal: unixConnector(join(dir, 'echo.sock')), log: silentLog });
  fresh.start();
  const h = new RawHost(port2.path);
  try {
    h.send(encodeFrame(FrameType.DATA, 22, 1, Buffer.from('still there?')));
    const r = await h.next((f) => f.type === FrameType.RESET);
    assert.deepEqual([r.epoch, r.stream], [22, 0]);
    h.send(encodeFrame(FrameType.HELLO, 23, 0));
    assert.equal((await h.next((f) => f.type === FrameType.HELLO_ACK)).epoch, 23);
  } finally {
    h.close();
    await fresh.stop();
  }
});

/**
 * A scripted port: the test feeds what the host "sends" (or disconnects it), and decides whether a write completes.
 * `hangWrites` makes writes never settle, like the socket stand-in's write to a host connection that died mid-write.
 */
class ScriptedPort implements SerialPort {
  private chunks: Buffer[] = [];
  private connected = true;
  private wake?: () => void;
  private closed = false;
  hangWrites = false;
  readonly written: Frame[] = [];
  private readonly dec = new FrameDecoder();
  private writeWaiter?: () => void;
  hostSends(...frames: Buffer[]): void {
    this.connected = true;
    this.chunks.push(Buffer.concat(frames));
    this.wake?.();
  }
  disconnect(): void {
    this.connected = false;
    this.chunks = [];
    this.wake?.();
  }
  async read(buf: Buffer): Promise<number> {
    for (;;) {
      if (this.closed) throw new Error('port closed');
      const c = this.chunks.shift();
      if (c) {
        c.copy(buf);
        return c.length;
      }
      if (!this.connected) return 0;
      await new Promise<void>((r) => (this.wake = r));
    }
  }
  write(buf: Buffer): Promise<void> {
    if (this.hangWrites) return new Promise<void>(() => {});
    this.written.push(...this.dec.push(buf));
    this.writeWaiter?.();
    return Promise.resolve();
  }
  async writtenFrame(pred: (f: Frame) => boolean, ms = 3000): Promise<Frame> {
    const until = Date.now() + ms;
    for (;;) {
      const f = this.written.find(pred);
      if (f) return f;
      if (Date.now() > until) throw new Error('frame not written');
      await Promise.race([new Promise<void>((r) => (this.writeWaiter = r)), sleep(50)]);
    }
  }
  async close(): Promise<void> {
    this.closed = true;
    this.wake?.();
  }
}

test('a port write that never completes (host gone mid-write) does not wedge the next host sessions', async () => {
  const p = new ScriptedPort();
  const m = new GuestMux({ port: p, connectLocal: unixConnector(join(dir, 'echo.sock')), log: silentLog, idlePollMs: 5 });
  m.start();
  try {
    // host 1 says HELLO and dies while the guest writes its HELLO_ACK: that write never settles
    p.hangWrites = true;
    p.hostSends(encodeFrame(FrameType.HELLO, 31, 0));
    await sleep(30);
    p.hangWrites = false;
    // host 2 follows at once, without the guest ever seeing the port idle (QEMU's next connection was waiting)
    p.hostSends(encodeFrame(FrameType.HELLO, 32, 0));
    assert.equal((await p.writtenFrame((f) => f.type === FrameType.HELLO_ACK)).epoch, 32);
    // and after a disconnect the writer of the new session works too
    p.hangWrites = true;
    p.hostSends(encodeFrame(FrameType.OPEN, 32, 1), encodeFrame(FrameType.DATA, 32, 1, Buffer.from('lost')));
    await sleep(30);
    p.disconnect();
    await sleep(30);
    p.hangWrites = false;
    p.hostSends(encodeFrame(FrameType.HELLO, 33, 0), encodeFrame(FrameType.OPEN, 33, 1), encodeFrame(FrameType.DATA, 33, 1, Buffer.from('fresh')));
    assert.equal((await p.writtenFrame((f) => f.type === FrameType.HELLO_ACK && f.epoch === 33)).epoch, 33);
    assert.equal((await p.writtenFrame((f) => f.type === FrameType.DATA && f.epoch === 33)).payload.toString(), 'fresh');
    assert.ok(!p.written.some((f) => f.epoch === 32 && f.type === FrameType.DATA), 'nothing of the old session is written after it');
    assert.ok(m.stats.writesAbandoned >= 2);
  } finally {
    await m.stop();
  }
});

test('a frame the old host left half-written does not swallow the next host\'s HELLO', async () => {
  const p = new ScriptedPort();
  const m = new GuestMux({ port: p, connectLocal: unixConnector(join(dir, 'echo.sock')), log: silentLog, idlePollMs: 5 });
  m.start();
  try {
    p.hostSends(encodeFrame(FrameType.HELLO, 41, 0));
    await p.writtenFrame((f) => f.type === FrameType.HELLO_ACK && f.epoch === 41);
    // a 60 KiB DATA frame of which only the header and a few bytes made it before the host went away
    const big = encodeFrame(FrameType.DATA, 41, 1, Buffer.alloc(60_000, 1));
    p.hostSends(big.subarray(0, 100));
    await sleep(30);
    p.disconnect();
    await sleep(30);
    p.hostSends(encodeFrame(FrameType.HELLO, 42, 0));
    assert.equal((await p.writtenFrame((f) => f.type === FrameType.HELLO_ACK && f.epoch === 42)).epoch, 42);
  } finally {
    await m.stop();
  }
});
