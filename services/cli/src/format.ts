/** Output of `edgenfv`: json (stable, for scripts), yaml, or table (for people). */
import { stringify } from 'yaml';
import type { NodeRecord, OpOcc, Tenant, Vnf } from '@edgenfv/contracts';
import type { StoredEvent } from '@edgenfv/api-client';

export type OutputFormat = 'json' | 'yaml' | 'table';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['json', 'yaml', 'table'];

export type Kind = 'tenant' | 'node' | 'vnf' | 'opocc' | 'opoccs' | 'plain';

/** A table with a header row; columns padded to their widest cell, two spaces apart. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

const lim = (used: number | undefined, max: number | undefined): string => `${used ?? 0}/${max ?? '-'}`;

function tenantRows(items: Tenant[]): string {
  return table(
    ['ID', 'NAME', 'VCPUS', 'MEMORY_MIB', 'VFS', 'VNFS', 'CREATED'],
    items.map((t) => [
      t.id,
      t.displayName ?? '',
      lim(t.usage?.vcpus, t.quota?.vcpus),
      lim(t.usage?.memoryMiB, t.quota?.memoryMiB),
      lim(t.usage?.vfs, t.quota?.vfs),
      lim(t.usage?.vnfs, t.quota?.vnfs),
      t.createdAt,
    ]),
  );
}

function nodeRows(items: NodeRecord[]): string {
  return table(
    ['ID', 'HEALTH', 'SCHEDULING', 'CPUS', 'MEMORY_MIB', 'VFS', 'REPLICAS', 'NUMA', 'EPOCH'],
    items.map((n) => {
      const inv = n.inventory;
      const totalVfs = (inv?.sriovPfs ?? []).reduce((a, p) => a + p.numVfs, 0);
      return [
        n.id,
        n.health,
        n.cordoned ? 'cordoned' : 'enabled',
        `${n.allocated?.vcpus ?? 0}/${inv?.cpuCount ?? '?'}`,
        `${n.allocated?.memoryMiB ?? 0}/${inv?.memoryMiB ?? '?'}`,
        `${n.allocated?.vfs ?? 0}/${totalVfs}`,
        String(n.allocated?.replicas ?? 0),
        String(inv?.numaNodes?.length ?? 0),
        String(n.epoch),
      ];
    }),
  );
}

function nodeDetail(n: NodeRecord): string {
  let out = nodeRows([n]);
  const inv = n.inventory;
  if (inv?.numaNodes?.length) {
    out += '\n' + table(
      ['NUMA', 'CPUS', 'MEMORY_MIB', 'HUGEPAGES_FREE/TOTAL'],
      inv.numaNodes.map((z) => [
        String(z.id),
        formatList(z.cpus),
        String(z.memoryMiB),
        z.hugepages.map((h) => `${h.free}/${h.total}x${h.sizeKiB >= 1048576 ? `${h.sizeKiB / 1048576}G` : `${h.sizeKiB / 1024}M`}`).join(' ') || '-',
      ]),
    );
  }
  if (inv?.sriovPfs?.length) {
    out += '\n' + table(
      ['PF', 'IFNAME', 'PHYSNET', 'NUMA', 'VFS'],
      inv.sriovPfs.map((p) => [p.pciAddress, p.ifName ?? '-', p.physnet ?? '-', String(p.numaNode), `${p.numVfs}/${p.totalVfs}`]),
    );
  }
  if (n.sandboxes?.length) {
    out += '\n' + table(['SANDBOX_TENANT', 'REPLICAS'], n.sandboxes.map((b) => [b.tenantId, String(b.replicas)]));
  }
  return out;
}

/** `[0,1,2,5]` -> `0-2,5`. */
function formatList(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < s.length; i++) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j] + 1) j++;
    parts.push(i === j ? String(s[i]) : `${s[i]}-${s[j]}`);
    i = j;
  }
  return parts.join(',') || '-';
}

function vnfRows(items: Vnf[]): string {
  return table(
    ['ID', 'NAME', 'STATE', 'REPLICAS', 'NODES', 'LAST_OP'],
    items.map((v) => [
      v.id,
      v.name,
      v.instantiationState,
      `${v.replicas.filter((r) => r.state === 'RUNNING').length}/${v.desiredReplicas}`,
      [...new Set(v.replicas.map((r) => r.nodeId).filter((x): x is string => !!x))].join(',') || '-',
      v.lastOpOccId ?? '-',
    ]),
  );
}

function vnfDetail(v: Vnf): string {
  let out = vnfRows([v]);
  out += '\n' + table(
    ['REPLICA', 'STATE', 'NODE', 'SANDBOX', 'INTERFACES', 'MESSAGE'],
    v.replicas.map((r) => [
      String(r.index),
      r.state,
      r.nodeId ?? '-',
      r.sandboxId ?? '-',
      r.interfaces
        .map((i) => `${i.name}(${i.type}${i.mac ? ` ${i.mac}` : ''}${i.ips.length ? ` ${i.ips.join(',')}` : ''}${i.pciAddress ? ` pci=${i.pciAddress}` : ''}${i.socketPath ? ` sock=${i.socketPath}` : ''})`)
        .join(' ') || '-',
      r.error ? `${r.error.code}: ${r.error.message}` : (r.message ?? ''),
    ]),
  );
  return out;
}

