import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError, parseMacAddress, parsePciAddress } from '@edgenfv/contracts';
import { buildQemuArgs } from '../../src/hypervisor/qemu-args.js';
import type { VmSpec } from '../../src/hypervisor/types.js';
import { qmpWaitMs } from '../../src/hypervisor/qemu.js';

const mac = parseMacAddress('52:54:00:12:34:56');
function spec(over: Partial<VmSpec> = {}): VmSpec {
  return {
    sandboxId: 'sb-t1',
    vcpus: 1,
    maxVcpus: 4,
    memoryMiB: 512,
    maxMemoryMiB: 2048,
    memory: { kind: 'anonymous' },
    kernelPath: '/k/vmlinuz',
    initrdPath: '/k/initrd',
    kernelArgs: 'quiet',
    devices: [{ kind: 'agent-channel', id: 'agent', socketPath: '/run/sb/agent.sock', name: 'agent.0' }],
    runDir: '/run/sb',
    machine: 'q35',
    accel: 'tcg',
    sandbox: true,
    ...over,
  };
}
/** The value following each occurrence of `flag`. */
function values(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
}

test('q35 under TCG: hotplug-ready smp/m, QMP, console, agent port on virtio-serial-pci, seccomp', () => {
  const { args, qmpSocket, agentSocket } = buildQemuArgs(spec());
  assert.deepEqual(values(args, '-machine'), ['q35']);
  assert.deepEqual(values(args, '-accel'), ['tcg']);
  assert.deepEqual(values(args, '-cpu'), ['max']);
  assert.deepEqual(values(args, '-smp'), ['1,maxcpus=4']);
  assert.deepEqual(values(args, '-m'), ['512M,slots=8,maxmem=2048M']);
  assert.deepEqual(values(args, '-object'), ['memory-backend-ram,id=mem0,size=512M']);
  assert.ok(values(args, '-chardev').includes('socket,id=qmp,path=/run/sb/qmp.sock,server=on,wait=off'));
  assert.deepEqual(values(args, '-mon'), ['chardev=qmp,mode=control']);
  assert.equal(qmpSocket, '/run/sb/qmp.sock');
  assert.equal(agentSocket, '/run/sb/agent.sock');
  const dev = values(args, '-device');
  assert.ok(dev.includes('virtio-serial-pci,id=vser0'));
  assert.ok(dev.includes('virtserialport,chardev=agent,name=agent.0'));
  assert.deepEqual(values(args, '-sandbox'), ['on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny']);
  assert.match(values(args, '-append')[0]!, /console=ttyS0 panic=-1 memhp_default_state=online_movable quiet/);
  assert.ok(!values(args, '-append')[0]!.includes('tsc_early_khz'));
  assert.ok(args.includes('-nodefaults') && args.includes('-no-user-config'));
});

test('the operator-only debug console: a second virtio-serial port on the agent channel\'s controller, only when asked; a bad socket path named', () => {
  const off = buildQemuArgs(spec()).args;
  assert.ok(!off.join(' ').includes('edgenfv.debug.0'), 'no debug console by default');
  const { args } = buildQemuArgs(spec({ devices: [{ kind: 'agent-channel', id: 'agent', socketPath: '/run/sb/agent.sock', name: 'agent.0', debugConsoleSocket: '/run/sb/debug.sock' }] }));
  assert.ok(values(args, '-chardev').includes('socket,id=agent-debug,path=/run/sb/debug.sock,server=on,wait=off'));
  const dev = values(args, '-device');
  assert.equal(dev.filter((d) => d.startsWith('virtio-serial')).length, 1, 'one controller');
  assert.ok(dev.includes('virtserialport,chardev=agent-debug,name=edgenfv.debug.0'));
  assert.throws(
    () => buildQemuArgs(spec({ devices: [{ kind: 'agent-channel', id: 'agent', socketPath: '/run/sb/agent.sock', name: 'agent.0', debugConsoleSocket: 'debug.sock,server=off' }] })),
    (e: unknown) => e instanceof InvalidArgumentError && e.issues.some((i) => i.field.endsWith('.debugConsoleSocket')),
  );
});

