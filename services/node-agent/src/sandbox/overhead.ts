/**
 * What one tenant VM costs this node beyond its replicas' vCPUs and memory, as the node reports it in its inventory
 * (`NodeInventory.vmOverhead`) for the scheduler to book once per tenant sandbox (docs/node-agent.md "What a VM
 * books"): the guest base memory the node agent adds to every VM (QEMU gets `guestBaseMiB + memoryMiB`), and QEMU's
 * own memory beyond guest RAM.
 */
import type { VmOverhead } from '@edgenfv/contracts';

/** QEMU's own RSS beyond guest RAM under KVM (device models, QMP, I/O threads): measured ~40-60 MiB idle. */
export const KVM_HYPERVISOR_MIB = 64;
/** Under TCG the translation cache comes on top (~44 MiB idle with QEMU's default size, docs/ENVIRONMENT). */
export const TCG_DEFAULT_TB_MIB = 64;

export function vmOverhead(opts: { guestBaseMiB: number; accel: 'kvm' | 'tcg'; overheadMiB?: number; tcgTbSizeMiB?: number }): VmOverhead {
  const hypervisorMiB = opts.overheadMiB ?? KVM_HYPERVISOR_MIB + (opts.accel === 'tcg' ? (opts.tcgTbSizeMiB ?? TCG_DEFAULT_TB_MIB) : 0);
  return { guestBaseMiB: opts.guestBaseMiB, hypervisorMiB };
}
