// agora operator console: sign-in, navigation and the pages. Plain ES modules, no
// build step; every data call carries the admin token (live.js); nothing from the
// server is ever inserted as HTML (text nodes only).
import { api, live, session, setUnauthorizedHandler } from './live.js';
import { lineChart, barChart, waterfall } from './chart.js';

// ---- DOM helpers ----
function h(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) if (k != null && k !== false) e.append(k instanceof Node ? k : String(k));
  return e;
}
const $main = () => document.getElementById('main');
const badge = (s) => h('span', { class: `badge ${s || ''}` }, s || '—');
const num = (v, d = 0) => (v == null || Number.isNaN(v) ? '—' : Number(v).toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }));
const json = (v) => h('pre', {}, JSON.stringify(v, null, 2));
const errorBox = (e) => h('p', { class: 'error' }, `${e.status ? e.status + ': ' : ''}${e.message}`);
function table(cols, rows, onClick) {
  return h('table', {},
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', {}, c.label)))),
    h('tbody', {}, rows.length ? rows.map((r) => h('tr', { class: onClick ? 'click' : null, onclick: onClick ? () => onClick(r) : null },
      cols.map((c) => h('td', {}, c.get(r))))) : h('tr', {}, h('td', { colspan: cols.length, class: 'muted' }, 'none'))));
}
function card(label, value, id) {
  return h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: 'value', id }, value));
}
function legend(items) {
  return h('div', { class: 'legend' }, items.map(([name, color]) => {
    const i = h('i');
    i.style.background = color;
    return h('span', {}, i, name);
  }));
}

// ---- page lifecycle: each page returns a cleanup (stops its live feeds) ----
let cleanup = [];
function onLeave(fn) { cleanup.push(fn); }
function leave() { for (const f of cleanup) { try { f(); } catch { /* ignore */ } } cleanup = []; }
function every(ms, fn) { fn(); const t = setInterval(fn, ms); onLeave(() => clearInterval(t)); }

// ---- sign-in ----
async function exchangeCode(code) {
  const res = await fetch('/admin/console/session', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code }), cache: 'no-store' });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.detail || `HTTP ${res.status}`);
  session.set(body.token);
}

function showWho() {
  const who = document.getElementById('who');
  who.replaceChildren();
  const c = session.claims();
  if (!c) return;
  const exp = c.exp ? new Date(c.exp * 1000).toLocaleTimeString() : '?';
  who.append(h('span', { id: 'signed-in' }, `signed in as ${c.sub} (${(c.roles || []).join(', ')}) until ${exp}`),
    h('button', { id: 'sign-out', onclick: () => { session.clear(); leave(); signIn('Signed out.'); } }, 'Sign out'));
}

function signIn(message) {
  leave();
  document.getElementById('who').replaceChildren();
  const ta = h('textarea', { id: 'token', placeholder: 'eyJhbGciOi…', autocomplete: 'off', spellcheck: 'false' });
  const out = h('p', { class: message ? 'muted' : '' }, message || '');
  const go = async () => {
    session.set(ta.value.trim());
    try { await api('/admin/projections'); route(); } catch (e) { session.clear(); out.className = 'error'; out.textContent = `That token was refused: ${e.message}`; }
  };
  $main().replaceChildren(h('div', { class: 'signin card' },
    h('h1', {}, 'Sign in to the agora console'),
    h('p', {}, 'Open the one-time link printed by ', h('code', {}, 'agora console-url --data DIR'), ', or paste an admin token (', h('code', {}, 'agora token --sub you --role admin'), '). It is kept in this tab only.'),
    ta, h('div', { class: 'row' }, h('button', { class: 'primary', id: 'sign-in', onclick: go }, 'Sign in')), out));
}

setUnauthorizedHandler(() => { session.clear(); signIn('Your session has expired or was refused; sign in again.'); });

// ---- pages ----
const pages = {};

