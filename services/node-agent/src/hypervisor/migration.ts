/**
 * QEMU live migration over QMP (docs/migration.md). The source sends with `pause-before-switchover`: the RAM is
 * copied while the guest runs, then QEMU stops in `pre-switchover` (guest paused, nothing switched yet) until it is
 * told to `continue` (the destination takes over) or to `cancel` (the guest runs on here). The destination is a
 * QEMU started with `-incoming` from the same spec; once the state has arrived it runs, and `announce-self` sends
 * gratuitous RARPs from every NIC so that the switches learn the new port.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { UnavailableError, type MigrationVmLayout } from '@edgenfv/contracts';
import type { VmHandle, VmSpec } from './types.js';
import { withQmp, type QmpClient } from './qmp.js';

/** What `query-migrate` says (the fields used here). */
export interface MigrationInfo {
  status?: string;
  /** ms the guest was stopped for the switchover (completed migrations). */
  downtime?: number;
  'total-time'?: number;
  'expected-downtime'?: number;
  ram?: { transferred?: number; remaining?: number; total?: number; 'dirty-pages-rate'?: number };
  'error-desc'?: string;
}

const ACTIVE = new Set(['setup', 'active', 'device', 'wait-unplug', 'pre-switchover', 'cancelling', 'postcopy-active']);

export async function queryMigrate(vm: VmHandle): Promise<MigrationInfo> {
  return withQmp(vm.apiSocket, (q) => q.execute<MigrationInfo>('query-migrate'));
}

/** Polls `query-migrate` until its status is one of `until` (or not active any more). */
export async function waitMigration(vm: VmHandle, until: readonly string[], timeoutMs: number, alive: () => boolean): Promise<MigrationInfo> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (!alive()) throw new UnavailableError(`QEMU of ${vm.sandboxId} exited during the migration`);
    const info = await queryMigrate(vm);
    if (info.status && (until.includes(info.status) || !ACTIVE.has(info.status))) return info;
    if (Date.now() > end) throw new UnavailableError(`migration of ${vm.sandboxId} still ${info.status} after ${timeoutMs} ms`);
    await sleep(100);
  }
}

/**
 * Starts sending the VM to `uri` with pause-before-switchover; idempotent (a migration already under way is left
 * alone). The bandwidth is not capped (QEMU's default is 128 MiB/s); `downtimeLimitMs` is QEMU's target.
 */
export async function startMigration(vm: VmHandle, uri: string, downtimeLimitMs = 300): Promise<void> {
  await withQmp(vm.apiSocket, async (q: QmpClient) => {
    const cur = await q.execute<MigrationInfo>('query-migrate');
    if (cur.status && ACTIVE.has(cur.status)) return;
    await q.execute('migrate-set-capabilities', { capabilities: [{ capability: 'pause-before-switchover', state: true }] });
    await q.execute('migrate-set-parameters', { 'max-bandwidth': 8 * 1024 ** 3, 'downtime-limit': downtimeLimitMs });
    await q.execute('migrate', { uri });
  });
}

/** Lets a migration waiting in pre-switchover finish (the destination runs; this VM stays paused). */
export async function continueMigration(vm: VmHandle): Promise<void> {
  await withQmp(vm.apiSocket, (q) => q.execute('migrate-continue', { state: 'pre-switchover' }));
}

/** Cancels an outgoing migration and makes sure the VM runs here again, unless it already switched over ('completed'). */
export async function cancelMigration(vm: VmHandle, alive: () => boolean): Promise<string> {
  await withQmp(vm.apiSocket, async (q) => {
    const cur = await q.execute<MigrationInfo>('query-migrate');
    if (cur.status && ACTIVE.has(cur.status)) await q.execute('migrate_cancel');
  });
  const info = await waitMigration(vm, ['cancelled', 'failed', 'completed'], 30_000, alive);
  // switched over already: the destination runs the VM, this copy must stay paused
  if (info.status === 'completed') return 'completed';
  await withQmp(vm.apiSocket, async (q) => {
    const st = await q.queryStatus();
    if (!st.running) await q.cont();
  });
  return info.status ?? 'cancelled';
}

