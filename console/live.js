// Talking to agora: the admin token, JSON calls, and live(): Server-Sent Events
// read with fetch() (so the token goes in the Authorization header, never in a URL),
// falling back to polling the JSON route while the SSE route answers 404.

const KEY = 'agora.console.token';

export const session = {
  get token() { return sessionStorage.getItem(KEY); },
  set(token) { sessionStorage.setItem(KEY, token); },
  clear() { sessionStorage.removeItem(KEY); },
  // the token's claims (for "signed in as"); no verification here, the server does that
  claims() {
    const t = this.token;
    if (!t) return null;
    try {
      const b = t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(b + '='.repeat((4 - (b.length % 4)) % 4)));
    } catch { return null; }
  },
};

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

// fetch JSON from the same origin with the admin token; throws ApiError for non-2xx
export async function api(path, { method = 'GET', body, signal } = {}) {
  const headers = { accept: 'application/json' };
  if (session.token) headers.authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal, cache: 'no-store' });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = { detail: text }; }
  if (res.status === 401 && session.token) onUnauthorized();
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}

// Parse an SSE byte stream into {id, event, data} messages (WHATWG rules, enough of them).
async function readSse(res, onMessage, signal) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let msg = { data: [] };
  while (!signal.aborted) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let nl;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
      if (line === '') {
        if (msg.data.length) onMessage({ id: msg.id, event: msg.event || 'message', data: msg.data.join('\n') });
        msg = { data: [], id: msg.id };
        continue;
      }
      if (line.startsWith(':')) continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      const val = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
      if (field === 'data') msg.data.push(val);
      else if (field === 'event') msg.event = val;
      else if (field === 'id') msg.id = val;
    }
  }
}

// live(sseUrl, pollUrl, onData[, {interval}]): stream `sseUrl` when the server has it,
// else poll `pollUrl` (a string, or a function returning one each time) every interval
// ms. onData gets each SSE message's parsed data (and {id, event, mode}), or each poll's
// JSON. A dropped stream is resumed with ?from=<last id>. Returns stop().
export function live(sseUrl, pollUrl, onData, { interval = 1000, onMode = () => {} } = {}) {
  const ctl = new AbortController();
  let lastId = null;
  let stopped = false;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  async function poll() {
    onMode('polling');
    while (!stopped) {
      try {
        const url = typeof pollUrl === 'function' ? pollUrl() : pollUrl;
        const d = await api(url, { signal: ctl.signal });
        if (!stopped) onData(d, { mode: 'poll' });
      } catch (e) {
        if (stopped) return;
        if (e.status === 401) return;
      }
      await sleep(interval);
    }
  }
  async function stream() {
    for (let attempt = 0; !stopped; attempt++) {
      let res;
      try {
        const url = lastId == null ? sseUrl : sseUrl + (sseUrl.includes('?') ? '&' : '?') + 'from=' + encodeURIComponent(Number(lastId) + 1);
        res = await fetch(url, { headers: { accept: 'text/event-stream', authorization: `Bearer ${session.token}` }, signal: ctl.signal, cache: 'no-store' });
      } catch { if (stopped) return; await sleep(1000); continue; }
      if (res.status === 404 || res.status === 405) { res.body && res.body.cancel(); return poll(); }
      if (res.status === 401) { onUnauthorized(); return; }
      if (!res.ok || !(res.headers.get('content-type') || '').startsWith('text/event-stream')) {
        res.body && res.body.cancel();
        return poll();
      }
      onMode('streaming');
      try {
        await readSse(res, (m) => {
          if (m.id != null && m.id !== '') lastId = m.id;
          let d;
          try { d = JSON.parse(m.data); } catch { return; }
          onData(d, { id: m.id, event: m.event, mode: 'sse' });
        }, ctl.signal);
      } catch { /* dropped: reconnect */ }
      if (stopped) return;
      await sleep(Math.min(5000, 250 * 2 ** Math.min(attempt, 4)));
    }
  }
  stream();
  return () => { stopped = true; ctl.abort(); };
}
