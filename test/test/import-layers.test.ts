/**
 * Layering: within each workspace's `src/`, the first-level folders (`api`, `ops`, `placement`, ...) import each
 * other without a cycle, type-only imports included (a type import still ties one folder's design to the other's).
 * Files directly in `src/` (`app.ts`, `main.ts`) are the wiring and are left out. Reads the TypeScript sources.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const workspaces = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { workspaces: string[] }).workspaces;

function tsFiles(dir: string, out: string[] = []): string[] {
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) tsFiles(p, out);
    else if (/\.tsx?$/.test(name) && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Relative module specifiers of a file: `import ... from './x.js'`, `export ... from`, `import('./x.js')`, `import './x.js'`. */
export function relativeImports(text: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"](\.{1,2}\/[^'"]+)['"]/g;
  for (const m of text.matchAll(re)) out.push(m[1]!);
  return out;
}

/** Folder graph of one src tree: folder -> folders it imports from (with one example import per edge). */
export function folderGraph(srcDir: string): Map<string, Map<string, string>> {
  const graph = new Map<string, Map<string, string>>();
  const folderOf = (file: string): string | undefined => {
    const rel = relative(srcDir, file);
    if (rel.startsWith('..')) return undefined;
    const parts = rel.split(sep);
    return parts.length > 1 ? parts[0] : undefined;
  };
  for (const file of tsFiles(srcDir)) {
    const from = folderOf(file);
    if (!from) continue;
    for (const spec of relativeImports(readFileSync(file, 'utf8'))) {
      const to = folderOf(resolve(dirname(file), spec));
      if (!to || to === from) continue;
      const edges = graph.get(from) ?? new Map<string, string>();
      if (!edges.has(to)) edges.set(to, `${relative(srcDir, file)} imports ${spec}`);
      graph.set(from, edges);
    }
  }
  return graph;
}

/** Every elementary cycle's first appearance, found by depth-first search (the graphs are a handful of folders). */
export function cycles(graph: Map<string, Map<string, string>>): string[][] {
  const found = new Map<string, string[]>();
  const walk = (node: string, path: string[]): void => {
    for (const next of graph.get(node)?.keys() ?? []) {
      const at = path.indexOf(next);
      if (at >= 0) {
        const cyc = path.slice(at);
        const start = cyc.indexOf([...cyc].sort()[0]!);
        const canon = [...cyc.slice(start), ...cyc.slice(0, start)];
        found.set(canon.join('>'), canon);
      } else walk(next, [...path, next]);
    }
  };
  for (const n of graph.keys()) walk(n, [n]);
  return [...found.values()];
}

describe('import layers', () => {
  it('finds a cycle when there is one (the checker itself)', () => {
    const g = new Map([
      ['api', new Map([['ops', 'api/a.ts imports ../ops/b.js']])],
      ['ops', new Map([['api', 'ops/b.ts imports ../api/a.js']])],
      ['state', new Map()],
    ]);
    assert.deepEqual(cycles(g), [['api', 'ops']]);
    assert.deepEqual(cycles(new Map([['api', new Map([['ops', '']])]])), []);
    assert.deepEqual(
      relativeImports(`import type { A } from '../api/context.js';\nexport * from './x.js';\nawait import('../ops/y.js');\nimport 'left-pad';`),
      ['../api/context.js', './x.js', '../ops/y.js'],
    );
  });

  for (const ws of workspaces) {
    it(`${ws}: no import cycle between the folders of src/`, () => {
      const src = join(root, ws, 'src');
      const g = folderGraph(src);
      const found = cycles(g);
      const explain = found.map((c) => [...c, c[0]!].map((f, i, all) => (i + 1 < all.length ? `${f} -> ${all[i + 1]} (${g.get(f)!.get(all[i + 1]!)!})` : '')).filter(Boolean).join('; '));
      assert.deepEqual(explain, [], `${ws}: import cycles between folders:\n${explain.join('\n')}`);
    });
  }
});
