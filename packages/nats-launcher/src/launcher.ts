/**
 * Starts a real nats-server with JetStream as a child process, and stops it cleanly.
 * Used by the appliance (`npm start`) and by every test suite (own server, random loopback port, own store).
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { resolverConfig, type TrustBundle } from './auth.js';

export interface NatsServerOptions {
  /** JetStream store folder (created if missing). */
  storeDir: string;
  /** Client port; 0 or undefined picks a free one (nats-server's own random port). */
  port?: number;
  host?: string;
  /** Optional user/password required of clients. */
  user?: string;
  pass?: string;
  serverName?: string;
  /**
   * Decentralised JWT auth (auth.ts): the operator, the system account and the application account, resolved by
   * the built-in full resolver (its JWT store under storeDir/jwt). Excludes user/pass.
   */
  jwtAuth?: Pick<TrustBundle, 'operator' | 'system' | 'app'>;
  /** Path of nats-server; default: found on PATH, /usr/sbin, /usr/bin. */
  binary?: string;
  /** Called with each line nats-server writes (its log). */
  onLog?: (line: string) => void;
  startTimeoutMs?: number;
  /**
   * Seconds a client has from the server's INFO to its CONNECT (nats-server's `authorization.timeout`, default 2):
   * a client on a slow machine signing its JWT nonce can need more (a node agent in an emulated TCG edge node did).
   */
  authTimeoutS?: number;
}

export interface NatsServerHandle {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly pid: number;
  readonly storeDir: string;
  /** Resolves with the exit code (or null when killed by a signal) once the process is gone. */
  readonly exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after graceMs; resolves when the process is gone. Safe to call twice. */
  stop(graceMs?: number): Promise<void>;
  /** Sends a signal without waiting (tests use SIGKILL). */
  kill(signal: NodeJS.Signals): void;
}

export class NatsServerNotFoundError extends Error {
  constructor() {
    super(
      'nats-server not found on PATH (nor in /usr/sbin, /usr/bin). Install it: `apt-get install nats-server` ' +
        '(Debian/Ubuntu), or run `npm run setup` as root, or point EDGENFV_NATS_SERVER at the binary.',
    );
    this.name = 'NatsServerNotFoundError';
  }
}

export function findNatsServer(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.EDGENFV_NATS_SERVER) return env.EDGENFV_NATS_SERVER;
  const dirs = [...(env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/bin', '/usr/local/bin'];
  for (const d of dirs) {
    if (!d) continue;
    const p = join(d, 'nats-server');
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return null;
}

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
});

/**
 * Spawns a child that the kernel kills (SIGKILL) when this process dies, however it dies (util-linux `setpriv
 * --pdeathsig`, which then execs the command: the pid is the command's). A test runner that times out and kills a
 * test process, or an appliance killed with -9, leaves no nats-server or service behind. Falls back to a plain
 * spawn where setpriv is missing.
 */
export function spawnTied(command: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
  if (!SETPRIV) return spawn(command, args, opts);
  return spawn(SETPRIV, ['--pdeathsig', 'KILL', '--', command, ...args], opts);
}

function quote(s: string): string {
  return JSON.stringify(s);
}

/**
 * A store made before JWT auth keeps its streams and KV buckets under the global account ($G); with JWT auth they
 * belong to the application account: move them once, so state survives the switch.
 */
function adoptGlobalStreams(storeDir: string, accountPublicKey: string): void {
  const js = join(storeDir, 'jetstream');
  const from = join(js, '$G');
  const to = join(js, accountPublicKey);
  if (existsSync(from) && !existsSync(to)) renameSync(from, to);
}

export async function startNatsServer(opts: NatsServerOptions): Promise<NatsServerHandle> {
  const binary = opts.binary ?? findNatsServer();
  if (!binary) throw new NatsServerNotFoundError();
  const host = opts.host ?? '127.0.0.1';
  mkdirSync(opts.storeDir, { recursive: true, mode: 0o700 });
  const conf = [
    `listen: ${quote(`${host}:${opts.port && opts.port > 0 ? opts.port : -1}`)}`,
    `server_name: ${quote(opts.serverName ?? 'edgenfv')}`,
    `jetstream { store_dir: ${quote(opts.storeDir)} }`,
    // Above NATS' 1 MB default so that an oversized API request (a 10 MB string) reaches the API server and gets
    // INVALID_ARGUMENT naming the field, instead of a client-side MAX_PAYLOAD error.
    'max_payload: 16MB',
  ];
  if (opts.jwtAuth) {
    if (opts.user !== undefined) throw new Error('nats-launcher: jwtAuth and user/pass exclude each other');
    const jwtDir = join(opts.storeDir, 'jwt');
    mkdirSync(jwtDir, { recursive: true, mode: 0o700 });
    conf.push(...resolverConfig(opts.jwtAuth, jwtDir));
    adoptGlobalStreams(opts.storeDir, opts.jwtAuth.app.publicKey);
  } else if (opts.user !== undefined) {
    conf.push(`authorization { user: ${quote(opts.user)}, password: ${quote(opts.pass ?? '')}${opts.authTimeoutS ? `, timeout: ${opts.authTimeoutS}` : ''} }`);
  }
  if (opts.authTimeoutS !== undefined && (!Number.isFinite(opts.authTimeoutS) || opts.authTimeoutS <= 0)) throw new Error('nats-launcher: authTimeoutS must be a positive number of seconds');
  if (opts.authTimeoutS && opts.user === undefined) conf.push(`authorization { timeout: ${opts.authTimeoutS} }`);
  const confPath = join(opts.storeDir, 'nats-server.conf');
  writeFileSync(confPath, conf.join('\n') + '\n', { mode: 0o600 });

  // its own process group: a Ctrl-C in the terminal reaches the parent only, which stops the server in order
  const child: ChildProcess = spawnTied(binary, ['-c', confPath], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const timeoutMs = opts.startTimeoutMs ?? 10_000;

  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    const tail: string[] = [];
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`nats-server did not become ready within ${timeoutMs} ms: ${tail.join(' | ')}`));
    }, timeoutMs);
    const onData = (chunk: Buffer): void => {
      buf += chunk.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        opts.onLog?.(line);
        tail.push(line);
        if (tail.length > 8) tail.shift();
        const m = /Listening for client connections on [^\s]*:(\d+)/.exec(line);
        if (m) listenPort = Number(m[1]);
        if (/Server is ready/.test(line) && listenPort) {
          clearTimeout(timer);
          resolve(listenPort);
        }
      }
    };
    let listenPort = 0;
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`nats-server exited with ${code} before it was ready: ${tail.join(' | ')}`));
    });
  });

  let stopping: Promise<void> | undefined;
  const handle: NatsServerHandle = {
    url: `nats://${host}:${port}`,
    host,
    port,
    pid: child.pid ?? -1,
    storeDir: opts.storeDir,
    exited,
    kill(signal) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    stop(graceMs = 5_000) {
      stopping ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM'); // nats-server exits 1 on SIGTERM: that is its normal shutdown
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      })();
      return stopping;
    },
  };
  return handle;
}
