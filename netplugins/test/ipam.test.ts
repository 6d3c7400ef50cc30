import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { connect, type NatsConnection } from 'nats';
import { startNatsServer, type NatsServerHandle } from '@edgenfv/nats-launcher';
import { InvalidArgumentError, UnschedulableError } from '@edgenfv/contracts';
import { Ipam, IPAM_BUCKET } from '../src/ipam.js';
import { parseNetworks, capacity } from '../src/networks.js';

let server: NatsServerHandle;
let nc: NatsConnection;
const store = mkdtempSync(join(tmpdir(), 'np-ipam-'));

before(async () => {
  server = await startNatsServer({ storeDir: store });
  nc = await connect({ servers: server.url });
});
after(async () => {
  await nc?.close();
  await server?.stop();
  rmSync(store, { recursive: true, force: true });
});

test('parseNetworks: table of bad configs, every issue named', () => {
  const cases: Array<[unknown, RegExp]> = [
    [{}, /networks: must be an array/],
    [[{ name: 'Bad_Name', cidr: '10.0.0.0/24' }], /networks\[0\]\.name: must be a DNS label/],
    [[{ name: 'a', cidr: '10.0.0.1/24' }], /networks\[0\]\.cidr: has host bits set: did you mean 10\.0\.0\.0\/24/],
    [[{ name: 'a', cidr: '10.0.0.0/33' }], /networks\[0\]\.cidr: must be an IPv4 or IPv6 CIDR/],
    [[{ name: 'a', cidr: '10.0.0.0/24', gateway: '10.0.1.1' }], /gateway: 10\.0\.1\.1 is not inside 10\.0\.0\.0\/24/],
    [[{ name: 'a', cidr: '10.0.0.0/24', vlan: 4095 }], /networks\[0\]\.vlan: must be in 1\.\.4094 \(got 4095\)/],
    [[{ name: 'a', cidr: '10.0.0.0/24', range: { start: '10.0.0.9', end: '10.0.0.2' } }], /range: start 10\.0\.0\.9 is after end/],
    [[{ name: 'a', cidr: 'fd00::/64', gateway: '10.0.0.1' }], /gateway: 10\.0\.0\.1 is not inside fd00::\/64/],
    [[{ name: 'a', cidr: '10.0.0.0/24' }, { name: 'a', cidr: '10.0.1.0/24' }], /networks\[1\]\.name: duplicate network name a/],
    [[{ name: 'a', cidr: '10.0.0.0/24', colour: 1 }], /networks\[0\]\.colour: unknown field/],
  ];
  for (const [raw, re] of cases) assert.throws(() => parseNetworks(raw), (e: unknown) => e instanceof InvalidArgumentError && re.test(e.message), `${JSON.stringify(raw)}`);
  // several issues in one error
  assert.throws(() => parseNetworks([{ name: 'a', cidr: 'x', vlan: 0, bridge: 'a b' }]), /vlan: must be in 1..4094 \(got 0\); networks\[0\]\.bridge: must match .*; networks\[0\]\.cidr: must be/);
  const [n] = parseNetworks([{ name: 'm', cidr: '10.1.0.0/22', gateway: '10.1.0.1' }]);
  assert.equal(capacity(n), 1021n);
});

test('allocate: distinct addresses, idempotent per owner, gateway never handed out, release and gc', async () => {
  const ipam = await Ipam.open(nc, [{ name: 'small', cidr: '10.2.0.0/29', gateway: '10.2.0.1' }], { bucket: 'ipam_t1' });
  const a = await ipam.allocate('small', 'node1.alloc1', { nodeId: 'node1', epoch: 3 });
  assert.deepEqual(await ipam.allocate('small', 'node1.alloc1'), a);
  assert.equal(a.gateway, '10.2.0.1');
  assert.match(a.cidr, /^10\.2\.0\.[2-6]\/29$/);
  const got = new Set([a.address]);
  for (let i = 2; i <= 5; i++) got.add((await ipam.allocate('small', `node1.alloc${i}`)).address);
  assert.equal(got.size, 5);
  assert.ok(!got.has('10.2.0.1') && !got.has('10.2.0.0') && !got.has('10.2.0.7'));
  await assert.rejects(ipam.allocate('small', 'node1.alloc6'), (e: unknown) => e instanceof UnschedulableError && /network small: no free address left in 10\.2\.0\.0\/29/.test(e.message));
  // a second instance (another scheduler replica / restart) sees the same leases
  const other = await Ipam.open(nc, ipam.networks(), { bucket: 'ipam_t1' });
  assert.deepEqual(await other.allocate('small', 'node1.alloc1'), a);
  await assert.rejects(other.allocate('small', 'x.y'), /no free address/);
  assert.equal((await ipam.release('node1.alloc1')).length, 1);
  assert.deepEqual(await ipam.release('node1.alloc1'), []);
  const again = await other.allocate('small', 'x.y');
  assert.equal(again.address, a.address);
  // gc: only live owners keep their leases
  const freed = await ipam.gc(new Set(['node1.alloc2', 'x.y']));
  assert.equal(freed.length, 3);
  assert.deepEqual((await ipam.leases('small')).map((l) => l.owner).sort(), ['node1.alloc2', 'x.y']);
  await assert.rejects(ipam.allocate('nope', 'o'), /network "nope" is not configured/);
  await assert.rejects(ipam.allocate('small', 'bad owner'), /owner: must match/);
  await ipam.gc(new Set());
  assert.deepEqual(await ipam.leases(), []);
});

