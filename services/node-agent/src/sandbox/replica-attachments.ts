/**
 * A replica's network attachments: created through netplugins one by one, each recorded (keyed by interface
 * name) before the next, and released from the same requests; releasing is safe to repeat.
 */
import type { NetDevice } from '../hypervisor/types.js';
import { attachRequest, toVmDevice } from './interfaces.js';
import type { AttachmentPort } from './ports.js';
import type { ReplicaRecord, SandboxRecord, Steps } from './records.js';

export class ReplicaAttachments {
  constructor(private readonly port: AttachmentPort) {}

  /** Creates the replica's attachments (recorded one by one through `save`) and returns its VM devices. */
  async attach(rec: SandboxRecord, replica: ReplicaRecord, save: () => void): Promise<NetDevice[]> {
    const devices: NetDevice[] = [];
    for (const iface of replica.alloc.interfaces) {
      const req = attachRequest(rec, replica, iface);
      const res = await this.port.add(req);
      replica.attachments[iface.name] = res;
      save();
      devices.push(toVmDevice(req.hostIfName, res));
    }
    return devices;
  }

  /** Releases every attachment the replica may hold (also those ADD left half-way: DEL works from netplugins' record). */
  async detach(rec: SandboxRecord, replica: ReplicaRecord, steps: Steps): Promise<void> {
    for (const iface of replica.alloc.interfaces) {
      await steps.run(`detach ${iface.name}`, () => this.port.del(attachRequest(rec, replica, iface)));
    }
  }
}