/** Runs a paused VM again (a source whose destination failed after the switchover). */
export async function resumeVm(vm: VmHandle): Promise<void> {
  await withQmp(vm.apiSocket, async (q) => {
    const st = await q.queryStatus();
    if (!st.running) await q.cont();
  });
}

/** Waits until a VM started with `-incoming` has received its state and runs (it exits when the stream fails). */
export async function waitIncomingDone(vm: VmHandle, timeoutMs: number, alive: () => boolean, stillWanted: () => boolean): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (!alive()) throw new UnavailableError(`the incoming VM ${vm.sandboxId} exited (the migration stream failed or was cancelled)`);
    if (!stillWanted()) throw new UnavailableError(`the incoming VM ${vm.sandboxId} is no longer wanted`);
    try {
      const st = await withQmp(vm.apiSocket, (q) => q.queryStatus(), 2000);
      if (st.status === 'running') return;
      if (st.status !== 'inmigrate' && st.status !== 'paused' && st.status !== 'prelaunch') throw new UnavailableError(`the incoming VM ${vm.sandboxId} is ${st.status}`);
    } catch (err) {
      if (!alive()) continue;
      if (err instanceof UnavailableError && /is \w+$/.test(err.message)) throw err;
      // QMP is busy while the state loads: ask again
    }
    if (Date.now() > end) throw new UnavailableError(`the incoming VM ${vm.sandboxId} did not run within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** Whether a VM started with `-incoming` still waits for (or is loading) its state. */
export async function incomingWaiting(vm: VmHandle): Promise<boolean> {
  const st = await withQmp(vm.apiSocket, (q) => q.queryStatus(), 3000);
  return st.status === 'inmigrate';
}

/** Gratuitous RARPs from every NIC of the guest (QEMU's `announce-self`), so that the switches learn the new port. */
export async function announceSelf(vm: VmHandle): Promise<void> {
  await withQmp(vm.apiSocket, (q) => q.execute('announce-self', { initial: 50, max: 550, rounds: 5, step: 100 }));
}

/**
 * Where QEMU placed the VM's devices, its hot-plugged vCPUs (`query-hotpluggable-cpus`) and DIMMs
 * (`query-memory-devices`): what a migration's destination must start with (qemu-args `spec.layout`). The PCI
 * placement is read from QOM (each device's `parent_bus` and `addr`, the devfn), not from `query-pci`, which walks the
 * bus numbers the guest's firmware gave the root ports and lists nothing behind a port it has not numbered yet.
 */
async function readLayout(vm: VmHandle): Promise<Pick<MigrationVmLayout, 'rootPorts' | 'pci' | 'cpus' | 'dimms'>> {
  return withQmp(vm.apiSocket, async (q) => {
    const pci: MigrationVmLayout['pci'] = {};
    let rootPorts = 0;
    for (const p of await q.execute<{ name: string; type: string }[]>('qom-list', { path: '/machine/peripheral' })) {
      if (!p.type.startsWith('child<')) continue;
      const port = /^rp(\d+)$/.exec(p.name);
      if (port) {
        rootPorts = Math.max(rootPorts, Number(port[1]) + 1);
        continue;
      }
      const path = `/machine/peripheral/${p.name}`;
      const bus = await q.execute<string>('qom-get', { path, property: 'parent_bus' }).catch(() => undefined);
      const busName = bus?.split('/').pop();
      if (!busName || !/^(pcie\.0|rp\d+)$/.test(busName)) continue; // not on a PCI bus (vCPUs, DIMMs, ports' children)
      const devfn = await q.execute<number>('qom-get', { path, property: 'addr' });
      pci[p.name] = { bus: busName, addr: devfn >> 3 };
    }
    const cpus = (await q.queryHotpluggableCpus())
      .filter((c) => c['qom-path']?.startsWith('/machine/peripheral/'))
      .map((c) => ({ id: c['qom-path']!.slice('/machine/peripheral/'.length), type: c.type, props: { ...c.props } as Record<string, number> }));
    const mems = await q.execute<{ type: string; data: { id?: string; size: number; addr: number; slot: number } }[]>('query-memory-devices');
    const dimms = mems.filter((m) => m.type === 'dimm' && m.data.id).map((m) => ({ id: m.data.id!, sizeMiB: m.data.size / 1024 ** 2, addr: m.data.addr, slot: m.data.slot }));
    return { rootPorts, pci, cpus, dimms };
  });
}

/**
 * The running VM as a migration's destination must start it (q35): its boot spec's sizes, its size now, where QEMU
 * placed each device, its hot-plugged vCPUs and DIMMs, and `members` (the replicas in it, in the order they joined).
 */
export async function vmLayout(vm: VmHandle, boot: Pick<VmSpec, 'vcpus' | 'maxVcpus' | 'memoryMiB' | 'maxMemoryMiB' | 'viommu'>, members: MigrationVmLayout['members']): Promise<MigrationVmLayout> {
  return {
    boot: { vcpus: boot.vcpus, maxVcpus: boot.maxVcpus, memoryMiB: boot.memoryMiB, maxMemoryMiB: boot.maxMemoryMiB, ...(boot.viommu ? { viommu: true } : {}) },
    vcpus: vm.vcpus,
    memoryMiB: vm.memoryMiB,
    ...(await readLayout(vm)),
    hotplugged: [...vm.hotplugged],
    members,
  };
}

/**
 * Saves a running VM's state to a file (snapshot boot's template, sandbox/snapshot-boot.ts): the guest is stopped
 * first (the state is one instant, and a VM restored from it comes up paused until `resumeRestored` runs it), then
 * migrated to `file:` with QEMU's `mapped-ram` (each RAM page at a fixed offset, zero pages not written: a sparse file
 * the restore reads without parsing a stream). `path` is the path QEMU sees (inside its chroot) and must be writable
 * by its uid. Resolves once QEMU reports the migration completed; the VM stays paused (the caller quits it).
 */
export async function saveToFile(vm: VmHandle, path: string, timeoutMs: number, alive: () => boolean): Promise<MigrationInfo> {
  await withQmp(vm.apiSocket, async (q) => {
    await q.execute('migrate-set-capabilities', { capabilities: [{ capability: 'mapped-ram', state: true }] });
    await q.execute('stop');
    await q.execute('migrate', { uri: `file:${path}` });
  });
  const info = await waitMigration(vm, ['completed', 'failed', 'cancelled'], timeoutMs, alive);
  if (info.status !== 'completed') throw new UnavailableError(`saving ${vm.sandboxId} to ${path}: ${info.status}${info['error-desc'] ? `: ${info['error-desc']}` : ''}`);
  return info;
}

/**
 * A VM started with `-incoming file:` (qemu-args: with mapped-ram) once its state has loaded: runs it (the template was
 * saved stopped) and turns mapped-ram off again (it is for file: URIs only: a later live migration of the VM over a
 * socket would be refused with it on). Fails when QEMU exits or the load fails.
 */
export async function resumeRestored(vm: VmHandle, timeoutMs: number, alive: () => boolean, signal?: AbortSignal): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (!alive()) throw new UnavailableError(`the restored VM ${vm.sandboxId} exited while loading its state`);
    if (signal?.aborted) throw new UnavailableError('restore aborted');
    const st = await withQmp(vm.apiSocket, (q) => q.queryStatus(), 5000).catch(() => undefined); // busy while loading
    if (st && st.status !== 'inmigrate') {
      if (st.status !== 'paused' && st.status !== 'running') {
        const info = await queryMigrate(vm).catch(() => undefined);
        throw new UnavailableError(`the restored VM ${vm.sandboxId} is ${st.status}${info?.['error-desc'] ? `: ${info['error-desc']}` : ''}`);
      }
      await withQmp(vm.apiSocket, async (q) => {
        await q.execute('migrate-set-capabilities', { capabilities: [{ capability: 'mapped-ram', state: false }] });
        if (st.status === 'paused') await q.cont();
      });
      return;
    }
    if (Date.now() > end) throw new UnavailableError(`the restored VM ${vm.sandboxId} did not load its state within ${timeoutMs} ms`);
    await sleep(20);
  }
}
