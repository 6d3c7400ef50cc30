/**
 * `edgenfv check` as a user runs it on this machine: `--json` prints {ok, checks}; what the host lacks (here: no
 * usable KVM, no IOMMU, no SR-IOV NIC) is a fail with a fix; the exit code is 0 only when no check that the node
 * config requires failed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/edgenfv.js', import.meta.url));

function cli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

test('edgenfv check --json: every check with status, detail and fix; a config promising KVM and SR-IOV is not ready here', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'edgenfv-check-'));
  try {
    const config = join(dir, 'node-agent.yaml');
    writeFileSync(config, 'qemu: {accel: kvm}\nphysnets: {"0000:99:00.0": physnet1}\n');
    const r = await cli(['check', '--json', '--config', config], { EDGENFV_HOME: dir });
    const report = JSON.parse(r.stdout) as { ok: boolean; checks: Array<{ name: string; status: string; detail: string; fix: string; required: boolean }> };
    assert.equal(typeof report.ok, 'boolean');
    const by = Object.fromEntries(report.checks.map((c) => [c.name, c]));
    for (const name of ['kvm', 'iommu', 'vfio-pci', 'sriov physnet1', 'hugepages', 'ovs-dpdk', 'cgroup v2', 'qemu', 'packages', 'time sync']) {
      assert.ok(by[name], `check ${name}`);
      assert.deepEqual(Object.keys(by[name]!).sort(), ['detail', 'fix', 'name', 'required', 'status']);
    }
    if ((existsSync('/sys/kernel/iommu_groups') ? readdirSync('/sys/kernel/iommu_groups').length : 0) === 0) {
      assert.equal(by.iommu!.status, 'fail');
      assert.match(by.iommu!.fix, /intel_iommu=on iommu=pt/);
    }
    if (by.kvm!.status !== 'pass') assert.match(by.kvm!.fix, /VT-x|nested/);
    assert.equal(by['sriov physnet1']!.status, 'fail');
    assert.equal(report.ok, false);
    assert.equal(r.code, 10, 'UNAVAILABLE: not ready');
    assert.match(r.stderr, /this node cannot run what its config promises: .*sriov physnet1/);

    // the human form says the same, with the fixes
    const text = await cli(['check', '--config', config], { EDGENFV_HOME: dir });
    assert.match(text.stdout, /^FAIL  sriov physnet1 /m);
    assert.match(text.stdout, /fix: /);
    assert.match(text.stdout, /^not ready: /m);

    // no config: the defaults promise nothing this host lacks except what is reported, so ok follows `required`
    const relaxed = await cli(['check', '--json'], { EDGENFV_HOME: dir });
    const rr = JSON.parse(relaxed.stdout) as typeof report;
    assert.equal(rr.checks.find((c) => c.name === 'kvm')!.required, false);
    assert.equal(relaxed.code, rr.ok ? 0 : 10);
    assert.equal(rr.ok, !rr.checks.some((c) => c.required && c.status === 'fail'));

    const missing = await cli(['check', '--config', join(dir, 'nope.yaml')], { EDGENFV_HOME: dir });
    assert.equal(missing.code, 3);
    assert.match(missing.stderr, /--config: .*nope\.yaml does not exist/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
