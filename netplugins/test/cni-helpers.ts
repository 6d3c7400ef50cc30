import { spawn, execFileSync } from 'node:child_process';
import { existsSync, statSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const pkgRoot = fileURLToPath(new URL('../../', import.meta.url));
export const binDir = join(pkgRoot, 'bin');

/** Builds netplugins/bin when it is missing or older than the compiled CNI code (CI runs tests on a fresh build). */
export function ensureBin(): void {
  const bundle = join(binDir, 'edgenfv-cni.cjs');
  const newest = Math.max(newestIn(join(pkgRoot, 'dist/src')), newestIn(join(pkgRoot, '../packages/contracts/dist/src')), statSync(join(pkgRoot, 'src/cni/shim.c')).mtimeMs);
  if (!existsSync(bundle) || statSync(bundle).mtimeMs < newest || !existsSync(join(binDir, 'edgenfv-tap')))
    execFileSync(process.execPath, [join(pkgRoot, 'scripts/build-bin.mjs')], { stdio: 'inherit' });
}

function newestIn(dir: string): number {
  let m = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    m = Math.max(m, e.isDirectory() ? newestIn(p) : statSync(p).mtimeMs);
  }
  return m;
}

export interface CniCall {
  exitCode: number | null;
  stdout: string;
  json: Record<string, unknown> | null;
}

export function runExe(exe: string, env: Record<string, string>, stdin: unknown): Promise<CniCall> {
  return new Promise((resolve, reject) => {
    const p = spawn(exe, [], { env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env }, stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      let json: Record<string, unknown> | null;
      try {
        json = out.trim() ? (JSON.parse(out) as Record<string, unknown>) : null;
      } catch {
        json = null;
      }
      resolve({ exitCode: code, stdout: out, json });
    });
    p.stdin.end(typeof stdin === 'string' ? stdin : JSON.stringify(stdin));
  });
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
/** Checks a result against the CNI 1.0 result shape (SPEC.md "Success"); returns the problems. */
export function cniResultProblems(r: unknown, version = '1.0.0'): string[] {
  const p: string[] = [];
  if (typeof r !== 'object' || r === null) return ['result is not an object'];
  const o = r as Record<string, unknown>;
  if (o.cniVersion !== version) p.push(`cniVersion ${String(o.cniVersion)} != ${version}`);
  const allowed = ['cniVersion', 'interfaces', 'ips', 'routes', 'dns'];
  for (const k of Object.keys(o)) if (!allowed.includes(k)) p.push(`unknown key ${k}`);
  const ifs = o.interfaces;
  if (ifs !== undefined && !Array.isArray(ifs)) p.push('interfaces is not an array');
  const n = Array.isArray(ifs) ? ifs.length : 0;
  for (const [i, x] of (Array.isArray(ifs) ? ifs : []).entries()) {
    const f = x as Record<string, unknown>;
    if (typeof f.name !== 'string' || !f.name) p.push(`interfaces[${i}].name missing`);
    if (f.mac !== undefined && (typeof f.mac !== 'string' || !MAC.test(f.mac))) p.push(`interfaces[${i}].mac ${JSON.stringify(f.mac)}`);
    if (f.sandbox !== undefined && typeof f.sandbox !== 'string') p.push(`interfaces[${i}].sandbox`);
    if (f.mtu !== undefined && typeof f.mtu !== 'number') p.push(`interfaces[${i}].mtu`);
    const extra = Object.keys(f).filter((k) => !['name', 'mac', 'sandbox', 'mtu', ...(version === '1.1.0' ? ['pciID', 'socketPath'] : [])].includes(k));
    if (extra.length) p.push(`interfaces[${i}] unknown keys ${extra.join(',')}`);
  }
  if (o.ips !== undefined && !Array.isArray(o.ips)) p.push('ips is not an array');
  for (const [i, x] of (Array.isArray(o.ips) ? o.ips : []).entries()) {
    const ip = x as Record<string, unknown>;
    if (typeof ip.address !== 'string' || !/^[0-9a-f.:]+\/\d+$/i.test(ip.address)) p.push(`ips[${i}].address ${String(ip.address)}`);
    if (ip.gateway !== undefined && typeof ip.gateway !== 'string') p.push(`ips[${i}].gateway`);
    if (ip.interface !== undefined && (!Number.isInteger(ip.interface) || (ip.interface as number) < 0 || (ip.interface as number) >= n)) p.push(`ips[${i}].interface ${JSON.stringify(ip.interface)}`);
  }
  return p;
}

export function cniErrorProblems(r: unknown): string[] {
  if (typeof r !== 'object' || r === null) return ['error is not an object'];
  const o = r as Record<string, unknown>;
  const p: string[] = [];
  if (typeof o.cniVersion !== 'string') p.push('cniVersion');
  if (!Number.isInteger(o.code)) p.push('code');
  if (typeof o.msg !== 'string' || !o.msg) p.push('msg');
  if (o.details !== undefined && typeof o.details !== 'string') p.push('details');
  return p;
}
