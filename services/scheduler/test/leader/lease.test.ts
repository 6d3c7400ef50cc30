import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import { LeaderLease, openLeaderBucket, LEADER_KEY, type LeaseValue } from '../../src/leader/index.js';
import { getJson } from '../../src/placement/kv.js';
import { natsFixture, waitFor, type NatsFixture } from '../placement/nats-helpers.js';

let fx: NatsFixture;
before(async () => {
  fx = await natsFixture();
});
after(async () => {
  await fx.close();
});

const TTL = 1500;

interface Candidate {
  id: string;
  nc: NatsConnection;
  lease: LeaderLease;
  events: string[];
}

async function candidates(n: number, prefix: string): Promise<Candidate[]> {
  const out: Candidate[] = [];
  for (let i = 0; i < n; i++) {
    const nc = await fx.connect();
    const kv = await openLeaderBucket(nc.jetstream(), { ttlMs: TTL });
    const events: string[] = [];
    const id = `${prefix}${i}`;
    const lease = new LeaderLease(kv, {
      candidateId: id,
      ttlMs: TTL,
      onElected: (term) => void events.push(`elected:${term}`),
      onDeposed: (reason) => void events.push(`deposed:${reason}`),
    });
    out.push({ id, nc, lease, events });
  }
  await Promise.all(out.map((c) => c.lease.start()));
  return out;
}

/** Waits for a leader among `live`, checking on every poll that there are never two. */
function oneLeader(live: Candidate[], timeoutMs: number, not?: Candidate): Promise<Candidate> {
  return waitFor(
    'a single leader',
    () => {
      const leaders = live.filter((c) => c.lease.isLeader());
      assert.ok(leaders.length <= 1, `two leaders at once: ${leaders.map((c) => c.id).join(', ')}`);
      return leaders[0] === not ? undefined : leaders[0];
    },
    timeoutMs,
  );
}

test('3 candidates: one leader; kill its connection -> another takes over within a few seconds, with a higher term', async () => {
  const cs = await candidates(3, 'k');
  try {
    const first = await oneLeader(cs, 10_000);
    const term1 = first.lease.term();
    assert.ok(term1 > 0);
    const kv = await openLeaderBucket((await fx.connect()).jetstream(), { ttlMs: TTL });
    assert.equal((await getJson<LeaseValue>(kv, LEADER_KEY))!.value.holder, first.id);
    // the leader's process "dies": its connection is gone, it can neither renew nor step down
    await first.nc.close();
    const rest = cs.filter((c) => c !== first);
    const second = await oneLeader([...rest, first], 3 * TTL + 5000, first);
    assert.notEqual(second.id, first.id);
    assert.ok(second.lease.term() > term1, 'terms only grow');
    assert.equal(first.lease.isLeader(), false);
    assert.ok(first.events.some((e) => e.startsWith('deposed:')), 'the old leader deposed itself');
    assert.deepEqual(second.events, [`elected:${second.lease.term()}`]);
    assert.equal((await getJson<LeaseValue>(kv, LEADER_KEY))!.value.holder, second.id);
  } finally {
    await Promise.all(cs.map((c) => c.lease.stop().catch(() => undefined)));
  }
});

test('a leader that stops steps down and another takes over; assertLeader guards leader-only writes', async () => {
  const cs = await candidates(3, 's');
  try {
    const first = await oneLeader(cs, 10_000);
    assert.equal(first.lease.assertLeader(), first.lease.term());
    const follower = cs.find((c) => c !== first)!;
    assert.throws(() => follower.lease.assertLeader(), { code: 'UNAVAILABLE' });
    await waitFor('followers know who leads', () => follower.lease.leader()?.holder === first.id || undefined);
    await first.lease.stop();
    assert.equal(first.lease.isLeader(), false);
    const second = await oneLeader(cs.filter((c) => c !== first), 3 * TTL + 5000);
    assert.notEqual(second.id, first.id);
    assert.deepEqual(first.events, [`elected:${first.events[0]!.slice(8)}`, 'deposed:stopped']);
  } finally {
    await Promise.all(cs.map((c) => c.lease.stop().catch(() => undefined)));
  }
});
