/**
 * Validation of every API v1 request against its JSON Schema (requests.ts, vnfd.ts: the machine-readable contract,
 * from which the request types are derived). Closed objects (unknown fields rejected), bounded strings and arrays
 * (a 10 MB string is refused by name). Semantic rules the schema language cannot say (unique interface names,
 * CIDRs, route devices) follow in `validateVnfdSemantics`.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { isIP } from 'node:net';
import { InvalidArgumentError, type FieldIssue } from './errors.js';
import { DEFAULT_DATAPLANE_HUGEPAGES_MIB, GUEST_BASE_MEMORY_MIB, VnfdSchema, dataplaneInterfaces, type Vnfd } from './vnfd.js';
import { requestSchemas, type ApiOp, type RequestOf } from './requests.js';
import { IMAGE_REF_FORMS, parseImageRef } from './image-ref.js';

const ajv = new Ajv({ allErrors: true, strict: true, discriminator: true, allowUnionTypes: true });
const compiled = new Map<string, ValidateFunction>();
function validatorFor(op: ApiOp): ValidateFunction {
  let v = compiled.get(op);
  if (!v) {
    v = ajv.compile(requestSchemas[op]);
    compiled.set(op, v);
  }
  return v;
}
const vnfdValidator = ajv.compile(VnfdSchema);

/** `/descriptor/interfaces/0/vlan` -> `descriptor.interfaces[0].vlan` */
function fieldOf(e: ErrorObject, prefix: string): string {
  let path = e.instancePath
    .split('/')
    .slice(1)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((acc, p) => (/^\d+$/.test(p) ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), prefix);
  const params = e.params as Record<string, unknown>;
  if (e.keyword === 'required') path = path ? `${path}.${String(params.missingProperty)}` : String(params.missingProperty);
  if (e.keyword === 'additionalProperties')
    path = path ? `${path}.${String(params.additionalProperty)}` : String(params.additionalProperty);
  if (e.keyword === 'propertyNames' && typeof params.propertyName === 'string') path = `${path}.${params.propertyName}`;
  return path || '(request)';
}

function messageOf(e: ErrorObject): string {
  const params = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'required':
      return 'is required';
    case 'additionalProperties':
      return 'is not a known field';
    case 'maxLength':
      return `is too long (at most ${String(params.limit)} characters)`;
    case 'enum':
      return `must be one of ${JSON.stringify(params.allowedValues)}`;
    case 'const':
      return `must be ${JSON.stringify(params.allowedValue)}`;
    case 'discriminator':
      return params.error === 'mapping' ? 'is not a known interface type' : `${e.message ?? 'is invalid'}`;
    default:
      return e.message ?? 'is invalid';
  }
}

function issuesOf(errors: ErrorObject[] | null | undefined, prefix = ''): FieldIssue[] {
  const seen = new Set<string>();
  const out: FieldIssue[] = [];
  for (const e of errors ?? []) {
    if (e.keyword === 'if' || e.keyword === 'oneOf') continue; // summary errors; the specific ones follow
    const issue = { field: fieldOf(e, prefix), message: messageOf(e) };
    const k = `${issue.field}|${issue.message}`;
    if (!seen.has(k)) {
      seen.add(k);
      out.push(issue);
    }
  }
  return out;
}

/** Validates a decoded request body against its operation's schema; throws InvalidArgumentError listing every issue. */
export function validateRequest<S extends ApiOp>(op: S, body: unknown): RequestOf<S> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new InvalidArgumentError([{ field: '(request)', message: 'must be a JSON object' }]);
  }
  const v = validatorFor(op);
  if (!v(body)) throw new InvalidArgumentError(issuesOf(v.errors));
  if (op === 'vnfs.instantiate') {
    const issues = validateVnfdSemantics((body as { descriptor: Vnfd }).descriptor, 'descriptor');
    if (issues.length) throw new InvalidArgumentError(issues);
  }
  return body;
}

/** Validates a VNFD alone (CLI, dashboard): schema then semantics. Returns every issue (empty when valid). */
export function checkVnfd(d: unknown, prefix = ''): FieldIssue[] {
  if (!vnfdValidator(d)) return issuesOf(vnfdValidator.errors, prefix);
  return validateVnfdSemantics(d, prefix);
}

