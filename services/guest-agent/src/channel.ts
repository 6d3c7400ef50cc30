/**
 * Guest end of the host<->guest channel: a framed multiplexer over one virtio-serial port (see contracts'
 * agent-channel.ts for the frame format). Each stream the host OPENs becomes a fresh connection to the agent's
 * local gRPC socket. The host announces a session epoch with HELLO at every (re)connect: the guest then drops every
 * stream and every queued write of the old epoch, so nothing meant for an old host connection leaks into the new
 * one. virtio-serial quirks handled here: read() returns 0 while no host is connected (poll again), a write blocks
 * while no host is connected (one write in flight at a time, behind a queue that drops stale epochs).
 *
 * A port write of an old session is never waited for by a new one: a write in flight when the session resets (host
 * gone, or a new HELLO) may complete late or never (the socket stand-in's write to a host connection that died
 * mid-write never settled), so a reset abandons it and the new session's frames get a writer of their own. Were the
 * new session to queue behind it, one lost write would wedge the mux for every later host.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { readdirSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { FrameDecoder, FrameType, encodeData, encodeFrame, type Frame } from '@edgenfv/contracts/internal/agent-channel';
import type { Log } from './log.js';

/** A byte port with virtio-serial semantics: read() resolves 0 while the host is not connected. */
export interface SerialPort {
  read(buf: Buffer): Promise<number>;
  write(buf: Buffer): Promise<void>;
  close(): Promise<void>;
}

/** `/dev/vportNpM` whose name (from /sys/class/virtio-ports/<p>/name) is `name`. */
export function findVirtioPort(name: string, sysRoot = '/sys'): string | undefined {
  const dir = `${sysRoot}/class/virtio-ports`;
  let ports: string[];
  try {
    ports = readdirSync(dir);
  } catch {
    return undefined;
  }
  for (const p of ports) {
    try {
      if (readFileSync(`${dir}/${p}/name`, 'utf8').trim() === name) return `/dev/${p}`;
    } catch {
      /* port without a name */
    }
  }
  return undefined;
}

export class VirtioSerialPort implements SerialPort {
  private constructor(private readonly fh: FileHandle) {}
  static async open(path: string): Promise<VirtioSerialPort> {
    return new VirtioSerialPort(await open(path, 'r+'));
  }
  async read(buf: Buffer): Promise<number> {
    return (await this.fh.read(buf, 0, buf.length, null)).bytesRead;
  }
  async write(buf: Buffer): Promise<void> {
    let off = 0;
    while (off < buf.length) off += (await this.fh.write(buf, off, buf.length - off, null)).bytesWritten;
  }
  async close(): Promise<void> {
    await this.fh.close();
  }
}

export interface GuestMuxOptions {
  port: SerialPort;
  /** A new connection to the local gRPC server. */
  connectLocal: () => Socket;
  log: Log;
  /** Sleep between polls while no host is connected. */
  idlePollMs?: number;
}

const HIGH_WATER = 1 << 20;
const LOW_WATER = 256 << 10;

export class GuestMux {
  private epoch = 0;
  private readonly streams = new Map<number, Socket>();
  private readonly decoder = new FrameDecoder();
  private queue: Array<{ epoch: number; buf: Buffer }> = [];
  private queuedBytes = 0;
  private writing = false;
  /** Bumped when a session reset abandons the write in flight; a writer of an older generation just stops. */
  private writerGen = 0;
  private paused = false;
  private hostConnected = false;
  private stopped = false;
  private readonly resetSent = new Set<number>();
  private loop?: Promise<void>;
  /** Counters for tests and metrics. */
  readonly stats = { sessions: 0, framesDropped: 0, bytesDropped: 0, skippedBytes: 0, writesAbandoned: 0 };

  constructor(private readonly opts: GuestMuxOptions) {}

  start(): void {
    this.loop = this.readLoop();
  }

  get sessionEpoch(): number {
    return this.epoch;
  }

  private async readLoop(): Promise<void> {
    const buf = Buffer.allocUnsafe(64 * 1024);
    while (!this.stopped) {
      let n: number;
      try {
        n = await this.opts.port.read(buf);
      } catch (err) {
        if (this.stopped) return;
        this.opts.log.warn({ err }, 'port read failed');
        await sleep(100);
        continue;
      }
      if (n === 0) {
        if (this.hostConnected) {
          this.hostConnected = false;
          this.opts.log.info({ epoch: this.epoch }, 'host disconnected');
          this.resetSession(0);
          // a frame the old host left half-written must not swallow the next host's first frames
          this.decoder.reset();
        }
        await sleep(this.opts.idlePollMs ?? 20);
        continue;
      }
      this.hostConnected = true;
      for (const f of this.decoder.push(Buffer.from(buf.subarray(0, n)))) this.onFrame(f);
      this.stats.skippedBytes = this.decoder.skippedBytes;
    }
  }

