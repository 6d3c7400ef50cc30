/**
 * The one mapper from an allocation interface to what the node makes of it: the attachment request netplugins
 * serves, the VM device the hypervisor gets, the NIC the guest agent configures, and what the replica reports.
 * Everything is keyed by the interface's name in the allocation.
 */
import {
  parseMacAddress,
  parsePciAddress,
  type AllocInterface,
  type Allocation,
  type AttachmentResult,
  type ReplicaInterfaceStatus,
} from '@edgenfv/contracts';
import { join } from 'node:path';
import type { NetDevice } from '../hypervisor/types.js';
import { VM_ROOT_SOCKETS } from '../hypervisor/vm-root.js';
import type { AttachRequest, GuestNic } from './ports.js';
import { hash, type ReplicaRecord, type SandboxRecord } from './records.js';

/** Host attachment names (= VM device ids, unique on the node) and guest names (unique in the VM) of a new replica. */
export function nameInterfaces(alloc: Allocation, takenGuestNames: Iterable<string>): { hostIfNames: Record<string, string>; guestIfNames: Record<string, string> } {
  const taken = new Set(takenGuestNames);
  const guestIfNames: Record<string, string> = {};
  const hostIfNames: Record<string, string> = {};
  for (const i of alloc.interfaces) {
    let name = i.name;
    for (let n = 1; taken.has(name); n++) name = `${i.name.slice(0, 13)}${n}`;
    taken.add(name);
    guestIfNames[i.name] = name;
    hostIfNames[i.name] = `n${hash(`${alloc.allocId}/${i.name}`, 10)}`;
  }
  return { hostIfNames, guestIfNames };
}

function hostIfNameOf(r: ReplicaRecord, name: string): string {
  const h = r.hostIfNames[name];
  if (!h) throw new Error(`replica ${r.allocId} has no host name for interface ${name}`);
  return h;
}

/** What netplugins is asked for one interface of a replica. */
export function attachRequest(rec: SandboxRecord, r: ReplicaRecord, iface: AllocInterface): AttachRequest {
  const req: AttachRequest = { sandboxId: rec.sandboxId, tenantId: rec.tenantId, hostIfName: hostIfNameOf(r, iface.name), netns: rec.netns, iface, owner: { uid: rec.uid, gid: rec.gid } };
  if (rec.vmRoot) req.socketDir = join(rec.vmRoot, VM_ROOT_SOCKETS);
  return req;
}

/** The VM device of an attachment (its id is the host attachment name). */
export function toVmDevice(id: string, a: AttachmentResult): NetDevice {
  const mac = parseMacAddress(a.mac);
  switch (a.kind) {
    case 'tap':
      return { kind: 'tap', id, ifName: a.tapName, mac };
    case 'macvtap':
      return { kind: 'macvtap', id, tapDevPath: a.tapDevice, mac };
    case 'vhostuser':
      return { kind: 'vhost-user-net', id, socketPath: a.socketPath, mac, queues: a.queues, server: a.vmMode === 'server', ...(a.dataplane === 'ovs-dpdk' ? { iommu: true } : {}) };
    case 'sriov':
      return { kind: 'vfio', id, pci: parsePciAddress(a.pciAddress) };
  }
}

/**
 * The guest NIC of an attachment: virtio NICs are found by MAC, VFs by their PCI path (a VF may come up with a
 * random MAC); `pciPath` finds it from the VM device id.
 */
export function toGuestNic(r: ReplicaRecord, name: string, a: AttachmentResult, pciPath: (deviceId: string) => string | undefined): GuestNic {
  const path = a.kind === 'sriov' ? (pciPath(hostIfNameOf(r, name)) ?? '') : '';
  const nic: GuestNic = { mac: a.mac, pciPath: path, name: r.guestIfNames[name] ?? name, addresses: a.ips.map((i) => i.address) };
  if (a.mtuBytes) nic.mtuBytes = a.mtuBytes;
  return nic;
}

/** What the replica reports of its interfaces (in allocation order). */
export function interfaceStatus(r: ReplicaRecord): ReplicaInterfaceStatus[] {
  return r.alloc.interfaces.map((i) => {
    const a = r.attachments[i.name];
    const st: ReplicaInterfaceStatus = { name: i.name, mac: a?.mac ?? i.mac, ips: (a?.ips ?? []).map((x) => x.address) };
    if (a?.kind === 'sriov') st.pciAddress = a.pciAddress;
    const guestPci = r.guestPciAddresses?.[i.name];
    if (a?.kind === 'sriov' && guestPci) st.guestPciAddress = guestPci;
    if (a?.kind === 'vhostuser') {
      st.socketPath = a.socketPath;
      st.portName = a.portName;
    }
    return st;
  });
}
