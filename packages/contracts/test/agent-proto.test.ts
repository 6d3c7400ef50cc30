/**
 * agent.proto is the one source of the guest agent protocol; the TypeScript message types both sides use
 * (src/agent.ts) are checked against it here: every message has a type with exactly its fields (camelCase, as
 * @grpc/proto-loader gives them) and a TypeScript type that carries the proto type (string / enum values / number /
 * boolean / Buffer / arrays / maps / the named message). proto/agent.fields.json pins every field's number and type:
 * a field renumbered, retyped or removed fails; a new field is added to that file with the proto change.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import ts from 'typescript';
import { AGENT_SERVICE, agentProtoPath } from '../src/agent.js';

const agentTs = fileURLToPath(new URL('../../src/agent.ts', import.meta.url));
const fieldsLock = fileURLToPath(new URL('../../proto/agent.fields.json', import.meta.url));
const PKG = 'edgenfv.agent.v1';
const NUMERIC = new Set(['double', 'float', 'int32', 'uint32', 'sint32', 'fixed32', 'sfixed32', 'int64', 'uint64', 'sint64', 'fixed64', 'sfixed64']);

const root = protobuf.loadSync(agentProtoPath({}));
const ns = root.lookup(PKG) as protobuf.Namespace;
const messages = ns.nestedArray.filter((n): n is protobuf.Type => n instanceof protobuf.Type);

/** The TypeScript side: agent.ts's exported interfaces and type aliases, with a type checker. */
let loaded: { checker: ts.TypeChecker; decls: Map<string, ts.InterfaceDeclaration | ts.TypeAliasDeclaration> } | undefined;
function loadTs(): { checker: ts.TypeChecker; decls: Map<string, ts.InterfaceDeclaration | ts.TypeAliasDeclaration> } {
  if (loaded) return loaded;
  const program = ts.createProgram([agentTs], {
    strict: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: ['node'],
    skipLibCheck: true,
    noEmit: true,
  });
  const sf = program.getSourceFile(agentTs);
  assert.ok(sf, `cannot read ${agentTs}`);
  const decls = new Map<string, ts.InterfaceDeclaration | ts.TypeAliasDeclaration>();
  for (const s of sf.statements) if (ts.isInterfaceDeclaration(s) || ts.isTypeAliasDeclaration(s)) decls.set(s.name.text, s);
  loaded = { checker: program.getTypeChecker(), decls };
  return loaded;
}

type Check = (t: ts.Type) => string | undefined; // undefined: matches; otherwise why not

function describeType(checker: ts.TypeChecker, t: ts.Type): string {
  return checker.typeToString(t);
}

function checkerFor(checker: ts.TypeChecker, field: protobuf.Field, parent: protobuf.Type): Check {
  const scalar = (type: string): Check => {
    if (type === 'string')
      return (t) => (allOf(t, (p) => !!(p.flags & (ts.TypeFlags.String | ts.TypeFlags.StringLiteral))) ? undefined : 'a string');
    if (NUMERIC.has(type)) return (t) => (allOf(t, (p) => !!(p.flags & (ts.TypeFlags.Number | ts.TypeFlags.NumberLiteral))) ? undefined : 'a number (longs as numbers)');
    if (type === 'bool') return (t) => (allOf(t, (p) => !!(p.flags & (ts.TypeFlags.Boolean | ts.TypeFlags.BooleanLiteral))) ? undefined : 'a boolean');
    if (type === 'bytes') return (t) => (t.getSymbol()?.getName() === 'Buffer' || t.aliasSymbol?.getName() === 'Buffer' ? undefined : 'a Buffer');
    const resolved = parent.lookupTypeOrEnum(type);
    if (resolved instanceof protobuf.Enum) {
      const want = Object.keys(resolved.values).sort();
      return (t) => {
        const parts = t.isUnion() ? t.types : [t];
        const got = parts.map((p) => (p.isStringLiteral() ? p.value : '?')).sort();
        return JSON.stringify(got) === JSON.stringify(want) ? undefined : `the enum's names ${want.join(' | ')}`;
      };
    }
    return (t) => {
      const name = t.aliasSymbol?.getName() ?? t.getSymbol()?.getName();
      return name === resolved.name ? undefined : `the message type ${resolved.name}`;
    };
  };
  if (field.map) {
    const value = scalar(field.type);
    return (t) => {
      const idx = checker.getIndexInfoOfType(t, ts.IndexKind.String);
      if (!idx) return `a map (Record<string, ...>) of ${field.type}`;
      const why = value(idx.type);
      return why ? `a map of ${why}` : undefined;
    };
  }
  const one = scalar(field.type);
  if (field.repeated) {
    return (t) => {
      if (!checker.isArrayType(t)) return `an array of ${field.type}`;
      const el = checker.getTypeArguments(t as ts.TypeReference)[0]!;
      const why = one(el);
      return why ? `an array of ${why}` : undefined;
    };
  }
  return one;
}

