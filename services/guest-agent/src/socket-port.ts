/**
 * A stand-in for the virtio-serial port, for running the guest agent on the host (tests, development): it listens
 * on a unix socket like QEMU's `chardev socket,server=on` and gives the agent the guest's view of the port: one
 * host connection at a time, read() resolves 0 while none is connected, and a write made while none is connected
 * waits for the next connection and is delivered to it (as virtio-serial does: that is the stale-bytes hazard the
 * framed channel must survive).
 */
import { createServer, type Server, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import type { SerialPort } from './channel.js';

export class SocketChardevPort implements SerialPort {
  private conn?: Socket;
  private chunks: Buffer[] = [];
  private readWaiter?: () => void;
  private connWaiters: Array<() => void> = [];
  private waiting: Socket[] = [];
  private closed = false;

  private constructor(private readonly server: Server, readonly path: string) {}

  static async listen(path: string): Promise<SocketChardevPort> {
    rmSync(path, { force: true });
    const server = createServer({ pauseOnConnect: false });
    const port = new SocketChardevPort(server, path);
    server.on('connection', (s) => port.onConnection(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    return port;
  }

  private onConnection(s: Socket): void {
    if (this.conn) {
      // QEMU serves one connection at a time; the next waits (in the listen backlog there) until this one closes
      s.pause();
      s.on('error', () => {});
      this.waiting.push(s);
      return;
    }
    this.conn = s;
    s.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.wake();
    });
    s.on('error', () => {});
    s.on('close', () => {
      if (this.conn === s) this.conn = undefined;
      this.chunks = [];
      this.wake();
      const next = this.waiting.shift();
      if (next && !next.destroyed) {
        this.onConnection(next);
        next.resume();
      }
    });
    const w = this.connWaiters;
    this.connWaiters = [];
    for (const f of w) f();
  }

  private wake(): void {
    const w = this.readWaiter;
    this.readWaiter = undefined;
    w?.();
  }

  async read(buf: Buffer): Promise<number> {
    for (;;) {
      if (this.closed) throw new Error('port closed');
      if (this.chunks.length > 0) {
        const c = this.chunks[0]!;
        const n = Math.min(c.length, buf.length);
        c.copy(buf, 0, 0, n);
        if (n === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(n);
        return n;
      }
      if (!this.conn) return 0;
      await new Promise<void>((r) => (this.readWaiter = r));
    }
  }

  async write(buf: Buffer): Promise<void> {
    while (!this.conn || this.conn.destroyed) {
      if (this.closed) throw new Error('port closed');
      await new Promise<void>((r) => this.connWaiters.push(r));
    }
    const c = this.conn;
    // settles when the bytes are taken, or when the connection goes away (a host that left): like a virtio port,
    // a write to a vanished host is lost, not pending forever
    await new Promise<void>((resolve) => {
      if (c.write(buf)) return resolve();
      const done = (): void => {
        c.off('drain', done);
        c.off('close', done);
        c.off('error', done);
        resolve();
      };
      c.once('drain', done);
      c.once('close', done);
      c.once('error', done);
    });
  }

  /** Test hook: bytes that appear on the port as if left over from an earlier session. */
  injectToHost(buf: Buffer): void {
    this.conn?.write(buf);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.conn?.destroy();
    for (const w of this.waiting) w.destroy();
    this.wake();
    for (const f of this.connWaiters) f();
    await new Promise<void>((r) => this.server.close(() => r()));
    rmSync(this.path, { force: true });
  }
}
