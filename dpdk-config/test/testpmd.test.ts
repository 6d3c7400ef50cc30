/**
 * The EAL argv is accepted by a real DPDK: dpdk-testpmd (no hugepages, no PCI, a vhost-user port) initializes
 * EAL, creates the vhost-user socket, configures port 0 and exits when stdin closes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseDataplanePlan, renderEalArgs, type EalOptions } from '../src/index.js';

const TESTPMD = process.env.EDGENFV_TESTPMD ?? '/usr/bin/dpdk-testpmd';

function run(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(TESTPMD, args, { stdio: ['ignore', 'pipe', 'pipe'] }); // stdin closed: testpmd exits
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, out }));
  });
}

for (const [name, opts] of [['identity lcores', {}], ['remapped lcores', { lcores: 'remap' }]] as Array<[string, EalOptions]>) {
  test(`dpdk-testpmd accepts the rendered EAL args (${name})`, async (t) => {
    assert.ok(existsSync(TESTPMD), `${TESTPMD} not found: apt-get install dpdk-dev librte-net-vhost23 (or set EDGENFV_TESTPMD)`);
    const dir = mkdtempSync(join(tmpdir(), 'edgenfv-eal-'));
    const prefix = `edgenfv-eal-${process.pid}-${opts.lcores ?? 'identity'}`;
    t.after(() => {
      rmSync(dir, { recursive: true, force: true });
      rmSync(`/var/run/dpdk/${prefix}`, { recursive: true, force: true });
    });
    const sock = join(dir, 'v0.sock');
    const plan = parseDataplanePlan({
      filePrefix: prefix,
      mainCpu: { cpu: 0, numaNode: 0 },
      workerCpus: [{ cpu: 1, numaNode: 0 }],
      memory: { kind: 'no-huge', memoryMiB: 256 },
      nics: [{ kind: 'vhost-user', name: 'v0', socketPath: sock, queues: 1 }],
    });
    const eal = renderEalArgs(plan, opts);
    const { code, out } = await run([...eal, '--', '--total-num-mbufs=8192', '--forward-mode=io']);
    assert.equal(code, 0, out);
    assert.match(out, new RegExp(`vhost-user server: socket created`));
    assert.match(out, new RegExp(`\\(${sock.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\)`));
    assert.match(out, /Configuring Port 0/);
    assert.match(out, /Bye\.\.\./);
  });
}
