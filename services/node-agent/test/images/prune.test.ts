/**
 * The image cache's pruning against a real registry: past `images.cacheMaxBytes`, pulled images no replica uses are
 * removed least recently used first, with the blobs no kept image shares; an image in use, or used in the last
 * minute, is never removed, nor a blob it holds.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config.js';
import { ImageStore } from '../../src/images/store.js';
import { makeBusyboxLayout, pushLayout, startRegistry, type TestRegistry } from '../../src/testing/registry.js';

let dir: string;
let reg: TestRegistry;
const digests: Record<string, string> = {};
let clock = 0;
const MIN = 60_000;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'na-prune-'));
  reg = await startRegistry(join(dir, 'reg'));
  // a and b share their layer (same files, another command); c has its own
  const images = { a: ['same', 'echo a'], b: ['same', 'echo b'], c: ['other', 'echo c'] } as const;
  for (const [name, [files, cmd]] of Object.entries(images)) {
    const { layout } = makeBusyboxLayout(join(dir, `img-${name}`), '1', { '/etc/which': `${files}\n` }, ['/bin/sh', '-c', cmd]);
    digests[name] = pushLayout(layout, '1', reg.host, `acme/${name}`);
  }
});
after(async () => {
  await reg?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const cache = (): string => join(dir, 'state', 'images');
const store = (cacheMaxBytes: number, inUse: string[] = []): ImageStore =>
  new ImageStore(parseConfig({ stateDir: join(dir, 'state'), registries: [{ host: reg.host, plainHttp: true }], images: { cacheMaxBytes } }), undefined, {
    inUse: () => inUse,
    now: () => clock,
  });
const layouts = (): string[] => readdirSync(join(cache(), 'layouts')).map((h) => `sha256:${h}`).sort();
const blobs = (): Set<string> => new Set(readdirSync(join(cache(), 'blobs', 'sha256')));
const heldBy = (digest: string): string[] => readdirSync(join(cache(), 'layouts', digest.slice(7), 'blobs', 'sha256'));

test('LRU by last use; in-use and recently used images stay; shared blobs stay with the image kept', async () => {
  const big = store(Number.MAX_SAFE_INTEGER);
  for (const name of ['a', 'b', 'c']) {
    clock += 10 * MIN;
    assert.equal((await big.resolve(`${reg.host}/acme/${name}:1`)).digest, digests[name]);
  }
  const all = await big.prune();
  assert.deepEqual(all.removedImages, [], 'under the limit: nothing removed');
  assert.deepEqual(layouts(), [digests.a, digests.b, digests.c].sort());
  const sharedLayer = heldBy(digests.a!).filter((h) => heldBy(digests.b!).includes(h));
  assert.equal(sharedLayer.length, 1, 'a and b share one blob (the layer)');

  // one byte too many: the least recently used image nothing uses goes (a is older, but in use)
  clock += 10 * MIN;
  const r1 = await store(all.bytesBefore - 1, [digests.a!]).prune();
  assert.deepEqual(r1.removedImages, [digests.b]);
  assert.ok(r1.bytesAfter < all.bytesBefore - 1);
  assert.deepEqual(layouts(), [digests.a, digests.c].sort());
  for (const h of heldBy(digests.a!)) assert.ok(blobs().has(h), 'every blob of the image in use is kept, also the one b shared');
  assert.equal(existsSync(join(cache(), 'disks', `${digests.b!.slice(7)}.json`)), false, "b's packed disk went with it");

  // b pulled again is now the most recent: with c unused and older, c goes
  clock += 10 * MIN;
  const s = store(all.bytesBefore - 1, [digests.a!]);
  await s.resolve(`${reg.host}/acme/b:1`); // prunes after the pull
  assert.deepEqual(layouts(), [digests.a, digests.b].sort());

  // a limit of 0: everything goes but the image in use and the one used less than a minute ago
  clock += 30_000;
  const r0 = await store(0, [digests.a!]).prune();
  assert.deepEqual(r0.removedImages, [], 'b was used 30 s ago');
  clock += 10 * MIN;
  const rz = await store(0, [digests.a!]).prune();
  assert.deepEqual(rz.removedImages, [digests.b]);
  assert.deepEqual(layouts(), [digests.a]);
  assert.deepEqual([...blobs()].sort(), heldBy(digests.a!).sort(), 'exactly the blobs of the image in use are left');
  assert.ok(rz.bytesAfter > 0);
});
