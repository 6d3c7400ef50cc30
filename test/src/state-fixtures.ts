/** Reads the whole state (every KV bucket and the events stream) for "nothing changed" assertions. */
import { createHash } from 'node:crypto';
import type { NatsConnection } from 'nats';
import { EVENTS_STREAM, KV_BUCKETS, internalSubjects, type NodeInventory, type RegisterRequest } from '@edgenfv/contracts';

export async function snapshotState(nc: NatsConnection): Promise<Record<string, unknown>> {
  const js = nc.jetstream();
  const out: Record<string, unknown> = {};
  for (const bucket of [...Object.values(KV_BUCKETS).filter((b) => b !== KV_BUCKETS.leader), 'edgenfv_names', 'edgenfv_ledger']) {
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

/**
 * Registers a node through the real node protocol (`nfv.v1.internal.nodes.<n>.register`) and waits until the
 * scheduler's cluster state knows it: a node agent that registered and then never acts on its allocations.
 * Suites using it set a long heartbeat grace so that the silent node is not declared lost.
 */
export async function putNode(nc: NatsConnection, nodeId: string, over: Partial<NodeInventory> = {}): Promise<void> {
  const req: RegisterRequest = { nodeId, inventory: inventory(nodeId, over), running: [], startedAt: new Date().toISOString() };
  for (let i = 0; ; i++) {
    try {
      const msg = await nc.request(internalSubjects.register(nodeId), JSON.stringify(req), { timeout: 2000 });
      const reply = JSON.parse(new TextDecoder().decode(msg.data));
      if (!reply.ok) throw new Error(`register refused: ${JSON.stringify(reply.error)}`);
      break;
    } catch (err) {
      if (i > 50) throw err;
      await new Promise((r) => setTimeout(r, 100)); // the scheduler may still be starting
    }
  }
  await waitNodeKnown(nc, nodeId);
}

/** Until the scheduler's cluster state (what placement sees) has the node: nodes.get then reports what is free. */
export async function waitNodeKnown(nc: NatsConnection, nodeId: string): Promise<void> {
  for (let i = 0; ; i++) {
    const msg = await nc.request('nfv.v1.admin.nodes.get', JSON.stringify({ id: nodeId }), { timeout: 2000 });
    const reply = JSON.parse(new TextDecoder().decode(msg.data));
    if (reply.ok && reply.result.free) return;
    if (i > 100) throw new Error(`node ${nodeId} never reached the scheduler's cluster state: ${JSON.stringify(reply)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