/** The key type of a map field (protobufjs types fields as Field; map fields are MapField at run time). */
function keyTypeOf(f: protobuf.Field): string {
  return (f as unknown as protobuf.MapField).keyType;
}

/** Every member of a union satisfies `ok`; an intersection (`string & {}`, an open string union) when one part does. */
function allOf(t: ts.Type, ok: (p: ts.Type) => boolean): boolean {
  const one = (p: ts.Type): boolean => (p.isIntersection() ? p.types.some(ok) : ok(p));
  return t.isUnion() ? t.types.every(one) : one(t);
}

test('agent.proto: every message has a TypeScript type in contracts/src/agent.ts with the same fields and types', () => {
  const { checker, decls } = loadTs();
  const problems: string[] = [];
  for (const m of messages) {
    const decl = decls.get(m.name);
    if (!decl) {
      // an empty message (HealthRequest) needs no type of its own: `Empty` stands for every one of them
      if (m.fieldsArray.length > 0) problems.push(`${m.name}: no type in agent.ts`);
      continue;
    }
    const type = checker.getTypeAtLocation(decl.name);
    const props = new Map(checker.getPropertiesOfType(type).map((p) => [p.getName(), p]));
    for (const f of m.fieldsArray) {
      const p = props.get(f.name);
      if (!p) {
        problems.push(`${m.name}.${f.name} (field ${f.id}): missing in the TypeScript type`);
        continue;
      }
      props.delete(f.name);
      const t = checker.getNonNullableType(checker.getTypeOfSymbolAtLocation(p, decl));
      const why = checkerFor(checker, f, m)(t);
      if (why) problems.push(`${m.name}.${f.name}: proto ${f.repeated ? 'repeated ' : ''}${f.map ? `map<${keyTypeOf(f)}, ${f.type}>` : f.type}, TypeScript ${describeType(checker, t)}; should be ${why}`);
    }
    for (const extra of props.keys()) problems.push(`${m.name}.${extra}: in the TypeScript type, not in agent.proto`);
  }
  assert.deepEqual(problems, []);
});

test('agent.proto: the service name, and every RPC message has a type (or is empty)', () => {
  const service = root.lookupService(AGENT_SERVICE);
  const { decls } = loadTs();
  for (const m of Object.values(service.methods)) {
    for (const name of [m.requestType, m.responseType]) {
      const t = root.lookupType(`${PKG}.${name}`);
      assert.ok(decls.has(name) || t.fieldsArray.length === 0, `${m.name}: ${name} has no type in agent.ts`);
    }
  }
});

test('agent.proto: no field renumbered, retyped or removed (proto/agent.fields.json)', () => {
  const locked = JSON.parse(readFileSync(fieldsLock, 'utf8')) as Record<string, string>;
  const now: Record<string, string> = {};
  for (const m of messages) {
    for (const f of m.fieldsArray) now[`${m.name}.${f.name}`] = `${f.id} ${f.map ? `map<${keyTypeOf(f)},${f.type}>` : `${f.repeated ? 'repeated ' : ''}${f.type}`}`;
  }
  const changed = Object.entries(locked)
    .filter(([k, v]) => now[k] !== v)
    .map(([k, v]) => `${k}: was "${v}", is ${now[k] === undefined ? 'gone' : `"${now[k]}"`} (never renumber, retype or remove a field: add a new one)`);
  const added = Object.keys(now)
    .filter((k) => !(k in locked))
    .map((k) => `${k}: "${now[k]}" is new: add it to proto/agent.fields.json`);
  assert.deepEqual([...changed, ...added], []);
});
