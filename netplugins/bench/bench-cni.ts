/**
 * `npm run bench:cni`: times ADD and DEL, in one run on this machine, of
 *   - the reference: Debian's containernetworking-plugins `bridge` + `host-local`,
 *   - our `edgenfv-tap` executable (the C shim handing the call to a running CNI server), with the same host-local IPAM,
 *   - our `node-edgenfv-tap` (a plain Node.js process per call, no server),
 *   - the in-process attach the node agent uses (TapPlugin.add/del, no IPAM: the scheduler's IPAM gives the address),
 *     with the tc wiring and with the bridge wiring.
 * Our CNI rows use `wiring: "tc"`.
 * Prints a table, then one JSON object of the figures as the last line. BENCH_N sets the iterations (default 20).
 */
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { createAttachments } from '../src/index.js';
import { startCniServer } from '../src/cni/server.js';
import { IpBatchNetlink } from '../src/netlink.js';

const N = Number(process.env.BENCH_N ?? 20);
const WARMUP = 2;
const pkgRoot = fileURLToPath(new URL('../../', import.meta.url));
const bin = join(pkgRoot, 'bin');
const refPlugins = '/usr/lib/cni';

function ip(...a: string[]): void {
  execFileSync('ip', a, { stdio: 'ignore' });
}
function tryIp(...a: string[]): void {
  try {
    ip(...a);
  } catch {
    /* gone */
  }
}

function runCni(exe: string, env: Record<string, string>, conf: unknown): Promise<{ ms: number; code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(exe, [], { env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env }, stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ ms: performance.now() - t0, code, out }));
    p.stdin.end(JSON.stringify(conf));
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const p90 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.9))];
const r2 = (x: number) => Math.round(x * 100) / 100;

interface Contender {
  label: string;
  exe: string;
  ns: string;
  conf: Record<string, unknown>;
  env: Record<string, string>;
  add: number[];
  del: number[];
}

/** Runs the executables' ADD+DEL in turns (one of each per round), so that load from elsewhere hits all alike. */
async function benchExes(cs: Contender[]): Promise<void> {
  for (let i = 0; i < N + WARMUP; i++) {
    for (const c of cs) {
      const env = { CNI_CONTAINERID: `bench${i}`, CNI_IFNAME: 'eth0', CNI_NETNS: `/var/run/netns/${c.ns}`, CNI_PATH: refPlugins, ...c.env };
      const a = await runCni(c.exe, { ...env, CNI_COMMAND: 'ADD' }, c.conf);
      if (a.code !== 0) throw new Error(`${c.label} ADD failed: ${a.out}`);
      const d = await runCni(c.exe, { ...env, CNI_COMMAND: 'DEL' }, c.conf);
      if (d.code !== 0) throw new Error(`${c.label} DEL failed: ${d.out}`);
      if (i >= WARMUP) {
        c.add.push(a.ms);
        c.del.push(d.ms);
      }
    }
  }
}

