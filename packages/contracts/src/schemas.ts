/**
 * JSON Schemas of every API v1 request: the machine-readable contract, used to validate each request.
 * Closed objects (unknown fields rejected), bounded strings and arrays (a 10 MB string is refused by name).
 * Semantic rules the schema language cannot say (unique interface names, CIDRs, route devices) follow in
 * `validateVnfdSemantics`.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { isIP } from 'node:net';
import { InvalidArgumentError, type FieldIssue } from './errors.js';
import type { AdminOp, TenantOp } from './subjects.js';
import { DEFAULT_DATAPLANE_HUGEPAGES_MIB, GUEST_BASE_MEMORY_MIB, dataplaneInterfaces, type Vnfd } from './vnfd.js';
import { IMAGE_REF_FORMS, parseImageRef } from './image-ref.js';

const DNS_LABEL = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
const IFNAME = '^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$';
const MAC = '^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$';
const MAX_COUNT = 1_000_000_000;

const dnsLabel = { type: 'string', minLength: 1, maxLength: 63, pattern: DNS_LABEL } as const;
const id = { type: 'string', minLength: 1, maxLength: 128, pattern: '^[a-z0-9]([a-z0-9-]{0,126}[a-z0-9])?$' } as const;
const requestId = { type: 'string', minLength: 1, maxLength: 128, pattern: '^[\\x21-\\x7e]+$' } as const;
const ifname = { type: 'string', minLength: 1, maxLength: 15, pattern: IFNAME } as const;
const shortText = { type: 'string', maxLength: 256 } as const;
const count = { type: 'integer', minimum: 0, maximum: MAX_COUNT } as const;

const interfaceBase = {
  name: ifname,
  network: dnsLabel,
  mtuBytes: { type: 'integer', minimum: 68, maximum: 9216 },
  mac: { type: 'string', maxLength: 17, pattern: MAC },
} as const;

function iface(type: string, props: Record<string, unknown>, required: string[] = []): object {
  return {
    type: 'object',
    additionalProperties: false,
    required: ['name', 'type', ...required],
    properties: { ...interfaceBase, type: { const: type }, ...props },
  };
}

export const vnfdSchema = {
  $id: 'edgenfv:vnfd',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'replicas', 'resources', 'image'],
  properties: {
    name: dnsLabel,
    replicas: { type: 'integer', minimum: 1, maximum: 1000 },
    placement: {
      type: 'object',
      additionalProperties: false,
      properties: {
        antiAffinity: { enum: ['node', 'none'] },
        nodeSelector: {
          type: 'object',
          maxProperties: 32,
          propertyNames: { maxLength: 63, pattern: '^[A-Za-z0-9]([A-Za-z0-9_./-]{0,61}[A-Za-z0-9])?$' },
          additionalProperties: { type: 'string', maxLength: 63 },
        },
      },
    },
    resources: {
      type: 'object',
      additionalProperties: false,
      required: ['vcpus', 'memoryMiB'],
      properties: {
        vcpus: { type: 'integer', minimum: 1, maximum: 256 },
        memoryMiB: { type: 'integer', minimum: 64, maximum: 4_194_304 },
        cpuPolicy: { enum: ['dedicated', 'shared'] },
        hugepages: {
          type: 'object',
          additionalProperties: false,
          required: ['sizeKiB', 'count'],
          properties: {
            sizeKiB: { enum: [2048, 1048576] },
            count: { type: 'integer', minimum: 1, maximum: 1_048_576 },
          },
        },
        numa: { enum: ['strict', 'preferred', 'none'] },
        dataplane: {
          type: 'object',
          additionalProperties: false,
          required: ['kind'],
          properties: {
            kind: { enum: ['dpdk'] },
            hugepagesMiB: { type: 'integer', minimum: 2, maximum: 1_048_576 },
            interfaces: { type: 'array', minItems: 1, maxItems: 32, items: { type: 'string', minLength: 1, maxLength: 15 } },
            driver: { enum: ['uio_pci_generic', 'vfio-pci'] },
          },
        },
      },
    },
    image: {
      type: 'object',
      additionalProperties: false,
      required: ['ref'],
      properties: {
        // the forms (builtin:, oci:, a registry reference) are checked by parseImageRef in validateVnfdSemantics
        ref: { type: 'string', minLength: 1, maxLength: 1024, pattern: '^\\S+$' },
      },
    },
    command: { type: 'array', maxItems: 64, items: { type: 'string', maxLength: 4096 } },
    args: { type: 'array', maxItems: 256, items: { type: 'string', maxLength: 4096 } },
    env: {
      type: 'object',
      maxProperties: 128,
      propertyNames: { maxLength: 256, pattern: '^[A-Za-z_][A-Za-z0-9_]*$' },
      additionalProperties: { type: 'string', maxLength: 4096 },
    },
    interfaces: {
      type: 'array',
      maxItems: 16,
      items: {
        type: 'object',
        required: ['type'],
        properties: { type: { enum: ['tap', 'macvtap', 'sriov', 'vhostuser'] } },
        discriminator: { propertyName: 'type' },
        oneOf: [
          iface('tap', {}),
          iface('macvtap', { parent: ifname }),
          iface(
            'sriov',
            {
              physnet: dnsLabel,
              vlan: { type: 'integer', minimum: 0, maximum: 4094 },
              vlanQos: { type: 'integer', minimum: 0, maximum: 7 },
              spoofchk: { type: 'boolean' },
              trust: { type: 'boolean' },
            },
            ['physnet'],
          ),
          iface(
            'vhostuser',
            { dataplane: { enum: ['vpp', 'ovs-dpdk', 'testpmd'] }, queues: { type: 'integer', minimum: 1, maximum: 16 } },
          ),
        ],
      },
    },
    routes: {
      type: 'array',
      maxItems: 64,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['dst'],
        properties: {
          dst: { type: 'string', maxLength: 64 },
          via: { type: 'string', maxLength: 64 },
          dev: ifname,
        },
      },
    },
  },
} as const;

const obj = (required: string[], properties: Record<string, unknown>): object => ({
  type: 'object',
  additionalProperties: false,
  required,
  properties,
});
const empty = obj([], {});
const byId = obj(['id'], { id });
const byNodeId = obj(['id'], { id: dnsLabel });

export const requestSchemas: Record<AdminOp | TenantOp, object> = {
  'tenants.create': obj(['id'], {
    id: dnsLabel,
    displayName: shortText,
    quota: obj([], { vcpus: count, memoryMiB: count, vfs: count, vnfs: count }),
  }),
  'tenants.get': obj(['id'], { id: dnsLabel }),
  'tenants.list': empty,
  'tenants.delete': obj(['id'], { id: dnsLabel }),
  'nodes.list': empty,
  'nodes.get': byNodeId,
  'nodes.cordon': byNodeId,
  'nodes.uncordon': byNodeId,
  'nodes.drain': byNodeId,
  'tenants.credentials': obj(['id'], { id: dnsLabel, rotate: { type: 'boolean' } }),
  'vnfs.instantiate': obj(['descriptor'], { descriptor: { $ref: 'edgenfv:vnfd' }, requestId }),
  'vnfs.get': byId,
  'vnfs.list': empty,
  'vnfs.scale': obj(['id', 'replicas'], { id, replicas: { type: 'integer', minimum: 0, maximum: 1000 }, requestId }),
  'vnfs.heal': obj(['id'], { id, replica: { type: 'integer', minimum: 0, maximum: 999 }, requestId }),
  'vnfs.terminate': obj(['id'], { id, mode: { enum: ['GRACEFUL', 'FORCEFUL'] }, requestId }),
  'opoccs.get': byId,
  'notifications.list': obj([], {
    vnfId: id,
    afterSeq: { type: 'integer', minimum: 0 },
    limit: { type: 'integer', minimum: 1, maximum: 1000 },
  }),
  'vnfs.operate': obj(['id', 'changeStateTo'], { id, changeStateTo: { enum: ['STARTED', 'STOPPED'] }, requestId }),
  'vnfs.logs': obj(['id'], { id, replica: { type: 'integer', minimum: 0, maximum: 999 }, tailLines: { type: 'integer', minimum: 1, maximum: 5000 } }),
  'vnfs.exec': obj(['id', 'command'], {
    id,
    replica: { type: 'integer', minimum: 0, maximum: 999 },
    command: { type: 'array', minItems: 1, maxItems: 64, items: { type: 'string', minLength: 1, maxLength: 4096 } },
    timeoutMs: { type: 'integer', minimum: 1, maximum: 120_000 },
  }),
  'opoccs.list': obj([], { vnfId: id }),
  'opoccs.retry': byId,
  'opoccs.rollback': byId,
  'opoccs.fail': byId,
};

const ajv = new Ajv({ allErrors: true, strict: true, discriminator: true, allowUnionTypes: true });
ajv.addSchema(vnfdSchema);
const compiled = new Map<string, ValidateFunction>();
function validatorFor(op: AdminOp | TenantOp): ValidateFunction {
  let v = compiled.get(op);
  if (!v) {
    v = ajv.compile(requestSchemas[op]);
    compiled.set(op, v);
  }
  return v;
}
const vnfdValidator = ajv.getSchema('edgenfv:vnfd')!;

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
  if (e.keyword === 'propertyNames' && params.propertyName !== undefined) path = `${path}.${String(params.propertyName)}`;
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
export function validateRequest<T>(op: AdminOp | TenantOp, body: unknown): T {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new InvalidArgumentError([{ field: '(request)', message: 'must be a JSON object' }]);
  }
  const v = validatorFor(op);
  if (!v(body)) throw new InvalidArgumentError(issuesOf(v.errors));
  if (op === 'vnfs.instantiate') {
    const issues = validateVnfdSemantics((body as { descriptor: Vnfd }).descriptor, 'descriptor');
    if (issues.length) throw new InvalidArgumentError(issues);
  }
  return body as T;
}

/** Validates a VNFD alone (CLI, dashboard): schema then semantics. Returns every issue (empty when valid). */
export function checkVnfd(d: unknown, prefix = ''): FieldIssue[] {
  if (!vnfdValidator(d)) return issuesOf(vnfdValidator.errors, prefix);
  return validateVnfdSemantics(d as Vnfd, prefix);
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
      issues.push({ field: at('resources.dataplane.interfaces'), message: 'no vhostuser interface to hand to DPDK: name the interfaces' });
    }
  }
  return issues;
}
