/**
 * The guest liveness verdicts (sandbox/guest-liveness.ts) on a stand-in session: a restarted agent (new instance id,
 * containers gone) loses every running replica of the VM; a vanished container only its replica; a silent agent its
 * replicas only past failAfterMs. The real guest agent killed inside a real VM: test/test/guest-agent-kill.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestLiveness } from '../../src/sandbox/guest-liveness.js';
import type { GuestSession } from '../../src/sandbox/ports.js';
import type { ReplicaRecord, SandboxRecord } from '../../src/sandbox/records.js';

function rec(replicas: { allocId: string; containerId: string; state: ReplicaRecord['state'] }[]): SandboxRecord {
  return {
    sandboxId: 'sb-t-1',
    tenantId: 't',
    replicas: Object.fromEntries(replicas.map((r) => [r.allocId, { ...r, alloc: {} } as unknown as ReplicaRecord])),
  } as unknown as SandboxRecord;
}

function guest(state: { instanceId: string; containers: string[]; silent?: boolean; atConnect?: string }): () => Promise<GuestSession> {
  return async () =>
    ({
      instanceIdAtConnect: state.atConnect,
      health: async () => {
        if (state.silent) throw new Error('guest Health: deadline exceeded');
        return { instanceId: state.instanceId };
      },
      containers: async () => state.containers.map((id) => ({ id, state: 'RUNNING' })),
    }) as unknown as GuestSession;
}

test('a restarted guest agent loses every running replica of its VM; an unchanged one none', async () => {
  const l = new GuestLiveness({ callTimeoutMs: 1000, failAfterMs: 60_000 });
  const r = rec([
    { allocId: 'a1', containerId: 'r-1', state: 'running' },
    { allocId: 'a2', containerId: 'r-2', state: 'running' },
    { allocId: 'a3', containerId: 'r-3', state: 'starting' },
  ]);
  const g = { instanceId: 'one', containers: ['r-1', 'r-2'] };
  assert.equal(await l.check(r, guest(g)), undefined);
  assert.equal(await l.check(r, guest(g)), undefined, 'the same agent with its containers: nothing lost');
  g.instanceId = 'two';
  g.containers = [];
  const v = await l.check(r, guest(g));
  assert.equal(v?.reason, 'restarted');
  assert.deepEqual(v?.lost.map((x) => x.allocId), ['a1', 'a2'], 'the running replicas, not the one still starting');
  assert.match(v!.message, /guest agent restarted: container r-1, r-2 gone/);
});

test('an agent restarted before the first look is told apart by the instance id the session was made with', async () => {
  const l = new GuestLiveness({ callTimeoutMs: 1000, failAfterMs: 60_000 });
  const r = rec([{ allocId: 'a1', containerId: 'r-1', state: 'running' }]);
  const v = await l.check(r, guest({ instanceId: 'two', containers: [], atConnect: 'one' }));
  assert.equal(v?.reason, 'restarted');
  assert.deepEqual(v?.lost.map((x) => x.allocId), ['a1']);
});

test('a container gone under the same agent loses only its replica', async () => {
  const l = new GuestLiveness({ callTimeoutMs: 1000, failAfterMs: 60_000 });
  const r = rec([
    { allocId: 'a1', containerId: 'r-1', state: 'running' },
    { allocId: 'a2', containerId: 'r-2', state: 'running' },
  ]);
  const g = { instanceId: 'one', containers: ['r-1', 'r-2'] };
  assert.equal(await l.check(r, guest(g)), undefined);
  g.containers = ['r-2'];
  const v = await l.check(r, guest(g));
  assert.equal(v?.reason, 'container-gone');
  assert.deepEqual(v?.lost.map((x) => x.allocId), ['a1']);
});

test('a silent guest agent loses its replicas only past failAfterMs; an answer resets the count', async () => {
  let now = 0;
  const l = new GuestLiveness({ callTimeoutMs: 1000, failAfterMs: 30_000, now: () => now });
  const r = rec([{ allocId: 'a1', containerId: 'r-1', state: 'running' }]);
  const g = { instanceId: 'one', containers: ['r-1'], silent: true };
  assert.equal(await l.check(r, guest(g)), undefined, 'first silence');
  now = 20_000;
  assert.equal(await l.check(r, guest(g)), undefined, 'silent for less than failAfterMs');
  g.silent = false;
  assert.equal(await l.check(r, guest(g)), undefined, 'answers again');
  g.silent = true;
  now = 40_000;
  assert.equal(await l.check(r, guest(g)), undefined, 'silent again: counted from here');
  now = 70_001;
  const v = await l.check(r, guest(g));
  assert.equal(v?.reason, 'silent');
  assert.deepEqual(v?.lost.map((x) => x.allocId), ['a1']);
  assert.match(v!.message, /guest agent not answering for 30 s: guest Health: deadline exceeded/);
});

test('a session that cannot be made counts as silence', async () => {
  let now = 0;
  const l = new GuestLiveness({ callTimeoutMs: 1000, failAfterMs: 10_000, now: () => now });
  const r = rec([{ allocId: 'a1', containerId: 'r-1', state: 'running' }]);
  const failing = async (): Promise<GuestSession> => {
    throw new Error('no guest agent channel');
  };
  assert.equal(await l.check(r, failing), undefined);
  now = 10_000;
  assert.equal((await l.check(r, failing))?.reason, 'silent');
});

test('an agent in a VM that is not running (paused for a migration\'s switchover) is not silent', async () => {
  let now = 0;
  const l = new GuestLiveness({ callTimeoutMs: 1000, failAfterMs: 10_000, now: () => now });
  const r = rec([{ allocId: 'a1', containerId: 'r-1', state: 'running' }]);
  const g = { instanceId: 'one', containers: ['r-1'], silent: true };
  let running = false;
  assert.equal(await l.check(r, guest(g), async () => running), undefined);
  now = 60_000;
  assert.equal(await l.check(r, guest(g), async () => running), undefined, 'paused for a minute: not lost');
  running = true;
  assert.equal(await l.check(r, guest(g), async () => running), undefined, 'running again: silence counted from here');
  now = 70_000;
  assert.equal((await l.check(r, guest(g), async () => running))?.reason, 'silent');
});
