/**
 * Issue 12: a node agent restarted while a tenant's first replica is still booting. Before: the new agent found the
 * half-done replica in a live 'creating' sandbox, removed it (the VM's only replica: the whole sandbox torn down)
 * and then grew the deleted record (TypeError, replica FAILED). Now the replica boots again in a fresh sandbox:
 * one VM for the tenant, nothing of the interrupted one left. Real QEMU (TCG, no guest kernel), real netns/cgroup.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger, silentLogger } from '@edgenfv/telemetry';
import { parseConfig } from '../../src/config.js';
import { SandboxManager } from '../../src/sandbox/manager.js';
import type { GuestPort, GuestSession } from '../../src/sandbox/ports.js';
import { processAlive, waitGone, killQuiet } from '../../src/proc.js';
import { makeAlloc } from '../helpers/alloc.js';
import { RecordingGuest } from '../helpers/recording-guest.js';
import { removeCgroupParent } from '../helpers/cleanup.js';
import { firmwareSandboxManager } from '../helpers/real-manager.js';

/** A guest that never answers at boot (the guest is still booting when the agent dies). */
class SilentGuest implements GuestPort {
  connect(_socket: string, opts?: { signal?: AbortSignal }): Promise<GuestSession> {
    return new Promise((_, reject) => opts?.signal?.addEventListener('abort', () => reject(new Error('aborted'))));
  }
}

test('agent restarted while the first replica boots: booted again in a fresh sandbox, no TypeError, nothing left over', async (t) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'na-rwb-'));
  const cgParent = `edgenfv-rwb${process.pid}`;
  const cfg = parseConfig({ nodeId: 'n1', stateDir, vmBaseMemoryMiB: 128, qemu: { accel: 'tcg', maxVcpus: 2, maxMemoryMiB: 512 }, isolation: { cgroupParent: cgParent } });
  const log = process.env.RWB_DEBUG ? createLogger({ service: 'rwb', level: 'warn' }) : silentLogger();
  const mk = (guest: GuestPort): SandboxManager => firmwareSandboxManager({ cfg, stateDir, cgParent, guest, log });
  const abandon = new AbortController();
  let m2: SandboxManager | undefined;
  const pids: number[] = [];
  t.after(async () => {
    await m2?.stopAll().catch(() => undefined);
    abandon.abort(); // the first agent's boot, still waiting for its guest, gives up
    await sleep(200);
    for (const p of pids) killQuiet(p, 'SIGKILL');
    await removeCgroupParent(cgParent);
    rmSync(stateDir, { recursive: true, force: true });
  });

  const alloc = makeAlloc({ allocId: 'c1', tenantId: 'gamma' });
  const m1 = mk(new SilentGuest());
  await m1.init();
  void m1.ensureReplica(alloc, abandon.signal).catch(() => undefined);
  // until QEMU runs and the record says the sandbox is being created: the agent "dies" here
  let first: ReturnType<SandboxManager['sandboxes']>[number] | undefined;
  for (let i = 0; i < 1200 && !(first = m1.sandboxes().find((s) => s.state === 'creating' && s.vm && existsSync(join(s.runDir, 'qmp.sock')))); i++) await sleep(50);
  assert.ok(first, 'the first boot reached QEMU');
  await sleep(1500); // QMP answered: the first agent now waits for its guest agent
  const firstPid = (first.vm as unknown as { pid: number }).pid;
  pids.push(firstPid);

  m2 = mk(new RecordingGuest());
  const { adopted } = await m2.init();
  assert.deepEqual(adopted, [first.sandboxId], 'the booting VM is re-adopted at start');
  const r = await m2.ensureReplica(alloc);
  assert.equal(r.booted, true);
  assert.notEqual(r.sandboxId, first.sandboxId);
  const sbs = m2.sandboxes();
  assert.equal(sbs.length, 1, 'one sandbox for the tenant');
  assert.equal(sbs[0]!.state, 'running');
  assert.equal(sbs[0]!.replicas.c1?.state, 'running');
  pids.push(m2.vmOf(r.sandboxId)!.pid);
  await waitGone(firstPid, undefined, 10_000);
  assert.equal(processAlive(firstPid), false, 'the interrupted VM is gone');
  assert.equal(existsSync(`/var/run/netns/${first.netns}`), false);
  assert.equal(existsSync(first.runDir), false);
});