pages.overview = () => {
  const hist = { rate: [], p50: [], p90: [], p99: [] };
  const charts = { rate: h('div'), lat: h('div'), sagas: h('div'), lag: h('div') };
  const mode = h('span', { class: 'live', id: 'live-mode' }, '');
  $main().replaceChildren(h('h1', {}, 'Overview ', mode),
    h('div', { class: 'grid' },
      card('orders / s', '—', 'orders-per-sec'), card('orders accepted', '—', 'orders-placed'),
      card('confirm p50 / p99 (ms)', '—', 'confirm-latency'), card('sagas completed', '—', 'sagas-completed'),
      card('sagas compensated / failed', '—', 'sagas-bad'), card('max projection lag (events)', '—', 'max-lag')),
    h('div', { class: 'grid2' },
      h('div', { class: 'card' }, h('h2', {}, 'Orders per second'), charts.rate),
      h('div', { class: 'card' }, h('h2', {}, 'Confirm latency (ms, placed → confirmed)'), legend([['p50', '#2563eb'], ['p90', '#f59e0b'], ['p99', '#dc2626']]), charts.lat),
      h('div', { class: 'card' }, h('h2', {}, 'Saga outcomes since start'), charts.sagas),
      h('div', { class: 'card' }, h('h2', {}, 'Projection lag (events)'), charts.lag)));
  const set = (id, v) => { const e = document.getElementById(id); if (e) e.textContent = v; };
  const onStats = (s) => {
    const lat = s.confirmLatencyMs || {};
    const push = (a, v) => { a.push(v); if (a.length > 120) a.shift(); };
    push(hist.rate, s.orders.perSecond); push(hist.p50, lat.p50); push(hist.p90, lat.p90); push(hist.p99, lat.p99);
    set('orders-per-sec', num(s.orders.perSecond, 1));
    set('orders-placed', num(s.orders.placed));
    set('confirm-latency', lat.samples ? `${num(lat.p50, 1)} / ${num(lat.p99, 1)}` : '—');
    set('sagas-completed', num(s.sagas.completed));
    set('sagas-bad', `${num(s.sagas.compensated)} / ${num(s.sagas.failed)}`);
    set('max-lag', num(s.maxLagEvents));
    charts.rate.replaceChildren(lineChart([{ name: 'orders/s', color: '#2563eb', values: hist.rate }]));
    charts.lat.replaceChildren(lineChart([{ color: '#2563eb', values: hist.p50 }, { color: '#f59e0b', values: hist.p90 }, { color: '#dc2626', values: hist.p99 }], { unit: '' }));
    charts.sagas.replaceChildren(barChart([
      { label: 'started', value: s.sagas.started, color: '#64748b' }, { label: 'completed', value: s.sagas.completed, color: '#16a34a' },
      { label: 'compensated', value: s.sagas.compensated, color: '#f59e0b' }, { label: 'failed', value: s.sagas.failed, color: '#dc2626' },
      { label: 'queued', value: s.sagas.queued, color: '#2563eb' }]));
    charts.lag.replaceChildren(barChart(s.projections.map((p) => ({ label: p.name, value: p.lagEvents, color: p.status === 'running' ? '#2563eb' : '#dc2626' }))));
  };
  onLeave(live('/admin/stats/stream', '/admin/stats', onStats, { onMode: (m) => { mode.textContent = m === 'streaming' ? '● live (SSE)' : '● live (polling)'; } }));
};