  private resetSession(epoch: number): void {
    for (const s of this.streams.values()) s.destroy();
    this.streams.clear();
    this.epoch = epoch;
    const before = this.queue.length;
    this.queue = this.queue.filter((q) => q.epoch === epoch);
    if (this.queue.length !== before) this.recount();
    this.resetSent.clear();
    // the streams that were paused for back-pressure are gone
    this.paused = false;
    if (this.writing) {
      // the write in flight belongs to the old session: do not make the new one wait for it (see the header)
      this.writerGen++;
      this.writing = false;
      this.stats.writesAbandoned++;
      if (this.queue.length > 0 && !this.stopped) void this.drain();
    }
  }

  private recount(): void {
    this.queuedBytes = this.queue.reduce((n, q) => n + q.buf.length, 0);
  }

  private onFrame(f: Frame): void {
    if (f.type === FrameType.HELLO) {
      if (f.epoch === 0) return;
      if (f.epoch !== this.epoch) {
        this.resetSession(f.epoch);
        this.stats.sessions++;
        this.opts.log.info({ epoch: f.epoch }, 'host session');
      }
      this.send(encodeFrame(FrameType.HELLO_ACK, f.epoch, 0));
      return;
    }
    if (f.epoch !== this.epoch || this.epoch === 0) {
      this.stats.framesDropped++;
      // a host that still believes in a session this guest does not know (agent restarted): tell it once
      if (this.epoch === 0 && !this.resetSent.has(f.epoch) && f.type !== FrameType.RESET) {
        this.resetSent.add(f.epoch);
        this.send(encodeFrame(FrameType.RESET, f.epoch, 0), f.epoch, true);
      }
      return;
    }
    const s = this.streams.get(f.stream);
    switch (f.type) {
      case FrameType.OPEN:
        if (!s) this.open(f.stream);
        break;
      case FrameType.DATA:
        if (s) s.write(f.payload);
        else this.send(encodeFrame(FrameType.RESET, this.epoch, f.stream));
        break;
      case FrameType.CLOSE:
        if (s) {
          this.streams.delete(f.stream);
          s.end();
        }
        break;
      case FrameType.RESET:
        if (s) {
          this.streams.delete(f.stream);
          s.destroy();
        }
        break;
      case FrameType.PING:
        this.send(encodeFrame(FrameType.PONG, this.epoch, f.stream, f.payload));
        break;
      default:
        break;
    }
  }

  private open(id: number): void {
    const epoch = this.epoch;
    const s = this.opts.connectLocal();
    this.streams.set(id, s);
    s.on('data', (d: Buffer) => {
      if (this.epoch !== epoch) return;
      for (const fr of encodeData(epoch, id, d)) this.send(fr);
      if (this.queuedBytes > HIGH_WATER && !this.paused) {
        this.paused = true;
        for (const x of this.streams.values()) x.pause();
      }
    });
    s.on('error', (err) => this.opts.log.debug({ err, stream: id }, 'local stream error'));
    s.on('close', () => {
      if (this.streams.get(id) === s) {
        this.streams.delete(id);
        if (this.epoch === epoch) this.send(encodeFrame(FrameType.CLOSE, epoch, id));
      }
    });
  }

  private send(buf: Buffer, epoch = this.epoch, anyEpoch = false): void {
    this.queue.push({ epoch: anyEpoch ? -1 : epoch, buf });
    this.queuedBytes += buf.length;
    if (!this.writing) void this.drain();
  }

  private async drain(): Promise<void> {
    this.writing = true;
    const gen = this.writerGen;
    while (this.queue.length > 0 && !this.stopped && gen === this.writerGen) {
      const item = this.queue.shift()!;
      this.queuedBytes -= item.buf.length;
      if (item.epoch !== -1 && item.epoch !== this.epoch) {
        this.stats.bytesDropped += item.buf.length;
        continue;
      }
      try {
        await this.opts.port.write(item.buf);
      } catch (err) {
        this.opts.log.warn({ err }, 'port write failed');
      }
      if (gen !== this.writerGen) return; // abandoned by a session reset while this write was in flight
      if (this.paused && this.queuedBytes < LOW_WATER) {
        this.paused = false;
        for (const x of this.streams.values()) x.resume();
      }
    }
    if (gen === this.writerGen) this.writing = false;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.resetSession(0);
    // a virtio port read blocks until the host sends something, and closing a FileHandle waits for pending reads
    await Promise.race([this.opts.port.close().catch(() => {}), sleep(200)]);
    await Promise.race([this.loop?.catch(() => {}), sleep(200)]);
  }
}

/** connectLocal for a unix socket path. */
export function unixConnector(path: string): () => Socket {
  return () => connect(path);
}
