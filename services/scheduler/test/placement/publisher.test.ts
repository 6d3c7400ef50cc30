import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import { asAppError } from '@edgenfv/contracts';
import { KvPublisher, getJson } from '../../src/placement/index.js';
import { natsFixture, type NatsFixture } from './nats-helpers.js';

let fx: NatsFixture;
let nc: NatsConnection;
before(async () => {
  fx = await natsFixture();
  nc = await fx.connect();
});
after(async () => {
  await fx.close();
});

const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

test('KvPublisher: the same compare-and-set semantics as nats.js KV create/update', async () => {
  const kv = await nc.jetstream().views.kv('pubtest', { history: 1 });
  const pub = new KvPublisher(nc);
  try {
    const r1 = await pub.cas('pubtest', 'a', enc({ v: 1 }), 0);
    assert.ok(r1 !== null && r1 > 0);
    assert.equal(await pub.cas('pubtest', 'a', enc({ v: 2 }), 0), null, 'create on an existing key loses');
    assert.equal(await pub.cas('pubtest', 'a', enc({ v: 2 }), r1 + 100), null, 'stale revision loses');
    const r2 = await pub.cas('pubtest', 'a', enc({ v: 2 }), r1);
    assert.ok(r2 !== null && r2 > r1);
    assert.deepEqual(await getJson(kv, 'a'), { value: { v: 2 }, revision: r2 });
    // concurrent CAS on one revision: exactly one wins
    const got = await Promise.all(Array.from({ length: 8 }, (_, i) => pub.cas('pubtest', 'a', enc({ v: 10 + i }), r2!)));
    assert.equal(got.filter((x) => x !== null).length, 1);
    // no stream answers (as while a cluster's stream leader is away): 503, transient like nats.js's own no-responders
    await assert.rejects(pub.cas('no_such_bucket', 'a', enc({}), 0), (e: unknown) => {
      assert.match(String((e as Error).message), /JetStream publish failed: 503/);
      assert.equal(asAppError(e).code, 'UNAVAILABLE');
      return true;
    });
  } finally {
    pub.close();
  }
});
