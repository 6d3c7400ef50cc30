import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError, type NetworkConfig, type Vnfd } from '@edgenfv/contracts';
import { checkNetworkPolicy } from '../../src/api/network-policy.js';

// A VF's VLAN, spoofchk and trust belong to the operator's network: the API refuses other values before anything is
// written, with the words the node uses for the same rule (contracts vf-policy.ts).
const networks = new Map<string, NetworkConfig>([['radio', { name: 'radio', cidr: '10.40.0.0/24', vlan: 100, spoofchk: true }]]);
const vnfd = (extra: Record<string, unknown>): Vnfd =>
  ({ name: 'du', image: { ref: 'builtin:vrouter' }, resources: { vcpus: 1, memoryMiB: 256 }, interfaces: [{ name: 'up', type: 'sriov', physnet: 'physnet1', network: 'radio', ...extra }] }) as unknown as Vnfd;

test('sriov: another VLAN, spoofchk off or trust on is PERMISSION_DENIED naming each field; repeating the operator\'s values is fine', () => {
  assert.throws(
    () => checkNetworkPolicy(networks, 'acme', vnfd({ vlan: 200, spoofchk: false, trust: true })),
    (e: unknown) => {
      assert.ok(e instanceof AppError && e.code === 'PERMISSION_DENIED', String(e));
      assert.deepEqual(((e.details as { issues: { field: string }[] }).issues).map((i) => i.field), [
        'descriptor.interfaces[0].vlan', 'descriptor.interfaces[0].spoofchk', 'descriptor.interfaces[0].trust',
      ]);
      assert.match(e.message, /^descriptor\.interfaces\[0\]\.vlan: is set by the operator for physnet physnet1 \(100\); asked 200/);
      return true;
    },
  );
  checkNetworkPolicy(networks, 'acme', vnfd({ vlan: 100, spoofchk: true }));
  checkNetworkPolicy(networks, 'acme', vnfd({}));
  // no network: nothing set by the operator, but trust still needs the operator's consent
  assert.throws(() => checkNetworkPolicy(networks, 'acme', vnfd({ network: undefined, trust: true })), /descriptor\.interfaces\[0\]\.trust: trust on a VF of physnet physnet1 needs the operator's consent/);
});
