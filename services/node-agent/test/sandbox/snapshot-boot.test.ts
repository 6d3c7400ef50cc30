/**
 * Snapshot boot's fallback and teardown through the sandbox manager (real QEMU, the real guest image and agent): the
 * pool's first VM makes the template (none yet: a cold boot) and is restored from it; the template is then damaged,
 * the pool VM is claimed by a replica (its container runs), and the refill's restore from the damaged template fails:
 * the template is deleted, that sandbox torn down, and the next refill boots cold, makes a new template and is
 * restored from it (with mapped-ram off again: a live migration over a socket stays possible). After the node's shutdown a node agent with snapshot boot off keeps no template.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger, silentLogger } from '@edgenfv/telemetry';
import { buildGuestImage } from '../../src/guest/index.js';
import { parseConfig } from '../../src/config.js';
import { probeKvm } from '../../src/hypervisor/kvm-probe.js';
import type { SandboxManager } from '../../src/sandbox/manager.js';
import { realSandboxManager } from '../helpers/real-manager.js';
import { procCmdline } from '../../src/proc.js';
import { withQmp } from '../../src/hypervisor/qmp.js';
import { makeAlloc } from '../helpers/alloc.js';
import { removeCgroupParent } from '../helpers/cleanup.js';

test('snapshot boot: a damaged template fails its restore, is deleted, and the pool boots cold and makes a new one; snapshot boot off keeps none', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'na-snap-'));
  const stateDir = join(dir, 'state');
  const cgParent = `edgenfv-s${process.pid}`;
  const log = process.env.EDGENFV_TEST_LOG ? createLogger({ service: 'test', level: process.env.EDGENFV_TEST_LOG }) : silentLogger();
  const image = await buildGuestImage({ log });
  const accel = (await probeKvm({ qemuBinary: 'qemu-system-x86_64', kernelPath: image.kernelPath })).ok ? 'kvm' : 'tcg';
  const managerWith = (snapshotBoot: boolean, pool: boolean): SandboxManager => {
    const cfg = parseConfig({ nodeId: 'n1', stateDir, qemu: { accel, maxVcpus: 2, maxMemoryMiB: 1024 }, isolation: { cgroupParent: cgParent }, guest: { bootTimeoutMs: 300_000, snapshotBoot } });
    return realSandboxManager({ cfg, accel, stateDir, cgParent, image, log, ...(pool ? { extra: { warmPool: { flavours: [{ vcpus: 1, memoryMiB: 64, count: 1 }], cpuBudgetPercent: 100 } } } : {}) });
  };
  const manager = managerWith(true, true);
  t.after(async () => {
    await manager.stopAll().catch(() => undefined);
    await manager.close();
    await removeCgroupParent(cgParent);
    rmSync(dir, { recursive: true, force: true });
  });
  const snapDir = join(stateDir, 'snapshots');
  const readyVm = async (not: string[]): Promise<string> => {
    const end = Date.now() + 600_000;
    for (;;) {
      const id = manager.warm!.info()[0]!.readyVms.find((v) => !not.includes(v));
      if (id) return id;
      if (Date.now() > end) throw new Error(`no ready pool VM: ${JSON.stringify(manager.warm!.info())}`);
      await sleep(200);
    }
  };
  const restoredFrom = (sandboxId: string, template: string): boolean => procCmdline(manager.vmOf(sandboxId)!.pid).includes(`file:${template}`);

  await manager.init();
  const w1 = await readyVm([]);
  const [name] = readdirSync(snapDir);
  assert.ok(name, 'the first pool VM made a template');
  const template = join(snapDir, name);
  assert.ok(restoredFrom(w1, template), 'the template maker was restored from it');
  const madeAt = statSync(template).mtimeMs;

  // the template damaged: the refill after the claim cannot load it
  truncateSync(template, 4096);
  const r = await manager.ensureReplica(makeAlloc({ allocId: 'a1', tenantId: 'snapa', resources: { vcpus: 1, memoryMiB: 64 }, image: { ref: 'builtin:vrouter' } }));
  assert.equal(r.sandboxId, w1, 'the replica claimed the pool VM');
  const c = await (await manager.guestSession(w1)).containers(10_000);
  assert.ok(c.some((x) => x.state === 'RUNNING'), `its container runs in the restored VM: ${JSON.stringify(c)}`);

  // the refill: restore fails -> template deleted, sandbox torn down -> cold boot, a new template, restored from it
  const w2 = await readyVm([w1]);
  assert.ok(existsSync(template), 'a new template');
  assert.ok(statSync(template).size > 4096 && statSync(template).mtimeMs > madeAt, 'made again, not the damaged one');
  assert.ok(restoredFrom(w2, template), 'the new pool VM was restored from the new template');
  // mapped-ram is for file: URIs only: off again once restored, so the VM can still be live-migrated over a socket
  const caps = await withQmp(manager.vmOf(w2)!.apiSocket, (q) => q.execute<{ capability: string; state: boolean }[]>('query-migrate-capabilities'));
  assert.equal(caps.find((x) => x.capability === 'mapped-ram')?.state, false, 'mapped-ram off after the restore');
  const sandboxes = manager.sandboxes().map((s) => s.sandboxId).sort();
  assert.deepEqual(sandboxes, [w1, w2].sort(), 'the sandbox of the failed restore is gone');
  assert.deepEqual(readdirSync(join(stateDir, 'vm')).length, 2, 'two VM roots: the claimed VM and the pool VM');
  assert.deepEqual(readdirSync(snapDir), [name], 'one template, no leftover');

  // shutdown; a node agent with snapshot boot off (or no pool) keeps no template
  await manager.stopAll();
  assert.deepEqual(readdirSync(join(stateDir, 'vm')), [], 'no VM root left');
  const off = managerWith(false, false);
  await off.init();
  await off.close();
  assert.deepEqual(readdirSync(snapDir), [], 'templates deleted when no pool restores from them');
});
