/** One real nats-server + the fake API responder + sample data, shared by the dashboard's test files. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { connect, type NatsConnection } from 'nats';
import type { FastifyInstance } from 'fastify';
import { startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';
import { ApiClient } from '@edgenfv/api-client';
import { sampleNode, startFakeApi, type FakeApi } from '@edgenfv/api-client/testing';
import { createLogger, createRegistry } from '@edgenfv/telemetry';
import type { Vnfd } from '@edgenfv/contracts';
import { buildApp } from '../src/index.js';

export const OPERATOR_TOKEN = 'op-token-123';
/** Headers of an operator request. */
export const OP = { authorization: `Bearer ${OPERATOR_TOKEN}` };

export const vrouter: Vnfd = {
  name: 'vrouter',
  replicas: 2,
  resources: { vcpus: 2, memoryMiB: 1024 },
  image: { ref: 'builtin:vrouter' },
  interfaces: [
    { name: 'mgmt', type: 'tap', network: 'mgmt' },
    { name: 'dp0', type: 'vhostuser', dataplane: 'vpp', queues: 2 },
  ],
};

export interface Fixture {
  dir: string;
  server: NatsServerHandle;
  nc: NatsConnection;
  api: FakeApi;
  client: ApiClient;
  app: FastifyInstance;
  /** Parsed log lines of the app. */
  logs: Array<Record<string, unknown>>;
  vnfId: string;
  blockedVnfId: string;
  close(): Promise<void>;
}

export async function startFixture(): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'edgenfv-dashboard-'));
  const server = await startNatsServer({ storeDir: join(dir, 'js') });
  const nc = await connect({ servers: server.url });
  const api = await startFakeApi(nc, { nodes: [sampleNode('node-a'), sampleNode('node-b')] });
  const client = new ApiClient(nc);
  await client.createTenant({ id: 'acme', displayName: 'Acme Corp', quota: { vcpus: 16, vnfs: 5 } });
  await client.createTenant({ id: 'blocked', displayName: 'Blocked Ltd' });
  const { vnfId } = await client.instantiate('acme', vrouter);
  await client.cordonNode('node-a');
  await client.cordonNode('node-b');
  const { vnfId: blockedVnfId } = await client.instantiate('blocked', { ...vrouter, name: 'firewall', replicas: 1 });
  await client.uncordonNode('node-a');
  await client.uncordonNode('node-b');

  const logs: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const app = await buildApp({
    nc,
    logger: createLogger({ service: 'dashboard', level: 'info', destination }),
    registry: createRegistry('dashboard'),
    operatorToken: OPERATOR_TOKEN,
    // the functional tests fire requests in bursts (a fast run fits more than the default burst of 60 into a
    // second); the limiter itself has its own test with rateLimitPerSec: 1
    rateLimitPerSec: 10_000,
  });
  await app.ready();
  return {
    dir,
    server,
    nc,
    api,
    client,
    app,
    logs,
    vnfId,
    blockedVnfId,
    async close() {
      await app.close();
      await api.stop();
      await nc.close();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
