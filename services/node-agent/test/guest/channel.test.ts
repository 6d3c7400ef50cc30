import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { FrameType, encodeFrame, InvalidArgumentError } from '@edgenfv/contracts';
import { silentLogger } from '@edgenfv/telemetry';
import { HostChannel, AgentClient, connectAgent } from '../../src/guest/index.js';
import { startGuestProcess, type GuestProcess } from './guest-process.js';

const ns = `na-chan-${process.pid}`;
let dir: string;
let guest: GuestProcess;
const chardev = () => join(dir, 'agent.sock');

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'na-chan-'));
  execFileSync('ip', ['netns', 'add', ns]);
  execFileSync('ip', ['-n', ns, 'link', 'add', 'v0', 'address', '02:00:00:00:05:01', 'type', 'veth', 'peer', 'name', 'p0']);
  guest = await startGuestProcess({ chardevPath: chardev(), stateDir: join(dir, 'state'), netns: ns });
});
after(async () => {
  await guest?.stop();
  try {
    execFileSync('ip', ['netns', 'del', ns]);
  } catch {
    /* gone */
  }
  rmSync(dir, { recursive: true, force: true });
});

test('gRPC over the framed channel: health, version handshake, details, NICs, errors as AppError', async () => {
  const conn = await connectAgent({ chardevPath: chardev(), timeoutMs: 20_000, log: silentLogger() });
  try {
    assert.equal(conn.version.protocolMajor, 1);
    const h = await conn.client.health();
    assert.equal(h.status, 'SERVING');
    const [nic] = (await conn.client.updateInterfaces({ interfaces: [{ mac: '02:00:00:00:05:01', name: 'eth0', addresses: ['10.5.0.1/24'] }] })).interfaces;
    assert.equal(nic!.name, 'eth0');
    const d = await conn.client.guestDetails();
    assert.ok(d.nics.some((n) => n.name === 'eth0' && n.addresses.includes('10.5.0.1/24')));
    await assert.rejects(conn.client.updateRoutes({ routes: [{ dst: '10.9.0.0/16' }] }), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.equal(e.issues[0]!.field, 'routes[0]');
      return true;
    });
    // many calls in flight share the one port
    const all = await Promise.all(Array.from({ length: 40 }, () => conn.client.health()));
    assert.equal(all.length, 40);
  } finally {
    await conn.close();
  }
});

test('host reconnects: a dropped chardev connection mid-call, then a new session whose first call succeeds', async () => {
  const channel = new HostChannel({ chardevPath: chardev(), listenPath: join(dir, 'mux1.sock'), log: silentLogger() });
  await channel.start();
  const client = new AgentClient(`unix:${join(dir, 'mux1.sock')}`);
  try {
    await channel.waitReady();
    await client.health();
    const epoch1 = channel.sessionEpoch;
    // calls in flight while the chardev connection is cut
    const inflight = Promise.allSettled(Array.from({ length: 20 }, () => client.guestDetails()));
    channel.reconnect();
    await inflight;
    await channel.waitReady();
    await sleep(0);
    for (let i = 0; i < 3 && !channel.ready; i++) await channel.waitReady();
    assert.notEqual(channel.sessionEpoch, epoch1);
    const d = await client.waitReady({ timeoutMs: 20_000 });
    assert.equal(d.protocolMajor, 1);
    assert.equal((await client.health()).status, 'SERVING');
  } finally {
    client.close();
    await channel.close();
  }

  // a brand-new host (node agent restarted) after an abrupt close, with garbage and a stale session's frames on the
  // port first: the first call on the new session succeeds, no retry needed
  const raw = connect(chardev());
  raw.on('error', () => {});
  await new Promise<void>((r) => raw.once('connect', () => r()));
  raw.write(Buffer.concat([Buffer.from('junk\x00\xed\x9e'), encodeFrame(FrameType.HELLO, 424242, 0), encodeFrame(FrameType.OPEN, 424242, 1), encodeFrame(FrameType.DATA, 424242, 1, Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'))]));
  await sleep(200);
  raw.destroy();
  const conn = await connectAgent({ chardevPath: chardev(), listenPath: join(dir, 'mux2.sock'), timeoutMs: 20_000, log: silentLogger() });
  try {
    assert.equal((await conn.client.health({ timeoutMs: 10_000 })).status, 'SERVING');
    assert.ok(conn.channel.stats.sessions >= 1);
  } finally {
    await conn.close();
  }
});

test('an agent that is not there makes connectAgent fail with UNAVAILABLE and leave nothing behind', async () => {
  await assert.rejects(
    connectAgent({ chardevPath: join(dir, 'nobody.sock'), listenPath: join(dir, 'mux3.sock'), timeoutMs: 1500, log: silentLogger() }),
    (e: Error & { code?: string }) => e.code === 'UNAVAILABLE',
  );
  assert.throws(() => execFileSync('test', ['-e', join(dir, 'mux3.sock')]));
});

test('close() right after start() (no session yet) stops every retry and removes the listen socket', async () => {
  for (let i = 0; i < 5; i++) {
    const ch = new HostChannel({ chardevPath: chardev(), listenPath: join(dir, `mux-close-${i}.sock`), log: silentLogger() });
    await ch.start();
    if (i % 2 === 1) await sleep(i * 5);
    await ch.close();
    assert.equal(ch.ready, false);
    assert.throws(() => execFileSync('test', ['-e', join(dir, `mux-close-${i}.sock`)]));
  }
  // the agent is still fine for the next host
  const conn = await connectAgent({ chardevPath: chardev(), listenPath: join(dir, 'mux4.sock'), timeoutMs: 20_000, log: silentLogger() });
  try {
    assert.equal((await conn.client.health()).status, 'SERVING');
  } finally {
    await conn.close();
  }
});

test('host channels that come and go in overlapping bursts (a node agent restarting) never wedge the guest', async () => {
  // Several hosts at once on the one port: QEMU serves one connection and parks the others, a parked one may be
  // dead by the time it is served, and the guest's write to it never completed; the guest's writer used to wait for
  // that write forever, so no later host ever got a HELLO_ACK (seen as the flaky close() test above in CI).
  for (let round = 0; round < 10; round++) {
    await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        const ch = new HostChannel({ chardevPath: chardev(), listenPath: join(dir, `mux-burst-${i}.sock`), log: silentLogger() });
        await ch.start();
        await sleep((i * 7 + round * 3) % 15);
        await ch.close();
      }),
    );
  }
  // a wedged guest never answers a HELLO: the connect fails (UNAVAILABLE) after its timeout, generous for a loaded
  // machine (no duration is asserted: it failed once beside five other test files)
  const conn = await connectAgent({ chardevPath: chardev(), listenPath: join(dir, 'mux5.sock'), timeoutMs: 60_000, log: silentLogger() });
  try {
    assert.equal((await conn.client.health()).status, 'SERVING');
  } finally {
    await conn.close();
  }
});
