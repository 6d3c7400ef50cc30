/**
 * Host end of the host<->guest agent channel. QEMU exposes the guest's virtio-serial port as a unix socket
 * (chardev `server=on`); this class connects to it, announces a fresh session epoch (HELLO, until the guest's
 * HELLO_ACK), and multiplexes local connections onto it: grpc-js dials `unix:<listenPath>`, every accepted
 * connection becomes one stream (OPEN/DATA/CLOSE/RESET frames, contracts' agent-channel.ts). When the chardev
 * connection drops (or the guest says it lost the session), every local connection is destroyed (grpc-js
 * reconnects by itself) and a new session with a new epoch is made, so bytes of an old session are never
 * delivered to a new one.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { FrameDecoder, FrameType, encodeData, encodeFrame, type Frame } from '@edgenfv/contracts';
import type { Logger } from '@edgenfv/telemetry';

export interface HostChannelOptions {
  /** QEMU's chardev socket for the agent port. */
  chardevPath: string;
  /** Local unix socket grpc-js dials. */
  listenPath: string;
  log: Logger;
  /** HELLO is repeated this often until acknowledged (the agent may not run yet). */
  helloIntervalMs?: number;
  /** Between attempts to (re)connect to the chardev socket. */
  reconnectDelayMs?: number;
}

type State = 'connecting' | 'handshake' | 'ready' | 'closed';

export class HostChannel {
  private server?: Server;
  private chardev?: Socket;
  private state: State = 'connecting';
  private epoch = 0;
  private nextStream = 1;
  private readonly streams = new Map<number, Socket>();
  private pending: Socket[] = [];
  private decoder = new FrameDecoder();
  private readyWaiters: Array<() => void> = [];
  private loop?: Promise<void>;
  /** Counters for tests and metrics. */
  readonly stats = { sessions: 0, framesDropped: 0, skippedBytes: 0, guestResets: 0 };

  constructor(private readonly opts: HostChannelOptions) {}

  get listenPath(): string {
    return this.opts.listenPath;
  }
  get sessionEpoch(): number {
    return this.epoch;
  }
  get ready(): boolean {
    return this.state === 'ready';
  }

  async start(): Promise<void> {
    rmSync(this.opts.listenPath, { force: true });
    this.server = createServer((s) => this.accept(s));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.opts.listenPath, () => resolve());
    });
    this.loop = this.connectLoop();
  }

  /** Resolves once a session is acknowledged by the guest agent (or rejects when the signal aborts). */
  async waitReady(signal?: AbortSignal): Promise<void> {
    if (this.state === 'ready') return;
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(signal!.reason instanceof Error ? signal!.reason : new Error('aborted', { cause: signal!.reason }));
      signal?.addEventListener('abort', onAbort, { once: true });
      this.readyWaiters.push(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }

  private async connectLoop(): Promise<void> {
    while (this.state !== 'closed') {
      const sock = await this.connectOnce();
      if (sock && (this.state as State) === 'closed') { // close() ran while connecting
        sock.destroy();
        return;
      }
      if (!sock) {
        await sleep(this.opts.reconnectDelayMs ?? 100);
        continue;
      }
      await this.runSession(sock);
    }
  }

  private connectOnce(): Promise<Socket | undefined> {
    return new Promise((resolve) => {
      const s = connect(this.opts.chardevPath);
      s.once('connect', () => {
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', () => resolve(undefined));
    });
  }

  private runSession(sock: Socket): Promise<void> {
    return new Promise((resolve) => {
      let prev = this.epoch;
      let e = randomInt(1, 0xffff_ffff);
      while (e === prev) e = randomInt(1, 0xffff_ffff);
      this.epoch = e;
      this.chardev = sock;
      this.decoder = new FrameDecoder();
      this.state = 'handshake';
      this.opts.log.debug({ epoch: e }, 'agent channel: handshake');
      const hello = () => {
        if (this.state === 'handshake' && this.chardev === sock) sock.write(encodeFrame(FrameType.HELLO, e, 0));
      };
      hello();
      const timer = setInterval(hello, this.opts.helloIntervalMs ?? 500);
      sock.on('data', (d: Buffer) => {
        const skipped = this.decoder.skippedBytes;
        for (const f of this.decoder.push(d)) this.onFrame(f, sock);
        this.stats.skippedBytes += this.decoder.skippedBytes - skipped;
      });
      sock.on('drain', () => {
        for (const s of this.streams.values()) s.resume();
      });
      const end = () => {
        clearInterval(timer);
        if (this.chardev === sock) this.chardev = undefined;
        this.dropStreams();
        if (this.state !== 'closed') this.state = 'connecting';
        prev = e;
        resolve();
      };
      sock.on('error', (err) => this.opts.log.debug({ err }, 'agent channel: chardev error'));
      sock.on('close', end);
    });
  }

  private onFrame(f: Frame, sock: Socket): void {
    if (f.epoch !== this.epoch) {
      this.stats.framesDropped++;
      return;
    }
    if (f.type === FrameType.HELLO_ACK) {
      if (this.state !== 'handshake') return;
      this.state = 'ready';
      this.stats.sessions++;
      this.opts.log.info({ epoch: f.epoch }, 'agent channel: session ready');
      const waiters = this.readyWaiters;
      this.readyWaiters = [];
      for (const w of waiters) w();
      const pending = this.pending;
      this.pending = [];
      for (const s of pending) if (!s.destroyed) this.attach(s);
      return;
    }
    if (f.type === FrameType.RESET && f.stream === 0) {
      // the guest does not know this session (its agent restarted): start a new one
      this.stats.guestResets++;
      this.opts.log.info({ epoch: f.epoch }, 'agent channel: guest lost the session, reconnecting');
      sock.destroy();
      return;
    }
    const s = this.streams.get(f.stream);
    switch (f.type) {
      case FrameType.DATA:
        if (s) s.write(f.payload);
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
      default:
        break;
    }
  }

  private accept(s: Socket): void {
    s.on('error', () => {});
    if (this.state === 'closed') {
      s.destroy();
      return;
    }
    if (this.state === 'ready') this.attach(s);
    else {
      s.pause();
      this.pending.push(s);
    }
  }

  private attach(s: Socket): void {
    const sock = this.chardev;
    if (!sock) {
      s.destroy();
      return;
    }
    const id = this.nextStream;
    this.nextStream = (this.nextStream + 2) >>> 0 || 1;
    const epoch = this.epoch;
    this.streams.set(id, s);
    sock.write(encodeFrame(FrameType.OPEN, epoch, id));
    s.on('data', (d: Buffer) => {
      if (this.epoch !== epoch || this.chardev !== sock) return;
      let ok = true;
      for (const fr of encodeData(epoch, id, d)) ok = sock.write(fr) && ok;
      if (!ok) s.pause();
    });
    s.on('close', () => {
      if (this.streams.get(id) === s) {
        this.streams.delete(id);
        if (this.epoch === epoch && this.chardev === sock && !sock.destroyed) sock.write(encodeFrame(FrameType.CLOSE, epoch, id));
      }
    });
    s.resume();
  }

  private dropStreams(): void {
    for (const s of this.streams.values()) s.destroy();
    this.streams.clear();
  }

  /** Drops the chardev connection (a new session follows): what a host-side reconnect looks like. */
  reconnect(): void {
    this.chardev?.destroy();
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.dropStreams();
    for (const s of this.pending) s.destroy();
    this.pending = [];
    this.chardev?.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    await this.loop?.catch(() => {});
    rmSync(this.opts.listenPath, { force: true });
  }
}
