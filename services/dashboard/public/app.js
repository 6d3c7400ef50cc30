// edgenfv dashboard page: plain DOM, no framework. Every value from the API goes through textContent.
// Live: one server-sent-events stream (read with fetch so the token travels in a header), resumed with
// Last-Event-ID after a blip; each notification re-reads only what it names. No polling.
'use strict';

const $ = (sel) => document.querySelector(sel);
const { nodePicture, tenantLegend, opTimeline, histogramPicture, TERMINAL } = window.draw;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
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

// ---- token: from the URL fragment once (never sent to the server), then this tab's sessionStorage ----
if (location.hash.startsWith('#token=')) {
  sessionStorage.setItem('edgenfv.token', decodeURIComponent(location.hash.slice(7)));
  history.replaceState(null, '', location.pathname);
}
const token = () => sessionStorage.getItem('edgenfv.token') || '';

async function api(path, init = {}) {
  const res = await fetch(path, { ...init, headers: { ...(init.headers || {}), authorization: `Bearer ${token()}`, ...(init.body ? { 'content-type': 'application/json' } : {}) } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = body.error || { code: 'INTERNAL', message: `HTTP ${res.status}` };
    throw Object.assign(new Error(`${err.code}: ${err.message}`), { body: err, status: res.status });
  }
  return body;
}

const state = {
  principal: null,
  nodes: new Map(),
  tenants: new Map(),
  vnfs: new Map(),
  /** op occurrences followed live (started from this page), newest first */
  followed: new Map(),
  events: [],
  /** per VNF: its container logs / its op occurrences, when asked for from its card */
  logs: new Map(),
  history: new Map(),
  histograms: null,
  lastEventId: 0,
};
const isOperator = () => state.principal && state.principal.role === 'operator';

function setStatus(text, cls) {
  const s = $('#status');
  s.textContent = text;
  s.className = cls || '';
}

// ---- rendering (batched per animation frame) ----
const dirty = new Set();
let frame = 0;
function invalidate(...parts) {
  for (const p of parts) dirty.add(p);
  if (!frame) frame = requestAnimationFrame(render);
}
function render() {
  frame = 0;
  if (dirty.has('nodes')) renderNodes();
  if (dirty.has('tenants')) renderTenants();
  if (dirty.has('vnfs')) renderVnfs();
  if (dirty.has('ops')) renderOps();
  if (dirty.has('events')) renderEvents();
  if (dirty.has('histograms')) renderHistograms();
  dirty.clear();
}

function renderNodes() {
  $('#nodes-section').hidden = !isOperator();
  const nodes = [...state.nodes.values()].sort((a, b) => a.id.localeCompare(b.id));
  $('#legend').replaceChildren(...tenantLegend(nodes));
  $('#nodes').replaceChildren(
    ...nodes.map((n) => {
      const action = (name) => el('button', { 'data-action': name, onclick: () => nodeAction(n.id, name) }, name);
      const sandboxes = (n.sandboxes || []).map((s) => `${s.tenantId} (${s.replicas})`).join(', ') || 'none';
      const checks = (n.inventory.checks || []).filter((c) => c.status !== 'pass');
      return el(
        'div',
        { class: 'node card', 'data-node': n.id },
        el(
          'div',
          { class: 'card-head' },
          el('strong', {}, n.id),
          ' ',
          n.inventory.hostname || '',
          ' ',
          el('span', { class: n.health === 'Ready' ? 'ok' : 'bad', 'data-health': n.health }, n.health),
          ' ',
          el('span', { class: n.cordoned ? 'warn' : '' }, n.cordoned ? 'cordoned' : 'schedulable'),
          el('span', { class: 'actions' }, n.cordoned ? action('uncordon') : action('cordon'), action('drain')),
        ),
        nodePicture(n),
        el('div', { class: 'small' }, `sandboxes: ${sandboxes}`),
        ...(n.inventory.dataplanes || []).filter((d) => d.state).map((d) =>
          el(
            'div',
            { class: 'small dataplane', 'data-dataplane': d.kind, 'data-state': d.state },
            `${d.kind}: `,
            el('span', { class: d.state === 'ready' ? 'ok' : d.state === 'failed' ? 'bad' : 'warn' }, d.state),
            (d.networks || []).length ? ` (networks ${d.networks.join(', ')})` : '',
            d.error ? ` — ${d.error}` : '',
          ),
        ),
        ...(n.inventory.warmPool || []).map((w) =>
          el(
            'div',
            { class: 'small warm-pool', 'data-warm-pool': `${w.vcpus}c-${w.memoryMiB}m`, 'data-ready': String(w.ready) },
            `warm pool ${w.vcpus} vCPU / ${w.memoryMiB} MiB${w.numaNode !== undefined ? ` (NUMA ${w.numaNode})` : ''}: `,
            el('span', { class: w.ready >= w.count ? 'ok' : 'warn' }, `${w.ready}/${w.count} ready`),
            w.booting ? `, ${w.booting} booting` : '',
          ),
        ),
        checks.length ? el('ul', { class: 'checks small' }, checks.map((c) => el('li', { class: c.status === 'fail' ? 'bad' : 'warn' }, `${c.name}: ${c.detail}`))) : null,
      );
    }),
  );
}

const used = (u, q) => `${u ?? 0}/${q ?? '∞'}`;
function renderTenants() {
  $('#tenants tbody').replaceChildren(
    ...[...state.tenants.values()]
      .sort((a, b) => a.id.localeCompare(b.id))
      .map((t) =>
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

function renderVnfs() {
  const box = $('#vnfs');
  const vnfs = [...state.vnfs.values()].sort((a, b) => a.tenantId.localeCompare(b.tenantId) || a.name.localeCompare(b.name));
  if (vnfs.length === 0) return box.replaceChildren(el('p', {}, 'No VNFs.'));
  box.replaceChildren(
    ...vnfs.map((v) => {
      const running = v.replicas.filter((r) => r.state === 'RUNNING').length;
      const op = v.lastOpOcc;
      const busy = Boolean(v.activeOpOccId);
      const stopped = v.operationalState === 'STOPPED';
      const act = (name, label, off) => el('button', { 'data-action': name, disabled: busy || off || v.instantiationState !== 'INSTANTIATED' ? '' : null, onclick: () => vnfAction(v, name) }, label || name);
      const tool = (name, fn) => el('button', { 'data-action': name, onclick: fn }, name);
      const failedTemp = op && op.operationState === 'FAILED_TEMP' ? resolveButtons(op) : null;
      const logs = state.logs.get(v.id);
      const history = state.history.get(v.id);
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
              { 'data-replica': r.index },
              el('td', {}, String(r.index)),
              el('td', { class: r.state === 'RUNNING' ? 'ok' : r.state === 'FAILED' ? 'bad' : '', 'data-state': r.state }, r.state),
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
        { class: 'vnf card', 'data-vnf': v.id, 'data-tenant': v.tenantId, 'data-state': v.instantiationState },
        el(
          'div',
          { class: 'card-head' },
          el('strong', {}, `${v.tenantId} / ${v.name} `),
          el('code', {}, v.id),
          el('span', { class: 'actions' }, act('scale'), act('heal'), act('operate-stop', 'stop', stopped), act('operate-start', 'start', !stopped), act('terminate'), tool('logs', () => showLogs(v)), tool('history', () => showHistory(v))),
        ),
        el('div', { class: 'summary' }, `${v.instantiationState}${stopped ? ', containers STOPPED (operate)' : ''}, ${running}/${v.desiredReplicas} replicas running`, op ? ` — last operation ${op.operation} ${op.operationState}` : ''),
        failedTemp,
        why,
        op?.error && !v.unschedulable ? el('div', { class: 'why' }, `${op.error.code}: ${op.error.message}`) : null,
        replicas,
        logs ? el('pre', { class: 'logs', 'data-logs': v.id }, logs.join('\n') || '(no output)') : null,
        history ? el('div', { class: 'history', 'data-history': v.id }, history.length ? history.slice().reverse().map((o) => el('div', { class: 'op', 'data-opocc': o.id }, opTimeline(o))) : 'no operation occurrences') : null,
      );
    }),
  );
}

/** Retry / roll back / fail a FAILED_TEMP op occurrence (SOL003): confirmed, then followed. */
function resolveButtons(op) {
  const words = { retry: 'Retry it from where it failed', rollback: 'Undo what it did', fail: 'Give up: mark it FAILED and release what it holds' };
  return el(
    'div',
    { class: 'why', 'data-failed-temp': op.id },
    `${op.operation} ${op.id} is FAILED_TEMP${op.error ? ` (${op.error.code}: ${op.error.message})` : ''}: `,
    ['retry', 'rollback', 'fail'].map((a) =>
      el('button', { 'data-action': a, onclick: async () => {
        if (!(await confirmDialog(`${a} ${op.operation} ${op.id}? ${words[a]}.`))) return;
        try {
          await api(`/api/tenants/${encodeURIComponent(op.tenantId)}/opoccs/${encodeURIComponent(op.id)}/${a}`, { method: 'POST' });
          setStatus(`${a} ${op.id}: accepted`, 'busy');
          await follow(op.tenantId, op.id);
        } catch (err) {
          setStatus(`${a} ${op.id}: ${err.message}`, 'bad');
        }
      } }, a),
    ),
  );
}

async function showLogs(v) {
  if (state.logs.has(v.id)) {
    state.logs.delete(v.id);
    return invalidate('vnfs');
  }
  try {
    const r = await api(`/api/tenants/${encodeURIComponent(v.tenantId)}/vnfs/${encodeURIComponent(v.id)}/logs?tailLines=100`);
    state.logs.set(v.id, r.lines);
  } catch (err) {
    state.logs.set(v.id, [`cannot read the logs: ${err.message}`]);
  }
  invalidate('vnfs');
}

async function showHistory(v) {
  if (state.history.has(v.id)) {
    state.history.delete(v.id);
    return invalidate('vnfs');
  }
  try {
    state.history.set(v.id, (await api(`/api/tenants/${encodeURIComponent(v.tenantId)}/opoccs?vnfId=${encodeURIComponent(v.id)}`)).items);
  } catch (err) {
    setStatus(`history of ${v.id}: ${err.message}`, 'bad');
  }
  invalidate('vnfs');
}

function renderOps() {
  const ops = [...state.followed.values()];
  $('#ops-section').hidden = ops.length === 0;
  $('#ops').replaceChildren(...ops.map((o) => el('div', { class: 'op', 'data-opocc': o.id }, el('div', { class: 'small' }, `${o.tenantId} / ${o.vnfId} `, el('code', {}, o.id)), opTimeline(o), o.operationState === 'FAILED_TEMP' ? resolveButtons(o) : null)));
}

function describe(e) {
  const ev = e.event;
  return ev.type === 'OpOcc'
    ? `${ev.at} ${e.tenantId}/${ev.vnfId} ${ev.operation} ${ev.operationState}${ev.error ? ` ${ev.error.code}: ${ev.error.message}` : ''}`
    : `${ev.at} ${e.tenantId}/${ev.vnfId} replica ${ev.replica} ${ev.state}${ev.nodeId ? ` on ${ev.nodeId}` : ''}`;
}
function renderEvents() {
  $('#events').replaceChildren(...state.events.map((e) => el('li', { 'data-seq': e.seq }, describe(e))));
}

function renderHistograms() {
  $('#histograms-section').hidden = !isOperator();
  const h = state.histograms;
  if (!h) return;
  $('#histograms').replaceChildren(
    histogramPicture(h.boot, 'VM boot duration (s)', 's'),
    histogramPicture(h.placement, 'placement decision latency (s)', 's'),
    h.errors.length ? el('div', { class: 'small warn' }, `not read: ${h.errors.join('; ')}`) : '',
  );
}

// ---- loading ----
async function loadOverview() {
  const o = await api('/api/overview');
  state.principal = o.principal;
  state.nodes = new Map(o.nodes.map((n) => [n.id, n]));
  state.tenants = new Map(o.tenants.map((t) => [t.id, t]));
  state.vnfs = new Map(o.vnfs.map((v) => [v.id, v]));
  state.lastEventId = o.eventsSeq;
  $('#who').textContent = o.principal.role === 'operator' ? 'operator' : `tenant ${o.principal.tenantId}`;
  if (o.errors.length) setStatus(o.errors.map((e) => `${e.what}: ${e.error.code}`).join('; '), 'warn');
  invalidate('nodes', 'tenants', 'vnfs', 'histograms');
  const recent = await api('/api/events?limit=30').catch(() => ({ items: [] }));
  state.events = recent.items;
  invalidate('events');
  if (isOperator()) loadHistograms();
}

async function loadHistograms() {
  try {
    state.histograms = await api('/api/histograms');
    invalidate('histograms');
  } catch {
    /* shown as missing */
  }
}

const pendingVnf = new Map();
function refreshVnf(tenantId, vnfId) {
  if (pendingVnf.has(vnfId)) return;
  pendingVnf.set(
    vnfId,
    setTimeout(async () => {
      pendingVnf.delete(vnfId);
      try {
        state.vnfs.set(vnfId, await api(`/api/tenants/${encodeURIComponent(tenantId)}/vnfs/${encodeURIComponent(vnfId)}`));
      } catch (err) {
        if (err.status === 404) state.vnfs.delete(vnfId);
      }
      invalidate('vnfs');
    }, 50),
  );
}
async function refreshTenant(tenantId) {
  try {
    state.tenants.set(tenantId, await api(`/api/tenants/${encodeURIComponent(tenantId)}`));
    invalidate('tenants');
  } catch {
    /* keep the old one */
  }
}
async function refreshOp(tenantId, opOccId) {
  try {
    const op = await api(`/api/tenants/${encodeURIComponent(tenantId)}/opoccs/${encodeURIComponent(opOccId)}`);
    state.followed.set(op.id, op);
    invalidate('ops');
    return op;
  } catch {
    return undefined;
  }
}

function onNotification(e) {
  state.lastEventId = e.seq;
  state.events.unshift(e);
  state.events.length = Math.min(state.events.length, 50);
  invalidate('events');
  refreshVnf(e.tenantId, e.event.vnfId);
  if (state.history.has(e.event.vnfId)) {
    state.history.delete(e.event.vnfId);
    void showHistory({ tenantId: e.tenantId, id: e.event.vnfId });
  }
  if (e.event.type === 'OpOcc') {
    if (state.followed.has(e.event.opOccId)) void refreshOp(e.tenantId, e.event.opOccId).then((op) => op && TERMINAL.includes(op.operationState) && setStatus(`${op.operation} ${op.vnfId}: ${op.operationState}`, op.operationState === 'COMPLETED' ? 'ok' : 'bad'));
    if (TERMINAL.includes(e.event.operationState)) {
      void refreshTenant(e.tenantId);
      if (isOperator()) void loadHistograms();
    }
  }
}

// ---- the live stream ----
let streamAbort = null;
async function stream() {
  for (let attempt = 0; ; attempt++) {
    streamAbort = new AbortController();
    try {
      const res = await fetch('/api/events/stream', { headers: { authorization: `Bearer ${token()}`, 'last-event-id': String(state.lastEventId) }, signal: streamAbort.signal });
      if (res.status === 401 || res.status === 403) {
        setStatus('the token is not accepted', 'bad');
        return;
      }
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let type = 'message';
          let data = '';
          for (const line of frame.split('\n')) {
            if (line.startsWith('event: ')) type = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (!data) continue;
          const payload = JSON.parse(data);
          if (type === 'ready') {
            attempt = 0;
            document.body.dataset.live = 'true';
            setStatus('live', 'ok');
          } else if (type === 'notification') onNotification(payload);
          else if (type === 'node') {
            state.nodes.set(payload.id, payload);
            invalidate('nodes');
          } else if (type === 'gap') await loadOverview();
          else if (type === 'error') throw new Error(payload.message);
        }
      }
      throw new Error('stream ended');
    } catch (err) {
      if (streamAbort.signal.aborted) return;
      document.body.dataset.live = 'false';
      const waitMs = Math.min(10_000, 500 * 2 ** Math.min(attempt, 5));
      setStatus(`reconnecting in ${Math.round(waitMs / 100) / 10} s (${err.message})`, 'warn');
      await new Promise((r) => setTimeout(r, waitMs));
    }
  }
}

// ---- actions: each confirmed in a dialog, then its op occurrence followed live ----
function confirmDialog(text, input) {
  const dlg = $('#confirm');
  $('#confirm-text').textContent = text;
  const field = $('#confirm-input');
  field.hidden = !input;
  if (input) {
    $('#confirm-input-label').textContent = input.label;
    field.querySelector('input').value = String(input.value);
  }
  dlg.returnValue = '';
  dlg.showModal();
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok' ? { value: field.querySelector('input').value } : null), { once: true });
  });
}