pages.orders = async (id) => {
  if (id) return orderPage(id);
  const q = h('input', { id: 'order-search', placeholder: 'order id or customer id', size: 44 });
  const out = h('div', { id: 'orders-out' });
  const listOrders = (rows, title) => out.replaceChildren(h('h2', {}, title), table([
    { label: 'order', get: (o) => h('a', { href: `#/orders/${o.id}`, class: 'mono' }, o.id) },
    { label: 'customer', get: (o) => h('span', { class: 'mono' }, o.customerId || '') },
    { label: 'status', get: (o) => badge(o.status) },
    { label: 'total', get: (o) => (o.total ? `${(o.total.amount / 100).toFixed(2)} ${o.total.currency}` : '') },
    { label: 'placed', get: (o) => o.createdAt || o.time || '' }], rows, (o) => { location.hash = `#/orders/${o.id}`; }));
  const recent = async () => {
    try {
      const log = await api('/admin/log?limit=500');
      const seen = new Set();
      const rows = [];
      for (const e of log.items.slice().reverse()) {
        if (e.type !== 'OrderPlaced' || !e.stream.startsWith('order-')) continue;
        const oid = e.stream.slice(6);
        if (seen.has(oid)) continue;
        seen.add(oid);
        rows.push({ id: oid, customerId: e.data && e.data.customerId, status: 'placed', time: e.time });
        if (rows.length >= 25) break;
      }
      const full = await Promise.all(rows.map((r) => api(`/api/v1/orders/${r.id}`).catch(() => r)));
      listOrders(full, 'Recent orders (newest first)');
    } catch (e) { out.replaceChildren(errorBox(e)); }
  };
  const search = async () => {
    const v = q.value.trim();
    if (!v) return recent();
    try {
      const o = await api(`/api/v1/orders/${encodeURIComponent(v)}`).catch((e) => { if (e.status === 404) return null; throw e; });
      if (o) { location.hash = `#/orders/${o.id}`; return; }
      const list = await api(`/api/v1/orders?customerId=${encodeURIComponent(v)}&limit=100`);
      listOrders(list.items, `Orders of customer ${v}`);
    } catch (e) { out.replaceChildren(errorBox(e)); }
  };
  q.addEventListener('keydown', (e) => { if (e.key === 'Enter') search(); });
  $main().replaceChildren(h('h1', {}, 'Orders'),
    h('div', { class: 'row' }, q, h('button', { class: 'primary', onclick: search }, 'Search'), h('button', { onclick: () => { q.value = ''; recent(); } }, 'Recent')), out);
  await recent();
};

async function orderPage(id) {
  const root = h('div');
  $main().replaceChildren(h('h1', {}, 'Order ', h('span', { class: 'mono' }, id)), root);
  try {
    const o = await api(`/api/v1/orders/${encodeURIComponent(id)}`);
    const saga = o.sagaId ? await api(`/api/v1/sagas/${o.sagaId}`).catch(() => null) : null;
    const events = await api(`/admin/streams/order-${id}?limit=200`).catch(() => ({ items: [] }));
    const sagaEvents = o.sagaId ? await api(`/admin/streams/saga-${o.sagaId}?limit=200`).catch(() => ({ items: [] })) : { items: [] };
    const t0 = events.items.length ? Date.parse(events.items[0].time) : 0;
    const rel = (t) => (t0 ? `+${(Date.parse(t) - t0).toLocaleString()} ms` : t);
    const shown = h('div');
    const evTable = (items) => table([
      { label: '#', get: (e) => e.version }, { label: 'stream', get: (e) => h('span', { class: 'mono' }, e.stream) },
      { label: 'type', get: (e) => e.type }, { label: 'time', get: (e) => rel(e.time) }], items, (e) => shown.replaceChildren(h('h2', {}, `${e.type} @ ${e.position}`), json(e)));
    const trace = h('div', { id: 'trace' }, h('p', { class: 'muted' }, 'loading trace…'));
    root.replaceChildren(
      h('div', { class: 'grid' }, card('status', badge(o.status)), card('customer', h('span', { class: 'mono' }, o.customerId)),
        card('total', o.total ? `${(o.total.amount / 100).toFixed(2)} ${o.total.currency}` : '—'), card('saga', saga ? badge(saga.status) : '—')),
      h('h2', {}, 'Saga timeline'),
      saga ? table([{ label: 'step', get: (s) => s.name }, { label: 'status', get: (s) => badge(s.status) }, { label: 'error', get: (s) => s.error || s.compensationError || '' }], saga.steps) : h('p', { class: 'muted' }, 'no saga'),
      sagaEvents.items.length ? evTable(sagaEvents.items) : '',
      h('h2', {}, 'Trace'), trace,
      h('h2', {}, 'Events of the order'), evTable(events.items), shown);
    try {
      const t = await api(`/admin/orders/${encodeURIComponent(id)}/trace`);
      trace.replaceChildren(t.spans && t.spans.length ? waterfall(t.spans) : h('p', { class: 'muted' }, 'no trace recorded'),
        h('p', { class: 'muted mono' }, `trace ${t.traceId || ''}`));
    } catch { trace.replaceChildren(h('p', { class: 'muted' }, 'no trace recorded')); }
  } catch (e) { root.replaceChildren(errorBox(e)); }
}

