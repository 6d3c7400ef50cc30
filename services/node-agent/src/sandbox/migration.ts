/**
 * Live migration of a tenant VM between nodes (docs/migration.md), the node agent's half. The scheduler's leader
 * drives it; the two node agents never talk to each other:
 * - destination (an allocation with `migration`): the tenant's sandbox is made as for a boot (folders, netns,
 *   cgroup, the image, the NICs on this node's networks with the replica's MACs and addresses), then QEMU starts
 *   from the same spec with `-incoming` and waits; the node reports `migration: {state: incoming, uri}`. Once the
 *   state has arrived QEMU runs: `announce-self`, the guest agent's channel is connected again (the guest's
 *   virtio-serial port sees the host side close on the source and open here), and the replica is RUNNING.
 * - source (`nfv.v1.internal.nodes.<n>.migrate`): `start` sends the VM to the URI and stops before the
 *   switchover, `continue` switches over (QEMU's downtime is reported), `cancel` lets the VM run on here.
 * A VM with no VFIO/macvtap NIC migrates with every replica in it: the source's `check` reports its members and
 * its layout (where QEMU placed each device, hot-plugged ones included: `readLayout`), the scheduler puts all of
 * them on one node with that layout (`migration.group`, `migration.vm`), and the destination starts ONE QEMU with
 * every member's devices at those places (qemu-args `spec.layout`).
 *
 * The stream goes over TCP between the nodes, relayed by the two agents (migration-relay.ts); a node that reaches
 * NATS over loopback offers a unix socket in the destination VM's root (`<vmRoot>/in.sock`) instead.
 */