test('microvm: mmio devices, tsc_early_khz, fixed size; kvm uses -cpu host', () => {
  const { args } = buildQemuArgs(
    spec({ machine: 'microvm', hostCpuKHz: 2600000, devices: [{ kind: 'agent-channel', id: 'agent', socketPath: '/run/sb/a.sock', name: 'agent.0' }, { kind: 'tap', id: 'net0', ifName: 'tap0', mac }] }),
  );
  assert.deepEqual(values(args, '-machine'), ['microvm']);
  assert.deepEqual(values(args, '-smp'), ['1']);
  assert.deepEqual(values(args, '-m'), ['512M']);
  assert.match(values(args, '-append')[0]!, /tsc_early_khz=2600000/);
  const dev = values(args, '-device');
  assert.ok(dev.includes('virtio-serial-device,id=vser0'));
  assert.ok(dev.includes('virtio-net-device,netdev=net0,mac=52:54:00:12:34:56,id=net0-nic'));
  assert.ok(!dev.some((d) => d.startsWith('pcie-root-port')));
  const kvm = buildQemuArgs(spec({ accel: 'kvm', machine: 'microvm' })).args;
  assert.deepEqual(values(kvm, '-cpu'), ['host']);
  assert.deepEqual(values(kvm, '-accel'), ['kvm']);
});

test('tap (never vhost=on), macvtap by fd, each NIC on its own root port, spare ports', () => {
  const cmd = buildQemuArgs(
    spec({
      hotplugSlots: 2,
      devices: [
        { kind: 'tap', id: 'net0', ifName: 'tap0', mac },
        { kind: 'macvtap', id: 'net1', tapDevPath: '/dev/tap42', mac: parseMacAddress('02:00:00:00:00:01') },
      ],
    }),
  );
  const nd = values(cmd.args, '-netdev');
  assert.deepEqual(nd, ['tap,id=net0,ifname=tap0,script=no,downscript=no', 'tap,id=net1,fd=3']);
  assert.ok(!nd.some((n) => n.includes('vhost=on')));
  assert.deepEqual(cmd.fds, [{ fd: 3, path: '/dev/tap42' }]);
  const dev = values(cmd.args, '-device');
  assert.ok(dev.includes('virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,id=net0-nic,bus=rp0,romfile='));
  assert.ok(dev.includes('virtio-net-pci,netdev=net1,mac=02:00:00:00:00:01,id=net1-nic,bus=rp1,romfile='));
  assert.equal(dev.filter((d) => d.startsWith('pcie-root-port')).length, 4);
});

test('vhost-user: memfd or hugepage backend shared, multiqueue vectors, client reconnect or server', () => {
  const vhu = { kind: 'vhost-user-net' as const, id: 'dp0', socketPath: '/run/vpp/sock1', mac, queues: 2 };
  const memfd = buildQemuArgs(spec({ memory: { kind: 'memfd' }, devices: [vhu] })).args;
  assert.deepEqual(values(memfd, '-object'), ['memory-backend-memfd,id=mem0,size=512M,share=on']);
  assert.deepEqual(values(memfd, '-numa'), ['node,nodeid=0,memdev=mem0']);
  assert.ok(values(memfd, '-chardev').includes('socket,id=dp0-chr,path=/run/vpp/sock1,reconnect-ms=1000'));
  assert.deepEqual(values(memfd, '-netdev'), ['vhost-user,id=dp0,chardev=dp0-chr,queues=2']);
  assert.ok(values(memfd, '-device').includes('virtio-net-pci,netdev=dp0,mac=52:54:00:12:34:56,id=dp0-nic,bus=rp0,romfile=,mq=on,vectors=6'));
  const huge = buildQemuArgs(spec({ memory: { kind: 'hugepages', sizeKiB: 2048 }, numaNode: 1, devices: [{ ...vhu, queues: 1, server: true }] })).args;
  assert.deepEqual(values(huge, '-object'), ['memory-backend-memfd,id=mem0,size=512M,hugetlb=on,hugetlbsize=2M,share=on,prealloc=on,host-nodes=1,policy=bind']);
  assert.ok(values(huge, '-chardev').includes('socket,id=dp0-chr,path=/run/vpp/sock1,server=on,wait=off'));
  const file = buildQemuArgs(spec({ memory: { kind: 'hugepages', sizeKiB: 1048576, path: '/dev/hugepages-1G' }, memoryMiB: 1024, devices: [vhu] })).args;
  assert.deepEqual(values(file, '-object'), ['memory-backend-file,id=mem0,size=1024M,mem-path=/dev/hugepages-1G,share=on,prealloc=on']);
});

