#!/usr/bin/env node
// Builds netplugins/bin: one esbuild bundle of the CNI entry, written as edgenfv-{sriov,vhostuser,tap,macvtap}
// (each a self-contained Node.js script: copy any of them alone into /opt/cni/bin and it works), plus the bundle
// as edgenfv-cni.cjs for the fast shim (see src/cni/shim.c) when a C compiler is available.
import { build } from 'esbuild';
import { chmodSync, mkdirSync, readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = join(root, 'bin');
mkdirSync(bin, { recursive: true });
const entry = join(root, 'dist/src/cni/bin.js');
if (!existsSync(entry)) throw new Error(`build-bin: ${entry} is missing: run tsc -b first`);
const res = await build({
  entryPoints: [entry],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  minify: true,
  write: false,
  legalComments: 'none',
  // @edgenfv/contracts is a barrel with schemas and the agent proto: keep only what the CNI code uses
  plugins: [
    {
      name: 'contracts-pure',
      setup(b) {
        b.onResolve({ filter: /^@edgenfv\/contracts$/ }, () => ({ path: join(root, '../packages/contracts/dist/src/index.js'), sideEffects: false }));
        b.onResolve({ filter: /contracts\/dist\/src\/.*\.js$|^\.\/[a-z-]+\.js$/ }, (a) =>
          a.importer.includes('/packages/contracts/') ? { path: join(dirname(a.importer), a.path), sideEffects: false } : undefined,
        );
      },
    },
  ],
  logLevel: 'warning',
  logOverride: { 'empty-import-meta': 'silent' },
});
const code = res.outputFiles[0].text;
writeFileSync(join(bin, 'package.json'), '{ "type": "commonjs" }\n');
writeFileSync(join(bin, 'edgenfv-cni.cjs'), code);
const types = ['sriov', 'vhostuser', 'tap', 'macvtap'];

// The fast path: a small C client that hands the call to a running edgenfv CNI server (the node agent, or
// `edgenfv-cnid`) over a unix socket, and otherwise runs the Node.js bundle itself.
let shim = null;
const cc = ['cc', 'gcc', 'clang'].find((c) => {
  try {
    execFileSync(c, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
});
if (cc && process.env.EDGENFV_NO_SHIM !== '1') {
  shim = join(bin, '.edgenfv-shim');
  execFileSync(cc, ['-O2', '-Wall', '-Werror', '-o', shim, join(root, 'src/cni/shim.c')], { stdio: 'inherit' });
}
for (const t of types) {
  const out = join(bin, `edgenfv-${t}`);
  rmSync(out, { force: true });
  if (shim) writeFileSync(out, readFileSync(shim));
  else writeFileSync(out, `#!/usr/bin/env node\n${code}`);
  chmodSync(out, 0o755);
}
if (shim) rmSync(shim, { force: true });
// standalone Node.js variants (no shim), e.g. to copy one file into /opt/cni/bin
for (const t of types) {
  const out = join(bin, `node-edgenfv-${t}`);
  writeFileSync(out, `#!/usr/bin/env node\n${code}`);
  chmodSync(out, 0o755);
}
const cnid = join(bin, 'edgenfv-cnid');
writeFileSync(cnid, `#!/usr/bin/env node\nprocess.argv.splice(2, 0, '--serve');\n${code}`);
chmodSync(cnid, 0o755);
console.log(`build-bin: ${types.map((t) => `edgenfv-${t}`).join(', ')} (${shim ? `C shim via ${cc} + Node.js fallback` : 'Node.js'}), edgenfv-cnid; bundle ${(code.length / 1024).toFixed(0)} KiB`);
