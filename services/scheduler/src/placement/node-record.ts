/**
 * The node record kept in KV `edgenfv_nodes` `<nodeId>`: the API's `NodeRecord` plus what the registry needs.
 * Written with CAS only.
 */
import type { NodeRecord } from '@edgenfv/contracts';

export interface StoredNode extends NodeRecord {
  /** Drain in progress: no new placements (like cordon), replicas being moved one at a time. */
  draining?: boolean;
  /** When and why the node was declared NotReady (heartbeats stopped for longer than the grace). */
  notReadySince?: string;
  notReadyReason?: string;
  /** Allocation ids the node agent said it ran at its last register. */
  running?: string[];
  updatedAt?: string;
}
