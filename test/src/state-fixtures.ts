/** Reads the whole state (every KV bucket and the events stream) for "nothing changed" assertions. */
import { createHash } from 'node:crypto';
import type { NatsConnection } from 'nats';
import { EVENTS_STREAM, KV_BUCKETS, type NodeInventory, type NodeRecord } from '@edgenfv/contracts';

export async function snapshotState(nc: NatsConnection): Promise<Record<string, unknown>> {
  const js = nc.jetstream();
  const out: Record<string, unknown> = {};
  for (const bucket of [...Object.values(KV_BUCKETS), 'edgenfv_names']) {
    const kv = await js.views.kv(bucket);
    const h = createHash('sha256');
    const keys: string[] = [];
    for await (const k of await kv.keys()) keys.push(k);
    keys.sort();
    for (const k of keys) {
      const e = await kv.get(k);
      h.update(k).update(e ? e.value : new Uint8Array()).update(String(e?.revision ?? 0));
    }
    out[bucket] = { keys: keys.length, digest: h.digest('hex') };
  }
  const jsm = await nc.jetstreamManager();
  out.events = (await jsm.streams.info(EVENTS_STREAM)).state.messages;
  return out;
}

export function inventory(nodeId: string, over: Partial<NodeInventory> = {}): NodeInventory {
  return {
    nodeId,
    hostname: nodeId,
    labels: { site: 'edge-1' },
    cpuCount: 8,
    isolatedCpus: [],
    memoryMiB: 32768,
    numaNodes: [{ id: 0, cpus: [0, 1, 2, 3, 4, 5, 6, 7], memoryMiB: 32768, hugepages: [] }],
    sriovPfs: [],
    dataplanes: [],
    hypervisors: [{ kind: 'qemu', path: '/usr/bin/qemu-system-x86_64', accel: 'tcg' }],
    kvm: false,
    agentVersion: 'test',
    ...over,
  };
}

/** Writes a Ready node record directly (a node whose agent registered and then never does anything). */
export async function putNode(nc: NatsConnection, nodeId: string, over: Partial<NodeInventory> = {}): Promise<void> {
  const kv = await nc.jetstream().views.kv(KV_BUCKETS.nodes);
  const now = new Date().toISOString();
  const rec: NodeRecord = {
    id: nodeId,
    inventory: inventory(nodeId, over),
    health: 'Ready',
    cordoned: false,
    epoch: 1,
    lastHeartbeatAt: now,
    registeredAt: now,
  };
  await kv.put(nodeId, JSON.stringify(rec));
}