pages.sagas = () => {
  const out = h('div');
  const msg = h('p', { id: 'saga-msg' });
  $main().replaceChildren(h('h1', {}, 'Sagas'), msg, out);
  const load = async () => {
    try {
      const [running, failed, compensated] = await Promise.all(['running', 'failed', 'compensated'].map((s) => api(`/admin/sagas?status=${s}&limit=100`)));
      const cols = [
        { label: 'saga', get: (s) => h('span', { class: 'mono' }, s.id) }, { label: 'status', get: (s) => badge(s.status) },
        { label: 'step', get: (s) => s.currentStep || '' }, { label: 'reason', get: (s) => s.reason || '' }, { label: 'updated', get: (s) => s.updatedAt || '' }];
      const retry = { label: '', get: (s) => h('button', { class: 'danger', onclick: async (ev) => {
        ev.stopPropagation();
        if (!confirm(`Retry the compensation of saga ${s.id}?`)) return;
        try { await api(`/admin/sagas/${s.id}/retry`, { method: 'POST' }); msg.className = 'ok'; msg.textContent = `saga ${s.id} retried`; load(); } catch (e) { msg.className = 'error'; msg.textContent = e.message; }
      } }, 'Retry') };
      out.replaceChildren(h('h2', {}, `Failed (${failed.items.length}) — a compensation that kept failing`), table([...cols, retry], failed.items),
        h('h2', {}, `Running (${running.items.length})`), table(cols, running.items),
        h('h2', {}, `Compensated (${compensated.items.length})`), table(cols, compensated.items));
    } catch (e) { out.replaceChildren(errorBox(e)); }
  };
  every(3000, load);
};

pages.projections = () => {
  const out = h('div');
  const msg = h('p');
  $main().replaceChildren(h('h1', {}, 'Projections'), msg, out);
  every(1000, async () => {
    try {
      const p = await api('/admin/projections');
      out.replaceChildren(table([
        { label: 'projection', get: (r) => r.name }, { label: 'status', get: (r) => badge(r.status) },
        { label: 'progress', get: (r) => { const b = h('div', { class: 'bar' }, h('div')); b.firstChild.style.width = `${r.head ? Math.min(100, (100 * r.checkpoint) / r.head) : 100}%`; return b; } },
        { label: 'checkpoint / head', get: (r) => `${num(r.checkpoint)} / ${num(r.head)}` },
        { label: 'lag', get: (r) => `${num(r.lagEvents)} ev, ${num(r.lagSeconds, 2)} s` }, { label: 'parked', get: (r) => num(r.parked) },
        { label: '', get: (r) => (r.name === 'saga_starter' ? '' : h('button', { class: 'danger', onclick: async () => {
          if (!confirm(`Rebuild the read model "${r.name}" from the log? Its queries answer 503 until it has caught up.`)) return;
          try { await api(`/admin/projections/${r.name}/rebuild`, { method: 'POST' }); msg.className = 'ok'; msg.textContent = `${r.name}: rebuilding`; } catch (e) { msg.className = 'error'; msg.textContent = e.message; }
        } }, 'Rebuild')) }], p.items));
    } catch (e) { out.replaceChildren(errorBox(e)); }
  });
};

