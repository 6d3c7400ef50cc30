import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError, NotFoundError } from '@edgenfv/contracts/internal/errors';
import { IprouteIp } from '../src/net/ip.js';
import { LinuxNetSysfs } from '../src/net/sysfs.js';
import { describe, updateInterfaces, type NetDeps } from '../src/net/interfaces.js';
import { updateRoutes, addArpNeighbors } from '../src/net/routes.js';
import { makeNetns, fakeSysfs } from './netns-helper.js';

const MAC_A = '02:00:00:00:0a:01';
const MAC_B = '02:00:00:00:0b:01';
const VF_PCI = '0000:00:05.0';
const VF_MAC = '02:aa:bb:cc:dd:01';

let ns: ReturnType<typeof makeNetns>;
let sys: ReturnType<typeof fakeSysfs>;
let deps: NetDeps;

interface Link { ifname: string; address: string; mtu: number; flags: string[] }
interface Addr { ifname: string; addr_info: Array<{ local: string; prefixlen: number; scope: string; tentative?: boolean }> }
/** The addresses as the test compares them: without the kernel's own DAD progress (an IPv6 link-local address stops
 * being `tentative` a second or so after the link comes up, whatever the code under test does). */
function addrsNow(): Addr[] {
  return ns.json<Addr[]>('addr', 'show').map((a) => ({ ...a, addr_info: a.addr_info.map(({ tentative: _t, ...i }) => i) }));
}
const link = (name: string) => ns.json<Link[]>('link', 'show').find((l) => l.ifname === name);
const addrsOf = (name: string) =>
  (ns.json<Addr[]>('addr', 'show').find((a) => a.ifname === name)?.addr_info ?? []).filter((a) => a.scope === 'global').map((a) => `${a.local}/${a.prefixlen}`).sort();

before(() => {
  ns = makeNetns('net');
  ns.ip('link', 'add', 'va', 'address', MAC_A, 'type', 'veth', 'peer', 'name', 'pa');
  ns.ip('link', 'add', 'vb', 'address', MAC_B, 'type', 'veth', 'peer', 'name', 'pb');
  // the "VF": comes up with a random MAC; only its PCI path (fake sysfs) identifies it
  ns.ip('link', 'add', 'vf0', 'type', 'veth', 'peer', 'name', 'pvf');
  for (const p of ['pa', 'pb', 'pvf']) ns.ip('link', 'set', p, 'up');
  // the kernel renames the sysfs entry with the link; the fake tree has both names (lookup goes through `ip link`)
  sys = fakeSysfs({ vf0: VF_PCI, data1: VF_PCI });
  deps = { ip: new IprouteIp({ netns: ns.name }), sysfs: new LinuxNetSysfs(sys.root) };
});
after(() => {
  ns?.remove();
  sys?.remove();
});

test('NICs found by MAC and by PCI path (random-MAC VF) are named, addressed and brought up; a repeat changes nothing', async () => {
  const req = {
    interfaces: [
      { mac: MAC_A, name: 'eth0', mtu: 1400, addresses: ['10.1.0.1/24', 'fd00:1::1/64'] },
      { pciAddress: VF_PCI, mac: VF_MAC, name: 'data1', addresses: ['10.2.0.1/24'] },
    ],
  };
  const first = await updateInterfaces(deps, req);
  assert.deepEqual(first.map((n) => [n.name, n.mac, n.mtu]), [['eth0', MAC_A, 1400], ['data1', VF_MAC, 1500]]);
  assert.equal(first[1]!.pciAddress, VF_PCI);
  assert.ok(link('eth0')!.flags.includes('UP'));
  assert.equal(link('data1')!.address, VF_MAC);
  assert.deepEqual(addrsOf('eth0'), ['10.1.0.1/24', 'fd00:1::1/64']);
  assert.equal(link('va'), undefined);
  assert.equal(link('vf0'), undefined);
  // the answer (made from the look before and the changes) is what a look now sees
  const key = (n: { name: string; mac: string; mtu: number; pciAddress: string; addresses: string[] }) => [n.name, n.mac, n.mtu, n.pciAddress, [...n.addresses].sort()];
  assert.deepEqual(first.map(key), (await describe(deps, ['eth0', 'data1'])).map(key));

  const again = await updateInterfaces(deps, req);
  assert.deepEqual(again.map((n) => [n.name, n.mac, n.mtu, n.addresses.sort()]), first.map((n) => [n.name, n.mac, n.mtu, n.addresses.sort()]));

  // addresses are replaced, not added to
  await updateInterfaces(deps, { interfaces: [{ mac: MAC_A, name: 'eth0', addresses: ['10.1.0.2/24'] }] });
  assert.deepEqual(addrsOf('eth0'), ['10.1.0.2/24']);
});

