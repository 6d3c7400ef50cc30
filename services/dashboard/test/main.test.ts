/** `main.js` as a real process: serves on the configured port, says so and exits 1 when the port is taken. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
let dir: string;
let server: NatsServerHandle;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'edgenfv-dash-main-'));
  server = await startNatsServer({ storeDir: join(dir, 'js') });
});
after(async () => {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

function listenAnywhere(): Promise<Server> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
}

function start(port: number): { exited: Promise<number | null>; output: () => string; kill: (s: NodeJS.Signals) => void; waitFor: (re: RegExp) => Promise<void> } {
  const child = spawn(process.execPath, [MAIN], {
    env: { PATH: process.env.PATH ?? '', EDGENFV_HOME: join(dir, 'home'), EDGENFV_NATS_URL: server.url, EDGENFV_DASHBOARD_PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let wake = (): void => undefined;
  const onData = (b: Buffer): void => {
    out += b.toString();
    wake();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  return {
    exited: new Promise((r) => child.once('exit', (c) => r(c))),
    output: () => out,
    kill: (s) => child.kill(s),
    waitFor: (re) =>
      new Promise((resolve) => {
        wake = () => {
          if (re.test(out)) resolve();
        };
        wake();
      }),
  };
}

test('a taken port: it says so and exits 1', async () => {
  const blocker = await listenAnywhere();
  const port = (blocker.address() as { port: number }).port;
  try {
    const p = start(port);
    assert.equal(await p.exited, 1);
    assert.match(p.output(), new RegExp(`port ${port} on 127\\.0\\.0\\.1 is taken: set EDGENFV_DASHBOARD_PORT`));
  } finally {
    await new Promise((r) => blocker.close(r));
  }
});

test('serves /healthz and stops on SIGTERM with exit 0', async () => {
  const probe = await listenAnywhere();
  const port = (probe.address() as { port: number }).port;
  await new Promise((r) => probe.close(r));
  const p = start(port);
  try {
    await p.waitFor(/Server listening at http:\/\/127\.0\.0\.1:\d+/);
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.deepEqual(await res.json(), { status: 'ok', nats: 'connected' });
    assert.match(p.output(), /no EDGENFV_DASHBOARD_TOKEN: every \/api request is refused/);
  } finally {
    p.kill('SIGTERM');
  }
  assert.equal(await p.exited, 0);
});
