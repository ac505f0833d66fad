// console/live.js's live() against a small SSE server in this process (node has
// fetch, ReadableStream and TextDecoderStream): it streams when the SSE route
// answers (messages split across chunks, `id:`/`event:`/`data:` fields, comments),
// sends the token in the Authorization header and never in the URL, resumes a
// dropped stream with ?from=<last id + 1>, and falls back to polling the JSON route
// when the SSE route answers 404.
//   node console_live.mjs SOURCE_DIR
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const store = new Map();
globalThis.sessionStorage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v), removeItem: (k) => store.delete(k) };
let failures = 0;
const check = (cond, what) => { console.log(`${cond ? 'ok' : 'not ok'} - ${what}`); if (!cond) failures++; };

const seen = [];
let connects = 0;
const server = http.createServer((req, res) => {
  seen.push({ url: req.url, auth: req.headers.authorization });
  if (req.url.startsWith('/sse')) {
    connects++;
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    if (connects === 1) {
      // two messages, the second split across writes, then the connection drops
      res.write(': hello\n\nid: 7\nevent: OrderPlaced\ndata: {"position":7,');
      setTimeout(() => { res.write('"type":"OrderPlaced"}\n\nid: 8\nevent: OrderConfirmed\r\ndata: {"position":8}\n\n'); res.end(); }, 50);
    } else {
      res.write(`id: 9\nevent: x\ndata: {"position":9,"url":${JSON.stringify(req.url)}}\n\n`);
    }
    return;
  }
  if (req.url.startsWith('/missing-sse')) { res.writeHead(404, { 'content-type': 'application/problem+json' }); res.end('{"title":"Not found"}'); return; }
  if (req.url.startsWith('/poll')) { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"items":[{"position":1}],"last":1}'); return; }
  res.writeHead(500); res.end();
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const base = `http://127.0.0.1:${server.address().port}`;
// live.js fetches same-origin paths: give it absolute ones through a fetch wrapper
const realFetch = globalThis.fetch;
globalThis.fetch = (u, o) => realFetch(u.startsWith('/') ? base + u : u, o);
const { live, session } = await import(pathToFileURL(path.join(process.argv[2], 'console/live.js')).href);
session.set('tok.en.sig');

const got = [];
const modes = [];
const stop = live('/sse', '/poll', (d, m) => got.push({ d, m }), { onMode: (m) => modes.push(m) });
for (let i = 0; i < 100 && got.length < 3; i++) await new Promise((r) => setTimeout(r, 50));
stop();
check(got.length >= 3, `three SSE messages arrived (${got.length})`);
check(got[0] && got[0].d.type === 'OrderPlaced' && got[0].m.event === 'OrderPlaced' && got[0].m.id === '7', 'a message split across chunks is parsed with its id and event');
check(got[1] && got[1].d.position === 8 && got[1].m.event === 'OrderConfirmed', 'CRLF line ends are accepted');
check(got[2] && got[2].d.url === '/sse?from=9', `a dropped stream resumes with ?from=<last id + 1> (${got[2] && got[2].d.url})`);
check(seen.every((s) => s.auth === 'Bearer tok.en.sig' && !s.url.includes('tok.en')), 'the token goes in the header, never in the URL');
check(modes[0] === 'streaming', 'mode: streaming');

const polled = [];
const pmodes = [];
const stop2 = live('/missing-sse', '/poll', (d) => polled.push(d), { interval: 50, onMode: (m) => pmodes.push(m) });
for (let i = 0; i < 100 && polled.length < 2; i++) await new Promise((r) => setTimeout(r, 50));
stop2();
check(polled.length >= 2 && polled[0].last === 1, `a 404 SSE route falls back to polling (${polled.length} polls)`);
check(pmodes[0] === 'polling', 'mode: polling');
server.close();
console.log(failures ? `${failures} failed` : 'all passed');
process.exit(failures ? 1 : 0);
