import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';
import type { Allocation, NodeInventory } from '@edgenfv/contracts';
import { encodeJson, openSchedulerBuckets, type SchedulerBuckets } from '../../src/placement/kv.js';
import { emptyLedger } from '../../src/placement/ledger.js';
import type { Assignment } from '../../src/placement/types.js';
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

/** An allocation record for a decision (what the API builds, minus MACs and leases that do not matter here). */
export function allocationFor(
  d: { nodeId: string; epoch: number; assignment: Assignment },
  meta: { allocId: string; tenantId?: string; vnfId?: string; replica?: number; vcpus?: number; memoryMiB?: number; cpuPolicy?: 'dedicated' | 'shared' },
): Allocation {
  const a = d.assignment;
  const resources: Allocation['resources'] = {
    vcpus: meta.vcpus ?? a.cpus?.length ?? 1,
    memoryMiB: meta.memoryMiB ?? 256,
    cpuPolicy: meta.cpuPolicy ?? (a.cpus ? 'dedicated' : 'shared'),
  };
  if (a.cpus) resources.cpus = a.cpus;
  if (a.numaNode !== undefined) resources.numaNode = a.numaNode;
  if (a.hugepages) resources.hugepages = a.hugepages;
  return {
    allocId: meta.allocId,
    nodeId: d.nodeId,
    epoch: d.epoch,
    tenantId: meta.tenantId ?? 't1',
    vnfId: meta.vnfId ?? 'v1',
    replica: meta.replica ?? 0,
    resources,
    image: { ref: 'builtin:test' },
    interfaces: a.vfs.map((v, i) => ({
      name: v.interface,
      type: 'sriov' as const,
      mac: `02:00:00:00:00:${i.toString(16).padStart(2, '0')}`,
      sriov: { pfPciAddress: v.pfPciAddress, vfPciAddress: v.vfPciAddress, vfIndex: v.vfIndex, physnet: v.physnet },
    })),
    createdAt: new Date().toISOString(),
  };
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
