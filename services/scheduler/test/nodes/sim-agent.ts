/**
 * A simulated node agent for scheduler tests: registers, heartbeats, "runs" a sandbox per allocation it sees in
 * `edgenfv_allocs` `<nodeId>.>`, and tears down sandboxes whose allocation is gone or older than its epoch.
 */
import type { KvEntry, NatsConnection, QueuedIterator } from 'nats';
import { internalSubjects, type Allocation, type Envelope, type NodeInventory, type RegisterReply } from '@edgenfv/contracts';
import { decodeEntry, type SchedulerBuckets } from '../../src/placement/kv.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

export class SimAgent {
  epoch = 0;
  /** allocId -> epoch of the allocation */
  readonly sandboxes = new Map<string, number>();
  readonly tornDown: string[] = [];
  private timer: NodeJS.Timeout | undefined;
  private watch: QueuedIterator<KvEntry> | undefined;
  private beating = false;
  private partitioned = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly b: SchedulerBuckets,
    readonly inventory: NodeInventory,
    private readonly heartbeatMs = 200,
  ) {}

  get nodeId(): string {
    return this.inventory.nodeId;
  }

  async register(): Promise<number> {
    const m = await this.nc.request(
      internalSubjects.register(this.nodeId),
      enc.encode(JSON.stringify({ nodeId: this.nodeId, inventory: this.inventory, running: [...this.sandboxes.keys()], startedAt: new Date().toISOString() })),
      { timeout: 5000 },
    );
    const env = JSON.parse(dec.decode(m.data)) as Envelope<RegisterReply>;
    if (!env.ok) throw new Error(`register refused: ${env.error.message}`);
    this.epoch = env.result.epoch;
    return this.epoch;
  }

  async start(): Promise<void> {
    await this.register();
    this.watch = await this.b.allocs.watch({ key: `${this.nodeId}.>` });
    void (async () => {
      for await (const e of this.watch!) this.onAlloc(e);
    })().catch(() => undefined);
    this.resumeHeartbeats();
  }

  /** A partition: no heartbeats, and nothing heard from KV (the sandboxes keep running). */
  partition(): void {
    this.partitioned = true;
    this.stopHeartbeats();
  }

  private onAlloc(e: KvEntry): void {
    if (this.partitioned) return;
    const allocId = e.key.slice(this.nodeId.length + 1);
    const d = decodeEntry<Allocation>(e);
    if (!d) {
      if (this.sandboxes.delete(allocId)) this.tornDown.push(allocId);
      return;
    }
    if (d.value.epoch >= this.epoch) this.sandboxes.set(allocId, d.value.epoch);
  }

  /** After a return: tear down sandboxes whose allocation is gone or was made under an older epoch. */
  async reconcile(): Promise<void> {
    this.partitioned = false;
    for (const [allocId, epoch] of [...this.sandboxes]) {
      const rec = decodeEntry<Allocation>(await this.b.allocs.get(`${this.nodeId}.${allocId}`));
      if (!rec || epoch < this.epoch || rec.value.epoch < this.epoch) {
        this.sandboxes.delete(allocId);
        this.tornDown.push(allocId);
      }
    }
  }

  heartbeat(): void {
    const hb = {
      nodeId: this.nodeId,
      epoch: this.epoch,
      at: new Date().toISOString(),
      sandboxes: this.sandboxes.size,
      replicas: this.sandboxes.size,
      running: [...this.sandboxes.keys()],
    };
    this.nc.publish(internalSubjects.heartbeat(this.nodeId), enc.encode(JSON.stringify(hb)));
  }

  stopHeartbeats(): void {
    this.beating = false;
    if (this.timer) clearInterval(this.timer);
  }

  resumeHeartbeats(): void {
    if (this.beating) return;
    this.beating = true;
    this.heartbeat();
    this.timer = setInterval(() => this.heartbeat(), this.heartbeatMs);
  }

  stop(): void {
    this.stopHeartbeats();
    this.watch?.stop();
  }
}
