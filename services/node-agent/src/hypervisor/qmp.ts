/**
 * Typed QMP client over QEMU's unix socket: greeting, qmp_capabilities, then commands with ids.
 * One short connection per operation (QEMU serves one QMP client at a time; a restarted agent reconnects).
 */
import { createConnection, type Socket } from 'node:net';
import { UnavailableError, InternalError } from '@edgenfv/contracts';

export interface QmpGreeting {
  QMP: { version: { qemu: { major: number; minor: number; micro: number }; package: string }; capabilities: string[] };
}
export type RunState = 'running' | 'paused' | 'prelaunch' | 'shutdown' | 'inmigrate' | 'internal-error' | 'guest-panicked' | (string & {});
export interface QueryStatus {
  running: boolean;
  status: RunState;
}
export interface HotpluggableCpu {
  type: string;
  'vcpus-count': number;
  props: { 'socket-id'?: number; 'core-id'?: number; 'thread-id'?: number; 'die-id'?: number; 'node-id'?: number };
  'qom-path'?: string;
}
export interface QmpEvent {
  event: string;
  data?: unknown;
  timestamp: { seconds: number; microseconds: number };
}

export class QmpError extends InternalError {
  readonly qmpClass: string;
  constructor(command: string, cls: string, desc: string) {
    super(`QMP ${command}: ${cls}: ${desc}`, { details: { command, class: cls } });
    this.qmpClass = cls;
  }
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class QmpClient {
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private greetingWaiter: { resolve: (g: QmpGreeting) => void; reject: (e: Error) => void } | undefined;
  readonly events: QmpEvent[] = [];
  private closed = false;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    const fail = (err: Error): void => {
      this.closed = true;
      this.greetingWaiter?.reject(err);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    sock.on('error', (e) => fail(new UnavailableError(`QMP socket error: ${e.message}`, { cause: e })));
    sock.on('close', () => fail(new UnavailableError('QMP connection closed')));
  }

  /** Connects, reads the greeting and negotiates capabilities. */
  static async connect(path: string, timeoutMs = 5000): Promise<{ qmp: QmpClient; greeting: QmpGreeting }> {
    const sock = createConnection({ path });
    const qmp = new QmpClient(sock);
    const timer = setTimeout(() => sock.destroy(new Error(`QMP ${path}: no greeting within ${timeoutMs} ms`)), timeoutMs);
    try {
      const greeting = await new Promise<QmpGreeting>((resolve, reject) => {
        qmp.greetingWaiter = { resolve, reject };
      });
      await qmp.execute('qmp_capabilities');
      return { qmp, greeting };
    } catch (err) {
      sock.destroy();
      throw err instanceof UnavailableError ? err : new UnavailableError(`QMP ${path}: ${(err as Error).message}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('QMP' in msg) {
        this.greetingWaiter?.resolve(msg as unknown as QmpGreeting);
        this.greetingWaiter = undefined;
      } else if ('event' in msg) {
        this.events.push(msg as unknown as QmpEvent);
        if (this.events.length > 100) this.events.shift();
      } else if (typeof msg.id === 'string' && this.pending.has(msg.id)) {
        const p = this.pending.get(msg.id)!;
        this.pending.delete(msg.id);
        if ('error' in msg) {
          const e = msg.error as { class: string; desc: string };
          p.reject(new QmpError(p.command, e.class, e.desc));
        } else p.resolve(msg.return);
      }
    }
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<T> {
    if (this.closed) return Promise.reject(new UnavailableError('QMP connection closed'));
    const id = `c${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new UnavailableError(`QMP ${command}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        command,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.sock.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    });
  }

  queryStatus(): Promise<QueryStatus> {
    return this.execute<QueryStatus>('query-status');
  }
  cont(): Promise<void> {
    return this.execute<void>('cont');
  }
  systemPowerdown(): Promise<void> {
    return this.execute<void>('system_powerdown');
  }
  /** QEMU exits; the connection closes (that is success). */
  async quit(): Promise<void> {
    try {
      await this.execute<void>('quit');
    } catch (err) {
      if (!(err instanceof UnavailableError)) throw err;
    }
  }
  deviceAdd(driver: string, id: string, props: Record<string, unknown> = {}): Promise<void> {
    return this.execute<void>('device_add', { driver, id, ...props });
  }
  deviceDel(id: string): Promise<void> {
    return this.execute<void>('device_del', { id });
  }
  objectAdd(qomType: string, id: string, props: Record<string, unknown>): Promise<void> {
    return this.execute<void>('object-add', { 'qom-type': qomType, id, ...props });
  }
  objectDel(id: string): Promise<void> {
    return this.execute<void>('object-del', { id });
  }
  netdevAdd(type: string, id: string, props: Record<string, unknown>): Promise<void> {
    return this.execute<void>('netdev_add', { type, id, ...props });
  }
  netdevDel(id: string): Promise<void> {
    return this.execute<void>('netdev_del', { id });
  }
  chardevAdd(id: string, backend: Record<string, unknown>): Promise<unknown> {
    return this.execute('chardev-add', { id, backend });
  }
  chardevRemove(id: string): Promise<void> {
    return this.execute<void>('chardev-remove', { id });
  }
  queryHotpluggableCpus(): Promise<HotpluggableCpu[]> {
    return this.execute<HotpluggableCpu[]>('query-hotpluggable-cpus');
  }
  queryCpusFast(): Promise<{ 'cpu-index': number; 'qom-path': string; 'thread-id': number }[]> {
    return this.execute('query-cpus-fast');
  }
  queryMemorySizeSummary(): Promise<{ 'base-memory': number; 'plugged-memory'?: number }> {
    return this.execute('query-memory-size-summary');
  }

  close(): void {
    this.closed = true;
    this.sock.destroy();
  }
}

/** Connect, run fn, close. */
export async function withQmp<T>(path: string, fn: (qmp: QmpClient) => Promise<T>, timeoutMs = 5000): Promise<T> {
  const { qmp } = await QmpClient.connect(path, timeoutMs);
  try {
    return await fn(qmp);
  } finally {
    qmp.close();
  }
}