function opoccDetail(o: OpOcc): string {
  let out = table(
    ['ID', 'VNF', 'OPERATION', 'STATE', 'STARTED', 'STATE_ENTERED'],
    [[o.id, o.vnfId, o.operation, o.operationState, o.startTime, o.stateEnteredTime]],
  );
  if (o.error) {
    out += `\nerror: ${o.error.code}: ${o.error.message}\n`;
    if (o.error.details !== undefined) out += detailLines(o.error.details).map((l) => `  ${l}\n`).join('');
  }
  if (o.steps?.length) out += '\n' + table(['AT', 'STEP'], o.steps.map((s) => [s.at, s.message]));
  return out;
}

/** A value from an error's details as text: strings as they are, anything else as JSON (never `[object Object]`). */
const text = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v));

/** `[filter] reason (N nodes)` for one rejection of a placement explanation. */
export function rejectionLine(r: Record<string, unknown>): string {
  const n = typeof r.nodes === 'number' ? ` (${r.nodes} node${r.nodes === 1 ? '' : 's'})` : '';
  return `${r.filter !== undefined ? `[${text(r.filter)}] ` : ''}${text(r.reason ?? r)}${n}`;
}

/** Error details as readable lines: issues as `field: message`, reasons per node, anything else as JSON. */
export function detailLines(details: unknown): string[] {
  if (details === null || typeof details !== 'object') return [JSON.stringify(details)];
  const d = details as Record<string, unknown>;
  const lines: string[] = [];
  if (Array.isArray(d.issues)) {
    for (const i of d.issues as Array<{ field?: string; message?: string }>) lines.push(`- ${i.field ? `${i.field}: ` : ''}${i.message ?? ''}`);
  }
  if (Array.isArray(d.reasons)) {
    for (const r of d.reasons as Array<Record<string, unknown>>) {
      const who = r.node ?? r.nodeClass ?? r.nodeId ?? '';
      lines.push(`- ${who ? `${text(who)}: ` : ''}${r.filter ? `[${text(r.filter)}] ` : ''}${text(r.reason ?? r)}`);
    }
  }
  if (Array.isArray(d.rejected)) {
    // the scheduler's placement explanation: per filter and reason, how many nodes it rejected
    for (const r of d.rejected as Array<Record<string, unknown>>) lines.push(`- ${rejectionLine(r)}`);
  }
  for (const [k, v] of Object.entries(d)) {
    if (k === 'issues' || k === 'reasons' || k === 'rejected') continue;
    if (Array.isArray(d.rejected) && (k === 'message' || k === 'nodes')) continue; // already said

    lines.push(`${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`);
  }
  return lines;
}

function keyValues(o: unknown): string {
  if (o === null || typeof o !== 'object') return `${String(o)}\n`;
  const entries = Object.entries(o as Record<string, unknown>);
  if (entries.length === 0) return 'ok\n';
  return table(['KEY', 'VALUE'], entries.map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]));
}

/** Renders a result (a record or a list) in the chosen format. */
export function render(value: unknown, kind: Kind, format: OutputFormat, opts: { single?: boolean } = {}): string {
  if (format === 'json') return JSON.stringify(value, null, 2) + '\n';
  if (format === 'yaml') return stringify(value);
  const list = Array.isArray(value) ? value : [value];
  switch (kind) {
    case 'tenant':
      return tenantRows(list as Tenant[]);
    case 'node':
      return opts.single ? nodeDetail(value as NodeRecord) : nodeRows(list as NodeRecord[]);
    case 'vnf':
      return opts.single ? vnfDetail(value as Vnf) : vnfRows(list as Vnf[]);
    case 'opocc':
      return opoccDetail(value as OpOcc);
    case 'opoccs':
      return table(
        ['ID', 'VNF', 'OPERATION', 'STATE', 'STARTED', 'ERROR'],
        (list as OpOcc[]).map((o) => [o.id, o.vnfId, o.operation, o.operationState, o.startTime, o.error ? `${o.error.code}: ${o.error.message}` : '']),
      );
    default:
      return keyValues(value);
  }
}

/** One event as a line (table), a JSON line (json: NDJSON), or a YAML document. */
export function renderEvent(e: StoredEvent, format: OutputFormat): string {
  if (format === 'json') return JSON.stringify({ seq: e.seq, subject: e.subject, tenantId: e.tenantId, ...e.event }) + '\n';
  if (format === 'yaml') return '---\n' + stringify({ seq: e.seq, subject: e.subject, tenantId: e.tenantId, ...e.event });
  const ev = e.event;
  if (ev.type === 'OpOcc') {
    const err = ev.error ? ` ${ev.error.code}: ${ev.error.message}` : '';
    return `${ev.at}  #${e.seq}  ${e.tenantId}/${ev.vnfId}  OpOcc ${ev.opOccId} ${ev.operation} ${ev.operationState}${err}\n`;
  }
  if (ev.type === 'Replica') {
    return `${ev.at}  #${e.seq}  ${e.tenantId}/${ev.vnfId}  Replica ${ev.replica} ${ev.state}${ev.nodeId ? ` on ${ev.nodeId}` : ''}\n`;
  }
  return `#${e.seq}  ${e.subject}  ${JSON.stringify(ev)}\n`;
}
