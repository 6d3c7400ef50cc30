/**
 * Stands in for the guest agent where a test has no guest kernel (the VM idles in firmware): records what the
 * sandbox manager tells the guest. The real guest agent is driven in sandbox-boot.test.ts.
 */
import type { PrepareDataplaneRequest, VnfdRoute } from '@edgenfv/contracts';
import type { GuestContainer, GuestNic, GuestPort, GuestSession } from '../../src/sandbox/ports.js';

/**
 * The PCI address this stand-in "finds" a NIC at: a VF found by its PCI path on the bus its root port slot names; a
 * NIC found by MAC (virtio) at a made-up address per position, as the real agent reports the device it matched.
 */
function standInPci(n: GuestNic, i: number): string {
  return n.pciPath ? `0000:${n.pciPath.slice(0, 2)}:00.0` : `0000:ff:${String(i).padStart(2, '0')}.0`;
}

export class RecordingGuest implements GuestPort {
  readonly nics = new Map<string, GuestNic[]>();
  readonly routes = new Map<string, VnfdRoute[]>();
  readonly containers = new Map<string, Map<string, GuestContainer>>();
  readonly dataplanes: PrepareDataplaneRequest[] = [];
  /** Containers stopped by OPERATE, by agent socket. */
  readonly stopped = new Map<string, Set<string>>();
  connects = 0;
  /** Reidentify calls (a VM restored from a snapshot). */
  reidentified = 0;
  /** What Health says the agent's instance is, by agent socket (a test changes it to play a restarted agent). */
  readonly instanceIds = new Map<string, string>();
  async connect(agentSocket: string): Promise<GuestSession> {
    this.connects++;
    const containers = this.containers.get(agentSocket) ?? new Map<string, GuestContainer>();
    this.containers.set(agentSocket, containers);
    const stopped = this.stopped.get(agentSocket) ?? new Set<string>();
    this.stopped.set(agentSocket, stopped);
    return {
      updateInterfaces: async (nics) => {
        this.nics.set(agentSocket, nics);
        return nics.map((n, i) => ({ name: n.name, pciAddress: standInPci(n, i) }));
      },
      updateRoutes: async (routes) => void this.routes.set(agentSocket, routes),
      runContainer: async (c) => {
        containers.set(c.id, c);
        if (c.start === false) stopped.add(c.id);
      },
      createContainer: async (c) => {
        containers.set(c.id, c);
        stopped.add(c.id);
      },
      prepareDataplane: async (req) => void this.dataplanes.push(req),
      removeContainer: async (id) => void containers.delete(id),
      stopContainer: async (id) => void stopped.add(id),
      startContainer: async (id) => void stopped.delete(id),
      logs: async (id) => [`${id} log`],
      metrics: async () => ({ agentRssBytes: 0, nics: [] }),
      addArpNeighbors: async () => undefined,
      exec: async () => ({ exitCode: 0, stdout: '', stderr: '' }),
      details: async () => ({ cpus: 0, memoryTotalBytes: 0, nics: (this.nics.get(agentSocket) ?? []).map((n, i) => ({ name: n.name, mac: n.mac, pciAddress: standInPci(n, i), addresses: n.addresses })) }),
      health: async () => ({ instanceId: this.instanceIds.get(agentSocket) ?? 'recording' }),
      reidentify: async () => {
        const previousInstanceId = this.instanceIds.get(agentSocket) ?? 'recording';
        this.instanceIds.set(agentSocket, `recording-${++this.reidentified}`);
        return { instanceId: this.instanceIds.get(agentSocket)!, previousInstanceId };
      },
      containers: async () => [...containers.keys()].map((id) => ({ id, state: stopped.has(id) ? 'STOPPED' : 'RUNNING' })),
      close: async () => undefined,
    };
  }
}
