// edgenfv dashboard pictures: plain SVG built with DOM calls (no library). Text goes through textContent only.
(() => {
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** A stable colour per tenant. */
function tenantColor(id) {
  let h = 0;
  for (const ch of id) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${h % 360} 65% 55%)`;
}

/** A labelled bar: `used` of `total`, in `unit`. */
function bar(x, y, width, label, used, total, color) {
  const frac = total > 0 ? Math.min(1, used / total) : 0;
  return svg(
    'g',
    { class: 'bar', 'data-label': label, 'data-used': used, 'data-total': total },
    svg('text', { x, y: y + 11, class: 'lbl' }, label),
    svg('rect', { x: x + 150, y, width, height: 14, class: 'track' }),
    svg('rect', { x: x + 150, y, width: Math.round(width * frac), height: 14, fill: color || '#4a7bd0' }),
    svg('text', { x: x + 156 + width, y: y + 11, class: 'lbl' }, `${used} / ${total}`),
  );
}

/**
 * One node's capacity against allocation: per NUMA node its CPUs (pinned cores coloured by tenant, isolated
 * CPUs outlined, housekeeping CPUs grey), its hugepages per size; then VFs per physnet, vCPUs and memory.
 */
function nodePicture(node) {
  const inv = node.inventory || {};
  const res = node.reservations || [];
  const isolated = new Set(inv.isolatedCpus || []);
  const pinnedBy = new Map();
  for (const r of res) for (const c of r.cpus || []) pinnedBy.set(c, r);
  const numa = (inv.numaNodes && inv.numaNodes.length ? inv.numaNodes : [{ id: 0, cpus: Array.from({ length: inv.cpuCount || 0 }, (_, i) => i), hugepages: [] }]);
  const cell = 24;
  const perRow = 16;
  const parts = [];
  let y = 0;
  for (const n of numa) {
    parts.push(svg('text', { x: 0, y: y + 12, class: 'hdr' }, `NUMA ${n.id}`));
    y += 18;
    n.cpus.forEach((c, i) => {
      const x = (i % perRow) * (cell + 2);
      const cy = y + Math.floor(i / perRow) * (cell + 2);
      const r = pinnedBy.get(c);
      const cls = r ? 'cpu pinned' : isolated.has(c) ? 'cpu isolated' : 'cpu housekeeping';
      parts.push(
        svg(
          'g',
          { class: cls, 'data-cpu': c, 'data-tenant': r ? r.tenantId : undefined, 'data-vnf': r ? r.vnfId : undefined },
          svg('title', {}, r ? `CPU ${c}: pinned to ${r.tenantId} / ${r.vnfId} replica ${r.replica}` : isolated.has(c) ? `CPU ${c}: isolated, free` : `CPU ${c}: housekeeping / shared`),
          svg('rect', { x, y: cy, width: cell, height: cell, rx: 3, fill: r ? tenantColor(r.tenantId) : undefined }),
          svg('text', { x: x + cell / 2, y: cy + 16, 'text-anchor': 'middle', class: 'num' }, c),
        ),
      );
    });
    y += Math.ceil(n.cpus.length / perRow) * (cell + 2) + 4;
    for (const h of n.hugepages || []) {
      const used = res.filter((r) => r.hugepages && r.hugepages.numaNode === n.id && r.hugepages.sizeKiB === h.sizeKiB).reduce((a, r) => a + r.hugepages.count, 0);
      parts.push(bar(0, y, 200, `hugepages ${h.sizeKiB >= 1048576 ? `${h.sizeKiB / 1048576}G` : `${h.sizeKiB / 1024}M`}`, used, h.total, '#c07a2c'));
      y += 20;
    }
    y += 6;
  }
  const physnets = new Map();
  for (const pf of inv.sriovPfs || []) if (pf.physnet) physnets.set(pf.physnet, (physnets.get(pf.physnet) || 0) + (pf.numVfs || 0));
  for (const [pn, total] of physnets) {
    const free = node.free && node.free.vfs && typeof node.free.vfs[pn] === 'number' ? node.free.vfs[pn] : total;
    parts.push(bar(0, y, 200, `VFs ${pn}`, total - free, total, '#2c9c6a'));
    y += 20;
  }
  const alloc = node.allocated || { vcpus: 0, memoryMiB: 0 };
  parts.push(bar(0, y, 200, 'vCPUs', alloc.vcpus, inv.cpuCount || 0));
  y += 20;
  parts.push(bar(0, y, 200, 'memory MiB', alloc.memoryMiB, inv.memoryMiB || 0));
  y += 20;
  const width = Math.max(perRow * (cell + 2), 430);
  return svg('svg', { class: 'node-picture', width, height: y, viewBox: `0 0 ${width} ${y}`, role: 'img', 'aria-label': `capacity of ${node.id}` }, parts);
}

/** A legend of the tenants that hold pinned CPUs on the nodes. */
function tenantLegend(nodes) {
  const tenants = new Set();
  for (const n of nodes) for (const r of n.reservations || []) if (r.cpus && r.cpus.length) tenants.add(r.tenantId);
  return [...tenants].sort().map((t) => {
    const s = document.createElement('span');
    s.className = 'legend';
    const sw = document.createElement('i');
    sw.style.background = tenantColor(t);
    s.append(sw, document.createTextNode(t));
    return s;
  });
}

const TERMINAL = ['COMPLETED', 'FAILED', 'ROLLED_BACK'];

/** An op occurrence's steps on a time axis: one row per step, a dot where it happened since the start. */
function opTimeline(op) {
  const t0 = Date.parse(op.startTime);
  const times = op.steps.map((s) => Date.parse(s.at));
  const end = Math.max(t0 + 1, ...times, TERMINAL.includes(op.operationState) ? Date.parse(op.stateEnteredTime) : Date.now());
  const w = 260;
  const rowH = 18;
  const rows = op.steps.map((s, i) => {
    const x = Math.round(((times[i] - t0) / (end - t0)) * w);
    const y = 22 + i * rowH;
    return svg(
      'g',
      { class: 'step' },
      svg('line', { x1: 0, y1: y - 4, x2: w, y2: y - 4, class: 'axis' }),
      svg('circle', { cx: x, cy: y - 4, r: 4 }),
      svg('text', { x: w + 10, y, class: 'lbl' }, `+${((times[i] - t0) / 1000).toFixed(1)} s  ${s.message}`),
    );
  });
  const cls = op.operationState === 'COMPLETED' ? 'ok' : ['FAILED', 'FAILED_TEMP', 'ROLLED_BACK'].includes(op.operationState) ? 'bad' : 'busy';
  const head = svg('text', { x: 0, y: 12, class: `hdr ${cls}` }, `${op.operation} ${op.operationState} (${((end - t0) / 1000).toFixed(1)} s)`);
  const h = 26 + op.steps.length * rowH;
  return svg('svg', { class: 'timeline', width: 760, height: h, viewBox: `0 0 760 ${h}`, 'data-opocc': op.id, 'data-state': op.operationState }, head, rows);
}

/** A histogram from cumulative Prometheus buckets: one bar per bucket (its own count). */
function histogramPicture(h, title, unit) {
  const counts = h.buckets.map((b, i) => b.count - (i > 0 ? h.buckets[i - 1].count : 0));
  const max = Math.max(1, ...counts);
  const bw = 34;
  const H = 90;
  const bars = h.buckets.map((b, i) =>
    svg(
      'g',
      { class: 'hbar' },
      svg('title', {}, `≤ ${b.le} ${unit}: ${counts[i]}`),
      svg('rect', { x: i * (bw + 4), y: 14 + H - Math.round((counts[i] / max) * H), width: bw, height: Math.max(0, Math.round((counts[i] / max) * H)) }),
      svg('text', { x: i * (bw + 4) + bw / 2, y: 14 + H + 12, 'text-anchor': 'middle', class: 'num' }, b.le === '+Inf' ? '∞' : b.le),
      counts[i] ? svg('text', { x: i * (bw + 4) + bw / 2, y: 10 + H - Math.round((counts[i] / max) * H), 'text-anchor': 'middle', class: 'num' }, counts[i]) : null,
    ),
  );
  const w = Math.max(440, h.buckets.length * (bw + 4));
  const mean = h.count ? ` — ${h.count} samples, mean ${(h.sum / h.count).toPrecision(3)} ${unit}` : ' — no samples yet';
  return svg('svg', { class: 'histogram', width: w, height: H + 32, viewBox: `0 0 ${w} ${H + 32}`, 'data-metric': h.metric }, svg('text', { x: 0, y: 10, class: 'hdr' }, `${title}${mean}`), bars);
}

window.draw = { nodePicture, tenantLegend, opTimeline, histogramPicture, tenantColor, TERMINAL };
})();
