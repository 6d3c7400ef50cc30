/**
 * The node agent's first NATS connect is retried with backoff and logged (it used to exit with `node-agent:
 * TIMEOUT`/`CONNECTION_REFUSED` when its server was not there yet). A real nats-server that appears only after the
 * agent has failed twice.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, StringCodec, type ConnectionOptions, type NatsConnection } from 'nats';
import { startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';
import { createLogger } from '@edgenfv/telemetry';
import { connectRetryDelayMs, connectWithRetry } from '../src/nats-connect.js';

function capturingLogger(): { logger: ReturnType<typeof createLogger>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ service: 'node-agent', level: 'info', destination: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
  return { logger, lines };
}

test('the first connect is retried until the server is there, each failure logged with a growing delay', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'na-natsretry-'));
  // a port nats-server can listen on, with nothing listening on it while the agent first tries
  const first = await startNatsServer({ storeDir: join(dir, 'a') });
  const port = first.port;
  const url = first.url;
  await first.stop();
  let server: NatsServerHandle | undefined;
  let nc: NatsConnection | undefined;
  t.after(async () => {
    await nc?.close();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const { logger, lines } = capturingLogger();
  let calls = 0;
  nc = await connectWithRetry({ servers: url, name: 'node-agent-retry' }, logger, {
    initialDelayMs: 20,
    maxDelayMs: 60,
    connectFn: async (opts: ConnectionOptions) => {
      calls++;
      // the server starts after the second failed attempt (before the third)
      if (calls === 3) server = await startNatsServer({ storeDir: join(dir, 'b'), port });
      return connect(opts);
    },
  });
  assert.equal(calls, 3, 'connected at the third attempt, once the server was there');
  const warns = lines.filter((l) => l.level === 40);
  assert.equal(warns.length, 2, 'each failed attempt is logged');
  assert.deepEqual(warns.map((w) => w.attempt), [1, 2]);
  assert.deepEqual(warns.map((w) => w.retryInMs), [20, 40]);
  for (const w of warns) assert.match(String(w.msg), /^NATS connect failed \(.+\): retrying in \d+ ms$/);
  assert.ok(lines.some((l) => l.level === 30 && /after 3 attempts/.test(String(l.msg))), 'the connect after retries is logged');
  // the connection is a working one
  const sc = StringCodec();
  const sub = nc.subscribe('retry.echo', { callback: (_e, m) => m.respond(m.data) });
  const reply = await nc.request('retry.echo', sc.encode('hi'), { timeout: 10_000 });
  assert.equal(sc.decode(reply.data), 'hi');
  sub.unsubscribe();
});

test('the delay doubles up to its cap; a stopping agent ends the retries with the last error', async () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8].map((a) => connectRetryDelayMs(a, 500, 30_000)), [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
  const { logger } = capturingLogger();
  const ac = new AbortController();
  let calls = 0;
  await assert.rejects(
    connectWithRetry({ servers: 'nats://127.0.0.1:1' }, logger, {
      initialDelayMs: 10_000,
      signal: ac.signal,
      connectFn: () => {
        calls++;
        // the stop comes while the agent waits for its next attempt
        setImmediate(() => ac.abort());
        return Promise.reject(Object.assign(new Error('TIMEOUT'), { code: 'TIMEOUT' }));
      },
    }),
    /TIMEOUT/,
  );
  assert.equal(calls, 1);
});
