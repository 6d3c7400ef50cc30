import type { Allocation, AllocInterface } from '@edgenfv/contracts';

export function makeAlloc(over: Partial<Allocation> & { allocId: string; tenantId: string }, interfaces: AllocInterface[] = []): Allocation {
  return {
    nodeId: 'n1',
    epoch: 1,
    vnfId: `vnf-${over.allocId}`,
    replica: 0,
    resources: { vcpus: 1, memoryMiB: 128 },
    image: { ref: 'builtin:sleeper' },
    interfaces,
    createdAt: new Date().toISOString(),
    ...over,
  };
}