async function follow(tenantId, opOccId) {
  state.followed = new Map([[opOccId, { id: opOccId, tenantId, vnfId: '', operation: '…', operationState: 'STARTING', startTime: new Date().toISOString(), stateEnteredTime: new Date().toISOString(), steps: [] }], ...state.followed].slice(0, 6));
  invalidate('ops');
  const op = await refreshOp(tenantId, opOccId);
  if (op && TERMINAL.includes(op.operationState)) setStatus(`${op.operation} ${op.vnfId}: ${op.operationState}`, op.operationState === 'COMPLETED' ? 'ok' : 'bad');
}

async function vnfAction(v, name) {
  const base = `/api/tenants/${encodeURIComponent(v.tenantId)}/vnfs/${encodeURIComponent(v.id)}`;
  let path;
  let body = {};
  if (name === 'scale') {
    const ok = await confirmDialog(`Scale ${v.tenantId}/${v.name} (${v.id}) to how many replicas?`, { label: 'replicas', value: v.desiredReplicas });
    if (!ok) return;
    path = `${base}/scale`;
    body = { replicas: Number(ok.value) };
  } else if (name === 'heal') {
    if (!(await confirmDialog(`Heal ${v.tenantId}/${v.name} (${v.id})? Failed replicas are restarted.`))) return;
    path = `${base}/heal`;
  } else if (name === 'operate-stop' || name === 'operate-start') {
    const to = name === 'operate-stop' ? 'STOPPED' : 'STARTED';
    if (!(await confirmDialog(`${to === 'STOPPED' ? 'Stop' : 'Start'} the containers of ${v.tenantId}/${v.name} (${v.id})? The VMs and addresses are kept.`))) return;
    path = `${base}/operate`;
    body = { changeStateTo: to };
  } else {
    if (!(await confirmDialog(`Terminate ${v.tenantId}/${v.name} (${v.id})? Its replicas are stopped and its resources released.`))) return;
    path = `${base}/terminate`;
  }
  try {
    const r = await api(path, { method: 'POST', body: JSON.stringify(body) });
    setStatus(`${name} ${v.id}: started (${r.opOccId})`, 'busy');
    await follow(v.tenantId, r.opOccId);
  } catch (err) {
    setStatus(`${name} ${v.id}: ${err.message}`, 'bad');
  }
}

