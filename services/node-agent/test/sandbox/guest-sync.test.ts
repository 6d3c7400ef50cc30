/**
 * GuestSync.startReplica against a stand-in guest whose calls fail or answer late: the container's creation runs
 * while the guest configures the NICs, and its failure must reach the caller, never the process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { silentLogger } from '@edgenfv/telemetry';
import { GuestSync } from '../../src/sandbox/guest-sync.js';
import type { GuestPort, GuestSession } from '../../src/sandbox/ports.js';
import type { ReplicaRecord, SandboxRecord } from '../../src/sandbox/records.js';
import type { VmHandle } from '../../src/hypervisor/types.js';
import { RecordingGuest } from '../helpers/recording-guest.js';

test('a CreateContainer that fails while UpdateInterfaces still runs fails the replica start, not the process', async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  try {
    const base = await new RecordingGuest().connect('/run/agent.sock');
    const session: GuestSession = {
      ...base,
      createContainer: async () => {
        throw new Error('guest agent: Connection dropped');
      },
      // the NICs take longer than the failed creation (a nested guest loading a VF driver)
      updateInterfaces: async (nics, hotplugTimeoutMs) => {
        await new Promise((r) => setTimeout(r, 300));
        return base.updateInterfaces(nics, hotplugTimeoutMs);
      },
    };
    const port: GuestPort = { connect: async () => session };
    const vm = { sandboxId: 'sb-1', agentSocket: '/run/agent.sock' } as unknown as VmHandle;
    const sync = new GuestSync(port, () => vm, silentLogger());
    const replica = {
      containerId: 'c-1',
      state: 'starting',
      attachments: {},
      guestIfNames: {},
      alloc: { image: { ref: 'builtin:busybox' }, resources: { vcpus: 1, memoryMiB: 64 } },
    } as unknown as ReplicaRecord;
    const rec = { sandboxId: 'sb-1', replicas: { 'a-1': replica } } as unknown as SandboxRecord;
    await assert.rejects(sync.startReplica(rec, replica), /Connection dropped/);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(unhandled, [], 'no unhandled rejection');
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});
