/**
 * Declarative, idempotent NIC configuration (after Kata's agent): find each NIC by PCI address (where the MAC
 * cannot be trusted: a passed-through VF may come up with a random MAC) or by MAC; then set its name (through a
 * temporary name, so two NICs can swap names), MAC, MTU, addresses (the global ones are replaced) and state.
 * A NIC that is not there yet is waited for (hotplug) after a first look. Bad input is rejected before any change.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidArgumentError, NotFoundError, ConflictError, type FieldIssue } from '@edgenfv/contracts/internal/errors';
import { isMacAddress, isPciAddress, parseMacAddress, parsePciAddress } from '@edgenfv/contracts/internal/values';
import type { InterfaceSpec, NicInfo, UpdateInterfacesRequest } from '@edgenfv/contracts/internal/agent';
import type { IpAddr, IpLink, IpOp, IpPort } from './ip.js';
import { parsePciPath, type NetSysfs } from './sysfs.js';
import type { PciDrivers } from './pci-drivers.js';
import { checkCidr, isIfName } from './validate.js';

export interface NetDeps {
  ip: IpPort;
  sysfs: NetSysfs;
  /** Loads the driver of a NIC wanted by PCI address that has none yet (a VF: no udev in the guest). */
  drivers?: Pick<PciDrivers, 'ensure'>;
}

/** A checked interface spec: value objects parsed, defaults applied. */
export interface NicWant {
  index: number;
  mac?: string;
  pci?: string;
  /** Where the host placed the NIC (`10.0/00.0`); resolved to `pci` by the guest. */
  pciPath?: string;
  name?: string;
  mtu?: number;
  addresses: string[];
  up: boolean;
}

export const MAX_HOTPLUG_TIMEOUT_MS = 120_000;
/** How long a NIC whose driver was just loaded may take to show its netdev (igbvf in a nested TCG guest: 5-7 s). */
export const DRIVER_PROBE_MS = 30_000;

export function parseInterfaces(req: UpdateInterfacesRequest): { wants: NicWant[]; hotplugTimeoutMs: number } {
  const issues: FieldIssue[] = [];
  if (!req || !Array.isArray(req.interfaces)) throw new InvalidArgumentError([{ field: 'interfaces', message: 'must be a list' }]);
  const hotplugTimeoutMs = req.hotplugTimeoutMs ?? 0;
  if (!Number.isInteger(hotplugTimeoutMs) || hotplugTimeoutMs < 0 || hotplugTimeoutMs > MAX_HOTPLUG_TIMEOUT_MS) {
    issues.push({ field: 'hotplugTimeoutMs', message: `must be an integer 0..${MAX_HOTPLUG_TIMEOUT_MS}` });
  }
  const wants: NicWant[] = [];
  const seen = { mac: new Map<string, number>(), pci: new Map<string, number>(), pciPath: new Map<string, number>(), name: new Map<string, number>() };
  req.interfaces.forEach((spec: InterfaceSpec, i) => {
    const f = `interfaces[${i}]`;
    const w: NicWant = { index: i, addresses: [], up: !spec.down };
    if (spec.mac) {
      if (isMacAddress(spec.mac)) w.mac = parseMacAddress(spec.mac);
      else issues.push({ field: `${f}.mac`, message: `not a MAC address: ${JSON.stringify(spec.mac)}` });
    }
    if (spec.pciAddress) {
      if (isPciAddress(spec.pciAddress)) w.pci = parsePciAddress(spec.pciAddress);
      else issues.push({ field: `${f}.pciAddress`, message: `not a PCI address: ${JSON.stringify(spec.pciAddress)}` });
    }
    if (spec.pciPath) {
      if (parsePciPath(spec.pciPath)) w.pciPath = spec.pciPath.toLowerCase();
      else issues.push({ field: `${f}.pciPath`, message: `not a PCI path (slot.fn hops from the root bus, e.g. 10.0/00.0): ${JSON.stringify(spec.pciPath)}` });
      if (spec.pciAddress) issues.push({ field: `${f}.pciAddress`, message: 'give pciPath or pciAddress, not both' });
    }
    if (!spec.mac && !spec.pciAddress && !spec.pciPath) issues.push({ field: f, message: 'needs mac, pciAddress or pciPath to find the NIC' });
    if (w.mac && (parseInt(w.mac.slice(0, 2), 16) & 1) === 1) issues.push({ field: `${f}.mac`, message: 'must be a unicast MAC' });
    if (spec.name) {
      if (isIfName(spec.name)) w.name = spec.name;
      else issues.push({ field: `${f}.name`, message: `not an interface name (1-15 of [A-Za-z0-9_.:-]): ${JSON.stringify(spec.name)}` });
    }
    if (spec.mtu) {
      if (Number.isInteger(spec.mtu) && spec.mtu >= 68 && spec.mtu <= 65535) w.mtu = spec.mtu;
      else issues.push({ field: `${f}.mtu`, message: 'must be 68..65535' });
    }
    (spec.addresses ?? []).forEach((a, j) => {
      const before = issues.length;
      checkCidr(a, `${f}.addresses[${j}]`, issues);
      if (issues.length === before) w.addresses.push(a);
    });
    for (const key of ['mac', 'pci', 'pciPath', 'name'] as const) {
      const v = w[key];
      if (v === undefined) continue;
      const prev = seen[key].get(v);
      if (prev !== undefined) issues.push({ field: `${f}.${key === 'pci' ? 'pciAddress' : key}`, message: `same as interfaces[${prev}]` });
      else seen[key].set(v, i);
    }
    wants.push(w);
  });
  if (issues.length > 0) throw new InvalidArgumentError(issues);
  return { wants, hotplugTimeoutMs };
}

