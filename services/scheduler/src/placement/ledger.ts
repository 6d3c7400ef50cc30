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

/** CAS-creates `<nodeId>.<allocId>`; an existing record of the same allocation is success. */
export async function ensureAllocationRecord(b: SchedulerBuckets, alloc: Allocation): Promise<void> {
  try {
    await b.allocs.create(allocKey(alloc.nodeId, alloc.allocId), encodeJson(alloc));
  } catch (err) {
    if (!isCasConflict(err)) throw err;
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