test('two NICs can swap names (renames go through a temporary name)', async () => {
  await updateInterfaces(deps, { interfaces: [{ mac: MAC_B, name: 'eth1' }] });
  await updateInterfaces(deps, { interfaces: [{ mac: MAC_A, name: 'eth1' }, { mac: MAC_B, name: 'eth0' }] });
  assert.equal(link('eth1')!.address, MAC_A);
  assert.equal(link('eth0')!.address, MAC_B);
  await updateInterfaces(deps, { interfaces: [{ mac: MAC_A, name: 'eth0', addresses: ['10.1.0.1/24'] }, { mac: MAC_B, name: 'eth1', addresses: [] }] });
  assert.equal(link('eth0')!.address, MAC_A);
});

test('bad input is rejected with every field named, and nothing changes', async () => {
  const beforeLinks = ns.json<Link[]>('link', 'show');
  const beforeAddrs = addrsNow();
  await assert.rejects(
    updateInterfaces(deps, {
      interfaces: [
        { mac: 'zz:00:00:00:00:01', name: 'eth0' },
        { pciAddress: 'not-pci', mtu: 10, addresses: ['10.0.0.1'] },
        { name: 'this-name-is-far-too-long' },
        { mac: MAC_A, name: 'eth0' },
      ],
    }),
    (err: unknown) => {
      assert.ok(err instanceof InvalidArgumentError);
      const fields = err.issues.map((i) => i.field);
      for (const f of ['interfaces[0].mac', 'interfaces[1].pciAddress', 'interfaces[1].mtu', 'interfaces[1].addresses[0]', 'interfaces[2]', 'interfaces[2].name', 'interfaces[3].name']) {
        assert.ok(fields.includes(f), `${f} in ${fields.join(',')}`);
      }
      return true;
    },
  );
  await assert.rejects(updateInterfaces(deps, { interfaces: [{ mac: '02:00:00:00:99:99', name: 'eth9' }, { mac: MAC_A, name: 'eth5' }] }), NotFoundError);
  assert.deepEqual(ns.json<Link[]>('link', 'show'), beforeLinks);
  assert.deepEqual(addrsNow(), beforeAddrs);
});

test('a NIC that is not there yet is waited for (hotplug); one that is there is not', async () => {
  const late = '02:00:00:00:0c:01';
  const pending = updateInterfaces(deps, { interfaces: [{ mac: late, name: 'eth2', addresses: ['10.3.0.1/24'] }], hotplugTimeoutMs: 20_000 });
  setTimeout(() => ns.ip('link', 'add', 'vc', 'address', late, 'type', 'veth', 'peer', 'name', 'pc'), 300);
  const [nic] = await pending;
  assert.equal(nic!.name, 'eth2');
  assert.deepEqual(addrsOf('eth2'), ['10.3.0.1/24']);
  const [same] = await updateInterfaces(deps, { interfaces: [{ mac: late, name: 'eth2', addresses: ['10.3.0.1/24'] }], hotplugTimeoutMs: 20_000 });
  assert.equal(same!.name, 'eth2');
});

