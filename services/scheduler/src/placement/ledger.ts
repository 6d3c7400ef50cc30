/**
 * Per-node ledgers (KV `edgenfv_ledger` `<nodeId>`): every reservation on a node, updated with compare-and-set.
 * The ledger is the single point where two scheduler replicas meet: a reservation is committed only by a CAS on
 * the node's ledger revision after re-checking that its CPUs, hugepages and VFs are free, so two replicas can
 * never book the same resource. Then the allocation record (`edgenfv_allocs` `<nodeId>.<allocId>`) is CAS-created
 * for the node agent, which re-checks it against its own free resources.
 */
import type { Allocation } from '@edgenfv/contracts';
import { allocKey } from '@edgenfv/contracts';
import { casPut, encodeJson, getJson, isCasConflict, type SchedulerBuckets } from './kv.js';
import { buildNodeView, checkReservation, reservationOfAllocation, type NodeViewOptions } from './node-view.js';
import type { StoredNode } from '../nodes/record.js';
import type { Reservation } from './types.js';

export interface NodeLedger {
  nodeId: string;
  /** The node's epoch as the ledger knows it; bumped together with the node record when the node is lost. */
  epoch: number;
  reservations: Record<string, Reservation>;
  updatedAt: string;
}

export function emptyLedger(nodeId: string, epoch: number): NodeLedger {
  return { nodeId, epoch, reservations: {}, updatedAt: new Date().toISOString() };
}

export type CommitResult =
  | { ok: true; alreadyCommitted: boolean; ledgerRevision: number }
  | { ok: false; reason: string };

/**
 * Commits one allocation (no batching: the API's simple paths and tests; `ClusterState` batches per node):
 * CAS-update the node's ledger after re-checking, then CAS-create the allocation record. Idempotent: committing
 * the same allocId again returns `alreadyCommitted` (and creates the allocation record if a crash lost it).
 */
export async function commitAllocation(
  b: SchedulerBuckets,
  alloc: Allocation,
  opts: NodeViewOptions & { maxAttempts?: number } = {},
): Promise<CommitResult> {
  const node = await getJson<StoredNode>(b.nodes, alloc.nodeId);
  if (!node) return { ok: false, reason: `node ${alloc.nodeId} is not registered` };
  const res = reservationOfAllocation(alloc);
  const attempts = opts.maxAttempts ?? 50;
  let ledgerRevision = 0;
  let already = false;
  for (let i = 0; ; i++) {
    if (i >= attempts) return { ok: false, reason: `too much contention on the ledger of ${alloc.nodeId}` };
    const cur = await getJson<NodeLedger>(b.ledger, alloc.nodeId);
    const ledger = cur?.value ?? emptyLedger(alloc.nodeId, node.value.epoch);
    if (ledger.reservations[alloc.allocId]) {
      already = true;
      ledgerRevision = cur!.revision;
      break;
    }
    if (ledger.epoch !== alloc.epoch || node.value.epoch !== alloc.epoch)
      return { ok: false, reason: `node ${alloc.nodeId} is at epoch ${Math.max(ledger.epoch, node.value.epoch)}, the allocation was made under ${alloc.epoch}` };
    if (node.value.health !== 'Ready') return { ok: false, reason: `node ${alloc.nodeId} is ${node.value.health}` };
    const view = buildNodeView(
      { nodeId: alloc.nodeId, epoch: ledger.epoch, health: node.value.health, cordoned: node.value.cordoned, inventory: node.value.inventory },
      Object.values(ledger.reservations),
      opts,
    );
    const v = checkReservation(view, res);
    if (!v.ok) return { ok: false, reason: v.reason };
    const next: NodeLedger = { ...ledger, reservations: { ...ledger.reservations, [res.allocId]: res }, updatedAt: new Date().toISOString() };
    const rev = await casPut(b.ledger, alloc.nodeId, next, cur?.revision);
    if (rev !== null) {
      ledgerRevision = rev;
      break;
    }
  }
  await ensureAllocationRecord(b, alloc);
  return { ok: true, alreadyCommitted: already, ledgerRevision };
}

/** CAS-creates `<nodeId>.<allocId>`; an existing record of the same allocation is success. */
export async function ensureAllocationRecord(b: SchedulerBuckets, alloc: Allocation): Promise<void> {
  try {
    await b.allocs.create(allocKey(alloc.nodeId, alloc.allocId), encodeJson(alloc));
  } catch (err) {
    if (!isCasConflict(err)) throw err;
  }
}

