/**
 * A real 3-server NATS cluster on loopback for tests and the chaos run: the configs come from the site generator
 * (`npm run nats:site`, services/appliance/src/site.ts: server_name, cluster routes, JWT accounts), each server
 * can be SIGKILLed and started again on the same config and store.
 */
import type { ChildProcess } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator, type NatsConnection } from 'nats';
import { findNatsServer, spawnTied } from '@edgenfv/nats-launcher';
import { generateSite } from '@edgenfv/appliance/internal/site';

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Three consecutive free ports (the generator gives server i the cluster port base + i on one host). */
async function freeRange(n: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 30000);
    const ok = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        new Promise<boolean>((r) => {
          const s = createServer();
          s.once('error', () => r(false));
          s.listen(base + i, '127.0.0.1', () => s.close(() => r(true)));
        }),
      ),
    );
    if (ok.every(Boolean)) return base;
  }
  throw new Error('no free port range');
}

export interface ClusterServer {
  index: number;
  url: string;
  conf: string;
  child: ChildProcess | undefined;
}

export class NatsCluster {
  readonly servers: ClusterServer[];
  private constructor(
    readonly dir: string,
    readonly secrets: string,
    servers: ClusterServer[],
  ) {
    this.servers = servers;
  }

  get urls(): string[] {
    return this.servers.map((s) => s.url);
  }

  static async start(dir: string, n = 3): Promise<NatsCluster> {
    const ports = await Promise.all(Array.from({ length: n }, () => freePort()));
    const clusterPort = await freeRange(n);
    const site = await generateSite({ out: join(dir, 'site'), servers: ports.map((p) => `127.0.0.1:${p}`), nodes: [], schedulers: 3, storeDir: join(dir, 'store'), clusterPort });
    const c = new NatsCluster(dir, site.secrets, site.configs.map((conf, index) => ({ index, url: `nats://127.0.0.1:${ports[index]}`, conf, child: undefined })));
    await Promise.all(c.servers.map((s) => c.startServer(s.index)));
    return c;
  }

  /** Starts (or starts again, same config and store) server i; resolves once it is ready. */
  startServer(i: number): Promise<void> {
    const s = this.servers[i]!;
    const child = spawnTied(findNatsServer()!, ['-c', s.conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    s.child = child;
    return new Promise((resolve, reject) => {
      let log = '';
      const on = (d: Buffer): void => {
        if (log.length < 100_000) log += d.toString();
        if (/Server is ready/.test(log)) resolve();
      };
      child.stdout!.on('data', on);
      child.stderr!.on('data', on);
      child.once('exit', (code) => reject(new Error(`nats-server ${i + 1} exited ${code}: ${log.slice(-2000)}`)));
    });
  }

  /** kill -9 of server i; resolves once it is gone. */
  async kill(i: number): Promise<void> {
    const child = this.servers[i]!.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGKILL');
    await gone;
  }

  credsFile(principal: string): string {
    return join(this.secrets, `${principal}.creds`);
  }

  /** A connection as the operator (every subject), to all servers, reconnecting for ever. */
  async operator(): Promise<NatsConnection> {
    return connect({ servers: this.urls, authenticator: credsAuthenticator(readFileSync(this.credsFile('operator'))), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  }

  /** Until JetStream has a meta leader: an R3 bucket can be made. */
  async waitJetStream(nc: NatsConnection): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        await nc.jetstream().views.kv('edgenfv_probe', { history: 1, replicas: this.servers.length });
        return;
      } catch (err) {
        if (i > 300) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.servers.map((s) => this.kill(s.index)));
  }
}
