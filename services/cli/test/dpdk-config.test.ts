/**
 * `edgenfv dpdk-config render` as a real process: every example workload rendered with `--format testpmd`
 * (plus `--no-huge --no-pci`, a private file prefix) starts a real dpdk-testpmd that configures its ports and
 * starts forwarding; it is stopped cleanly (Enter on stdin). An invalid workload is refused before anything
 * starts: exit code 3 (INVALID_ARGUMENT), the field on stderr, nothing on stdout.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EXIT_CODES } from '../src/index.js';
import { RENDER_FORMATS, renderDpdkConfig } from '../src/dpdk-config-cmd.js';

const BIN = fileURLToPath(new URL('../../bin/edgenfv.js', import.meta.url));
const EXAMPLES = fileURLToPath(new URL('../../../../dpdk-config/examples/', import.meta.url));
const TESTPMD = process.env.EDGENFV_TESTPMD ?? '/usr/bin/dpdk-testpmd';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

const workloads = readdirSync(EXAMPLES).filter((f) => f.endsWith('-workload.json')).sort();
const nodeFor = (w: string): string => join(EXAMPLES, w.startsWith('guest-') ? 'guest-vnf-node.json' : 'edge-2cpu-node.json');

/** Runs testpmd until it says it forwards ("Press enter to exit"), then presses Enter and waits for its exit. */
function startTestpmd(argv: string[]): Promise<{ code: number | null; out: string; cameUp: boolean }> {
  return new Promise((resolve, reject) => {
    // testpmd's stdout is a pipe here: line-buffer it (stdbuf) so "Press enter to exit" arrives when it is printed
    const child = spawn('stdbuf', ['-oL', '-eL', TESTPMD, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let cameUp = false;
    const onData = (b: Buffer): void => {
      out += b.toString();
      if (!cameUp && /Press enter to exit/.test(out)) {
        cameUp = true;
        child.stdin.write('\n');
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, out, cameUp }));
  });
}

test('the examples: at least 4 workloads and 2 nodes', () => {
  assert.ok(workloads.length >= 4, workloads.join(', '));
  assert.ok(readdirSync(EXAMPLES).filter((f) => f.endsWith('-node.json')).length >= 2);
});

for (const w of workloads) {
  test(`example ${w}: --format testpmd starts a real dpdk-testpmd that forwards and stops cleanly`, async (t) => {
    assert.ok(existsSync(TESTPMD), `${TESTPMD} not found: apt-get install dpdk-dev librte-net-vhost23 librte-net-null23 (or set EDGENFV_TESTPMD)`);
    const r = await cli(['-o', 'json', 'dpdk-config', 'render', '--node', nodeFor(w), '--workload', join(EXAMPLES, w), '--format', 'testpmd', '--no-huge', '--no-pci']);
    assert.equal(r.code, 0, r.stderr);
    const argv = JSON.parse(r.stdout) as string[];
    assert.equal(argv[0], 'dpdk-testpmd');
    const p = argv.indexOf('--file-prefix');
    assert.ok(p > 0, argv.join(' '));
    const prefix = `${argv[p + 1]}-t${process.pid}`;
    argv[p + 1] = prefix;
    t.after(() => rmSync(`/var/run/dpdk/${prefix}`, { recursive: true, force: true }));
    const spec = JSON.parse(readFileSync(join(EXAMPLES, w), 'utf8')) as { nics: unknown[]; testpmd?: { forwardMode?: string } };
    const run = await startTestpmd(argv.slice(1));
    assert.ok(run.cameUp, `testpmd never started forwarding:\n${run.out}`);
    assert.equal(run.code, 0, run.out);
    for (let i = 0; i < spec.nics.length; i++) assert.match(run.out, new RegExp(`Configuring Port ${i} `), run.out);
    assert.match(run.out, new RegExp(`${spec.testpmd?.forwardMode ?? 'io'} packet forwarding`), run.out);
    assert.match(run.out, /Bye\.\.\./);
  });
}

test('every format renders every example (in process), and -o json gives the structured form (a process)', async () => {
  for (const w of workloads) {
    for (const format of RENDER_FORMATS) {
      const r = renderDpdkConfig({ node: nodeFor(w), workload: join(EXAMPLES, w), format, huge: true, pci: true, lcores: 'identity' });
      assert.ok(r.text.length > 0, `${w} ${format}`);
    }
  }
  const h = await cli(['-o', 'json', 'dpdk-config', 'render', '--node', join(EXAMPLES, 'dual-socket-node.json'), '--workload', join(EXAMPLES, 'vrouter-pci-workload.json'), '--format', 'hugepages']);
  assert.deepEqual(JSON.parse(h.stdout), [{ numaNode: 1, sizeKiB: 2048, count: 256, path: '/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages' }]);
});

test('an invalid workload is refused before anything starts: exit 3, the field on stderr, nothing on stdout', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'edgenfv-dpdkcfg-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bad = JSON.parse(readFileSync(join(EXAMPLES, 'testpmd-vhost-workload.json'), 'utf8'));
  const cases: Array<[string, unknown, RegExp]> = [
    ['workers', { ...bad, workers: 8 }, /workload\.workers: needs 9 CPUs/],
    ['socket', { ...bad, nics: [{ kind: 'vhost-user', name: 'v0', socketPath: 'relative.sock' }] }, /workload\.nics\[0\]\.socketPath: must be an absolute path/],
    ['testpmd without workers', { ...bad, workers: 0 }, /workload\.workers: testpmd forwards on worker lcores/],
    ['hugepages', { ...bad, memory: { hugepagesMiB: 100000 } }, /workload\.memory\.hugepagesMiB: needs/],
  ];
  for (const [name, doc, re] of cases) {
    const file = join(dir, `${name.replace(/\W/g, '-')}-workload.json`);
    writeFileSync(file, JSON.stringify(doc));
    const r = await cli(['dpdk-config', 'render', '--node', nodeFor('x'), '--workload', file, '--format', 'testpmd']);
    assert.equal(r.code, EXIT_CODES.INVALID_ARGUMENT, `${name}: ${r.stderr}`);
    assert.match(r.stderr, re, name);
    assert.equal(r.stdout, '', name);
  }
  const missing = await cli(['dpdk-config', 'render', '--node', join(dir, 'nope.json'), '--workload', nodeFor('x'), '--format', 'eal']);
  assert.equal(missing.code, EXIT_CODES.INVALID_ARGUMENT);
  assert.match(missing.stderr, /--node: cannot read/);
  const format = await cli(['dpdk-config', 'render', '--node', nodeFor('x'), '--workload', nodeFor('x'), '--format', 'dpdk']);
  assert.equal(format.code, 2);
  assert.match(format.stderr, /--format/);
});