async function main(): Promise<void> {
  if (!existsSync(join(refPlugins, 'bridge')) || !existsSync(join(refPlugins, 'host-local')))
    throw new Error(`the reference plugins are missing in ${refPlugins}: apt-get install containernetworking-plugins`);
  if (!existsSync(join(bin, 'edgenfv-tap'))) execFileSync(process.execPath, [join(pkgRoot, 'scripts/build-bin.mjs')], { stdio: 'inherit' });
  const work = mkdtempSync(join(tmpdir(), 'np-bench-'));
  const tag = randomBytes(2).toString('hex');
  const nsRef = `nbref${tag}`;
  const nsOurs = `nbour${tag}`;
  const nsNode = `nbnod${tag}`;
  const nsLib = `nblib${tag}`;
  const bridges = [`bbr${tag}r`, `bbr${tag}t`, `bbr${tag}n`, `bbr${tag}l`];
  for (const ns of [nsRef, nsOurs, nsNode, nsLib]) ip('netns', 'add', ns);
  const server = await startCniServer({ socketPath: join(work, 'cni.sock') });
  const lib = createAttachments({ stateDir: join(work, 'lib-state'), netlink: new IpBatchNetlink() });
  try {
    const hostLocal = (d: string, subnet: string) => ({ type: 'host-local', ranges: [[{ subnet }]], dataDir: join(work, d) });
    const ourEnv = { EDGENFV_NETPLUGINS_STATE: join(work, 'state'), EDGENFV_CNI_SOCKET: server.socketPath };
    const ref: Contender = { label: 'bridge', exe: join(refPlugins, 'bridge'), ns: nsRef, conf: { cniVersion: '1.0.0', name: 'benchref', type: 'bridge', bridge: bridges[0], ipam: hostLocal('hl-ref', '10.91.0.0/16') }, env: {}, add: [], del: [] };
    const ours: Contender = { label: 'edgenfv-tap', exe: join(bin, 'edgenfv-tap'), ns: nsOurs, conf: { cniVersion: '1.0.0', name: 'benchtap', type: 'edgenfv-tap', bridge: bridges[1], wiring: 'tc', ipam: hostLocal('hl-ours', '10.92.0.0/16') }, env: ourEnv, add: [], del: [] };
    const nodeOnly: Contender = { label: 'node-edgenfv-tap', exe: join(bin, 'node-edgenfv-tap'), ns: nsNode, conf: { cniVersion: '1.0.0', name: 'benchnode', type: 'edgenfv-tap', bridge: bridges[2], wiring: 'tc', ipam: hostLocal('hl-node', '10.93.0.0/16') }, env: { ...ourEnv, EDGENFV_CNI_SOCKET: join(work, 'none.sock') }, add: [], del: [] };
    await benchExes([ref, ours, nodeOnly]);
    const inProcess = async (wiring: 'tc' | 'bridge') => {
      const add: number[] = [];
      const del: number[] = [];
      const cfg = lib.tap.parseConfig({ bridge: bridges[3], wiring, ips: [{ address: '10.94.0.5/16' }] });
      for (let i = 0; i < N + WARMUP; i++) {
        const ctx = { containerId: `lib${wiring}${i}`, ifName: 'eth0', netns: nsLib };
        const t0 = performance.now();
        await lib.tap.add(ctx, cfg);
        const t1 = performance.now();
        await lib.tap.del(ctx);
        const t2 = performance.now();
        if (i >= WARMUP) {
          add.push(t1 - t0);
          del.push(t2 - t1);
        }
      }
      return { add, del };
    };
    const inTc = await inProcess('tc');
    const inBr = await inProcess('bridge');
    // the node agent's in-process attach: its current wiring (bridge, the default) for the aim
    const inAdd = inBr.add;
    const inDel = inBr.del;
    const rows: Array<[string, number[], number[]]> = [
      ['reference bridge+host-local', ref.add, ref.del],
      ['edgenfv-tap (shim -> CNI server) + host-local', ours.add, ours.del],
      ['node-edgenfv-tap (Node.js per call) + host-local', nodeOnly.add, nodeOnly.del],
      ['in-process TapPlugin, wiring tc', inTc.add, inTc.del],
      ['in-process TapPlugin, wiring bridge (default)', inBr.add, inBr.del],
    ];
    console.log(`CNI ADD/DEL on this machine, ${N} iterations each (after ${WARMUP} warm-up), milliseconds`);
    console.log('what'.padEnd(52) + 'ADD median  ADD p90  DEL median  DEL p90');
    for (const [label, a, d] of rows)
      console.log(label.padEnd(52) + `${median(a).toFixed(1).padStart(10)}${p90(a).toFixed(1).padStart(9)}${median(d).toFixed(1).padStart(12)}${p90(d).toFixed(1).padStart(9)}`);
    const fig = {
      iterations: N,
      refAddMs: r2(median(ref.add)),
      refDelMs: r2(median(ref.del)),
      tapAddMs: r2(median(ours.add)),
      tapDelMs: r2(median(ours.del)),
      tapAddRatio: r2(median(ours.add) / median(ref.add)),
      tapDelRatio: r2(median(ours.del) / median(ref.del)),
      nodeTapAddMs: r2(median(nodeOnly.add)),
      nodeTapDelMs: r2(median(nodeOnly.del)),
      inProcessAddMs: r2(median(inAdd)),
      inProcessDelMs: r2(median(inDel)),
      inProcessTcAddMs: r2(median(inTc.add)),
      inProcessTcDelMs: r2(median(inTc.del)),
      withinAim: median(ours.add) <= 1.5 * median(ref.add) && median(ours.del) <= 1.5 * median(ref.del) && median(inAdd) < 5,
    };
    console.log(JSON.stringify(fig));
  } finally {
    await server.close();
    for (const ns of [nsRef, nsOurs, nsNode, nsLib]) tryIp('netns', 'del', ns);
    for (const b of bridges) tryIp('link', 'del', b);
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
process.exit(0);
