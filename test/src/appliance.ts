/** Starts the appliance (`npm start`'s process) in a home of its own, and waits until it serves. */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { connect, credsAuthenticator, type NatsConnection } from 'nats';
import { spawnTied } from '@edgenfv/nats-launcher';
import { stringify } from 'yaml';
import { Api, REPO_ROOT } from './harness.js';

export const APPLIANCE_MAIN = join(REPO_ROOT, 'services/appliance/dist/src/main.js');

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export interface RunningAppliance {
  home: string;
  info: { servers: string[]; creds: string; inboxPrefix?: string; dashboardUrl?: string; dashboardToken?: string; metricsUrls: string[] };
  nc: NatsConnection;
  api: Api;
  logs: string[];
  /** SIGINT, as Ctrl-C; resolves with the exit code. */
  stop(): Promise<number | null>;
}

export async function startAppliance(home: string, config: Record<string, unknown>, opts: { readyTimeoutMs?: number; echo?: boolean } = {}): Promise<RunningAppliance> {
  mkdirSync(home, { recursive: true, mode: 0o700 });
  writeFileSync(join(home, 'edgenfv.yaml'), stringify(config));
  const child = spawnTied(process.execPath, [APPLIANCE_MAIN], { env: { ...process.env, EDGENFV_HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: string[] = [];
  const onData = (d: Buffer): void => {
    const text = d.toString();
    logs.push(...text.split('\n').filter(Boolean));
    if (logs.length > 2000) logs.splice(0, logs.length - 2000);
    if (opts.echo) process.stderr.write(text);
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let gone = false;
  void exited.then(() => (gone = true));
  const connectPath = join(home, 'connect.json');
  const until = Date.now() + (opts.readyTimeoutMs ?? 20 * 60_000);
  while (!existsSync(connectPath)) {
    if (gone) throw new Error(`the appliance exited before serving:\n${logs.slice(-20).join('\n')}`);
    if (Date.now() > until) {
      child.kill('SIGKILL');
      throw new Error(`the appliance did not serve in time:\n${logs.slice(-20).join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const info = JSON.parse(readFileSync(connectPath, 'utf8'));
  // the operator principal (JWT auth: a creds file's text in connect.json)
  const nc = await connect({ servers: info.servers, authenticator: credsAuthenticator(new TextEncoder().encode(info.creds)), ...(info.inboxPrefix ? { inboxPrefix: info.inboxPrefix } : {}) });
  return {
    home,
    info,
    nc,
    api: new Api(nc),
    logs,
    async stop() {
      await nc.close().catch(() => undefined);
      if (!gone) child.kill('SIGINT');
      return exited;
    },
  };
}
