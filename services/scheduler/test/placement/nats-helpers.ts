import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';
import type { NodeInventory } from '@edgenfv/contracts';
import { encodeJson, openSchedulerBuckets, type SchedulerBuckets } from '../../src/placement/kv.js';
import { emptyLedger } from '../../src/placement/ledger.js';
import type { StoredNode } from '../../src/placement/node-record.js';

export interface NatsFixture {
  server: NatsServerHandle;
  dir: string;
  conns: NatsConnection[];
  connect(): Promise<NatsConnection>;
  close(): Promise<void>;
}

export async function natsFixture(): Promise<NatsFixture> {
  const dir = mkdtempSync(join(tmpdir(), 'edgenfv-sched-'));
  const server = await startNatsServer({ storeDir: join(dir, 'js') });
  const conns: NatsConnection[] = [];
  return {
    server,
    dir,
    conns,
    async connect() {
      const nc = await connect({ servers: server.url, maxReconnectAttempts: 0 });
      conns.push(nc);
      return nc;
    },
    async close() {
      for (const nc of conns) if (!nc.isClosed()) await nc.close().catch(() => undefined);
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function buckets(nc: NatsConnection): Promise<SchedulerBuckets> {
  return openSchedulerBuckets(nc.jetstream());
}

/** Writes a Ready node record (and its empty ledger) as the registry would. */
export async function putNode(b: SchedulerBuckets, inv: NodeInventory, over: Partial<StoredNode> = {}): Promise<StoredNode> {
  const rec: StoredNode = {
    id: inv.nodeId,
    inventory: inv,
    health: 'Ready',
    cordoned: false,
    epoch: 1,
    registeredAt: new Date().toISOString(),
    ...over,
  };
  await b.nodes.put(inv.nodeId, encodeJson(rec));
  await b.ledger.put(inv.nodeId, encodeJson(emptyLedger(inv.nodeId, rec.epoch)));
  return rec;
}

export async function waitFor<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