test('vfio-pci passthrough by host BDF on q35', () => {
  const { args } = buildQemuArgs(spec({ devices: [{ kind: 'vfio', id: 'vf0', pci: parsePciAddress('0000:3b:10.2') }] }));
  assert.ok(values(args, '-device').includes('vfio-pci,host=0000:3b:10.2,id=vf0,bus=rp0'));
});

test('virtual IOMMU: VT-d with interrupt remapping and caching mode before every PCI device, the guest turns it on, tap NICs and vhost-user NICs of an IOTLB-capable switch translate through it', () => {
  const vf = { kind: 'vfio' as const, id: 'vf0', pci: parsePciAddress('0000:3b:10.2') };
  const tap = { kind: 'tap' as const, id: 'dp0', ifName: 'dp0tap', mac };
  const vhu = { kind: 'vhost-user-net' as const, id: 'dp1', socketPath: '/run/vhu/dp1', mac, queues: 1 };
  const vhuOvs = { kind: 'vhost-user-net' as const, id: 'dp2', socketPath: '/run/vhu/dp2', mac, queues: 1, iommu: true };
  const { args } = buildQemuArgs(spec({ viommu: true, memory: { kind: 'memfd' }, devices: [...spec().devices, vf, tap, vhu, vhuOvs] }));
  const devices = values(args, '-device');
  assert.equal(devices[0], 'intel-iommu,intremap=on,caching-mode=on', 'the IOMMU before the devices it translates');
  assert.ok(devices.includes('vfio-pci,host=0000:3b:10.2,id=vf0,bus=rp0'));
  assert.ok(devices.some((d) => d.startsWith('virtio-net-pci,netdev=dp0,') && d.endsWith(',iommu_platform=on')), devices.join('\n'));
  assert.ok(devices.some((d) => d.startsWith('virtio-net-pci,netdev=dp1,') && !d.includes('iommu_platform')), 'a vhost-user NIC whose switch takes no IOTLB messages keeps the IOMMU off');
  assert.ok(devices.some((d) => d.startsWith('virtio-net-pci,netdev=dp2,') && d.endsWith(',disable-legacy=on,iommu_platform=on')), 'the OVS-DPDK one translates');
  assert.ok(!values(buildQemuArgs(spec({ memory: { kind: 'memfd' }, devices: [...spec().devices, vhuOvs] })).args, '-device').some((d) => d.includes('iommu_platform')), 'no vIOMMU: no iommu_platform');
  assert.match(values(args, '-append')[0]!, /\bintel_iommu=on iommu=pt no_timer_check\b/);
  assert.deepEqual(values(args, '-machine'), ['q35'], 'TCG: no split irqchip');
  assert.deepEqual(values(buildQemuArgs(spec({ viommu: true, accel: 'kvm' })).args, '-machine'), ['q35,kernel-irqchip=split']);
  // without: none of it
  const plain = buildQemuArgs(spec({ devices: [...spec().devices, tap] })).args;
  assert.ok(!values(plain, '-device').some((d) => /intel-iommu|iommu_platform/.test(d)));
  assert.doesNotMatch(values(plain, '-append')[0]!, /intel_iommu/);
  assert.throws(() => buildQemuArgs(spec({ viommu: true, machine: 'microvm', hostCpuKHz: 2_000_000 })), /viommu: a virtual IOMMU needs machine q35/);
});

test('the guest image system disk: read-only, by serial, after every other device (q35: root bus; microvm: mmio)', () => {
  const disk = { kind: 'disk' as const, id: 'img0', path: '/c/img.tar', serial: 'oci-0123' };
  const { args } = buildQemuArgs(spec({ systemDisk: { path: '/c/system.erofs', serial: 'edgenfv-system' }, devices: [...spec().devices, disk] }));
  assert.deepEqual(values(args, '-drive'), ['file=/c/img.tar,format=raw,if=none,readonly=on,id=img0', 'file=/c/system.erofs,format=raw,if=none,readonly=on,id=sysdisk']);
  assert.equal(values(args, '-device').at(-1), 'virtio-blk-pci,drive=sysdisk,serial=edgenfv-system,id=sysdisk-blk');
  const m = buildQemuArgs(spec({ machine: 'microvm', hostCpuKHz: 2_000_000, systemDisk: { path: '/c/system.erofs', serial: 'edgenfv-system' } })).args;
  assert.equal(values(m, '-device').at(-1), 'virtio-blk-device,drive=sysdisk,serial=edgenfv-system,id=sysdisk-blk');
  assert.throws(() => buildQemuArgs(spec({ systemDisk: { path: '/c/a,b', serial: 'edgenfv-system' } })), /systemDisk/);
});

