import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import {
  encodeFrame,
  encodeData,
  FrameDecoder,
  FrameType,
  FRAME_MAX_PAYLOAD,
  agentProtoPath,
  errorCodeToGrpcStatus,
  grpcStatusToErrorCode,
  ERROR_CODES,
} from '../src/index.js';

test('frames round-trip, also when fed one byte at a time', () => {
  const frames = [
    encodeFrame(FrameType.HELLO, 7, 0),
    encodeFrame(FrameType.DATA, 7, 3, Buffer.from('hello')),
    encodeFrame(FrameType.CLOSE, 7, 3),
  ];
  const all = Buffer.concat(frames);
  const d = new FrameDecoder();
  const got = [];
  for (let i = 0; i < all.length; i++) got.push(...d.push(all.subarray(i, i + 1)));
  assert.deepEqual(
    got.map((f) => [f.type, f.epoch, f.stream, f.payload.toString()]),
    [
      [FrameType.HELLO, 7, 0, ''],
      [FrameType.DATA, 7, 3, 'hello'],
      [FrameType.CLOSE, 7, 3, ''],
    ],
  );
  assert.equal(d.skippedBytes, 0);
});

test('the decoder skips garbage and torn frames up to the next valid header', () => {
  const good = encodeFrame(FrameType.DATA, 9, 1, Buffer.from('ok'));
  const torn = encodeFrame(FrameType.DATA, 8, 1, Buffer.from('stale payload')).subarray(0, 10);
  const noise = Buffer.from('random bytes \xed\x9e more');
  const d = new FrameDecoder();
  const got = d.push(Buffer.concat([noise, torn, good]));
  assert.equal(got.length, 1);
  assert.equal(got[0]!.epoch, 9);
  assert.equal(got[0]!.payload.toString(), 'ok');
  assert.ok(d.skippedBytes >= noise.length + torn.length);
});

test('large writes are split into frames of at most FRAME_MAX_PAYLOAD', () => {
  const data = Buffer.alloc(FRAME_MAX_PAYLOAD * 2 + 5, 1);
  const frames = encodeData(1, 1, data);
  assert.equal(frames.length, 3);
  const d = new FrameDecoder();
  const got = d.push(Buffer.concat(frames));
  assert.equal(Buffer.concat(got.map((f) => f.payload)).length, data.length);
  assert.throws(() => encodeFrame(FrameType.DATA, 1, 1, Buffer.alloc(FRAME_MAX_PAYLOAD + 1)), /payload/);
});

test('agent.proto is found next to the contracts package and names the service', () => {
  const p = agentProtoPath({});
  assert.ok(existsSync(p), p);
  assert.match(readFileSync(p, 'utf8'), /service AgentService/);
  assert.equal(agentProtoPath({ EDGENFV_AGENT_PROTO: '/x/agent.proto' }), '/x/agent.proto');
});

test('every error code maps to a gRPC status and back to itself or a close kin', () => {
  for (const code of ERROR_CODES) {
    const back = grpcStatusToErrorCode(errorCodeToGrpcStatus(code));
    if (code === 'UNSCHEDULABLE') assert.equal(back, 'QUOTA_EXCEEDED');
    else assert.equal(back, code);
  }
});
