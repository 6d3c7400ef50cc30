// edgenfv dashboard page: plain DOM, no framework. Every value from the API goes through textContent.
'use strict';

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function getJson(url, init) {
  const res = await fetch(url, init);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = body.error || { code: 'INTERNAL', message: `HTTP ${res.status}` };
    throw Object.assign(new Error(`${err.code}: ${err.message}`), { body: err });
  }
  return body;
}

const used = (u, q) => `${u ?? 0}/${q ?? '∞'}`;

function renderNodes(nodes) {
  const tbody = $('#nodes tbody');
  tbody.replaceChildren(
    ...nodes.map((n) => {
      const inv = n.inventory || {};
      const vfs = (inv.sriovPfs || []).reduce((a, p) => a + (p.numVfs || 0), 0);
      const numa = (inv.numaNodes || [])
        .map((z) => `node ${z.id}: ${z.cpus.length} CPUs, ${(z.hugepages || []).map((h) => `${h.free}/${h.total}×${h.sizeKiB / 1024}M`).join(' ') || 'no hugepages'}`)
        .join('; ');
      const sandboxes = (n.sandboxes || []).map((s) => `${s.tenantId} (${s.replicas})`).join(', ') || '—';
      const action = (name) => el('button', { 'data-action': name, onclick: () => act(n.id, name) }, name);
      return el(
        'tr',
        { 'data-node': n.id },
        el('td', {}, el('code', {}, n.id), el('br'), inv.hostname || ''),
        el('td', { class: n.health === 'Ready' ? 'ok' : 'bad' }, n.health),
        el('td', { class: n.cordoned ? 'warn' : '' }, n.cordoned ? 'cordoned' : 'enabled'),
        el('td', {}, `${n.allocated?.vcpus ?? 0}/${inv.cpuCount ?? '?'}`),
        el('td', {}, `${n.allocated?.memoryMiB ?? 0}/${inv.memoryMiB ?? '?'}`),
        el('td', {}, `${n.allocated?.vfs ?? 0}/${vfs}`),
        el('td', {}, numa),
        el('td', {}, sandboxes),
        el('td', {}, n.cordoned ? action('uncordon') : action('cordon'), action('drain')),
      );
    }),
  );
}

function renderTenants(tenants) {
  $('#tenants tbody').replaceChildren(
    ...tenants.map((t) =>
      el(
        'tr',
        { 'data-tenant': t.id },
        el('td', {}, el('code', {}, t.id)),
        el('td', {}, t.displayName || ''),
        el('td', {}, used(t.usage?.vcpus, t.quota?.vcpus)),
        el('td', {}, used(t.usage?.memoryMiB, t.quota?.memoryMiB)),
        el('td', {}, used(t.usage?.vfs, t.quota?.vfs)),
        el('td', {}, used(t.usage?.vnfs, t.quota?.vnfs)),
      ),
    ),
  );
}

function renderVnfs(vnfs) {
  const box = $('#vnfs');
  if (vnfs.length === 0) return box.replaceChildren(el('p', {}, 'No VNFs.'));
  box.replaceChildren(
    ...vnfs.map((v) => {
      const running = v.replicas.filter((r) => r.state === 'RUNNING').length;
      const op = v.lastOpOcc;
      const why = v.unschedulable
        ? el(
            'div',
            { class: 'why' },
            el('strong', {}, 'Not scheduled (UNSCHEDULABLE): '),
            v.unschedulable.message,
            v.unschedulable.reasons.length ? el('ul', {}, v.unschedulable.reasons.map((r) => el('li', {}, r))) : null,
          )
        : null;
      const replicas = el(
        'table',
        {},
        el('thead', {}, el('tr', {}, ['Replica', 'State', 'Node', 'Interfaces', 'Message'].map((h) => el('th', {}, h)))),
        el(
          'tbody',
          {},
          v.replicas.map((r) =>
            el(
              'tr',
              {},
              el('td', {}, String(r.index)),
              el('td', { class: r.state === 'RUNNING' ? 'ok' : r.state === 'FAILED' ? 'bad' : '' }, r.state),
              el('td', {}, r.nodeId || '—'),
              el(
                'td',
                {},
                r.interfaces.map((i) =>
                  el('div', {}, el('code', {}, i.name), ` ${i.type} ${i.mac || ''} ${(i.ips || []).join(', ')} ${i.pciAddress ? `pci ${i.pciAddress}` : ''}${i.socketPath ? `socket ${i.socketPath}` : ''}`),
                ),
              ),
              el('td', {}, r.error ? `${r.error.code}: ${r.error.message}` : r.message || ''),
            ),
          ),
        ),
      );
      return el(
        'div',
        { class: 'vnf', 'data-vnf': v.id },
        el('h3', {}, `${v.tenantId} / ${v.name} `, el('code', {}, v.id)),
        el('div', {}, `${v.instantiationState}, ${running}/${v.desiredReplicas} replicas running`, op ? ` — last operation ${op.operation} ${op.operationState}` : ''),
        why,
        op?.error && !v.unschedulable ? el('div', { class: 'why' }, `${op.error.code}: ${op.error.message}`) : null,
        replicas,
      );
    }),
  );
}

function renderEvents(items) {
  $('#events').replaceChildren(
    ...items.map((e) =>
      el(
        'li',
        {},
        e.event.type === 'OpOcc'
          ? `${e.event.at} ${e.tenantId}/${e.event.vnfId} ${e.event.operation} ${e.event.operationState}${e.event.error ? ` ${e.event.error.code}: ${e.event.error.message}` : ''}`
          : `${e.event.at} ${e.tenantId}/${e.event.vnfId} replica ${e.event.replica} ${e.event.state}${e.event.nodeId ? ` on ${e.event.nodeId}` : ''}`,
      ),
    ),
  );
}

async function act(nodeId, action) {
  const token = $('#token').value;
  let text;
  let cls;
  try {
    await getJson(`/api/nodes/${encodeURIComponent(nodeId)}/${action}`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    [text, cls] = [`${action} ${nodeId}: done`, 'ok'];
  } catch (err) {
    [text, cls] = [`${action} ${nodeId}: ${err.message}`, 'bad'];
  }
  await refresh();
  setStatus(text, cls);
}

function setStatus(text, cls) {
  const s = $('#status');
  s.textContent = text;
  s.className = cls || '';
}

async function refresh() {
  try {
    const o = await getJson('/api/overview');
    renderNodes(o.nodes);
    renderTenants(o.tenants);
    renderVnfs(o.vnfs);
    if (o.errors.length) setStatus(o.errors.map((e) => `${e.what}: ${e.error.code}`).join('; '), 'warn');
    else setStatus(`updated ${new Date().toLocaleTimeString()}`, 'ok');
    document.body.dataset.loaded = 'true';
  } catch (err) {
    setStatus(`cannot load: ${err.message}`, 'bad');
  }
  try {
    renderEvents((await getJson('/api/events?limit=30')).items);
  } catch (err) {
    renderEvents([]);
  }
}

refresh();
setInterval(refresh, 5000);