test('privilege drop: -run-with user=uid:gid (seccomp allows the drop) or spawned as the uid (seccomp denies set*id)', () => {
  const a = buildQemuArgs(spec({ runAs: { uid: 420001, gid: 420001 } })).args;
  assert.deepEqual(values(a, '-run-with'), ['user=420001:420001']);
  assert.match(values(a, '-sandbox')[0]!, /elevateprivileges=allow/);
  const b = buildQemuArgs(spec({ runAs: { uid: 420001, gid: 420001, method: 'spawn' } })).args;
  assert.deepEqual(values(b, '-run-with'), []);
  assert.match(values(b, '-sandbox')[0]!, /elevateprivileges=deny/);
  const c = buildQemuArgs(spec({ sandbox: false })).args;
  assert.deepEqual(values(c, '-sandbox'), []);
  const d = buildQemuArgs(spec({ tcgTbSizeMiB: 32, maxVcpus: 1 })).args;
  assert.throws(() => buildQemuArgs(spec({ tcgTbSizeMiB: 32 })), /tcgTbSizeMiB/);
  assert.deepEqual(values(d, '-accel'), ['tcg,tb-size=32']);
});

test('chroot: -run-with chroot=<root>,user=uid:gid; refused with a spawned uid or a relative path', () => {
  const a = buildQemuArgs(spec({ runAs: { uid: 420001, gid: 420001 }, chrootDir: '/var/lib/edgenfv/vm/0123456789' })).args;
  assert.deepEqual(values(a, '-run-with'), ['chroot=/var/lib/edgenfv/vm/0123456789,user=420001:420001']);
  assert.throws(() => buildQemuArgs(spec({ runAs: { uid: 1, gid: 1, method: 'spawn' }, chrootDir: '/r' })), /chrootDir: QEMU started as the uid/);
  assert.throws(() => buildQemuArgs(spec({ chrootDir: 'vm/r' })), /chrootDir: must be an absolute path/);
});

test('bad specs: every issue named, nothing built', () => {
  let err: unknown;
  try {
    buildQemuArgs(
      spec({
        vcpus: 0,
        memoryMiB: 501,
        memory: { kind: 'hugepages', sizeKiB: 2048 },
        machine: 'microvm',
        devices: [
          { kind: 'vfio', id: 'vf0', pci: parsePciAddress('0000:3b:10.2') },
          { kind: 'vhost-user-net', id: 'vf0', socketPath: '/a,b', mac, queues: 0 },
        ],
      }),
    );
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof InvalidArgumentError);
  const fields = err.issues.map((i) => i.field);
  for (const f of ['vcpus', 'memoryMiB', 'devices[0]', 'devices[1].id', 'devices[1].queues', 'devices[1].socketPath', 'hostCpuKHz']) {
    assert.ok(fields.includes(f), `${f} missing in ${fields.join(',')}`);
  }
  assert.throws(
    () => buildQemuArgs(spec({ devices: [{ kind: 'vhost-user-net', id: 'dp0', socketPath: '/s', mac, queues: 1 }] })),
    /vhost-user needs shared guest memory/,
  );
});

