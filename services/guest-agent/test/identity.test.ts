/**
 * Reidentify after a snapshot restore (identity.ts): the host's entropy goes to the reseed helper on stdin with the
 * host's time, the new instance id comes from the kernel RNG read after it, bad input changes nothing, and an image
 * without the helper refuses (a restored VM that cannot reseed must not be used). The helper itself runs in a VM
 * only (node-agent's snapshot-boot VM test): on a host it would set the host's clock.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Identity, uuidFromBytes } from '../src/identity.js';
import type { Runner } from '../src/exec.js';

function setup(opts: { helper?: boolean } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'identity-'));
  const urandom = join(dir, 'urandom');
  writeFileSync(urandom, Buffer.from('00112233445566778899aabbccddeeff', 'hex'));
  const calls: { argv: readonly string[]; input: Buffer }[] = [];
  const run: Runner = async (argv, o) => {
    calls.push({ argv, input: Buffer.from(o?.input ?? '') });
    return { stdout: '', stderr: '' };
  };
  const id = new Identity('template-id', { run, urandom, helper: '/opt/reseed', exists: (p) => opts.helper !== false && p === '/opt/reseed' });
  return { id, calls, done: () => rmSync(dir, { recursive: true, force: true }) };
}

test('reidentify: the entropy on the helper\'s stdin with the time, a new id from the reseeded RNG', async () => {
  const s = setup();
  try {
    const entropy = Buffer.alloc(64, 7);
    const res = await s.id.reidentify({ entropy, unixTimeMs: 1_764_633_600_123 });
    assert.deepEqual(s.calls.map((c) => c.argv), [['/opt/reseed', '1764633600123']]);
    assert.deepEqual(s.calls[0]!.input, entropy);
    assert.equal(res.previousInstanceId, 'template-id');
    assert.equal(res.instanceId, uuidFromBytes(Buffer.from('00112233445566778899aabbccddeeff', 'hex')));
    assert.match(res.instanceId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(s.id.instanceId, res.instanceId);
  } finally {
    s.done();
  }
});

test('reidentify: too little entropy or no time is refused naming the field, nothing run, the id kept', async () => {
  const s = setup();
  try {
    await assert.rejects(s.id.reidentify({ entropy: Buffer.alloc(8), unixTimeMs: 1 }), (e: Error & { details?: unknown }) => /entropy/.test(JSON.stringify(e.details ?? e.message)));
    await assert.rejects(s.id.reidentify({ entropy: Buffer.alloc(32), unixTimeMs: 0 }), (e: Error & { details?: unknown }) => /unixTimeMs/.test(JSON.stringify(e.details ?? e.message)));
    assert.equal(s.calls.length, 0);
    assert.equal(s.id.instanceId, 'template-id');
  } finally {
    s.done();
  }
});

test('reidentify: an image without the reseed helper refuses (CONFLICT), the id kept', async () => {
  const s = setup({ helper: false });
  try {
    await assert.rejects(s.id.reidentify({ entropy: Buffer.alloc(32), unixTimeMs: Date.now() }), (e: Error & { code?: string }) => e.code === 'CONFLICT' && /cannot be reseeded/.test(e.message));
    assert.equal(s.calls.length, 0);
    assert.equal(s.id.instanceId, 'template-id');
  } finally {
    s.done();
  }
});