pages.resilience = () => {
  const out = { gw: h('div'), up: h('div'), saga: h('div'), routes: h('div') };
  $main().replaceChildren(h('h1', {}, 'Resilience'),
    h('h2', {}, 'Gateway circuit breakers'), out.gw, h('h2', {}, 'Saga step breakers'), out.saga,
    h('h2', {}, 'Upstreams and ejections'), out.up, h('h2', {}, 'Routes (timeouts, auth)'), out.routes);
  const safe = async (el, f) => { try { el.replaceChildren(await f()); } catch (e) { el.replaceChildren(errorBox(e)); } };
  every(2000, () => {
    safe(out.gw, async () => table([{ label: 'upstream', get: (b) => b.name }, { label: 'state', get: (b) => badge(b.state) },
      { label: 'consecutive failures', get: (b) => num(b.consecutiveFailures) }, { label: 'times opened', get: (b) => num(b.timesOpened) }], (await api('/admin/circuit-breakers')).breakers));
    safe(out.saga, async () => table([{ label: 'step', get: (b) => b.name }, { label: 'state', get: (b) => badge(b.state) },
      { label: 'consecutive failures', get: (b) => num(b.consecutiveFailures) }, { label: 'window calls / failures', get: (b) => `${num(b.windowCalls)} / ${num(b.windowFailures)}` }], (await api('/admin/saga-breakers')).items));
    safe(out.up, async () => {
      const u = await api('/admin/upstreams');
      const rows = [];
      for (const c of u.upstreams) for (const e of c.endpoints || []) rows.push({ c, e });
      return table([{ label: 'upstream', get: (r) => r.c.name }, { label: 'endpoint', get: (r) => h('span', { class: 'mono' }, r.e.address || '') },
        { label: 'health', get: (r) => badge(r.e.ejected ? 'ejected' : r.e.healthy === false ? 'failed' : 'healthy') },
        { label: 'in flight', get: (r) => num(r.e.inFlight) }, { label: 'ejections', get: (r) => num(r.e.ejections ?? r.e.timesEjected) },
        { label: 'detail', get: (r) => h('span', { class: 'mono' }, JSON.stringify(r.e)) }], rows);
    });
    safe(out.routes, async () => table([{ label: 'route', get: (r) => r.name }, { label: 'timeout', get: (r) => `${num(r.timeoutMs)} ms` },
      { label: 'auth', get: (r) => (r.auth ? 'required' : 'public') }, { label: 'rate limit', get: (r) => (r.rateLimit ? `${num(r.rateLimit.requests)} per ${num(r.rateLimit.perMs)} ms, burst ${num(r.rateLimit.burst)}` : '—') },
      { label: 'destinations', get: (r) => r.destinations.map((d) => `${d.host} (${d.weight})`).join(', ') }], (await api('/admin/config')).routes));
  });
};

pages.dlq = () => {
  const out = h('div');
  const shown = h('div');
  const msg = h('p');
  $main().replaceChildren(h('h1', {}, 'Dead letters'), msg, out, shown);
  const act = async (d, verb) => {
    if (!confirm(`${verb === 'replay' ? 'Replay' : 'Drop'} dead letter ${d.id}?`)) return;
    try {
      const r = verb === 'replay' ? await api(`/admin/dlq/${encodeURIComponent(d.id)}/replay`, { method: 'POST' }) : await api(`/admin/dlq/${encodeURIComponent(d.id)}`, { method: 'DELETE' });
      msg.className = 'ok'; msg.textContent = `${d.id}: ${verb === 'replay' ? 'replayed' : 'dropped'}, ${r.released} released`;
    } catch (e) { msg.className = 'error'; msg.textContent = e.message; }
  };
  every(3000, async () => {
    try {
      const l = await api('/admin/dlq');
      out.replaceChildren(table([
        { label: 'id', get: (d) => h('span', { class: 'mono' }, d.id) }, { label: 'kind', get: (d) => d.kind },
        { label: 'stream / consumer', get: (d) => d.stream || d.consumer || '' }, { label: 'type', get: (d) => d.type || '' },
        { label: 'error', get: (d) => d.error || '' }, { label: 'waiting', get: (d) => (d.waiting ? 'behind another' : '') },
        { label: '', get: (d) => h('span', {}, h('button', { onclick: (e) => { e.stopPropagation(); act(d, 'replay'); } }, 'Replay'), ' ', h('button', { class: 'danger', onclick: (e) => { e.stopPropagation(); act(d, 'drop'); } }, 'Drop')) }],
      l.items, (d) => shown.replaceChildren(h('h2', {}, d.id), json(d))));
    } catch (e) { out.replaceChildren(errorBox(e)); }
  });
};