test('a migration destination (spec.layout): the source\'s root ports, every device at its bus and slot, hot-plugged vCPUs and DIMMs', () => {
  const layout = {
    boot: { vcpus: 1, maxVcpus: 4, memoryMiB: 512, maxMemoryMiB: 2048 },
    vcpus: 2,
    memoryMiB: 768,
    rootPorts: 3,
    pci: {
      vser0: { bus: 'pcie.0', addr: 1 },
      'n1-nic': { bus: 'rp2', addr: 0 },
      'img-a-blk': { bus: 'rp0', addr: 0 },
      'sysdisk-blk': { bus: 'pcie.0', addr: 2 },
    },
    cpus: [{ id: 'cpu-s0-c1-t0', type: 'max-x86_64-cpu', props: { 'socket-id': 0, 'core-id': 1, 'thread-id': 0, 'node-id': 0 } }],
    dimms: [{ id: 'dimm0', sizeMiB: 256, addr: 4294967296, slot: 0 }],
    hotplugged: ['cpu-s0-c1-t0', 'disk:img-a', 'nic:n1'],
    members: [],
  };
  const devices: VmSpec['devices'] = [
    { kind: 'agent-channel', id: 'agent', socketPath: '/run/sb/agent.sock', name: 'agent.0' },
    { kind: 'tap', id: 'n1', ifName: 'tap1', mac },
    { kind: 'disk', id: 'img-a', path: '/d/a.img', serial: 'a' },
  ];
  const { args } = buildQemuArgs(spec({ memory: { kind: 'memfd' }, devices, systemDisk: { path: '/d/sys.img', serial: 'sys' }, hotplugSlots: 4, layout }));
  const devs = values(args, '-device');
  assert.deepEqual(devs.filter((d) => d.startsWith('pcie-root-port')).length, 3, 'the source\'s 3 root ports, not 1 NIC + 4 spare');
  assert.ok(devs.includes('virtio-serial-pci,id=vser0,bus=pcie.0,addr=0x1'));
  assert.ok(devs.some((d) => d.startsWith('virtio-net-pci,netdev=n1,') && d.includes(',bus=rp2,addr=0x0')), devs.join('\n'));
  assert.ok(devs.includes('virtio-blk-pci,drive=img-a,serial=a,id=img-a-blk,bus=rp0,addr=0x0'));
  assert.ok(devs.includes('virtio-blk-pci,drive=sysdisk,serial=sys,id=sysdisk-blk,bus=pcie.0,addr=0x2'));
  assert.ok(devs.includes('max-x86_64-cpu,id=cpu-s0-c1-t0,socket-id=0,core-id=1,thread-id=0,node-id=0'));
  assert.ok(devs.includes('pc-dimm,id=dimm0,memdev=dimm0m,addr=4294967296,slot=0'));
  assert.ok(values(args, '-object').includes('memory-backend-memfd,id=dimm0m,size=256M,share=on'));
  // a device the source has and this spec lacks, or the other way round: refused (the state would not load)
  assert.throws(() => buildQemuArgs(spec({ devices: devices.slice(0, 2), layout })), (e: unknown) => e instanceof InvalidArgumentError && /img-a-blk/.test(e.message));
  const { 'n1-nic': _gone, ...noNic } = layout.pci;
  assert.throws(() => buildQemuArgs(spec({ devices, systemDisk: { path: '/d/sys.img', serial: 'sys' }, layout: { ...layout, pci: noNic } })), (e: unknown) => e instanceof InvalidArgumentError && /n1-nic/.test(JSON.stringify(e)));
  // it came from another node: nothing unchecked reaches the command line
  const bad = { ...layout, pci: { ...layout.pci, vser0: { bus: 'pcie.0,x=y', addr: 1 } }, cpus: [{ id: 'c', type: 'max,x=1', props: {} }], dimms: [{ id: 'd', sizeMiB: 1.5, addr: 0, slot: 0 }] };
  assert.throws(
    () => buildQemuArgs(spec({ devices, layout: bad })),
    (e: unknown) => e instanceof InvalidArgumentError && ['layout.pci.vser0', 'layout.cpus[0]', 'layout.dimms[0]'].every((f) => JSON.stringify(e).includes(f)),
  );
});

test('qmpWaitMs: 30 s for a QEMU without a VF; with one, more per GiB it pins for vfio, bounded', () => {
  const vf = { kind: 'vfio' as const, id: 'vf0', pci: parsePciAddress('0000:3b:02.0') };
  assert.equal(qmpWaitMs({ devices: [], memoryMiB: 65536, maxMemoryMiB: 65536 }), 30_000);
  assert.equal(qmpWaitMs({ devices: [vf], memoryMiB: 896, maxMemoryMiB: 1024 }), 150_000);
  assert.equal(qmpWaitMs({ devices: [vf], memoryMiB: 2048, maxMemoryMiB: 2048 }), 270_000);
  assert.equal(qmpWaitMs({ devices: [vf], memoryMiB: 65536, maxMemoryMiB: 262144 }), 15 * 60_000);
});
