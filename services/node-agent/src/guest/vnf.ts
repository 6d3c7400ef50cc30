/**
 * What the node agent does inside a tenant VM once its guest agent answers: configure the NICs and routes, set
 * the sysctls, start the VNF's containers, and report RUNNING only when every container runs. A container exit is
 * turned into a failure report with the exit code and the last log lines.
 */
import {
  AppError,
  InternalError,
  NotFoundError,
  type AllocInterface,
  type ArpNeighbor,
  type ContainerStatus,
  type InterfaceSpec,
  type NicInfo,
  type RouteSpec,
  type VnfdRoute,
} from '@edgenfv/contracts';
import type { AgentClient } from './agent-client.js';

export interface GuestContainerSpec {
  id: string;
  image: string;
  command?: string[];
  env?: string[];
  memoryLimitMib?: number;
}

export interface GuestVnfSpec {
  interfaces: InterfaceSpec[];
  routes: RouteSpec[];
  neighbors?: ArpNeighbor[];
  sysctls?: Record<string, string>;
  containers: GuestContainerSpec[];
  /** Wait this long for NICs that are not there yet (hotplug). */
  hotplugTimeoutMs?: number;
}

export interface GuestVnfState {
  nics: NicInfo[];
  containers: ContainerStatus[];
}

/** A container stopped: its exit code and last log lines (what a FAILED replica reports). */
export class ContainerExitedError extends AppError {
  readonly containerId: string;
  readonly exitCode: number;
  readonly lastLines: string[];
  constructor(containerId: string, exitCode: number, lastLines: string[]) {
    super('INTERNAL', `container ${containerId} exited with code ${exitCode}${lastLines.length ? `: ${lastLines[lastLines.length - 1]}` : ''}`, {
      details: { containerId, exitCode, lastLines },
    });
    this.containerId = containerId;
    this.exitCode = exitCode;
    this.lastLines = lastLines;
  }
}

/**
 * Guest NIC specs from an allocation's interfaces: found by MAC (by PCI path for SR-IOV VFs, whose MAC may be
 * random: `guestPci` gives the VF's PCI address as the guest sees it), named as in the VNFD, addressed from IPAM.
 */
export function interfaceSpecsFromAllocation(ifaces: AllocInterface[], guestPci: Record<string, string> = {}): InterfaceSpec[] {
  return ifaces.map((i) => ({
      mac: i.mac,
      ...(guestPci[i.name] ? { pciAddress: guestPci[i.name] } : {}),
      name: i.name,
      ...(i.mtuBytes ? { mtu: i.mtuBytes } : {}),
      addresses: i.ips ?? [],
    }));
}

export function routeSpecsFromVnfd(routes: VnfdRoute[] = []): RouteSpec[] {
  return routes.map((r) => ({ dst: r.dst, ...(r.via ? { gateway: r.via } : {}), ...(r.dev ? { device: r.dev } : {}) }));
}

/** Last `lines` lines of a container's output (stdout and stderr, in that order). */
export async function lastLogLines(client: AgentClient, id: string, lines = 20): Promise<string[]> {
  const out: string[] = [];
  for await (const chunk of client.readLogs({ id, follow: false, tailLines: lines })) out.push(...chunk.data.toString('utf8').split('\n').filter(Boolean));
  return out.slice(-lines);
}

/** Idempotent: a second call with the same spec converges to the same state (containers already running stay). */
export async function applyGuestVnf(client: AgentClient, spec: GuestVnfSpec): Promise<GuestVnfState> {
  const { interfaces: nics } = await client.updateInterfaces({ interfaces: spec.interfaces, hotplugTimeoutMs: spec.hotplugTimeoutMs ?? 10_000 });
  await client.updateRoutes({ routes: spec.routes });
  if (spec.neighbors?.length) await client.addArpNeighbors({ neighbors: spec.neighbors });
  if (spec.sysctls && Object.keys(spec.sysctls).length) await client.setSysctls(spec.sysctls);
  const existing = new Map((await client.listContainers()).containers.map((c) => [c.id, c]));
  for (const c of spec.containers) {
    const have = existing.get(c.id);
    if (have?.state === 'RUNNING') continue;
    if (have?.state === 'STOPPED') throw new ContainerExitedError(c.id, have.exitCode, await lastLogLines(client, c.id));
    if (!have) await client.createContainer({ id: c.id, image: c.image, command: c.command ?? [], env: c.env ?? [], hostNetwork: true, memoryLimitMib: c.memoryLimitMib ?? 0 });
    await client.startContainer(c.id);
  }
  const all = (await client.listContainers()).containers;
  const containers: ContainerStatus[] = [];
  for (const c of spec.containers) {
    const st = all.find((x) => x.id === c.id);
    if (!st) throw new NotFoundError(`container ${c.id} vanished`);
    if (st.state === 'STOPPED') throw new ContainerExitedError(c.id, st.exitCode, await lastLogLines(client, c.id));
    if (st.state !== 'RUNNING') throw new InternalError(`container ${c.id} is ${st.state}`);
    containers.push(st);
  }
  return { nics, containers };
}

/** Resolves when the container stops, with what a FAILED replica reports. */
export async function watchContainerExit(client: AgentClient, id: string, opts: { signal?: AbortSignal } = {}): Promise<ContainerExitedError> {
  const st = await client.waitContainer(id, opts.signal ? { signal: opts.signal } : {});
  return new ContainerExitedError(id, st.exitCode, await lastLogLines(client, id));
}

/** Stops (SIGTERM, then SIGKILL after graceMs) and deletes the containers; safe to repeat. */
export async function teardownGuestVnf(client: AgentClient, ids: string[], opts: { graceMs?: number } = {}): Promise<void> {
  const have = new Map((await client.listContainers()).containers.map((c) => [c.id, c]));
  for (const id of ids) {
    const c = have.get(id);
    if (!c) continue;
    if (c.state === 'RUNNING') {
      await client.signalContainer(id, 'SIGTERM').catch(() => {});
      try {
        await client.waitContainer(id, { timeoutMs: opts.graceMs ?? 10_000 });
      } catch {
        /* grace over: force below */
      }
    }
    await client.deleteContainer(id, true);
  }
}
