import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { AGENT_PROTO_LOADER_OPTIONS, agentProtoPath, ConflictError, NotFoundError, UnavailableError, GRPC_STATUS } from '@edgenfv/contracts';
import { AgentClient } from '../../src/guest/index.js';

/** A stand-in agent on a unix socket that answers with a given protocol version (an old or future agent build). */
async function fakeAgent(dir: string, major: number): Promise<{ target: string; close(): Promise<void> }> {
  const def = protoLoader.loadSync(agentProtoPath(), { ...AGENT_PROTO_LOADER_OPTIONS });
  const pkg = grpc.loadPackageDefinition(def) as any;
  const server = new grpc.Server();
  server.addService(pkg.edgenfv.agent.v1.AgentService.service, {
    Health: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { status: 'SERVING', agentVersion: 'x', protocolMajor: major, protocolMinor: 0 }),
    Version: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { agentVersion: 'x', protocolMajor: major, protocolMinor: 3, kernelRelease: 'k', features: [] }),
    StartContainer: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => {
      const md = new grpc.Metadata();
      md.set('edgenfv-error', JSON.stringify({ code: 'NOT_FOUND', message: 'no container "x"' }));
      cb({ code: GRPC_STATUS.NOT_FOUND, details: 'no container "x"', metadata: md });
    },
  });
  const sock = join(dir, `agent-${major}.sock`);
  await new Promise<void>((res, rej) => server.bindAsync(`unix://${sock}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())));
  return { target: `unix:${sock}`, close: () => new Promise<void>((r) => server.tryShutdown(() => r())) };
}

test('the handshake refuses an agent with another protocol major; a newer minor is fine', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'na-cli-'));
  const future = await fakeAgent(dir, 2);
  const same = await fakeAgent(dir, 1);
  const c2 = new AgentClient(future.target);
  const c1 = new AgentClient(same.target);
  try {
    await assert.rejects(c2.waitReady({ timeoutMs: 10_000 }), (e: unknown) => e instanceof ConflictError && /incompatible/.test(e.message));
    const v = await c1.waitReady({ timeoutMs: 10_000 });
    assert.equal(v.protocolMinor, 3);
    await assert.rejects(c1.startContainer('x'), NotFoundError);
    await assert.rejects(c1.guestDetails(), (e: unknown) => (e as { code?: string }).code === 'INTERNAL'); // UNIMPLEMENTED here
  } finally {
    c1.close();
    c2.close();
    await future.close();
    await same.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('no agent: waitReady gives up with UNAVAILABLE after its timeout', async () => {
  const c = new AgentClient('unix:/nonexistent/agent.sock');
  try {
    await assert.rejects(c.waitReady({ timeoutMs: 800 }), UnavailableError);
  } finally {
    c.close();
  }
});
