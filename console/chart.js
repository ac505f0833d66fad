// Small SVG charts drawn by hand: a line chart over a sliding window, horizontal
// bars, and a trace waterfall. No library; every element is built with the DOM API.

const NS = 'http://www.w3.org/2000/svg';

export function svg(tag, attrs = {}, kids = []) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}

function fmt(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (v >= 1e3) return (v / 1e3).toFixed(1) + 'k';
  return v >= 10 || v === 0 ? String(Math.round(v)) : v.toFixed(1);
}

// A line chart of series [{name, color, values: [number|null]}], newest last.
export function lineChart(series, { width = 600, height = 160, points = 120, unit = '' } = {}) {
  const pad = { l: 44, r: 8, t: 8, b: 18 };
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v != null && v > max) max = v;
  max = max > 0 ? max * 1.15 : 1;
  const root = svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img' });
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + h - (h * i) / 4;
    root.append(svg('line', { x1: pad.l, x2: pad.l + w, y1: y, y2: y, stroke: '#e5e7eb' }));
    const t = svg('text', { x: pad.l - 4, y: y + 3, 'text-anchor': 'end' });
    t.textContent = fmt((max * i) / 4) + unit;
    root.append(t);
  }
  for (const s of series) {
    const vals = s.values.slice(-points);
    let d = '';
    vals.forEach((v, i) => {
      if (v == null) return;
      const x = pad.l + (w * (i + points - vals.length)) / (points - 1);
      const y = pad.t + h - (h * v) / max;
      d += (d ? 'L' : 'M') + x.toFixed(1) + ',' + y.toFixed(1);
    });
    if (d) root.append(svg('path', { d, fill: 'none', stroke: s.color, 'stroke-width': 1.8 }));
  }
  const t = svg('text', { x: pad.l, y: height - 4 });
  t.textContent = `last ${points} s`;
  root.append(t);
  return root;
}

// Horizontal bars [{label, value, color}].
export function barChart(bars, { width = 600, unit = '' } = {}) {
  const row = 22;
  const height = Math.max(row * bars.length + 6, 30);
  const lw = 130;
  const max = Math.max(1, ...bars.map((b) => b.value));
  const root = svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img' });
  root.style.height = height + 'px';
  bars.forEach((b, i) => {
    const y = 3 + i * row;
    const l = svg('text', { x: lw - 6, y: y + 14, 'text-anchor': 'end' });
    l.textContent = b.label;
    const bw = ((width - lw - 70) * b.value) / max;
    const v = svg('text', { x: lw + bw + 4, y: y + 14 });
    v.textContent = fmt(b.value) + unit;
    root.append(l, svg('rect', { x: lw, y: y + 3, width: Math.max(bw, 1), height: row - 8, fill: b.color || '#2563eb', rx: 2 }), v);
  });
  return root;
}

// A trace waterfall: spans [{spanId, parentSpanId, name, startUnixNano, endUnixNano,
// status}], children under their parent, bars on one time axis.
export function waterfall(spans, { width = 900 } = {}) {
  const n = (x) => Number(BigInt(x) / 1000n) / 1000; // ns (string) → ms
  const byParent = new Map();
  const ids = new Set(spans.map((s) => s.spanId));
  for (const s of spans) {
    const p = s.parentSpanId && ids.has(s.parentSpanId) ? s.parentSpanId : '';
    if (!byParent.has(p)) byParent.set(p, []);
    byParent.get(p).push(s);
  }
  const ordered = [];
  const walk = (p, depth) => {
    const kids = (byParent.get(p) || []).sort((a, b) => n(a.startUnixNano) - n(b.startUnixNano));
    for (const k of kids) { ordered.push({ s: k, depth }); walk(k.spanId, depth + 1); }
  };
  walk('', 0);
  const t0 = Math.min(...spans.map((s) => n(s.startUnixNano)));
  const t1 = Math.max(...spans.map((s) => n(s.endUnixNano)));
  const total = Math.max(t1 - t0, 0.001);
  const row = 20;
  const lw = 280;
  const height = ordered.length * row + 24;
  const root = svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img' });
  root.style.height = height + 'px';
  ordered.forEach(({ s, depth }, i) => {
    const y = 4 + i * row;
    const l = svg('text', { x: 4 + depth * 12, y: y + 13 });
    l.textContent = s.name;
    const x = lw + ((width - lw - 80) * (n(s.startUnixNano) - t0)) / total;
    const bw = Math.max(((width - lw - 80) * (n(s.endUnixNano) - n(s.startUnixNano))) / total, 1);
    const bad = s.status && (s.status.code === 2 || s.status === 'error' || s.status.code === 'STATUS_CODE_ERROR');
    const d = svg('text', { x: x + bw + 4, y: y + 13 });
    d.textContent = (n(s.endUnixNano) - n(s.startUnixNano)).toFixed(2) + ' ms';
    root.append(l, svg('rect', { x, y: y + 3, width: bw, height: row - 7, rx: 2, fill: bad ? '#dc2626' : '#2563eb' }), d);
  });
  const t = svg('text', { x: lw, y: height - 4 });
  t.textContent = `0 — ${total.toFixed(2)} ms`;
  root.append(t);
  return root;
}
