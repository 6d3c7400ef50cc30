import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { AGENT_PROTO_LOADER_OPTIONS, agentProtoPath, GRPC_STATUS } from '@edgenfv/contracts/internal/agent';
import { startAgentServer, type RunningServer } from '../src/server.js';
import { IprouteIp } from '../src/net/ip.js';
import { LinuxNetSysfs } from '../src/net/sysfs.js';
import { ProcSysctl } from '../src/sysctl.js';
import { ContainerRuntime } from '../src/containers/runtime.js';
import { silentLog } from '../src/log.js';
import { makeNetns, fakeSysfs } from './netns-helper.js';

type Client = grpc.Client & Record<string, (...args: any[]) => any>;
let ns: ReturnType<typeof makeNetns>;
let sys: ReturnType<typeof fakeSysfs>;
let dir: string;
let server: RunningServer;
let client: Client;

function call<T>(method: string, req: object): Promise<T> {
  return new Promise((resolve, reject) => client[method](req, { deadline: Date.now() + 10_000 }, (e: Error | null, r: T) => (e ? reject(e) : resolve(r))));
}

before(async () => {
  ns = makeNetns('srv');
  ns.ip('link', 'add', 'v0', 'address', '02:00:00:00:01:01', 'type', 'veth', 'peer', 'name', 'p0');
  sys = fakeSysfs({ v0: '0000:00:03.0', eth0: '0000:00:03.0' });
  dir = mkdtempSync(join(tmpdir(), 'ga-srv-'));
  mkdirSync(join(dir, 'proc', 'sys', 'net', 'ipv4'), { recursive: true });
  writeFileSync(join(dir, 'proc', 'sys', 'net', 'ipv4', 'ip_forward'), '0\n');
  const net = { ip: new IprouteIp({ netns: ns.name }), sysfs: new LinuxNetSysfs(sys.root) };
  server = await startAgentServer({
    socketPath: join(dir, 'agent.sock'),
    protoPath: agentProtoPath(),
    deps: {
      net,
      sysctl: new ProcSysctl(join(dir, 'proc')),
      containers: new ContainerRuntime({ stateDir: join(dir, 'state'), log: silentLog, busybox: '/usr/bin/busybox' }),
      dataplane: { sysRoot: join(dir, 'sys'), fileRoot: join(dir, 'files'), hugepageMount: join(dir, 'huge') },
      log: silentLog,
    },
  });
  const def = protoLoader.loadSync(agentProtoPath(), { ...AGENT_PROTO_LOADER_OPTIONS });
  const pkg = grpc.loadPackageDefinition(def) as any;
  client = new pkg.edgenfv.agent.v1.AgentService(`unix://${join(dir, 'agent.sock')}`, grpc.credentials.createInsecure());
});
after(async () => {
  client?.close();
  await server?.close();
  ns?.remove();
  sys?.remove();
  rmSync(dir, { recursive: true, force: true });
});

test('Health and the Version handshake; an incompatible host is refused', async () => {
  const h = await call<{ status: string; protocolMajor: number }>('Health', {});
  assert.equal(h.status, 'SERVING');
  assert.equal(h.protocolMajor, 1);
  const v = await call<{ protocolMajor: number; features: string[] }>('Version', { hostVersion: 't', protocolMajor: 1, protocolMinor: 7 });
  assert.equal(v.protocolMajor, 1);
  assert.ok(v.features.includes('containers'));
  await assert.rejects(call('Version', { hostVersion: 't', protocolMajor: 2, protocolMinor: 0 }), (e: grpc.ServiceError) => {
    assert.equal(e.code, GRPC_STATUS.FAILED_PRECONDITION);
    assert.match(e.details, /incompatible/);
    return true;
  });
});

test('GetGuestDetails lists the NICs with MAC and PCI path; UpdateInterfaces over gRPC; errors carry the field', async () => {
  const [nic] = await call<{ interfaces: Array<{ name: string; pciAddress: string; addresses: string[] }> }>('UpdateInterfaces', {
    interfaces: [{ pciAddress: '0000:00:03.0', mac: '02:00:00:00:01:02', name: 'eth0', addresses: ['192.168.7.1/24'] }],
  }).then((r) => r.interfaces);
  assert.deepEqual([nic.name, nic.pciAddress, nic.addresses], ['eth0', '0000:00:03.0', ['192.168.7.1/24']]);
  const d = await call<{ cpus: number; memoryTotalBytes: number; nics: Array<{ name: string; mac: string; pciAddress: string }> }>('GetGuestDetails', {});
  assert.ok(d.cpus >= 1 && d.memoryTotalBytes > 0);
  const eth0 = d.nics.find((n) => n.name === 'eth0');
  assert.deepEqual([eth0?.mac, eth0?.pciAddress], ['02:00:00:00:01:02', '0000:00:03.0']);
  await assert.rejects(call('UpdateInterfaces', { interfaces: [{ mac: 'nope' }] }), (e: grpc.ServiceError) => {
    assert.equal(e.code, GRPC_STATUS.INVALID_ARGUMENT);
    const body = JSON.parse(String(e.metadata.get('edgenfv-error')[0]));
    assert.equal(body.details.issues[0].field, 'interfaces[0].mac');
    return true;
  });
});

test('SetSysctls writes allowed keys and refuses the others without writing any', async () => {
  await call('SetSysctls', { sysctls: { 'net.ipv4.ip_forward': '1' } });
  assert.equal(readFileSync(join(dir, 'proc', 'sys', 'net', 'ipv4', 'ip_forward'), 'utf8').trim(), '1');
  await assert.rejects(call('SetSysctls', { sysctls: { 'net.ipv4.ip_forward': '0', 'kernel.core_pattern': '|/x' } }), /kernel\.core_pattern/);
  assert.equal(readFileSync(join(dir, 'proc', 'sys', 'net', 'ipv4', 'ip_forward'), 'utf8').trim(), '1');
});

test('GetMetrics reports agent RSS and per-NIC counters', async () => {
  const m = await call<{ agentRssBytes: number; nics: Array<{ name: string }> }>('GetMetrics', {});
  assert.ok(m.agentRssBytes > 0);
  assert.ok(m.nics.some((n) => n.name === 'eth0'));
});

test('PrepareDataplane rejects bad input by field and writes config files under allowed roots', async () => {
  await assert.rejects(call('PrepareDataplane', { nics: [{ pciAddress: 'x', driver: 'igb' }], hugepageSizeKib: 4, files: [{ path: '/etc/passwd', content: '' }] }), (e: grpc.ServiceError) => {
    for (const f of ['nics[0].pciAddress', 'nics[0].driver', 'hugepageSizeKib', 'files[0].path']) assert.match(e.details, new RegExp(f.replace(/[[\].]/g, '\\$&')));
    return true;
  });
  const r = await call<{ bound: unknown[] }>('PrepareDataplane', { files: [{ path: '/etc/edgenfv/eal.args', content: '-l 0 --in-memory' }] });
  assert.deepEqual(r.bound, []);
  assert.equal(readFileSync(join(dir, 'files', 'etc', 'edgenfv', 'eal.args'), 'utf8'), '-l 0 --in-memory');
});