async function findLink(deps: NetDeps, w: NicWant, links: IpLink[]): Promise<IpLink | undefined> {
  if (w.pciPath && !w.pci) return undefined;
  if (w.pci) {
    for (const l of links) if ((await deps.sysfs.pciAddressOf(l.name)) === w.pci) return l;
    return undefined;
  }
  return links.find((l) => l.mac === w.mac);
}

/**
 * Resolve every wanted NIC to a link, waiting up to timeoutMs for the missing ones (hotplug); with the links' and
 * addresses' state of that look.
 */
async function resolveLinks(deps: NetDeps, wants: NicWant[], timeoutMs: number): Promise<{ found: Map<number, IpLink>; addrs: IpAddr[] }> {
  let deadline = Date.now() + timeoutMs;
  const asked = new Set<string>();
  for (;;) {
    const { links, addrs } = await deps.ip.snapshot();
    const found = new Map<number, IpLink>();
    const missing: NicWant[] = [];
    for (const w of wants) {
      // a PCI path names where the device sits; its address (bus numbers) is the guest's to find, once it is there
      if (w.pciPath && !w.pci) {
        const pci = await deps.sysfs.resolvePciPath(w.pciPath);
        if (pci) w.pci = pci;
      }
      const l = await findLink(deps, w, links);
      if (l) found.set(w.index, l);
      else missing.push(w);
    }
    // a VF without its driver has no netdev: load the driver its modalias names, and give its probe time
    for (const w of missing) {
      if (!w.pci || !deps.drivers || asked.has(w.pci)) continue;
      asked.add(w.pci);
      if ((await deps.drivers.ensure(w.pci)) !== null) deadline = Math.max(deadline, Date.now() + DRIVER_PROBE_MS);
    }
    if (missing.length === 0) {
      const byLink = new Map<number, number>();
      for (const [i, l] of found) {
        const other = byLink.get(l.ifindex);
        if (other !== undefined) throw new InvalidArgumentError([{ field: `interfaces[${i}]`, message: `finds the same NIC (${l.name}) as interfaces[${other}]` }]);
        byLink.set(l.ifindex, i);
      }
      // a wanted name held by a link that is not being configured would clash
      const ours = new Set([...found.values()].map((l) => l.ifindex));
      for (const w of wants) {
        const holder = w.name ? links.find((l) => l.name === w.name) : undefined;
        if (holder && !ours.has(holder.ifindex)) {
          throw new ConflictError(`interfaces[${w.index}].name: ${w.name} is taken by another link`, { field: `interfaces[${w.index}].name` });
        }
      }
      return { found, addrs };
    }
    if (Date.now() >= deadline) {
      const what = missing.map((w) => `interfaces[${w.index}] (${w.pciPath ? `pci path ${w.pciPath}${w.pci ? ` = ${w.pci}` : ': no device there'}` : w.pci ? `pci ${w.pci}` : `mac ${w.mac}`})`).join(', ');
      throw new NotFoundError(`NIC not found: ${what}${timeoutMs > 0 ? ` after waiting ${timeoutMs} ms` : ''}`);
    }
    await sleep(Math.min(100, Math.max(1, deadline - Date.now())));
  }
}