function isCidr(s: string): boolean {
  if (s === 'default') return true;
  const [addr, len, ...rest] = s.split('/');
  if (rest.length || !addr) return false;
  const fam = isIP(addr);
  if (!fam) return false;
  if (len === undefined) return true;
  if (!/^\d{1,3}$/.test(len)) return false;
  return Number(len) <= (fam === 4 ? 32 : 128);
}

/** Rules the schema cannot express. `prefix` is the descriptor's field path. */
export function validateVnfdSemantics(d: Vnfd, prefix = ''): FieldIssue[] {
  const at = (p: string): string => (prefix ? `${prefix}.${p}` : p);
  const issues: FieldIssue[] = [];
  if (!parseImageRef(d.image.ref)) issues.push({ field: at('image.ref'), message: `must be ${IMAGE_REF_FORMS}` });
  const names = new Map<string, number>();
  (d.interfaces ?? []).forEach((i, n) => {
    if (names.has(i.name)) {
      issues.push({ field: at(`interfaces[${n}].name`), message: `duplicates interfaces[${names.get(i.name)}].name "${i.name}"` });
    } else names.set(i.name, n);
    if (i.type === 'sriov' && i.vlanQos !== undefined && i.vlan === undefined) {
      issues.push({ field: at(`interfaces[${n}].vlanQos`), message: 'needs vlan' });
    }
  });
  (d.routes ?? []).forEach((r, n) => {
    if (!isCidr(r.dst)) issues.push({ field: at(`routes[${n}].dst`), message: 'must be a CIDR (e.g. 10.0.0.0/24) or "default"' });
    if (r.via !== undefined && !isIP(r.via)) issues.push({ field: at(`routes[${n}].via`), message: 'must be an IP address' });
    if (r.dev !== undefined && !names.has(r.dev)) {
      issues.push({ field: at(`routes[${n}].dev`), message: `names no interface of this VNF ("${r.dev}")` });
    }
    if (r.via === undefined && r.dev === undefined) {
      issues.push({ field: at(`routes[${n}]`), message: 'needs via or dev' });
    }
  });
  if (d.resources.hugepages) {
    const hpMiB = (d.resources.hugepages.sizeKiB / 1024) * d.resources.hugepages.count;
    if (hpMiB > d.resources.memoryMiB) {
      issues.push({
        field: at('resources.hugepages.count'),
        message: `asks ${hpMiB} MiB of hugepages, more than resources.memoryMiB (${d.resources.memoryMiB})`,
      });
    }
  }
  if (d.resources.numa === 'strict' && d.resources.cpuPolicy !== 'dedicated') {
    issues.push({ field: at('resources.numa'), message: 'strict NUMA placement needs cpuPolicy: dedicated' });
  }
  const dp = d.resources.dataplane;
  if (dp) {
    if (d.resources.vcpus < 2) issues.push({ field: at('resources.vcpus'), message: 'a DPDK data plane needs at least 2 vCPUs (a main and a forwarding lcore)' });
    const mib = dp.hugepagesMiB ?? DEFAULT_DATAPLANE_HUGEPAGES_MIB;
    if (mib + GUEST_BASE_MEMORY_MIB > d.resources.memoryMiB) {
      issues.push({
        field: at('resources.dataplane.hugepagesMiB'),
        message: `${mib} MiB of guest hugepages plus ${GUEST_BASE_MEMORY_MIB} MiB for the guest itself do not fit resources.memoryMiB (${d.resources.memoryMiB})`,
      });
    }
    const ifNames = new Set((d.interfaces ?? []).map((i) => i.name));
    (dp.interfaces ?? []).forEach((n, k) => {
      if (!ifNames.has(n)) issues.push({ field: at(`resources.dataplane.interfaces[${k}]`), message: `names no interface of this VNF ("${n}")` });
    });
    if (dp.interfaces === undefined && dataplaneInterfaces(d).length === 0) {
      issues.push({ field: at('resources.dataplane.interfaces'), message: 'no vhostuser or sriov interface to hand to DPDK: name the interfaces' });
    }
  }
  return issues;
}
