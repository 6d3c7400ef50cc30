/** KvFollower: a throwing entry handler skips that entry only; an ended watch is opened again after the last revision. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { KvEntry, QueuedIterator } from 'nats';
import { KvFollower } from '../../src/state/follow.js';

function iterator(entries: Partial<KvEntry>[]): QueuedIterator<KvEntry> {
  let stopped = false;
  return {
    async *[Symbol.asyncIterator]() {
      for (const e of entries) {
        if (stopped) return;
        yield e as KvEntry;
      }
    },
    stop: () => void (stopped = true),
  } as unknown as QueuedIterator<KvEntry>;
}

test('a bad entry is skipped and reported; an ended watch reopens from the next revision', async () => {
  const opened: (number | undefined)[] = [];
  const seen: string[] = [];
  const skipped: string[] = [];
  let restarts = 0;
  const batches = [
    [{ key: 'a', revision: 1 }, { key: 'bad', revision: 2 }, { key: 'b', revision: 3 }],
    [{ key: 'c', revision: 4 }],
  ];
  let running = true;
  const f = await KvFollower.start({
    bucket: 'test',
    open: async (from) => {
      opened.push(from);
      const b = batches.shift();
      if (!b) running = false;
      return iterator(b ?? []);
    },
    onEntry: (e) => {
      if (e.key === 'bad') throw new Error('malformed');
      seen.push(e.key);
    },
    running: () => running,
    report: { skipped: (_b, key) => skipped.push(key), restarted: () => restarts++ },
    retryMs: 1,
  });
  await f.done;
  assert.deepEqual(seen, ['a', 'b', 'c']);
  assert.deepEqual(skipped, ['bad']);
  assert.deepEqual(opened, [undefined, 4, 5]);
  assert.ok(restarts >= 1);
});
