import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError, UnavailableError, parseMacAddress, parsePciAddress } from '@edgenfv/contracts';
import { silentLogger } from '@edgenfv/telemetry';
import {
  CloudHypervisorDriver,
  FirecrackerDriver,
  buildCloudHypervisorArgs,
  buildFirecrackerCalls,
} from '../../src/hypervisor/other-drivers.js';
import type { VmSpec } from '../../src/hypervisor/types.js';

const mac = parseMacAddress('02:aa:bb:cc:dd:ee');
const base: VmSpec = {
  sandboxId: 'sb-x',
  vcpus: 2,
  maxVcpus: 4,
  memoryMiB: 1024,
  maxMemoryMiB: 2048,
  memory: { kind: 'hugepages', sizeKiB: 2048 },
  kernelPath: '/k/vmlinuz',
  initrdPath: '/k/initrd',
  kernelArgs: '',
  devices: [
    { kind: 'tap', id: 'net0', ifName: 'tap0', mac },
    { kind: 'agent-channel', id: 'agent', socketPath: '/run/sb/agent.sock', name: 'agent.0' },
  ],
  runDir: '/run/sb',
  machine: 'q35',
  accel: 'kvm',
  sandbox: true,
};

test('cloud-hypervisor: command line with hugepages, hotplug, vhost-user, vfio, serial agent socket', () => {
  const a = buildCloudHypervisorArgs({
    ...base,
    numaNode: 1,
    devices: [
      ...base.devices,
      { kind: 'vhost-user-net', id: 'dp0', socketPath: '/run/vpp/s1', mac, queues: 2 },
      { kind: 'vfio', id: 'vf0', pci: parsePciAddress('0000:3b:10.0') },
    ],
  });
  const v = (f: string): string[] => a.flatMap((x, i) => (x === f ? [a[i + 1]!] : []));
  assert.deepEqual(v('--api-socket'), ['path=/run/sb/api.sock']);
  assert.deepEqual(v('--cpus'), ['boot=2,max=4']);
  assert.deepEqual(v('--memory'), ['size=1024M,shared=on,hugepages=on,hugepage_size=2M,hotplug_method=virtio-mem,hotplug_size=1024M']);
  assert.deepEqual(v('--numa'), ['guest_numa_id=0,host_numa_node=1']);
  assert.deepEqual(v('--net'), [
    'tap=tap0,mac=02:aa:bb:cc:dd:ee,id=net0',
    'vhost_user=true,socket=/run/vpp/s1,mac=02:aa:bb:cc:dd:ee,num_queues=4,vhost_mode=client,id=dp0',
  ]);
  assert.deepEqual(v('--device'), ['path=/sys/bus/pci/devices/0000:3b:10.0/,id=vf0']);
  assert.deepEqual(v('--serial'), ['socket=/run/sb/agent.sock']);
});

test('firecracker: API bodies in order; states it has no vfio, vhost-user-net or hotplug', () => {
  const calls = buildFirecrackerCalls(base);
  assert.deepEqual(
    calls.map((c) => c.path),
    ['/boot-source', '/machine-config', '/network-interfaces/net0', '/vsock', '/actions'],
  );
  assert.deepEqual(calls[1]!.body, { vcpu_count: 2, mem_size_mib: 1024, smt: false, huge_pages: '2M' });
  assert.deepEqual(calls[2]!.body, { iface_id: 'net0', host_dev_name: 'tap0', guest_mac: '02:aa:bb:cc:dd:ee' });
  const fc = new FirecrackerDriver({ binary: null, logger: silentLogger() });
  assert.deepEqual(
    [fc.capabilities().vfio, fc.capabilities().vhostUserNet, fc.capabilities().hotplug],
    [false, false, false],
  );
  assert.throws(() => buildFirecrackerCalls({ ...base, devices: [{ kind: 'vfio', id: 'vf0', pci: parsePciAddress('0000:3b:10.0') }] }), InvalidArgumentError);
});

test('both refuse clearly without their binary (and without KVM), starting nothing', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'na-drv-'));
  try {
    const spec = { ...base, runDir: dir };
    for (const d of [new CloudHypervisorDriver({ binary: null, logger: silentLogger() }), new FirecrackerDriver({ binary: null, logger: silentLogger() })]) {
      await assert.rejects(d.start(spec, new AbortController().signal), (e: unknown) => e instanceof UnavailableError && /binary not found/.test(e.message));
    }
    const noKvm = new CloudHypervisorDriver({ binary: '/bin/true', devRoot: dir, logger: silentLogger() });
    await assert.rejects(noKvm.start(spec, new AbortController().signal), /needs KVM/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
