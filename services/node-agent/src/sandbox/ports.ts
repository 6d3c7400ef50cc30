/**
 * Narrow ports the sandbox manager drives: the guest agent (over the host<->guest channel) and the network
 * attachments (netplugins). Production adapters: grpc-guest.ts and attachments.ts; tests may pass their own.
 */
import type { AllocInterface, AttachmentResult, PrepareDataplaneRequest, VnfdRoute } from '@edgenfv/contracts';

export interface GuestNic {
  mac: string;
  /** PCI path (`10.0/00.0`: where the host placed it) when the MAC cannot be trusted (passed-through VF); '' otherwise. */
  pciPath: string;
  name: string;
  mtuBytes?: number;
  addresses: string[];
}

export interface GuestContainer {
  id: string;
  image: string;
  command: string[];
  env: string[];
  memoryLimitMiB: number;
  /** Gets what prepareDataplane prepared (device nodes, hugepages); removing it releases them. */
  dataplane?: boolean;
  /** false: created, not started (a replica placed while its VNF is OPERATEd STOPPED; OPERATE STARTED starts it). */
  start?: boolean;
}

export interface GuestSession {
  /** Declarative: every NIC the VM should have (all replicas'), found by MAC or PCI path; what the guest found, by name. */
  updateInterfaces(nics: GuestNic[], hotplugTimeoutMs: number): Promise<{ name: string; pciAddress: string }[]>;
  /** The complete route table (all replicas'). */
  updateRoutes(routes: VnfdRoute[]): Promise<void>;
  /** Creates the container and starts it (unless `start: false`); one that exists already is success. */
  runContainer(c: GuestContainer): Promise<void>;
  /** Creates the container without starting it (its bundle: no NIC needed yet); one that exists already is success. */
  createContainer(c: GuestContainer): Promise<void>;
  /** Hands NICs to a DPDK driver and reserves hugepages in the guest (before a `dataplane` container runs). */
  prepareDataplane(req: PrepareDataplaneRequest): Promise<void>;
  /** Stops the container (SIGTERM, SIGKILL after the grace) and deletes it; a container that is not there is success. */
  removeContainer(id: string, graceMs?: number): Promise<void>;
  /** Guest counters: the agent's RSS and each NIC's packets. */
  metrics(): Promise<{ agentRssBytes: number; nics: { name: string; rxPackets: number; txPackets: number }[] }>;
  /** Static neighbours (data planes such as testpmd do not answer ARP). */
  addArpNeighbors(neighbors: { ip: string; mac: string; device: string }[]): Promise<void>;
  /** OPERATE STOPPED: SIGTERM, SIGKILL after graceMs; the container (and its logs) stays, stopped. Safe to repeat. */
  stopContainer(id: string, graceMs: number): Promise<void>;
  /** OPERATE STARTED: runs a stopped container again (same bundle, logs go on). Safe to repeat. */
  startContainer(id: string): Promise<void>;
  /** The last `tailLines` lines of the container's stdout and stderr (stdout first). */
  logs(id: string, tailLines: number): Promise<string[]>;
  /** Runs a command in a replica's container. */
  exec(containerId: string, argv: string[], timeoutMs?: number): Promise<{ exitCode: number; stdout: string; stderr: string }>;
  /** What the guest sees (for checks and status). */
  details(): Promise<{ cpus: number; memoryTotalBytes: number; nics: { name: string; mac: string; pciAddress: string; addresses: string[] }[] }>;
  /** The agent's instance id when the session was made ('' or undefined: not known). */
  readonly instanceIdAtConnect?: string;
  /** The agent's Health: `instanceId` changes when the agent was restarted (guest-liveness.ts). */
  health(timeoutMs: number): Promise<{ instanceId: string }>;
  /**
   * After a snapshot restore (snapshot-boot.ts): the host's entropy into the guest kernel's RNG (reseeded at once),
   * the guest's wall clock set, a new agent instance id (what Health and `instanceIdAtConnect` say from then on).
   */
  reidentify(entropy: Buffer, unixTimeMs: number): Promise<{ instanceId: string; previousInstanceId: string }>;
  /** The containers the agent knows (a restarted agent knows none of its predecessor's). */
  containers(timeoutMs: number): Promise<{ id: string; state: string }[]>;
  close(): Promise<void>;
}

export interface GuestPort {
  /** Resolves once the guest agent answers health (and the protocol handshake accepted it). */
  connect(agentSocket: string, opts: { timeoutMs: number; signal?: AbortSignal }): Promise<GuestSession>;
}

export interface AttachRequest {
  sandboxId: string;
  /** The sandbox's tenant (vhost-user sockets live in a per-tenant folder). */
  tenantId: string;
  /** Host-side name of the attachment (unique on the node, <= 15 chars): also the VM's device id. */
  hostIfName: string;
  netns: string;
  iface: AllocInterface;
  /** The hypervisor's uid: a tap it must open after dropping privileges (hotplug) has to belong to it. */
  owner?: { uid: number; gid: number };
  /** Where the sandbox's vhost-user sockets go (inside its VM root, so a chrooted QEMU reaches them); default: the switch's. */
  socketDir?: string;
}

export interface AttachmentPort {
  add(req: AttachRequest): Promise<AttachmentResult>;
  /** The same request as add; works from netplugins' record; safe to repeat ("already gone" is success). */
  del(req: AttachRequest): Promise<void>;
}