test('the route table is replaced: link routes first, repeats succeed, unlisted routes go', async () => {
  await updateInterfaces(deps, { interfaces: [{ mac: MAC_A, name: 'eth0', addresses: ['10.1.0.1/24'] }, { mac: MAC_B, name: 'eth1', addresses: ['10.4.0.1/24'] }] });
  const routes = [
    { dst: '10.9.0.0/16', gateway: '10.50.0.254' }, // needs the link route below, listed after it on purpose
    { dst: '10.50.0.0/24', device: 'eth0' },
    { dst: 'default', gateway: '10.4.0.254', device: 'eth1' },
  ];
  const got = await updateRoutes(deps.ip, routes);
  const key = (r: { dst: string; gateway?: string; device?: string }) => `${r.dst} ${r.gateway ?? ''} ${r.device ?? ''}`;
  assert.deepEqual(got.map(key).sort(), ['0.0.0.0/0 10.4.0.254 eth1', '10.50.0.0/24  eth0', '10.9.0.0/16 10.50.0.254 eth0'].sort());
  const again = await updateRoutes(deps.ip, routes);
  assert.deepEqual(again.map(key).sort(), got.map(key).sort());

  const next = await updateRoutes(deps.ip, [{ dst: '10.7.0.0/24', gateway: '10.1.0.254' }]);
  assert.deepEqual(next.map(key), ['10.7.0.0/24 10.1.0.254 eth0']);
  const table = ns.json<Array<{ dst: string; protocol?: string }>>('route', 'show');
  assert.deepEqual(table.filter((r) => r.protocol !== 'kernel').map((r) => r.dst), ['10.7.0.0/24']);

  await assert.rejects(updateRoutes(deps.ip, [{ dst: '10.6.0.0/24', device: 'nosuch0' }, { dst: 'bad', gateway: 'x' }]), InvalidArgumentError);
  await assert.rejects(updateRoutes(deps.ip, [{ dst: '10.6.0.0/24', device: 'nosuch0' }]), /routes\[0\]\.device/);
  assert.deepEqual(ns.json<Array<{ dst: string; protocol?: string }>>('route', 'show').filter((r) => r.protocol !== 'kernel').map((r) => r.dst), ['10.7.0.0/24']);
});

test('static ARP neighbours are set and can be set again', async () => {
  const n = [{ ip: '10.1.0.9', mac: '02:00:00:00:00:99', device: 'eth0' }];
  await addArpNeighbors(deps.ip, n);
  await addArpNeighbors(deps.ip, n);
  const neigh = ns.json<Array<{ dst: string; lladdr: string; state: string[] }>>('neigh', 'show', 'dev', 'eth0');
  assert.deepEqual(neigh.map((x) => [x.dst, x.lladdr, x.state]), [['10.1.0.9', '02:00:00:00:00:99', ['PERMANENT']]]);
  await assert.rejects(addArpNeighbors(deps.ip, [{ ip: '10.1.0.300', mac: 'x', device: 'eth0' }]), /neighbors\[0\]\.ip.*neighbors\[0\]\.mac/);
});

test('a batch of changes: an address already there or already gone is success, another failure stops there and names its change', async () => {
  await updateInterfaces(deps, { interfaces: [{ mac: MAC_A, name: 'eth0', addresses: ['10.1.0.1/24'] }] });
  const ip = deps.ip as IprouteIp;
  await ip.apply([
    { kind: 'addr-add', dev: 'eth0', cidr: '10.1.0.1/24' }, // there already
    { kind: 'addr-del', dev: 'eth0', cidr: '10.1.9.9/24' }, // not there
    { kind: 'addr-add', dev: 'eth0', cidr: '10.1.0.5/24' },
  ]);
  assert.deepEqual(addrsOf('eth0'), ['10.1.0.1/24', '10.1.0.5/24']);
  await assert.rejects(
    ip.apply([
      { kind: 'addr-del', dev: 'eth0', cidr: '10.1.0.5/24' },
      { kind: 'link', dev: 'nosuch0', up: true },
      { kind: 'addr-add', dev: 'eth0', cidr: '10.1.0.6/24' },
    ]),
    (err: Error) => /link set dev nosuch0 up/.test(err.message),
  );
  assert.deepEqual(addrsOf('eth0'), ['10.1.0.1/24'], 'the change before the failed one is done, the one after it is not');
});
