/**
 * Guest synchronisation: one guest agent session per sandbox, and the declarative state pushed to it (every NIC
 * and route of the VM's replicas, then the replica's container).
 */
import type { Logger } from 'pino';
import { UnavailableError, type VnfdRoute } from '@edgenfv/contracts';
import type { VmHandle } from '../hypervisor/types.js';
import { pciPathOf } from '../hypervisor/qemu.js';
import { toGuestNic } from './interfaces.js';
import { EAL_ARGS_ENV, prepareGuestDataplane } from './dataplane.js';
import type { GuestContainer, GuestNic, GuestPort, GuestSession } from './ports.js';
import type { ReplicaRecord, SandboxRecord } from './records.js';

export class GuestSync {
  private readonly sessions = new Map<string, GuestSession>();

  constructor(
    private readonly guest: GuestPort,
    private readonly vmOf: (sandboxId: string) => VmHandle | undefined,
    private readonly log: Logger,
    /** The node's operator allows vfio's no-IOMMU mode in guests (guest.vfioNoIommu). */
    private readonly allowNoIommu = false,
  ) {}

  /** Connects while the VM boots (the boot is done when the guest agent answers). */
  async connectAtBoot(sandboxId: string, agentSocket: string, opts: { timeoutMs: number; signal?: AbortSignal }): Promise<void> {
    this.sessions.set(sandboxId, await this.guest.connect(agentSocket, opts));
  }

  /** The guest agent session of a running sandbox (connected on demand, e.g. after re-adoption). */
  async session(rec: SandboxRecord): Promise<GuestSession> {
    let s = this.sessions.get(rec.sandboxId);
    if (!s) {
      const vm = this.vmOf(rec.sandboxId);
      if (!vm?.agentSocket) throw new UnavailableError(`sandbox ${rec.sandboxId} has no guest agent channel`);
      s = await this.guest.connect(vm.agentSocket, { timeoutMs: 30_000 });
      this.sessions.set(rec.sandboxId, s);
    }
    return s;
  }

  /** Whether the sandbox has a session now. */
  connected(sandboxId: string): boolean {
    return this.sessions.has(sandboxId);
  }

  /** Forgets the sandbox's session and closes it. */
  async drop(sandboxId: string): Promise<void> {
    const s = this.sessions.get(sandboxId);
    this.sessions.delete(sandboxId);
    if (s) await s.close();
  }

  async closeAll(): Promise<void> {
    for (const s of this.sessions.values()) await s.close().catch(() => undefined);
    this.sessions.clear();
  }

  /** Every NIC the VM should have: all attachments of its replicas that are not being removed. */
  nics(rec: SandboxRecord, alsoDataplaneOf?: ReplicaRecord): GuestNic[] {
    const vm = this.vmOf(rec.sandboxId);
    const pciPath = (deviceId: string): string | undefined => (vm ? pciPathOf(vm, deviceId) : undefined);
    // NICs handed to a DPDK data plane have left the guest kernel (dataplane.ts): not the kernel's to configure,
    // but for a replica's first start, where the guest reports their PCI addresses
    const kernelOwned = (r: ReplicaRecord, name: string): boolean =>
      !(r.alloc.resources.dataplane?.interfaces ?? []).includes(name) || (r === alsoDataplaneOf && !r.guestPciAddresses?.[name]);
    return live(rec).flatMap((r) =>
      Object.entries(r.attachments).filter(([name]) => kernelOwned(r, name)).map(([name, a]) => toGuestNic(r, name, a, pciPath)),
    );
  }

  /** The complete route table of the VM (routes name guest interfaces). */
  routes(rec: SandboxRecord): VnfdRoute[] {
    return live(rec).flatMap((r) =>
      (r.alloc.routes ?? []).map((rt) => {
        const out: VnfdRoute = { dst: rt.dst };
        if (rt.via) out.via = rt.via;
        if (rt.dev) out.dev = r.guestIfNames[rt.dev] ?? rt.dev;
        return out;
      }),
    );
  }