test('IPv6 and fixed addresses', async () => {
  const ipam = await Ipam.open(nc, [{ name: 'v6', cidr: 'fd00:10::/64', gateway: 'fd00:10::1' }, { name: 'v6s', cidr: 'fd00:20::/126' }], { bucket: 'ipam_t2' });
  const a = await ipam.allocate('v6', 'o1');
  assert.match(a.cidr, /^fd00:10::[0-9a-f:]+\/64$/);
  assert.notEqual(a.address, 'fd00:10::1');
  const b = await ipam.allocate('v6', 'o2', { address: 'fd00:10::99' });
  assert.equal(b.address, 'fd00:10::99');
  await assert.rejects(ipam.allocate('v6', 'o3', { address: 'fd00:10::99' }), /leased to someone else/);
  await assert.rejects(ipam.allocate('v6', 'o4', { address: '10.0.0.1' }), /address: 10\.0\.0\.1 is not an address network v6 hands out/);
  const small = new Set<string>();
  for (let i = 0; i < 3; i++) small.add((await ipam.allocate('v6s', `s${i}`)).address);
  assert.deepEqual([...small].sort(), ['fd00:20::1', 'fd00:20::2', 'fd00:20::3']);
  await assert.rejects(ipam.allocate('v6s', 's9'), /no free address left/);
  await ipam.gc(new Set());
  assert.deepEqual(await ipam.leases(), []);
});

test('leases survive a NATS restart (node loss / reboot): nothing is handed out twice afterwards', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'np-ipam-restart-'));
  let srv = await startNatsServer({ storeDir: dir });
  try {
    let c = await connect({ servers: srv.url });
    const nets = [{ name: 'r', cidr: '10.3.0.0/29' }];
    const before = await Ipam.open(c, nets);
    const held = [];
    for (let i = 0; i < 4; i++) held.push((await before.allocate('r', `node1.a${i}`, { nodeId: 'node1', epoch: 1 })).address);
    await c.close();
    await srv.stop();
    srv = await startNatsServer({ storeDir: dir });
    c = await connect({ servers: srv.url });
    const afterRestart = await Ipam.open(c, nets);
    assert.deepEqual((await afterRestart.leases('r')).map((l) => l.address).sort(), [...held].sort());
    const fresh = await afterRestart.allocate('r', 'node2.b0', { nodeId: 'node2', epoch: 1 });
    assert.ok(!held.includes(fresh.address));
    assert.ok(!held.includes((await afterRestart.allocate('r', 'node2.b1')).address));
    await assert.rejects(afterRestart.allocate('r', 'node2.b2'), /no free address/); // 6 usable: 4 + 2
    // node1 was fenced and its allocations deleted: only then does gc free its leases
    assert.equal((await afterRestart.gc((o) => !o.startsWith('node1.'))).length, 4);
    await afterRestart.gc(new Set());
    await c.close();
  } finally {
    await srv.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('1,000 concurrent allocations from 3 processes on one /22 give 1,000 distinct addresses', async () => {
  const nets = [{ name: 'big', cidr: '10.8.0.0/22', gateway: '10.8.0.1' }];
  const worker = fileURLToPath(new URL('./ipam-worker.js', import.meta.url));
  await Ipam.open(nc, nets); // create the bucket once, up front
  const run = (prefix: string, count: number) =>
    new Promise<string[]>((resolve, reject) => {
      const p = spawn(process.execPath, [worker, server.url, JSON.stringify(nets), prefix, String(count)], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      p.stdout.on('data', (b: Buffer) => (out += b.toString()));
      p.on('error', reject);
      p.on('close', (code) => (code === 0 ? resolve(JSON.parse(out) as string[]) : reject(new Error(`worker ${prefix} exited ${code}`))));
    });
  const results = await Promise.all([run('p1', 334), run('p2', 333), run('p3', 333)]);
  const all = results.flat();
  assert.equal(all.length, 1000);
  assert.equal(new Set(all).size, 1000);
  const ipam = await Ipam.open(nc, nets);
  assert.equal((await ipam.leases('big')).length, 1000);
  // 1,021 usable addresses: 21 more fit, then the pool is exhausted with a clear error
  for (let i = 0; i < 21; i++) await ipam.allocate('big', `extra.e${i}`);
  await assert.rejects(ipam.allocate('big', 'extra.last'), /network big: no free address left in 10\.8\.0\.0\/22 \(range 10\.8\.0\.1-10\.8\.0\.254|network big: no free address left in 10\.8\.0\.0\/22/);
  await ipam.gc(new Set());
  assert.deepEqual(await ipam.leases(), []);
  assert.equal(IPAM_BUCKET, 'edgenfv_ipam');
});
