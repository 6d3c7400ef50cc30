/**
 * The agent's command timeout (`--command-timeout-ms`): the runner's default for commands that give none, the
 * caller's own kept; a real command past it is killed and reported; a bad flag value stops the agent naming it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CommandError, runCommand, withDefaultTimeout, type Runner } from '../src/exec.js';

test('withDefaultTimeout: the default for commands without one, the caller\'s own kept', async () => {
  const seen: Array<number | undefined> = [];
  const fake: Runner = async (_argv, opts) => {
    seen.push(opts?.timeoutMs);
    return { stdout: '', stderr: '' };
  };
  const run = withDefaultTimeout(fake, 1_800_000);
  await run(['ip', 'link']);
  await run(['crun', 'kill'], { timeoutMs: 10_000 });
  await run(['ip', '-batch', '-'], { input: 'link show\n' });
  assert.deepEqual(seen, [1_800_000, 10_000, 1_800_000]);
});

test('a real command past the default timeout is killed and reported as a CommandError', async () => {
  const run = withDefaultTimeout(runCommand, 300);
  const t0 = Date.now();
  await assert.rejects(run(['sleep', '5']), (err: unknown) => err instanceof CommandError && err.argv[0] === 'sleep');
  assert.ok(Date.now() - t0 < 4000, 'killed before sleep ended');
  assert.equal((await withDefaultTimeout(runCommand, 5000)(['echo', 'ok'])).stdout, 'ok\n');
});

test('--command-timeout-ms with a bad value: the agent exits 2 naming the flag', async () => {
  const main = fileURLToPath(new URL('../src/main.js', import.meta.url));
  for (const bad of ['5', 'soon', '-1']) {
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) =>
      execFile(process.execPath, [main, `--command-timeout-ms=${bad}`, '--port', 'socket:/nonexistent/agent.sock'], (err, _o, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stderr }),
      ),
    );
    assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
    assert.match(r.stderr, /--command-timeout-ms: must be a whole number of milliseconds/);
  }
});