  /**
   * Tells the guest agent the NICs (MAC + addresses) and routes, then runs the replica's container. Where the guest
   * found the replica's VFs (PCI path -> its own address) goes into `replica.guestPciAddresses` (the caller saves it).
   */
  async startReplica(rec: SandboxRecord, replica: ReplicaRecord): Promise<void> {
    const s = await this.session(rec);
    const a = replica.alloc;
    const dpNames = a.resources.dataplane?.interfaces ?? [];
    const container: GuestContainer = {
      id: replica.containerId,
      image: replica.image?.guestRef ?? a.image.ref,
      command: [...(a.command ?? []), ...(a.args ?? [])],
      env: Object.entries(a.env ?? {}).map(([k, v]) => `${k}=${v}`),
      memoryLimitMiB: a.resources.memoryMiB,
      ...(a.operationalState === 'STOPPED' ? { start: false } : {}),
    };
    // the container's creation needs no NIC (its start does): under way while the guest configures the NICs (a
    // data plane's needs the NICs' guest PCI addresses in its environment first)
    const t0 = Date.now();
    const created = a.resources.dataplane ? undefined : s.createContainer(container);
    // its failure is awaited below; until then it must not count as unhandled (Node ends the process on one: a
    // CreateContainer that failed while UpdateInterfaces still ran killed the node agent in the emulated edge node)
    created?.catch(() => undefined);
    let found: Awaited<ReturnType<GuestSession['updateInterfaces']>>;
    try {
      found = await s.updateInterfaces(this.nics(rec, replica), replica.hotplugged ? 30_000 : 10_000);
    } catch (err) {
      await created?.catch(() => undefined); // settled before the caller cleans up (it then finds the container)
      throw err;
    }
    this.log.debug({ sandboxId: rec.sandboxId, ms: Date.now() - t0 }, 'guest: interfaces updated');
    for (const [name, att] of Object.entries(replica.attachments)) {
      const seen = att.kind === 'sriov' || dpNames.includes(name) ? found.find((n) => n.name === (replica.guestIfNames[name] ?? name)) : undefined;
      if (seen?.pciAddress) (replica.guestPciAddresses ??= {})[name] = seen.pciAddress;
    }
    // a VM's first replica with no routes: the fresh guest has none of ours to remove (one guest RPC less)
    const routes = this.routes(rec);
    if (routes.length > 0 || Object.keys(rec.replicas).length > 1) await s.updateRoutes(routes);
    const t1 = Date.now();
    if (created) {
      await created;
      if (container.start !== false) await s.startContainer(container.id);
    } else {
      await s.runContainer({ ...container, env: [...container.env, `${EAL_ARGS_ENV}=${(await prepareGuestDataplane(s, replica, { allowNoIommu: this.allowNoIommu, viommu: rec.spec?.viommu === true })).join(' ')}`], dataplane: true });
    }
    this.log.debug({ sandboxId: rec.sandboxId, ms: Date.now() - t1 }, 'guest: container running');
  }

  async removeContainer(rec: SandboxRecord, replica: ReplicaRecord): Promise<void> {
    await (await this.session(rec)).removeContainer(replica.containerId);
  }

  async syncRoutes(rec: SandboxRecord): Promise<void> {
    await (await this.session(rec)).updateRoutes(this.routes(rec));
  }

  /** The guest agent's RSS in a running sandbox (undefined when it does not answer). */
  async agentRss(rec: SandboxRecord): Promise<number | undefined> {
    try {
      return (await (await this.session(rec)).metrics()).agentRssBytes;
    } catch (err) {
      this.log.debug({ err, sandboxId: rec.sandboxId }, 'guest metrics unavailable');
      return undefined;
    }
  }
}

function live(rec: SandboxRecord): ReplicaRecord[] {
  return Object.values(rec.replicas).filter((r) => r.state !== 'stopping');
}
