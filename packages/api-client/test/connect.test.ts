import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError } from '@edgenfv/contracts';
import { connectFilePath, edgenfvHome, loadConnectInfo, natsOptions } from '../src/index.js';

const files = (map: Record<string, string>) => (p: string): string => {
  const v = map[p];
  if (v === undefined) throw Object.assign(new Error(`ENOENT: ${p}`), { code: 'ENOENT' });
  return v;
};

test('EDGENFV_HOME defaults to ./.edgenfv', () => {
  assert.equal(edgenfvHome({}, '/w'), '/w/.edgenfv');
  assert.equal(edgenfvHome({ EDGENFV_HOME: '/srv/e' }, '/w'), '/srv/e');
  assert.equal(connectFilePath({ EDGENFV_HOME: 'rel' }, '/w'), '/w/rel/connect.json');
});

test('connect.json is read; flags override it', () => {
  const read = files({ '/w/.edgenfv/connect.json': JSON.stringify({ servers: ['nats://127.0.0.1:4222'], user: 'op', pass: 'pw', dashboardUrl: 'http://127.0.0.1:8080/', extra: 1 }) });
  const info = loadConnectInfo({}, {}, '/w', read);
  assert.deepEqual(info, { servers: ['nats://127.0.0.1:4222'], user: 'op', pass: 'pw', dashboardUrl: 'http://127.0.0.1:8080/', source: '/w/.edgenfv/connect.json' });
  const over = loadConnectInfo({ server: 'nats://a:1, nats://b:2', token: 't0k' }, {}, '/w', read);
  assert.deepEqual(over.servers, ['nats://a:1', 'nats://b:2']);
  assert.equal(over.token, 't0k');
  assert.equal(over.user, 'op');
  assert.deepEqual(natsOptions(over, { name: 'x' }), { servers: ['nats://a:1', 'nats://b:2'], name: 'x', maxReconnectAttempts: 0, user: 'op', pass: 'pw', token: 't0k' });
});

test('no file: --server is needed, and the error says where the file was looked for', () => {
  assert.deepEqual(loadConnectInfo({ server: 'nats://h:4' }, {}, '/w', files({})).servers, ['nats://h:4']);
  assert.throws(() => loadConnectInfo({}, { EDGENFV_HOME: '/nowhere' }, '/w', files({})), (err: unknown) => {
    assert.ok(err instanceof InvalidArgumentError);
    assert.equal(err.issues[0]!.field, '--server');
    assert.match(err.message, /no \/nowhere\/connect\.json/);
    return true;
  });
});

test('a broken connect.json is refused, naming the file and the key', () => {
  const p = '/w/.edgenfv/connect.json';
  assert.throws(() => loadConnectInfo({}, {}, '/w', files({ [p]: '{' })), /connect\.json: not JSON/);
  assert.throws(() => loadConnectInfo({}, {}, '/w', files({ [p]: '{"servers":[],"user":3}' })), (err: unknown) => {
    assert.ok(err instanceof InvalidArgumentError);
    assert.deepEqual(err.issues.map((i) => i.field), [`${p}: servers`, `${p}: user`]);
    return true;
  });
});
