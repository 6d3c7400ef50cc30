import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { DeviceLocks } from '../src/lock.js';

const dir = mkdtempSync(join(tmpdir(), 'np-lock-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('one device: callers run one at a time, in order; other devices do not wait', async () => {
  const locks = new DeviceLocks(join(dir, 'a'));
  const events: string[] = [];
  const slow = (name: string, ms: number) => locks.with('0000:03:10.0', async () => {
    events.push(`${name}+`);
    await new Promise((r) => setTimeout(r, ms));
    events.push(`${name}-`);
  });
  const other = locks.with('0000:03:10.2', async () => void events.push('other'));
  await Promise.all([slow('a', 30), slow('b', 1), other]);
  assert.deepEqual(events.filter((e) => e !== 'other'), ['a+', 'a-', 'b+', 'b-']);
  assert.ok(events.indexOf('other') < events.indexOf('a-'), 'another device is not held up');
  assert.deepEqual(readdirSync(join(dir, 'a')), []);
});

test('a lock file left by a dead process is taken over', async () => {
  const d = join(dir, 'b');
  mkdirSync(d, { recursive: true });
  const dead = spawn(process.execPath, ['-e', '0']);
  const pid = await new Promise<number>((r) => dead.on('exit', () => r(dead.pid!)));
  writeFileSync(join(d, 'tap-x.lock'), String(pid));
  const locks = new DeviceLocks(d, 2000);
  assert.equal(await locks.with('tap-x', async () => 'ran'), 'ran');
  assert.deepEqual(readdirSync(d), []);
});

test('a lock held by a live process makes others wait, then time out clearly', async () => {
  const d = join(dir, 'c');
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, 'vf.lock'), String(process.ppid)); // alive: our parent
  const locks = new DeviceLocks(d, 100);
  await assert.rejects(locks.with('vf', async () => 'never'), /device lock .*vf\.lock held by pid \d+ for more than 100 ms/);
  rmSync(join(d, 'vf.lock'));
});

test('two processes: ADD-like critical sections on one device never overlap', async () => {
  const d = join(dir, 'd');
  const log = join(dir, 'd.log');
  const script = `
    import { DeviceLocks } from ${JSON.stringify(new URL('../src/lock.js', import.meta.url).href)};
    import { appendFileSync } from 'node:fs';
    const locks = new DeviceLocks(${JSON.stringify(d)});
    for (let i = 0; i < 15; i++) await locks.with('dev', async () => {
      appendFileSync(${JSON.stringify(log)}, '+');
      await new Promise((r) => setTimeout(r, 2));
      appendFileSync(${JSON.stringify(log)}, '-');
    });`;
  const run = () => new Promise<number | null>((r) => spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'inherit' }).on('exit', r));
  assert.deepEqual(await Promise.all([run(), run()]), [0, 0]);
  const { readFileSync } = await import('node:fs');
  assert.equal(readFileSync(log, 'utf8'), '+-'.repeat(30));
});
