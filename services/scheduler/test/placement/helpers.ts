import type { Vnfd } from '@edgenfv/contracts';
import {
  applyReservation,
  buildNodeView,
  buildPlacementRequest,
  simulatedInventory,
  type NodeView,
  type PlacementRequest,
  type Reservation,
  type SimNodeSpec,
} from '../../src/placement/index.js';

export function vnfd(over: Partial<Omit<Vnfd, 'resources'>> & { resources?: Partial<Vnfd['resources']> } = {}): Vnfd {
  const { resources, ...rest } = over;
  return {
    name: 'vr',
    replicas: 1,
    image: { ref: 'builtin:vrouter' },
    ...rest,
    resources: { vcpus: 2, memoryMiB: 1024, ...resources },
  };
}

export function request(d: Vnfd, extra: { tenantId?: string; vnfId?: string; replica?: number; other?: string[]; quota?: PlacementRequest['quotaRemaining'] } = {}): PlacementRequest {
  return buildPlacementRequest({
    tenantId: extra.tenantId ?? 't1',
    vnfId: extra.vnfId ?? 'v1',
    replica: extra.replica ?? 0,
    descriptor: d,
    ...(extra.other ? { otherReplicaNodeIds: extra.other } : {}),
    ...(extra.quota ? { quotaRemaining: extra.quota } : {}),
  });
}

export function nodeView(
  spec: Partial<SimNodeSpec> & { nodeId?: string },
  meta: { health?: NodeView['health']; cordoned?: boolean; draining?: boolean; epoch?: number } = {},
): NodeView {
  const nodeId = spec.nodeId ?? 'n1';
  return buildNodeView({
    nodeId,
    epoch: meta.epoch ?? 1,
    health: meta.health ?? 'Ready',
    cordoned: meta.cordoned ?? false,
    draining: meta.draining ?? false,
    inventory: simulatedInventory({ ...spec, nodeId }),
  });
}

let seq = 0;
/** Occupies resources on a view through a reservation, as another replica would. */
export function occupy(view: NodeView, r: Partial<Reservation>): Reservation {
  const res: Reservation = {
    allocId: `occ-${++seq}`,
    tenantId: 'other',
    vnfId: 'other-vnf',
    replica: 0,
    epoch: view.epoch,
    vcpus: r.cpus?.length ?? 1,
    memoryMiB: 0,
    cpuPolicy: r.cpus ? 'dedicated' : 'shared',
    vfs: [],
    at: '2026-01-01T00:00:00Z',
    ...r,
  };
  applyReservation(view, res);
  return res;
}

/** Pins every pinnable CPU of a NUMA node. */
export function pinAll(view: NodeView, numaNode: number): Reservation {
  const nv = view.numa.find((n) => n.id === numaNode)!;
  const cpus = nv.pinnable.filter((c) => !nv.pinned.has(c));
  return occupy(view, { numaNode, cpus, vcpus: cpus.length });
}
