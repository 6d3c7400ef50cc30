// The appliance's OVS-DPDK default: on where the package is installed and a network asks for it; off on request.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '@edgenfv/contracts';
import { applianceDataplanes, loadApplianceConfig } from '../src/config.js';

function withHome(yaml: string | undefined, fn: (home: string) => void): void {
  const home = mkdtempSync(join(tmpdir(), 'app-cfg-'));
  try {
    if (yaml !== undefined) writeFileSync(join(home, 'edgenfv.yaml'), yaml);
    fn(home);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

test('a fresh appliance turns OVS-DPDK on for its provider network where the package is installed', () => {
  withHome(undefined, (home) => {
    const cfg = loadApplianceConfig({ EDGENFV_HOME: home }, '/', true);
    assert.ok(cfg.networks.some((n) => n.name === 'provider' && n.dataplane === 'ovs-dpdk'));
    assert.match(cfg.ovsDpdk?.providerNetns ?? '', /^enfv-prov-[0-9a-f]{6}$/);
    assert.deepEqual(applianceDataplanes(cfg), [
      { kind: 'ovs-dpdk', numaNode: 0, ovs: { netns: cfg.ovsDpdk!.switchNetns, uplinks: { provider: { veth: { netns: cfg.ovsDpdk!.providerNetns, name: 'provider' } } } } },
    ]);
    assert.equal(loadApplianceConfig({ EDGENFV_HOME: home }, '/', false).ovsDpdk, undefined, 'not installed: off');
    assert.equal(loadApplianceConfig({ EDGENFV_HOME: home, EDGENFV_OVS_DPDK: 'off' }, '/', true).ovsDpdk, undefined, 'turned off');
  });
});

test('ovsDpdk: off in the file, networks that do not ask for it, the operator\'s own dataplanes, and bad values', () => {
  withHome('ovsDpdk: off\n', (home) => assert.equal(loadApplianceConfig({ EDGENFV_HOME: home }, '/', true).ovsDpdk, undefined));
  withHome('networks: [{name: lan, cidr: 10.1.0.0/24}]\n', (home) => assert.equal(loadApplianceConfig({ EDGENFV_HOME: home }, '/', true).ovsDpdk, undefined));
  withHome('nodeAgent: {dataplanes: []}\n', (home) => assert.equal(loadApplianceConfig({ EDGENFV_HOME: home }, '/', true).ovsDpdk, undefined));
  withHome('ovsDpdk: sometimes\n', (home) =>
    assert.throws(() => loadApplianceConfig({ EDGENFV_HOME: home }, '/', true), (e: unknown) => e instanceof InvalidArgumentError && e.issues.some((i) => i.field === 'ovsDpdk')),
  );
  withHome('ovsDpdk: on\n', (home) =>
    assert.throws(() => loadApplianceConfig({ EDGENFV_HOME: home }, '/', false), (e: unknown) => e instanceof InvalidArgumentError && /not installed/.test(e.message)),
  );
});

test('natsAuthTimeoutS: unset by default (nats\' 2 s), a number of seconds when given, a clear error otherwise', () => {
  withHome(undefined, (home) => assert.equal(loadApplianceConfig({ EDGENFV_HOME: home }, '/', false).natsAuthTimeoutS, undefined));
  withHome('natsAuthTimeoutS: 60\n', (home) => assert.equal(loadApplianceConfig({ EDGENFV_HOME: home }, '/', false).natsAuthTimeoutS, 60));
  for (const bad of ['natsAuthTimeoutS: 0\n', 'natsAuthTimeoutS: soon\n', 'natsAuthTimeoutS: 9999\n']) {
    withHome(bad, (home) =>
      assert.throws(() => loadApplianceConfig({ EDGENFV_HOME: home }, '/', false), (e: unknown) => e instanceof InvalidArgumentError && e.issues.some((i) => i.field === 'natsAuthTimeoutS')),
    );
  }
});