async function nodeAction(nodeId, name) {
  const what = { cordon: 'No new replicas are placed on it.', uncordon: 'Replicas may be placed on it again.', drain: 'It is cordoned and every replica on it is moved elsewhere.' }[name];
  if (!(await confirmDialog(`${name} node ${nodeId}? ${what}`))) return;
  try {
    const r = await api(`/api/nodes/${encodeURIComponent(nodeId)}/${name}`, { method: 'POST' });
    if (r.id) {
      state.nodes.set(r.id, r);
      invalidate('nodes');
    }
    setStatus(`${name} ${nodeId}: done`, 'ok');
    if (name === 'drain') {
      const drained = await api(`/api/nodes/${encodeURIComponent(nodeId)}`);
      state.nodes.set(drained.id, drained);
      invalidate('nodes');
      for (const id of r.opOccIds || []) {
        const vnf = [...state.vnfs.values()].find((v) => v.replicas.some((rep) => rep.nodeId === nodeId));
        if (vnf) await follow(vnf.tenantId, id);
      }
    }
  } catch (err) {
    setStatus(`${name} ${nodeId}: ${err.message}`, 'bad');
  }
}

// ---- start ----
async function start() {
  if (streamAbort) streamAbort.abort();
  if (!token()) {
    $('#login').hidden = false;
    setStatus('paste a token to start', 'warn');
    return;
  }
  $('#login').hidden = true;
  try {
    await loadOverview();
    document.body.dataset.loaded = 'true';
  } catch (err) {
    setStatus(`cannot load: ${err.message}`, 'bad');
    if (err.status === 401 || err.status === 403) $('#login').hidden = false;
    return;
  }
  void stream();
}

$('#login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem('edgenfv.token', $('#token').value.trim());
  $('#token').value = '';
  void start();
});
$('#logout').addEventListener('click', () => {
  sessionStorage.removeItem('edgenfv.token');
  location.reload();
});
void start();