export async function updateInterfaces(deps: NetDeps, req: UpdateInterfacesRequest): Promise<NicInfo[]> {
  const { wants, hotplugTimeoutMs } = parseInterfaces(req);
  const { found, addrs } = await resolveLinks(deps, wants, hotplugTimeoutMs);
  const current = new Map<number, string>(); // want index -> current link name
  for (const w of wants) current.set(w.index, found.get(w.index)!.name);
  const ops: IpOp[] = [];

  // renames: every link that must change name goes through a temporary name first (swaps, chains)
  const renaming = wants.filter((w) => w.name && w.name !== current.get(w.index));
  for (const w of renaming) {
    const l = found.get(w.index)!;
    const tmp = `edgtmp${l.ifindex}`;
    ops.push({ kind: 'link', dev: current.get(w.index)!, up: false }, { kind: 'link', dev: current.get(w.index)!, name: tmp });
    current.set(w.index, tmp);
  }
  for (const w of renaming) {
    ops.push({ kind: 'link', dev: current.get(w.index)!, name: w.name! });
    current.set(w.index, w.name!);
  }

  for (const w of wants) {
    const l = found.get(w.index)!;
    const dev = current.get(w.index)!;
    const before = ops.length;
    if (w.mac && w.pci && l.mac !== w.mac) ops.push({ kind: 'link', dev, up: false }, { kind: 'link', dev, mac: w.mac });
    if (w.mtu && l.mtu !== w.mtu) ops.push({ kind: 'link', dev, mtu: w.mtu });
    // the addresses as the look before any change saw them (under the link's name then)
    const have = addrs.filter((a) => a.ifname === l.name && a.scope === 'global');
    for (const a of have) if (!w.addresses.includes(a.cidr)) ops.push({ kind: 'addr-del', dev, cidr: a.cidr });
    for (const a of w.addresses) if (!have.some((h) => h.cidr === a)) ops.push({ kind: 'addr-add', dev, cidr: a });
    // its state last (a rename or a new MAC took it down); a link left as it was is not touched
    if (w.up !== l.up || ops.length > before || renaming.includes(w)) ops.push({ kind: 'link', dev, up: w.up });
  }
  // one `ip` process for all of it (each costs 30-150 ms in an emulated guest)
  if (ops.length > 0) await deps.ip.apply(ops);
  // the answer from the look before and the changes that succeeded (a look after them would be a third `ip`
  // process); what only the kernel knows (operstate, PCI address, driver) from sysfs
  return Promise.all(
    wants.map(async (w): Promise<NicInfo> => {
      const l = found.get(w.index)!;
      const name = current.get(w.index)!;
      const changed = ops.some((op) => op.dev === name || op.dev === l.name);
      return {
        name,
        mac: w.mac && w.pci ? w.mac : l.mac,
        pciAddress: await deps.sysfs.pciAddressOf(name),
        mtu: w.mtu ?? l.mtu,
        operState: (await deps.sysfs.operStateOf(name)) || (changed ? 'UNKNOWN' : l.operState),
        addresses: [...w.addresses],
        driver: await deps.sysfs.driverOf(name),
      };
    }),
  );
}

/** NicInfo of the named links (all links when names is undefined, loopback excluded). */
export async function describe(deps: NetDeps, names?: string[]): Promise<NicInfo[]> {
  const { links, addrs } = await deps.ip.snapshot();
  const pick = names ? names.map((n) => links.find((l) => l.name === n)).filter((l): l is IpLink => l !== undefined) : links.filter((l) => l.name !== 'lo');
  const out: NicInfo[] = [];
  for (const l of pick) {
    out.push({
      name: l.name,
      mac: l.mac,
      pciAddress: await deps.sysfs.pciAddressOf(l.name),
      mtu: l.mtu,
      operState: l.operState,
      addresses: addrs.filter((a) => a.ifname === l.name && a.scope === 'global').map((a) => a.cidr),
      driver: await deps.sysfs.driverOf(l.name),
    });
  }
  return out;
}