import { chmodSync, chownSync, existsSync, linkSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { InvalidArgumentError, NotFoundError, UnavailableError, type Allocation, type MigrationVmLayout, type NodeMigrateReply, type NodeMigrateRequest, type ReplicaInterfaceStatus } from '@edgenfv/contracts';
import type { HypervisorDriver, NetDevice, VmHandle, VmSpec } from '../hypervisor/types.js';
import { announceSelf, queryMigrate, resumeVm, cancelMigration, continueMigration, incomingWaiting, startMigration, vmLayout, waitIncomingDone, waitMigration } from '../hypervisor/migration.js';
import { withQmp } from '../hypervisor/qmp.js';
import { guestFileTail } from '../hypervisor/guest-file.js';
import { incomingRelay, outgoingRelay, type Relay } from './migration-relay.js';
import { interfaceStatus, nameInterfaces } from './interfaces.js';
import { hash, newSandboxRecord, type ReplicaRecord, type SandboxRecord } from './records.js';
import type { VmLifecycle } from './vm-lifecycle.js';
import type { DiskDevice } from '../hypervisor/types.js';

/** What the sandbox manager lends the migration (its own parts; nothing else reaches them). */
export interface MigrationHost {
  stateDir: string;
  driver: HypervisorDriver;
  vm: VmLifecycle;
  log: Logger;
  findTenant(tenantId: string): SandboxRecord | undefined;
  replicas(): Map<string, { sandbox: SandboxRecord; replica: ReplicaRecord }>;
  put(rec: SandboxRecord): void;
  allocUid(): number;
  attach(rec: SandboxRecord, replica: ReplicaRecord): Promise<NetDevice[]>;
  prepareImage(rec: SandboxRecord, replica: ReplicaRecord): Promise<DiskDevice | null>;
  teardown(rec: SandboxRecord): Promise<void>;
  dropGuest(sandboxId: string): Promise<void>;
  /** Connects the guest agent session again (after the switchover). */
  reconnectGuest(rec: SandboxRecord): Promise<void>;
  tenantLock<T>(tenantId: string, fn: () => Promise<T>): Promise<T>;
}

/** What the agent gives a migration's destination: its status writes and its allocation watch. */
export interface IncomingHooks {
  /** QEMU listens: the URI (and token) the source is to send to, to be reported on each of `allocIds`. */
  onIncoming(uri: string, token: string | undefined, allocIds: string[]): Promise<void>;
  /** false once the allocation is gone or stopped: the incoming VM is given up. */
  stillWanted(): boolean;
  /** A group member's allocation, when this node's watch holds it. */
  allocation(allocId: string): Allocation | undefined;
}

async function vmRuns(vm: VmHandle): Promise<boolean> {
  try {
    return (await withQmp(vm.apiSocket, (q) => q.queryStatus(), 3000)).status === 'running';
  } catch {
    return false;
  }
}

/** Why a sandbox cannot be live-migrated (undefined: it can). Every replica in the VM moves with it. */
function migrationBlocker(rec: SandboxRecord): string | undefined {
  const reps = Object.values(rec.replicas);
  if (reps.some((r) => r.alloc.interfaces.some((i) => i.type === 'sriov' || i.type === 'macvtap'))) return 'VFIO/macvtap NICs cannot migrate';
  if (!rec.spec) return 'the VM has no recorded spec';
  if (reps.length > 1 && rec.spec.machine !== 'q35') return `the ${rec.spec.machine} VM holds ${reps.length} replicas (several move only on q35)`;
  return undefined;
}

/** The replicas in the VM in the order they joined it, with their guest NIC names (the destination keeps them). */
function members(rec: SandboxRecord): MigrationVmLayout['members'] {
  return Object.values(rec.replicas).map((r) => ({ allocId: r.allocId, guestIfNames: { ...r.guestIfNames }, hostIfNames: { ...r.hostIfNames }, containerId: r.containerId }));
}

function incomingDir(stateDir: string, sandboxId: string): string {
  return join(stateDir, 'migrate', sandboxId);
}

export class SandboxMigration {
  constructor(private readonly h: MigrationHost) {}

  /** Allocations of an incoming VM waiting for its state -> the URI and token its source is to send to. */
  private readonly waiting = new Map<string, { uri: string; token?: string }>();
  /** Group members whose incoming VM failed while another member's call made it -> the error (told once). */
  private readonly groupFailed = new Map<string, Error>();

  /** The URI and token of the incoming VM this allocation is in, while it waits for the state. */
  incomingOf(allocId: string): { uri: string; token?: string } | undefined {
    return this.waiting.get(allocId);
  }

  /**
   * Destination: makes the sandbox with every replica of the moving VM (`migration.group`: each member's own
   * allocation, waited for in this node's watch) and starts ONE QEMU waiting for the state; `hooks.onIncoming` is
   * called once it listens, for every member; resolves when the VM runs here (replicas running, guest agent
   * connected again). A member's call after the VM was made finds its replica there.
   */
  incoming(alloc: Allocation, hooks: IncomingHooks, listenAddress?: string, timeoutMs = 15 * 60_000): Promise<{ sandboxId: string; interfaces: ReplicaInterfaceStatus[] }> {
    const from = alloc.migration;
    if (!from) return Promise.reject(new InvalidArgumentError([{ field: 'migration', message: 'required' }]));
    const group = from.group ?? [{ fromAllocId: from.fromAllocId, allocId: alloc.allocId }];
    if (!group.some((g) => g.allocId === alloc.allocId && g.fromAllocId === from.fromAllocId)) {
      return Promise.reject(new InvalidArgumentError([{ field: 'migration.group', message: 'must list this allocation and its fromAllocId' }]));
    }
    if (group.length > 1 && !from.vm) return Promise.reject(new InvalidArgumentError([{ field: 'migration.vm', message: 'a VM holding several replicas moves only with its source\'s layout' }]));
    return this.h.tenantLock(alloc.tenantId, async () => {
      const failed = this.groupFailed.get(alloc.allocId);
      if (failed !== undefined) {
        this.groupFailed.delete(alloc.allocId);
        throw failed;
      }
      let rec = this.h.findTenant(alloc.tenantId);
      const mine = rec?.replicas[alloc.allocId];
      if (rec && mine && mine.state === 'running' && this.h.vm.alive(rec.sandboxId)) return { sandboxId: rec.sandboxId, interfaces: interfaceStatus(mine) };
      if (rec && mine && this.h.vm.alive(rec.sandboxId) && (await vmRuns(this.h.vm.vmOf(rec.sandboxId)!))) {
        // the agent restarted after the switchover: this VM is the replica now (the source's is paused): finish it
        const done = rec;
        done.state = 'running';
        if (done.spec) delete done.spec.incoming;
        await announceSelf(this.h.vm.vmOf(done.sandboxId)!).catch(() => undefined);
        await this.h.reconnectGuest(done);
        for (const r of Object.values(done.replicas)) r.state = 'running';
        this.h.put(done);
        this.h.log.info({ sandboxId: done.sandboxId, allocId: alloc.allocId }, 'migrated VM found running after an agent restart: adopted');
        return { sandboxId: done.sandboxId, interfaces: interfaceStatus(mine) };
      }
      if (rec && mine) {
        // an incoming VM from before an agent restart whose state never arrived: the stream is gone; start over
        await this.h.teardown(rec);
        rec = this.h.findTenant(alloc.tenantId);
      }
      if (rec) throw new UnavailableError(`tenant ${alloc.tenantId} already has a VM on this node: a live migration cannot merge into it`);
      const members = await this.memberAllocations(alloc, group, hooks);
      try {
        return await this.makeIncoming(alloc, members, hooks, listenAddress, timeoutMs);
      } catch (err) {
        const e = err instanceof Error ? err : new UnavailableError(String(err));
        for (const m of members) if (m.alloc.allocId !== alloc.allocId) this.groupFailed.set(m.alloc.allocId, e);
        throw err;
      }
    });
  }

  /** Every member's allocation, in the order they joined the source VM (its layout's), once this node's watch holds them all. */
  private async memberAllocations(alloc: Allocation, group: Array<{ fromAllocId: string; allocId: string }>, hooks: IncomingHooks, timeoutMs = 120_000): Promise<Array<{ alloc: Allocation; fromAllocId: string }>> {
    const order = alloc.migration?.vm?.members.map((m) => m.allocId) ?? [];
    const sorted = [...group].sort((a, b) => order.indexOf(a.fromAllocId) - order.indexOf(b.fromAllocId));
    const end = Date.now() + timeoutMs;
    for (;;) {
      const found = sorted.map((g) => ({ alloc: g.allocId === alloc.allocId ? alloc : hooks.allocation(g.allocId), fromAllocId: g.fromAllocId }));
      const missing = found.filter((f) => !f.alloc).map((_, i) => sorted[i]!.allocId);
      if (missing.length === 0) {
        const all = found as Array<{ alloc: Allocation; fromAllocId: string }>;
        const other = all.find((m) => m.alloc.tenantId !== alloc.tenantId);
        if (other) throw new InvalidArgumentError([{ field: 'migration.group', message: `allocation ${other.alloc.allocId} is another tenant's` }]);
        return all;
      }
      if (!hooks.stillWanted()) throw new UnavailableError(`the incoming VM of ${alloc.allocId} is no longer wanted`);
      if (Date.now() > end) throw new UnavailableError(`the moving VM's allocations ${missing.join(', ')} did not reach this node within ${timeoutMs} ms`);
      await sleep(200);
    }
  }

  private async makeIncoming(
    alloc: Allocation,
    members: Array<{ alloc: Allocation; fromAllocId: string }>,
    hooks: IncomingHooks,
    listenAddress: string | undefined,
    timeoutMs: number,
  ): Promise<{ sandboxId: string; interfaces: ReplicaInterfaceStatus[] }> {
    const from = alloc.migration!;
    const layout = from.vm;
    const sandboxId = `sb-${alloc.tenantId}-${randomBytes(3).toString('hex')}`;
    const log = this.h.log.child({ tenantId: alloc.tenantId, sandboxId, allocIds: members.map((m) => m.alloc.allocId), from: from.fromNodeId });
    const uid = this.h.allocUid();
    const r = newSandboxRecord({ sandboxId, tenantId: alloc.tenantId, hypervisor: this.h.driver.kind, uid, parentDir: join(this.h.stateDir, 'tenants', alloc.tenantId) });
    for (const m of members) {
      // Device ids (= host attachment names), container and guest NIC names as the source has them: the same VM
      // (the source's record says; a source that moved in itself kept those of the allocation the VM first ran as)
      const names = nameInterfaces({ ...m.alloc, allocId: m.fromAllocId }, []);
      const src = layout?.members.find((x) => x.allocId === m.fromAllocId);
      // they came from another node: names this agent itself would make, for every interface, or nothing is made
      const badName = src?.hostIfNames && m.alloc.interfaces.some((i) => !/^n[0-9a-f]{10}$/.test(src.hostIfNames![i.name] ?? ''));
      if (badName || (src?.containerId !== undefined && !/^r-[0-9a-f]{12}$/.test(src.containerId))) {
        throw new InvalidArgumentError([{ field: 'migration.vm.members', message: `the names of ${m.fromAllocId}'s devices or container are not this agent's` }]);
      }
      const hostIfNames = src?.hostIfNames ?? names.hostIfNames;
      const guestIfNames = src?.guestIfNames ?? names.guestIfNames;
      const hotplugged = Object.values(hostIfNames).some((n) => layout?.hotplugged.includes(`nic:${n}`));
      r.replicas[m.alloc.allocId] = { allocId: m.alloc.allocId, alloc: m.alloc, state: 'starting', attachments: {}, hostIfNames, guestIfNames, containerId: src?.containerId ?? `r-${hash(m.fromAllocId, 12)}`, hotplugged };
    }
    this.h.put(r);
    const dir = incomingDir(this.h.stateDir, sandboxId);
    let relay: (Relay & { uri: string; token: string }) | undefined;
    try {
      const first = members[0]!.alloc;
      await this.h.vm.prepareHost(r, first, log);
      this.h.put(r);
      const disks: DiskDevice[] = [];
      const nics: NetDevice[] = [];
      for (const m of members) {
        const replica = r.replicas[m.alloc.allocId]!;
        const disk = await this.h.prepareImage(r, replica);
        if (disk && !disks.some((d) => d.serial === disk.serial)) disks.push(disk);
        nics.push(...(await this.h.attach(r, replica)));
      }
      if (disks.length) r.disks = disks.map((d) => d.serial);
      // the socket inside the VM's root when QEMU runs chrooted (vm-root.ts): it binds it before the chroot
      let sock: string;
      if (r.vmRoot) sock = join(r.vmRoot, 'in.sock');
      else {
        mkdirSync(join(this.h.stateDir, 'migrate'), { recursive: true, mode: 0o711 });
        chmodSync(join(this.h.stateDir, 'migrate'), 0o711);
        mkdirSync(dir, { recursive: true, mode: 0o711 });
        chownSync(dir, uid, uid);
        chmodSync(dir, 0o711);
        sock = join(dir, 'in.sock');
      }
      const spec: VmSpec = { ...this.h.vm.spec(r, first, nics, disks, layout), incoming: `unix:${sock}` };
      r.spec = spec;
      this.h.put(r);
      const vm = await this.h.vm.start(r, spec, new AbortController().signal, {
        onSpawned: (v) => {
          r.vm = this.h.driver.record(v);
          this.h.put(r);
        },
        waitReady: async () => undefined,
      });
      // the source's QEMU runs as another uid: it may connect to the socket, nothing else
      for (let i = 0; i < 100 && !existsSync(sock); i++) await sleep(50);
      if (!existsSync(sock)) throw new UnavailableError(`the incoming VM did not listen on ${sock}`);
      chmodSync(sock, 0o666);
      // between nodes: a TCP listener on this node's address relays the stream into QEMU's socket
      relay = listenAddress ? await incomingRelay(listenAddress, sock) : undefined;
      const uri = relay?.uri ?? spec.incoming!;
      log.info({ pid: vm.pid, uri, replicas: members.length }, 'incoming VM waits for the migration');
      for (const m of members) this.waiting.set(m.alloc.allocId, { uri, ...(relay ? { token: relay.token } : {}) });
      await hooks.onIncoming(uri, relay?.token, members.map((m) => m.alloc.allocId));
      await waitIncomingDone(vm, timeoutMs, () => this.h.vm.alive(sandboxId), () => hooks.stillWanted());
      r.state = 'running';
      delete r.spec.incoming; // a later rebuild boots normally
      this.h.put(r);
      await announceSelf(vm).catch((err: unknown) => log.warn({ err }, 'announce-self failed'));
      await this.h.reconnectGuest(r);
      for (const rep of Object.values(r.replicas)) rep.state = 'running';
      this.h.put(r);
      log.info('migrated VM runs here');
      return { sandboxId, interfaces: interfaceStatus(r.replicas[alloc.allocId]!) };
    } catch (err) {
      // why QEMU gave up loading the state (a device the source has and this VM lacks, ...) is in its own log
      const qemuLog = guestFileTail(join(r.runDir, 'qemu.log'), 4);
      log.warn({ err, qemuLog }, 'incoming migration failed: releasing the sandbox');
      await this.h.teardown(r);
      if (qemuLog && err instanceof UnavailableError && /exited/.test(err.message)) throw new UnavailableError(`${err.message}; qemu: ${qemuLog}`, { cause: err });
      throw err;
    } finally {
      for (const m of members) this.waiting.delete(m.alloc.allocId);
      relay?.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }

  private readonly relays = new Map<string, Relay>();

  private closeRelay(sandboxId: string): void {
    this.relays.get(sandboxId)?.close();
    this.relays.delete(sandboxId);
  }

  /**
   * What the source's QEMU sends to. A chrooted QEMU (vm-root.ts) in a sandbox netns reaches only paths in its root:
   * for a `tcp:` URI this agent listens on `<root>/out.sock` and relays to the destination (migration-relay.ts); a
   * `unix:` URI (a destination on the same host) is hard-linked into the root.
   */
  private async uriForQemu(rec: SandboxRecord, req: NodeMigrateRequest): Promise<string> {
    const uri = req.uri!;
    if (!rec.vmRoot) return uri;
    const out = join(rec.vmRoot, 'out.sock');
    this.closeRelay(rec.sandboxId);
    if (uri.startsWith('tcp:')) {
      if (!req.token) throw new InvalidArgumentError([{ field: 'token', message: 'a tcp: URI needs the destination\'s token' }]);
      this.relays.set(rec.sandboxId, await outgoingRelay(out, uri, req.token));
      return 'unix:/out.sock';
    }
    rmSync(out, { force: true });
    linkSync(uri.slice('unix:'.length), out);
    return 'unix:/out.sock';
  }

  /** Records that the VM switched over to its destination (or runs here again): its replicas are then only released. */
  private movedAway(rec: SandboxRecord, away: boolean): void {
    const cur = this.h.findTenant(rec.tenantId);
    if (!cur || cur.sandboxId !== rec.sandboxId || (cur.movedAway !== undefined) === away) return;
    if (away) cur.movedAway = new Date().toISOString();
    else delete cur.movedAway;
    this.h.put(cur);
  }

  /** `nfv.v1.internal.nodes.<n>.migrate`: the source's actions and the destination's check. */
  async handle(req: NodeMigrateRequest): Promise<NodeMigrateReply> {
    if (!req || typeof req.tenantId !== 'string' || typeof req.allocId !== 'string') throw new InvalidArgumentError('tenantId and allocId are required');
    const found = this.h.replicas().get(req.allocId);
    if (!found || found.sandbox.tenantId !== req.tenantId) throw new NotFoundError(`replica ${req.allocId} is not on this node`);
    const rec = found.sandbox;
    const vm = this.h.vm.vmOf(rec.sandboxId);
    if (!vm || !this.h.vm.alive(rec.sandboxId)) throw new UnavailableError(`the VM of ${req.allocId} does not run`);
    const alive = (): boolean => this.h.vm.alive(rec.sandboxId);
    const log = this.h.log.child({ sandboxId: rec.sandboxId, allocId: req.allocId, action: req.action });
    switch (req.action) {
      case 'check': {
        // the source: every replica in the VM moves with it; the destination must start it as it is
        if (found.replica.state === 'running') return { state: 'running', members: Object.keys(rec.replicas), ...(rec.spec?.machine === 'q35' ? { vm: await vmLayout(vm, rec.spec, members(rec)) } : {}) };
        if (!(await incomingWaiting(vm))) throw new UnavailableError(`the incoming VM of ${req.allocId} is not waiting`);
        return { state: 'inmigrate' };
      }
      case 'start': {
        const why = migrationBlocker(rec);
        if (why) throw new UnavailableError(`cannot migrate: ${why}`);
        if (typeof req.uri !== 'string' || !/^unix:\/[^,\s]+$|^tcp:[^,\s]+:\d+$/.test(req.uri)) throw new InvalidArgumentError([{ field: 'uri', message: 'must be unix:/abs/path or tcp:host:port' }]);
        // the host side of the guest channel closes here and opens on the destination
        await this.h.dropGuest(rec.sandboxId);
        const already = (await queryMigrate(vm)).status;
        if (!already || ['none', 'cancelled', 'failed', 'completed'].includes(already)) await startMigration(vm, await this.uriForQemu(rec, req));
        log.info({ uri: req.uri }, 'migration started');
        const info = await waitMigration(vm, ['pre-switchover'], 10 * 60_000, alive);
        if (info.status !== 'pre-switchover') {
          await cancelMigration(vm, alive).catch(() => undefined);
          this.closeRelay(rec.sandboxId);
          throw new UnavailableError(`migration ${info.status}${info['error-desc'] ? `: ${info['error-desc']}` : ''}`);
        }
        log.info({ transferred: info.ram?.transferred }, 'migration waits for the switchover');
        return { state: 'pre-switchover', ...(info.ram?.transferred ? { transferredBytes: info.ram.transferred } : {}) };
      }
      case 'continue': {
        const cur = await waitMigration(vm, ['pre-switchover', 'completed'], 60_000, alive);
        if (cur.status === 'pre-switchover') await continueMigration(vm);
        const info = await waitMigration(vm, ['completed'], 5 * 60_000, alive);
        this.closeRelay(rec.sandboxId);
        if (info.status !== 'completed') throw new UnavailableError(`migration ${info.status}${info['error-desc'] ? `: ${info['error-desc']}` : ''}`);
        this.movedAway(rec, true);
        log.info({ downtimeMs: info.downtime, totalMs: info['total-time'] }, 'migration completed: the VM runs on the destination');
        return {
          state: 'completed',
          ...(info.downtime !== undefined ? { downtimeMs: info.downtime } : {}),
          ...(info['total-time'] !== undefined ? { totalMs: info['total-time'] } : {}),
          ...(info.ram?.transferred ? { transferredBytes: info.ram.transferred } : {}),
        };
      }
      case 'resume': {
        await resumeVm(vm);
        this.movedAway(rec, false);
        log.info('the destination failed after the switchover: the VM runs on here');
        return { state: 'running' };
      }
      case 'cancel': {
        const state = await cancelMigration(vm, alive);
        this.closeRelay(rec.sandboxId);
        this.movedAway(rec, state === 'completed');
        log.info({ state }, 'migration cancelled: the VM runs on here');
        return { state };
      }
      default:
        throw new InvalidArgumentError([{ field: 'action', message: 'must be start, continue, cancel, resume or check' }]);
    }
  }
}