export interface ReleaseResult {
  /** The reservation is kept (fenced) until the lost node confirms the teardown. */
  fenced: boolean;
  /** There was something to release. */
  released: boolean;
}

/**
 * Releases an allocation, idempotently: deletes the allocation record (the node agent tears the replica down),
 * then drops the reservation from the ledger. When the node is not Ready (lost) or has moved to a newer epoch,
 * the reservation is only marked `fenced`: its VFs, CPUs and hugepages stay booked until the node comes back
 * and confirms that the sandbox is gone (see `NodeRegistry`), so they are never handed out twice meanwhile.
 */
export async function releaseAllocation(
  b: SchedulerBuckets,
  nodeId: string,
  allocId: string,
  opts: { fence?: boolean } = {},
): Promise<ReleaseResult> {
  await b.allocs.delete(allocKey(nodeId, allocId));
  const node = await getJson<StoredNode>(b.nodes, nodeId);
  for (;;) {
    const cur = await getJson<NodeLedger>(b.ledger, nodeId);
    const r = cur?.value.reservations[allocId];
    if (!cur || !r) return { fenced: false, released: false };
    const fence = opts.fence ?? (!node || node.value.health !== 'Ready' || node.value.epoch > r.epoch || cur.value.epoch > r.epoch);
    if (fence && r.fenced) return { fenced: true, released: false };
    const reservations = { ...cur.value.reservations };
    if (fence) reservations[allocId] = { ...r, fenced: true };
    else delete reservations[allocId];
    const rev = await casPut(b.ledger, nodeId, { ...cur.value, reservations, updatedAt: new Date().toISOString() }, cur.revision);
    if (rev !== null) return { fenced: fence, released: true };
  }
}

/**
 * Frees a node's fenced reservations that the node no longer runs (`running`: allocation ids it still has
 * sandboxes for; every fenced reservation not in it is freed). Returns the freed reservations.
 */
export async function unfenceReservations(b: SchedulerBuckets, nodeId: string, running: ReadonlySet<string>): Promise<Reservation[]> {
  for (;;) {
    const cur = await getJson<NodeLedger>(b.ledger, nodeId);
    if (!cur) return [];
    const freed = Object.values(cur.value.reservations).filter((r) => r.fenced && !running.has(r.allocId));
    if (freed.length === 0) return [];
    const reservations = { ...cur.value.reservations };
    for (const r of freed) delete reservations[r.allocId];
    const rev = await casPut(b.ledger, nodeId, { ...cur.value, reservations, updatedAt: new Date().toISOString() }, cur.revision);
    if (rev !== null) return freed;
  }
}

/** `unfenceReservations`, returning the freed allocation ids. */
export async function unfence(b: SchedulerBuckets, nodeId: string, running: ReadonlySet<string>): Promise<string[]> {
  return (await unfenceReservations(b, nodeId, running)).map((r) => r.allocId);
}

/** Moves a node's ledger to a new epoch (fencing), CAS; creates it when missing. */
export async function bumpLedgerEpoch(b: SchedulerBuckets, nodeId: string, epoch: number): Promise<void> {
  for (;;) {
    const cur = await getJson<NodeLedger>(b.ledger, nodeId);
    if (cur && cur.value.epoch >= epoch) return;
    const next = cur ? { ...cur.value, epoch, updatedAt: new Date().toISOString() } : emptyLedger(nodeId, epoch);
    if ((await casPut(b.ledger, nodeId, next, cur?.revision)) !== null) return;
  }
}

/** The live (not fenced) reservations on a node, with their allocation records where they exist. */
export async function listNodeAllocations(
  b: SchedulerBuckets,
  nodeId: string,
): Promise<{ reservation: Reservation; allocation: Allocation | null }[]> {
  const cur = await getJson<NodeLedger>(b.ledger, nodeId);
  if (!cur) return [];
  const live = Object.values(cur.value.reservations).filter((r) => !r.fenced);
  return Promise.all(
    live.map(async (reservation) => ({
      reservation,
      allocation: (await getJson<Allocation>(b.allocs, allocKey(nodeId, reservation.allocId)))?.value ?? null,
    })),
  );
}