pages.events = async (stream) => {
  const prefix = h('input', { id: 'stream-prefix', placeholder: 'stream prefix, e.g. order-', size: 30 });
  const streams = h('div');
  const detail = h('div', { id: 'event-json' });
  const tailBody = h('tbody', { id: 'tail' });
  const mode = h('span', { class: 'live', id: 'tail-mode' });
  let paused = false;
  let last = null;
  const showEvent = (e) => detail.replaceChildren(h('h2', {}, `${e.type} — ${e.stream} v${e.version} @ ${e.position}`), json(e));
  const row = (e) => h('tr', { class: 'click', onclick: () => showEvent(e) }, h('td', {}, String(e.position)), h('td', {}, e.time ? e.time.slice(11, 23) : ''),
    h('td', { class: 'mono' }, e.stream), h('td', {}, e.type));
  const openStream = async (name) => {
    try {
      const r = await api(`/admin/streams/${encodeURIComponent(name)}?limit=500`);
      streams.replaceChildren(h('h2', {}, `Stream ${name}`), table([{ label: 'v', get: (e) => e.version }, { label: 'position', get: (e) => e.position },
        { label: 'type', get: (e) => e.type }, { label: 'time', get: (e) => e.time }], r.items, showEvent));
    } catch (e) { streams.replaceChildren(errorBox(e)); }
  };
  const list = async () => {
    try {
      const r = await api(`/admin/streams?prefix=${encodeURIComponent(prefix.value)}&limit=100`);
      streams.replaceChildren(table([{ label: 'stream', get: (s) => h('span', { class: 'mono' }, s.name) }, { label: 'version', get: (s) => s.version }], r.items, (s) => openStream(s.name)));
    } catch (e) { streams.replaceChildren(errorBox(e)); }
  };
  prefix.addEventListener('keydown', (e) => { if (e.key === 'Enter') list(); });
  $main().replaceChildren(h('h1', {}, 'Event log'),
    h('div', { class: 'grid2' },
      h('div', {}, h('h2', {}, 'Streams'), h('div', { class: 'row' }, prefix, h('button', { onclick: list }, 'List')), streams),
      h('div', {}, h('h2', {}, 'Live tail of $all ', mode, ' ', h('button', { id: 'tail-pause', onclick: (e) => { paused = !paused; e.target.textContent = paused ? 'Resume' : 'Pause'; } }, 'Pause')),
        h('div', { class: 'tail' }, h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'pos'), h('th', {}, 'time'), h('th', {}, 'stream'), h('th', {}, 'type'))), tailBody)))),
    detail);
  const add = (e) => {
    if (last != null && e.position <= last) return;
    last = e.position;
    if (paused) return;
    tailBody.prepend(row(e));
    while (tailBody.childElementCount > 200) tailBody.lastChild.remove();
  };
  // start from the last 30 events, then follow
  try {
    const t = await api('/admin/log?limit=30'); // newest first
    t.items.slice().reverse().forEach(add);
    if (last == null) last = t.last;
  } catch (e) { detail.replaceChildren(errorBox(e)); }
  const from = last == null ? '' : `?from=${last + 1}`;
  onLeave(live(`/admin/log/stream${from}`, () => `/admin/log?after=${last == null ? -1 : last}&limit=200`,
    (d) => (d.items ? d.items : [d]).forEach(add),
    { onMode: (m) => { mode.textContent = m === 'streaming' ? '● live (SSE)' : '● live (polling)'; } }));
  if (stream) openStream(stream); else list();
};

// ---- routing ----
function route() {
  leave();
  if (!session.token) return signIn();
  showWho();
  const [, name = 'overview', arg] = (location.hash.match(/^#\/([a-z]+)(?:\/(.+))?/) || []);
  const page = pages[name] ? name : 'overview';
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === page);
  Promise.resolve(pages[page](arg && decodeURIComponent(arg))).catch((e) => $main().replaceChildren(errorBox(e)));
}

async function start() {
  const m = location.hash.match(/^#code=([0-9a-f]{64})$/);
  if (m) {
    // the code is used once: take it out of the address bar and history first
    history.replaceState(null, '', location.pathname + '#/overview');
    try { await exchangeCode(m[1]); } catch (e) { session.clear(); return signIn(`The sign-in link did not work: ${e.message}. Links work once, for 5 minutes.`); }
  }
  window.addEventListener('hashchange', route);
  route();
}
start();
