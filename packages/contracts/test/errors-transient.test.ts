/** Transient NATS failures are UNAVAILABLE (retryable), not INTERNAL; error bodies are bounded whatever they echo. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { asAppError, boundedErrorBody, ERROR_BODY_MAX_BYTES, InvalidArgumentError, isTransientNatsError } from '../src/index.js';

class NatsError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
    this.name = 'NatsError';
  }
}

test('timeout, no responders and a closed connection are UNAVAILABLE and retryable', () => {
  for (const [msg, code] of [['TIMEOUT', 'TIMEOUT'], ['503', '503'], ['CONNECTION_CLOSED', 'CONNECTION_CLOSED'], ['DISCONNECT', 'DISCONNECT']] as const) {
    const e = asAppError(new NatsError(msg, code));
    assert.equal(e.code, 'UNAVAILABLE', code);
    assert.equal(e.retryable, true, code);
    assert.ok(isTransientNatsError(new NatsError(msg, code)));
  }
  const js = asAppError(new NatsError('JetStream system temporarily unavailable', '10008'));
  assert.equal(js.code, 'UNAVAILABLE');
});

test('other errors stay INTERNAL and are not retried', () => {
  const e = asAppError(new TypeError('x is undefined'));
  assert.equal(e.code, 'INTERNAL');
  assert.equal(e.retryable, false);
  assert.equal(asAppError(new NatsError('wrong last sequence: 4', '400')).code, 'INTERNAL');
});

test('an error body is bounded: long fields cut, at most 20 issues, details dropped past the limit', () => {
  const issues = Array.from({ length: 500 }, (_, i) => ({ field: `f${i}`.padEnd(10_000, 'x'), message: 'is not allowed' }));
  const b = boundedErrorBody(new InvalidArgumentError(issues).toBody());
  assert.equal(b.code, 'INVALID_ARGUMENT');
  const d = b.details as { issues: { field: string }[]; moreIssues: number };
  assert.equal(d.issues.length, 20);
  assert.equal(d.moreIssues, 480);
  assert.ok(JSON.stringify(b).length < ERROR_BODY_MAX_BYTES + 2048, `${JSON.stringify(b).length}`);
  const big = boundedErrorBody({ code: 'INTERNAL', message: 'm', details: { blob: 'y'.repeat(100_000) } });
  assert.deepEqual(big.details, { truncated: true });
});
