#!/usr/bin/env node
// The authorization matrix (run by authz_matrix.sh against a fresh `agora run`).
//
//   node authz_matrix.js SPEC BASE DATA AGORA_BIN [EXCHANGES_DIR]
//
// Walks EVERY operation of docs/openapi.yaml and calls it as each kind of caller the
// access model (ARCHITECTURE.md §8, the operation's x-agora-access) distinguishes:
//   anonymous — no token;           forged — a token signed with another secret;
//   alice     — the owner (a customer principal, on her own resources);
//   bob       — another customer (on alice's resources);  admin — the admin role.
// Expected:        anonymous  forged  alice   bob                         admin
//   public         2xx        401     2xx     2xx                         2xx
//   owner          401        401     2xx     404 (id routes) /           2xx
//                                             2xx without alice's items (lists)
//   admin          401        401     403     403                         2xx
//   carrier        401        401     403     403                         2xx (and a
//                                             principal with the carrier role: 2xx)
// A few operations refine this (registering, /customers/me, the BFF) — see OPS below;
// each refinement is the access table's own rule. A refused request must change
// nothing: around every refused write the matrix lets the event log settle and compares
// alice's balance, her orders' statuses, her tier and the stock before and after. A
// refused answer must be application/problem+json. An operation without x-agora-access,
// or whose `security` disagrees with it, fails the test by name.
//
// Writes are ordered so the statuses stay meaningful: reads first, then writes (on
// their own fixture orders: cancels on a cancelled order, refusals on a confirmed one),
// then the admin's destructive ones (dispatch, tier, saga retry). At the end alice's
// ledger must add up: her balance = her deposits − her charged orders.
//
// Prints `ok - METHOD PATH as CALLER: STATUS` (or `not ok - ...`) per check and a final
// `N passed, M failed`; exits 1 on any failure. With EXCHANGES_DIR, every exchange is
// recorded (NNN.req/.hdr/.body) for api_validate.js.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const { execFileSync } = require('child_process');
const YAML = require('yaml');
const jose = require('jose');

const [specPath, BASE, DATA, BIN, EXDIR] = process.argv.slice(2);
if (!specPath || !BASE || !DATA || !BIN) {
  console.error('usage: authz_matrix.js SPEC BASE DATA AGORA_BIN [EXCHANGES_DIR]');
  process.exit(2);
}
const spec = YAML.parse(fs.readFileSync(specPath, 'utf8'));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- HTTP ----
let nex = 0;
async function call(method, url, { token, body, headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  let data;
  if (body !== undefined) {
    h['content-type'] = 'application/json';
    data = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const res = await fetch(BASE + url, { method, headers: h, body: data, signal: AbortSignal.timeout(15000) });
  let text, json;
  if (/^text\/event-stream/.test(res.headers.get('content-type') || '')) {
    // Server-Sent Events (issue 18): read the first event, then hang up; `json` is
    // its data (the order, or the log entry)
    text = await firstEvent(res);
    const first = text.split('\n\n').find((b) => /^data: /m.test(b)) || '';
    const data = first.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
    try {
      json = JSON.parse(data);
    } catch {
      json = undefined;
    }
  } else {
    text = await res.text();
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
  }
  if (EXDIR) {
    const id = String(++nex).padStart(4, '0');
    fs.writeFileSync(path.join(EXDIR, `${id}.req`), `${method} ${url}\nauthorization: ${token ? 'bearer' : 'none'}\n`);
    let hdr = `HTTP/1.1 ${res.status} ${res.statusText}\r\n`;
    for (const [k, v] of res.headers) hdr += `${k}: ${v}\r\n`;
    fs.writeFileSync(path.join(EXDIR, `${id}.hdr`), hdr + '\r\n');
    fs.writeFileSync(path.join(EXDIR, `${id}.body`), text);
  }
  return { status: res.status, headers: res.headers, text, json };
}

// The first event of an event stream (at most 5 s), then the stream is cancelled.
async function firstEvent(res) {
  const reader = res.body.getReader();
  const until = Date.now() + 5000;
  let got = '';
  while (!/\n\n/.test(got.replace(/^:[^\n]*\n\n/gm, '')) && Date.now() < until) {
    const r = await Promise.race([reader.read(), sleep(until - Date.now()).then(() => ({ done: true }))]);
    if (r.done) break;
    got += Buffer.from(r.value).toString();
  }
  await reader.cancel().catch(() => {});
  return got;
}

// ---- tokens ----
const mint = (sub, role) =>
  execFileSync(BIN, ['token', '--data', DATA, '--sub', sub, '--role', role], { encoding: 'utf8' }).trim();
const T = {
  alice: mint('matrix-alice', 'customer'),
  bob: mint('matrix-bob', 'customer'),
  carol: mint('matrix-carol', 'customer'), // registers herself during the walk
  dave: mint('matrix-dave', 'customer'), // the admin registers a customer for him
  admin: mint('matrix-admin', 'admin'),
  carrier: mint('matrix-carrier', 'carrier'), // a delivery company: deliveries only
};
async function forgedToken() {
  // the claims `agora token` puts in, signed with a secret agora does not have
  const now = Math.floor(Date.now() / 1000);
  return new jose.SignJWT({ roles: ['admin'] })
    .setProtectedHeader({ alg: 'HS256', kid: 'dev' })
    .setIssuer('agora-dev')
    .setAudience('agora')
    .setSubject('matrix-alice')
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(now + 3600)
    .sign(new TextEncoder().encode(crypto.randomBytes(32).toString('hex')));
}

// ---- results ----
let passed = 0;
let failed = 0;
const failures = [];
function report(ok, line, why) {
  if (ok) {
    passed++;
    console.log(`ok - ${line}`);
  } else {
    failed++;
    failures.push(`${line} — ${why}`);
    console.log(`not ok - ${line} — ${why}`);
  }
}
function die(msg) {
  console.error(`FAIL: fixture: ${msg}`);
  process.exit(1);
}

// ---- fixtures ----
const F = {};
const ADDR = { street: '1 Main St', city: 'Springfield', state: 'IL', zipCode: '62701', country: 'US' };
const order = (customerId, productId, quantity) => ({ customerId, items: [{ productId, quantity }], shippingAddress: ADDR });

async function poll(url, token, pred, what) {
  let last;
  for (let i = 0; i < 200; i++) {
    last = await call('GET', url, { token });
    if (last.status === 200 && pred(last.json)) return last.json;
    await sleep(100);
  }
  die(`${what}: GET ${url} never satisfied (last ${last.status} ${last.text.slice(0, 200)})`);
}

async function register(tok, email, name) {
  const r = await call('POST', '/api/v1/customers', { token: tok, body: { email, name } });
  if (r.status !== 201) die(`registering ${email}: ${r.status} ${r.text}`);
  return r.json;
}

async function placeAndSettle(tok, body, want) {
  const r = await call('POST', '/api/v1/orders', { token: tok, body });
  if (r.status !== 202) die(`placing an order: ${r.status} ${r.text}`);
  const o = await poll(`/api/v1/orders/${r.json.orderId}`, tok, (b) => b.status !== 'pending', 'order settles');
  if (o.status !== want) die(`order ${r.json.orderId} is ${o.status}, not ${want} (${o.cancellationReason || ''})`);
  return { id: r.json.orderId, saga: r.json.sagaId };
}

async function fixtures() {
  const prods = await call('GET', '/api/v1/products?limit=100');
  if (prods.status !== 200) die(`products: ${prods.status}`);
  const bySku = Object.fromEntries(prods.json.items.map((p) => [p.sku, p.id]));
  F.P = bySku['CB-05']; // cheap, plenty of stock: the orders of the matrix
  F.R = bySku['MS-02']; // restocked by the admin
  F.H = bySku['HP-04']; // repriced by the admin
  F.W = bySku['WC-06']; // discontinued by the admin
  if (!F.P || !F.R) die('seeded products CB-05 / MS-02 missing');

  const a = await register(T.alice, 'alice@matrix.example', 'Alice Matrix');
  F.CID_A = a.id;
  F.AID_A = a.accountId;
  const b = await register(T.bob, 'bob@matrix.example', 'Bob Matrix');
  F.CID_B = b.id;
  F.AID_B = b.accountId;
  F.deposits = 0; // alice's deposits, to check her ledger at the end
  for (const [tok, aid, amount] of [[T.alice, F.AID_A, 50000], [T.bob, F.AID_B, 5000]]) {
    const r = await call('POST', `/api/v1/accounts/${aid}/deposits`, {
      token: tok,
      body: { amount: { amount, currency: 'USD' } },
    });
    if (r.status !== 200) die(`deposit into ${aid}: ${r.status} ${r.text}`);
    if (aid === F.AID_A) F.deposits += amount;
  }
  // a promotion for GET /api/v1/promotions/{id}
  const pr = await call('POST', '/api/v1/promotions', { token: T.admin, body: { code: 'MATRIX10', kind: 'percent', value: 1000 } });
  if (pr.status !== 201) die(`creating a promotion: ${pr.status} ${pr.text}`);
  F.PROMO = pr.json.id;
  // bob has an order of his own (so his list is not trivially empty)
  F.OB = (await placeAndSettle(T.bob, order(F.CID_B, F.P, 1), 'confirmed')).id;
  // alice: O1 confirmed (reads, refused cancels), OD confirmed (dispatched by the admin
  // at the end), OC cancelled for insufficient stock (cancelled again: 202, unchanged)
  const o1 = await placeAndSettle(T.alice, order(F.CID_A, F.P, 1), 'confirmed');
  F.O1 = o1.id;
  F.S1 = o1.saga;
  F.OD = (await placeAndSettle(T.alice, order(F.CID_A, F.P, 1), 'confirmed')).id;
  F.OC = (await placeAndSettle(T.alice, order(F.CID_A, F.P, 10000), 'cancelled')).id;
  // alice's saved address; her drafts: DR (items added and removed), DP (placed by
  // her), DP2 (placed by the admin)
  const ad = await call('POST', `/api/v1/customers/${F.CID_A}/addresses`, { token: T.alice, body: ADDR });
  if (ad.status !== 201) die(`saving an address: ${ad.status} ${ad.text}`);
  F.ADR = ad.json.id;
  const draft = async (lines) => {
    const r = await call('POST', '/api/v1/orders', { token: T.alice, body: { draft: true, items: lines } });
    if (r.status !== 201) die(`creating a draft: ${r.status} ${r.text}`);
    return r.json.id;
  };
  F.DR = await draft([{ productId: F.P, quantity: 1 }, { productId: F.R, quantity: 1 }]);
  F.DP = await draft([{ productId: F.P, quantity: 1 }]);
  F.DP2 = await draft([{ productId: F.P, quantity: 1 }]);
  console.log(`ok - fixtures: alice ${F.CID_A} (account ${F.AID_A}, orders ${F.O1} ${F.OD} ${F.OC}), bob ${F.CID_B}`);
}

// ---- state: what a refused request must not change ----
// Let the log settle (no saga running, every projection caught up) so a change seen is
// the request's, not an earlier one's. Read as the admin.
async function settle() {
  let quiet = 0;
  for (let i = 0; i < 100 && quiet < 2; i++) {
    const s = await call('GET', '/admin/sagas?status=running&limit=1', { token: T.admin });
    const p = await call('GET', '/admin/projections', { token: T.admin });
    const ok =
      s.status === 200 && s.json.items.length === 0 && p.status === 200 && p.json.items.every((x) => x.lagEvents === 0);
    quiet = ok ? quiet + 1 : 0;
    if (quiet < 2) await sleep(50);
  }
}
async function snapshot() {
  await settle();
  const get = async (u) => {
    const r = await call('GET', u, { token: T.admin });
    return r.status === 200 ? r.json : { status: r.status };
  };
  const acct = await get(`/api/v1/accounts/${F.AID_A}`);
  const cust = await get(`/api/v1/customers/${F.CID_A}`);
  const inv = {};
  for (const p of [F.P, F.R]) {
    const i = await get(`/api/v1/inventory/${p}`);
    inv[p] = `${i.onHand}/${i.reserved}`;
  }
  const st = {};
  for (const o of [F.O1, F.OD, F.OC]) st[o] = (await get(`/api/v1/orders/${o}`)).status;
  const saga = (await get(`/api/v1/sagas/${F.S1}`)).status;
  const hp = await get(`/api/v1/products/${F.H}`);
  const wc = await get(`/api/v1/products/${F.W}`);
  const mine = await call('GET', '/api/v1/customers/me', { token: T.bob });
  return {
    "alice's balance": acct.balance && acct.balance.amount,
    "alice's transactions": acct.transactionCount,
    "alice's tier": cust.tier,
    'stock CB-05 (onHand/reserved)': inv[F.P],
    'stock MS-02 (onHand/reserved)': inv[F.R],
    'order O1': st[F.O1],
    'order OD': st[F.OD],
    'order OC': st[F.OC],
    'saga S1': saga,
    'price HP-04': hp.price && hp.price.amount,
    'WC-06 active': wc.active,
    "bob's customer": mine.json && mine.json.id,
  };
}
function diff(a, b) {
  return Object.keys(a)
    .filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]))
    .map((k) => `${k} changed ${a[k]} → ${b[k]}`)
    .join('; ');
}

// ---- per-operation fixtures and refinements ----
// Default path parameters by route; `params` per case overrides them.
function defaultParams(tpl) {
  const m = {
    '/api/v1/customers/{id}': { id: F.CID_A },
    '/api/v1/customers/{id}/tier': { id: F.CID_A },
    '/api/v1/customers/{id}/erase': { id: F.CID_A },
    '/api/v1/customers/{id}/addresses': { id: F.CID_A },
    '/api/v1/orders/{id}/items': { id: F.DR },
    '/api/v1/orders/{id}/items/{productId}': { id: F.DR, productId: F.R },
    '/api/v1/orders/{id}/place': { id: F.DP },
    '/api/v1/accounts/{id}': { id: F.AID_A },
    '/api/v1/accounts/{id}/deposits': { id: F.AID_A },
    '/api/v1/accounts/{id}/withdrawals': { id: F.AID_A },
    '/api/v1/accounts/{id}/transfers': { id: F.AID_A },
    '/api/v1/accounts/{id}/close': { id: F.AID_A },
    '/api/v1/products/{id}': { id: F.P },
    '/api/v1/products/{id}/price': { id: F.H },
    '/api/v1/promotions/{id}': { id: F.PROMO },
    '/api/v1/products/{id}/discontinue': { id: F.W },
    '/api/v1/inventory/{productId}': { productId: F.P },
    '/api/v1/inventory/{productId}/restock': { productId: F.R },
    '/api/v1/orders/{id}': { id: F.O1 },
    '/api/v1/orders/{id}/cancel': { id: F.O1 },
    '/api/v1/orders/{id}/events': { id: F.O1 },
    '/api/v1/shipments/{orderId}': { orderId: F.O1 },
    '/api/v1/shipments/{orderId}/dispatch': { orderId: F.OD },
    '/api/v1/shipments/{orderId}/deliver': { orderId: F.OD },
    '/api/v1/sagas/{id}': { id: F.S1 },
    '/admin/sagas/{id}/retry': { id: F.S1 },
    '/admin/traces/{traceId}': { traceId: '0123456789abcdef0123456789abcdef' },
    '/admin/orders/{id}/trace': { id: F.O1 },
    '/admin/dlq/{id}': { id: 'projection:orders:999999' },
    '/admin/dlq/{id}/replay': { id: 'projection:orders:999999' },
    '/bff/{client}/home': { client: 'web' },
    '/admin/streams/{name}': { name: `order-${F.O1}` },
    '/admin/projections/{name}/rebuild': { name: 'saga_starter' },
    '/console/{file}': { file: 'app.js' },
  };
  return m[tpl] || {};
}
const isWrite = (m) => m !== 'GET' && m !== 'HEAD';
const items = (b) => (b && Array.isArray(b.items) ? b.items : null);

// OPS[METHOD PATH]: phase (0 reads, 1 writes, 2 destructive), query, body, list
// (a list route: bob gets 2xx without alice's items), verify per caller (true or a
// reason), and cases that replace a caller's default expectation.
function ops() {
  const aliceOrders = () => new Set([F.O1, F.OD, F.OC, F.DR, F.DP, F.DP2]);
  const noSession = { expect: [400], note: 'no Mcp-Session-Id: a session is its own principal\'s (mcp.sh checks the rest)' };
  const refused = [401, 403, 404];
  return {
    // issue 14: answered by a gateway fronting `agora cluster up` or using discovery,
    // and by an agora serve instance; agora run's gateway is neither: the admin is let
    // through to a 404 (cluster_up.sh and serve_mesh.sh check the 200s)
    'GET /admin/cluster': { cases: { admin: { expect: [404], note: 'agora run: no cluster, no registry' } } },
    // the mesh's own: no token is a service (agora run's gateway has no route there;
    // serve_mesh.sh calls it signed and unsigned)
    'POST /internal/v1/steps': {
      cases: {
        anonymous: { expect: refused },
        forged: { expect: refused },
        bob: { expect: refused },
        alice: { expect: refused },
        admin: { expect: refused, note: 'an admin is not a service' },
      },
    },
    'POST /mcp': {
      verify: (b) => (b.result && b.result.protocolVersion === '2025-11-25') || `not an initialize result: ${JSON.stringify(b)}`,
    },
    'DELETE /mcp': { cases: { alice: noSession, bob: noSession, admin: noSession } },
    'POST /api/v1/customers': {
      phase: 1,
      // the refused ones use carol's email: carol registering it afterwards proves they
      // registered nothing
      body: { email: 'carol@matrix.example', name: 'Carol Matrix' },
      cases: {
        bob: {
          body: { email: 'bob.again@matrix.example', name: 'Bob Again' },
          expect: [409],
          note: 'a second registration by the same sub',
          verify: (b) =>
            (b.errors && b.errors[0] && b.errors[0].pointer === '' && String(b.detail).includes(F.CID_B)) ||
            `wants errors[0].pointer "" (the whole body) and the existing id ${F.CID_B} in detail: ${JSON.stringify(b)}`,
        },
        alice: {
          caller: 'carol',
          token: () => T.carol,
          expect: '2xx',
          verify: async (b) => {
            if (b.email !== 'carol@matrix.example') return `registered ${JSON.stringify(b)}`;
            F.CID_C = b.id; // erased by carol herself at the end
            F.AID_C = b.accountId; // closed by carol later (an empty account)
            const me = await call('GET', '/api/v1/customers/me', { token: T.carol });
            return (me.status === 200 && me.json.id === b.id) || `not bound to carol: /me → ${me.status} ${me.text}`;
          },
        },
        admin: {
          body: { email: 'dave@matrix.example', name: 'Dave Matrix', tier: 'premium', sub: 'matrix-dave' },
          expect: '2xx',
          verify: async (b) => {
            if (b.tier !== 'premium') return `an admin may set the tier: ${JSON.stringify(b)}`;
            F.CID_D = b.id; // erased by the admin at the end
            F.AID_D = b.accountId; // closed by the admin later (an empty account)
            const me = await call('GET', '/api/v1/customers/me', { token: T.dave });
            return (me.status === 200 && me.json.id === b.id) || `not bound to sub matrix-dave: /me → ${me.status}`;
          },
        },
      },
    },
    'GET /api/v1/customers/me': {
      cases: {
        alice: { expect: '2xx', verify: (b) => b.id === F.CID_A || `not alice's: ${b.id}` },
        bob: { expect: '2xx', verify: (b) => b.id === F.CID_B || `not bob's own: ${b.id}` },
        admin: { expect: [404], note: 'an admin without a customer' },
      },
    },
    'GET /api/v1/customers/{id}': { verify: (b) => b.id === F.CID_A || `another customer: ${b.id}` },
    'POST /api/v1/customers/{id}/tier': {
      phase: 2,
      body: { tier: 'premium' },
      verify: (b) => (b.id === F.CID_A && b.tier === 'premium') || `not alice, premium: ${JSON.stringify(b)}`,
    },
    'POST /api/v1/customers/{id}/erase': {
      phase: 2,
      body: {},
      // refused callers aim at alice (who must stay as she is); the owner case is carol
      // erasing herself, the admin's erases dave (both registered in phase 1)
      cases: {
        alice: {
          caller: 'carol',
          token: () => T.carol,
          params: () => ({ id: F.CID_C }),
          expect: '2xx',
          verify: (b) => (b.id === F.CID_C && b.email === '[erased]' && b.erased === true) || `not carol, erased: ${JSON.stringify(b)}`,
        },
        admin: {
          params: () => ({ id: F.CID_D }),
          expect: '2xx',
          verify: (b) => (b.id === F.CID_D && b.name === '[erased]') || `not dave, erased: ${JSON.stringify(b)}`,
        },
      },
    },
    'GET /api/v1/accounts': {
      query: '?limit=100',
      list: true,
      verify: {
        alice: (b) =>
          (items(b) && items(b).length === 1 && items(b)[0].id === F.AID_A) ||
          `alice must see exactly her own account: ${b && b.items && b.items.map((a) => a.id)}`,
        bob: (b) =>
          (items(b) && items(b).every((a) => a.id === F.AID_B)) ||
          `bob must see only his own account: ${b && b.items && b.items.map((a) => a.id)}`,
        admin: (b) => (items(b) && items(b).some((a) => a.id === F.AID_A)) || "the admin's list lacks alice's",
      },
    },
    'GET /api/v1/accounts/{id}': { verify: (b) => b.id === F.AID_A || `another account: ${b.id}` },
    'POST /api/v1/accounts/{id}/deposits': {
      phase: 1,
      body: { amount: { amount: 100, currency: 'USD' } },
      verify: (b) => b.id === F.AID_A || `another account: ${b.id}`,
      onAccepted: () => (F.deposits += 100),
    },
    'POST /api/v1/accounts/{id}/withdrawals': {
      phase: 1,
      body: { amount: { amount: 100, currency: 'USD' } },
      verify: (b) => b.id === F.AID_A || `another account: ${b.id}`,
      onAccepted: () => (F.deposits -= 100),
    },
    'POST /api/v1/accounts/{id}/transfers': {
      phase: 1,
      body: () => ({ toAccountId: F.AID_B, amount: { amount: 200, currency: 'USD' } }),
      verify: async (b) => {
        if (b.id !== F.AID_A) return `another account: ${b.id}`;
        return true;
      },
      onAccepted: () => (F.deposits -= 200),
    },
    'POST /api/v1/accounts/{id}/close': {
      phase: 2,
      body: {},
      cases: {
        // alice's account has money (409 when she tries: nothing closes); carol and the
        // admin close empty ones
        alice: { caller: 'carol', token: () => T.carol, params: () => ({ id: F.AID_C }), expect: '2xx',
          verify: (b) => (b.id === F.AID_C && b.status === 'closed') || JSON.stringify(b) },
        admin: { params: () => ({ id: F.AID_D }), expect: '2xx', verify: (b) => b.status === 'closed' || JSON.stringify(b) },
      },
      extra: [{ caller: 'alice', expect: [409], note: 'a positive balance' }],
    },
    'GET /api/v1/products': { query: '?limit=100' },
    'POST /api/v1/products': {
      phase: 1,
      body: { sku: 'MX-01', name: 'Matrix product', price: { amount: 100, currency: 'USD' } },
      verify: (b) => (b.sku === 'MX-01' && b.active === true) || JSON.stringify(b),
    },
    'POST /api/v1/promotions': {
      phase: 1,
      verify: (b) => (b.code === 'WELCOME15' && b.used === 0) || JSON.stringify(b),
    },
    'GET /api/v1/promotions/{id}': { verify: (b) => (b.id === F.PROMO && b.code === 'MATRIX10') || JSON.stringify(b) },
    'POST /api/v1/products/{id}/price': {
      phase: 1,
      body: { price: { amount: 18999, currency: 'USD' } },
      verify: async (b) => {
        if (b.id !== F.H || b.price.amount !== 18999) return JSON.stringify(b);
        const p = await poll(`/api/v1/products/${F.H}`, T.admin, (x) => x.price.amount === 18999, 'repriced');
        return p.price.amount === 18999 || 'not repriced';
      },
    },
    'POST /api/v1/products/{id}/discontinue': {
      phase: 1,
      body: { reason: 'authz matrix' },
      verify: async (b) => {
        if (b.id !== F.W || b.active !== false) return JSON.stringify(b);
        await poll(`/api/v1/products/${F.W}`, T.admin, (x) => x.active === false, 'discontinued');
        const r = await call('POST', '/api/v1/orders', { token: T.alice, body: order(F.CID_A, F.W, 1) });
        return (r.status === 422 && r.json.errors.some((e) => e.pointer === '/items/0/productId')) ||
          `ordering a discontinued product: ${r.status} ${r.text}`;
      },
    },
    'POST /api/v1/inventory/{productId}/restock': { phase: 1, body: { quantity: 1 } },
    'POST /api/v1/orders': {
      phase: 1,
      body: () => order(F.CID_A, F.P, 1),
      cases: { bob: { expect: [422], note: "customerId is alice's: unknown to bob, like a missing one" } },
      verify: (b) => (typeof b.orderId === 'string' && b.status === 'pending') || JSON.stringify(b),
    },
    'GET /api/v1/orders': {
      query: '?limit=100',
      list: true,
      cases: {
        bob: {
          query: () => `?customerId=${F.CID_A}&limit=100`,
          expect: '2xx',
          note: "?customerId=alice's",
          verify: (b) => (items(b) && items(b).length === 0) || `bob sees ${b && b.items && b.items.length} of alice's orders`,
        },
      },
      extra: [
        {
          caller: 'bob',
          expect: '2xx',
          verify: (b) =>
            (items(b) && items(b).every((o) => o.customerId === F.CID_B) && items(b).some((o) => o.id === F.OB)) ||
            `bob must see his own orders only: ${b && b.items && b.items.map((o) => o.customerId)}`,
        },
      ],
      verify: {
        alice: (b) =>
          (items(b) && items(b).every((o) => o.customerId === F.CID_A) && aliceOrders().size ===
            items(b).filter((o) => aliceOrders().has(o.id)).length) ||
          `alice must see all and only her orders: ${b && b.items && b.items.map((o) => o.customerId)}`,
        admin: (b) => (items(b) && items(b).some((o) => o.id === F.O1) && items(b).some((o) => o.id === F.OB)) || 'not every order',
      },
    },
    'GET /api/v1/orders/{id}': {
      verify: (b) => b.id === F.O1 || `another order: ${b.id}`,
      // a blocking read (Prefer: wait, issue 11) has the plain GET's access: bob gets
      // the 404 at once, never a wait on alice's order; alice waits (1 s) and gets 304
      extra: [
        { caller: 'anonymous', expect: [401], headers: { prefer: 'wait=20', 'if-none-match': '*' }, note: 'Prefer: wait=20' },
        { caller: 'bob', expect: [404], headers: { prefer: 'wait=20', 'if-none-match': '*' }, note: 'Prefer: wait=20' },
        { caller: 'alice', expect: [304], headers: { prefer: 'wait=1', 'if-none-match': '*' }, note: 'Prefer: wait=1' },
      ],
    },
    // Server-Sent Events (issue 18): the GET's access; refusals are problem+json, not streams
    'GET /api/v1/orders/{id}/events': {
      verify: (b) => b.id === F.O1 || `another order: ${JSON.stringify(b)}`,
    },
    'GET /admin/stats/stream': {
      verify: (b) => (typeof b.timeUnixMs === 'number' && typeof b.orders === 'object') || JSON.stringify(b),
    },
    'GET /admin/log/stream': {
      query: '?from=0',
      verify: (b) => (typeof b.position === 'number' && b.stream && b.type && 'data' in b) || JSON.stringify(b),
    },
    // addresses: saving alice's address again answers its id (200)
    'POST /api/v1/customers/{id}/addresses': { phase: 1, body: ADDR, verify: (b) => b.id === F.ADR || JSON.stringify(b) },
    'GET /api/v1/customers/{id}/addresses': {
      verify: (b) => (items(b) && items(b).some((a) => a.id === F.ADR)) || JSON.stringify(b),
    },
    // drafts: items added to DR; alice removes MS-02 from it, the admin CB-05
    'POST /api/v1/orders/{id}/items': {
      phase: 1,
      body: () => ({ productId: F.P, quantity: 1 }),
      verify: (b) => (b.id === F.DR && b.status === 'draft') || JSON.stringify(b),
    },
    'DELETE /api/v1/orders/{id}/items/{productId}': {
      phase: 2,
      cases: { admin: { params: () => ({ id: F.DR, productId: F.P }) } },
      verify: (b) => (b.id === F.DR && b.status === 'draft') || JSON.stringify(b),
    },
    // alice places DP, the admin DP2 (refused callers aim at DP while it is a draft)
    'POST /api/v1/orders/{id}/place': {
      phase: 2,
      body: () => ({ shippingAddressId: F.ADR }),
      cases: { admin: { params: () => ({ id: F.DP2 }) } },
      verify: (b) => (b.status === 'pending' && typeof b.sagaId === 'string') || JSON.stringify(b),
    },
    'POST /api/v1/orders/{id}/cancel': {
      phase: 1,
      body: { reason: 'authz matrix' },
      // refused callers aim at the confirmed O1 (which must stay confirmed); the owner
      // and the admin cancel the already-cancelled OC (202, unchanged)
      cases: {
        alice: { params: () => ({ id: F.OC }), expect: '2xx' },
        admin: { params: () => ({ id: F.OC }), expect: '2xx' },
      },
    },
    'GET /api/v1/shipments/{orderId}': { verify: (b) => b.orderId === F.O1 || `another order's: ${b.orderId}` },
    'POST /api/v1/shipments/{orderId}/dispatch': {
      phase: 2,
      body: {},
      extra: [{ caller: 'carrier', expect: [403], note: 'the carrier role reports deliveries only' }],
    },
    'POST /api/v1/shipments/{orderId}/deliver': {
      phase: 3, // after the admin dispatched OD
      body: {},
      cases: {
        // the carrier delivers (in the admin's slot, so before the admin); the admin's
        // call is then the idempotent repeat
        admin: {
          caller: 'carrier',
          token: () => T.carrier,
          expect: '2xx',
          verify: async (b) => {
            if (b.orderStatus !== 'delivered') return JSON.stringify(b);
            const o = await poll(`/api/v1/orders/${F.OD}`, T.admin, (x) => x.status === 'delivered', 'OD delivered');
            return o.status === 'delivered' || `order OD is ${o.status}`;
          },
        },
      },
      extra: [{ caller: 'admin', expect: '2xx', note: 'delivered again: unchanged', verify: (b) => b.orderStatus === 'delivered' || JSON.stringify(b) }],
    },
    'GET /api/v1/sagas/{id}': { verify: (b) => b.id === F.S1 || `another saga: ${b.id}` },
    'GET /admin/sagas': { query: '?limit=100' },
    // no such trace in the buffer: the admin is let through to a 404
    'GET /admin/traces/{traceId}': { cases: { admin: { expect: [404], note: 'no such trace in the buffer' } } },
    'GET /admin/orders/{id}/trace': {
      verify: {
        admin: (b) =>
          (/^[0-9a-f]{32}$/.test(b.traceId) && Array.isArray(b.spans) && b.spans.length > 0) ||
          `O1's trace: ${JSON.stringify(b).slice(0, 300)}`,
      },
    },
    'GET /admin/audit': {
      query: '?actor=matrix-alice&limit=100',
      verify: {
        admin: (b) =>
          (items(b) && items(b).length > 0 && items(b).every((e) => e.actor && e.actor.sub === 'matrix-alice')) ||
          `?actor=matrix-alice must list alice's events only: ${JSON.stringify(b).slice(0, 300)}`,
      },
    },
    'POST /admin/sagas/{id}/retry': {
      phase: 2,
      // S1 completed: nothing to retry (409) — the admin is let through either way
      cases: { admin: { expect: ['2xx', 409], note: 'S1 has completed' } },
    },
    // nothing is parked in the matrix's data: the admin is let through to a 404
    'POST /admin/dlq/{id}/replay': { phase: 2, cases: { admin: { expect: [404], note: 'no such dead letter' } } },
    'DELETE /admin/dlq/{id}': { phase: 2, cases: { admin: { expect: [404], note: 'no such dead letter' } } },
    // the operator console: its files hold no data and ignore credentials
    'GET /console': { cases: { forged: { expect: ['2xx'], note: 'static files ignore tokens' } } },
    'GET /console/{file}': { cases: { forged: { expect: ['2xx'], note: 'static files ignore tokens' } } },
    // the code exchange is open to anyone, but only a real unused code gets a token
    'POST /admin/console/session': {
      cases: Object.fromEntries(['anonymous', 'forged', 'bob', 'alice', 'admin'].map((c) => [c, { expect: [401], note: 'no valid one-time code' }])),
    },
    // saga_starter is not a read model: the admin is let through to a 409 (a real
    // rebuild would make a read model answer 503 for the rest of the matrix)
    'POST /admin/projections/{name}/rebuild': { phase: 2, cases: { admin: { expect: [409], note: 'saga_starter is not a read model' } } },
    'GET /admin/log': { query: '?limit=5' },
    'GET /admin/streams': { query: '?prefix=order-&limit=5' },
    'GET /bff/{client}/home': {
      list: true,
      verify: {
        alice: (b) =>
          (b.user && b.user.id === F.CID_A && b.recentOrders.length > 0 && b.recentOrders.every((o) => aliceOrders().has(o.id))) ||
          `alice's home must be hers: ${JSON.stringify(b).slice(0, 300)}`,
        bob: (b) =>
          (b.user && b.user.id === F.CID_B && b.recentOrders.every((o) => !aliceOrders().has(o.id))) ||
          `bob's home must be his: ${JSON.stringify(b).slice(0, 300)}`,
      },
    },
  };
}

function exampleBody(op) {
  const media = op.requestBody && op.requestBody.content && op.requestBody.content['application/json'];
  if (!media) return undefined;
  if (media.example !== undefined) return media.example;
  if (media.examples) return Object.values(media.examples)[0].value;
  return undefined;
}

function matches(status, expect) {
  return expect.some((e) => (e === '2xx' ? status >= 200 && status < 300 : status === e));
}

async function runCase(c, access) {
  const line = `${c.method} ${c.tpl} as ${c.caller}`;
  const guard = isWrite(c.method) && !matches(200, c.expect); // a refusal must change nothing
  const before = guard ? await snapshot() : null;
  let r;
  try {
    r = await call(c.method, c.url, { token: c.token, body: c.body, headers: c.headers });
  } catch (e) {
    report(false, `${line}: no answer`, e.message);
    return;
  }
  const shown = `${line}: ${r.status}${c.note ? ` (${c.note})` : ''}`;
  const want = c.expect.join('|');
  let why = null;
  if (!matches(r.status, c.expect)) why = `expected ${want} (${access})`;
  else if (r.status >= 400 && !/^application\/problem\+json/.test(r.headers.get('content-type') || ''))
    why = `a refusal must be application/problem+json, not ${r.headers.get('content-type')}`;
  else if (r.status === 401 && !/^Bearer/.test(r.headers.get('www-authenticate') || ''))
    why = 'a 401 must carry WWW-Authenticate: Bearer';
  else if (r.status < 300 && c.verify) {
    if (r.json === undefined && c.method !== 'GET') why = `not JSON: ${r.text.slice(0, 100)}`;
    else {
      const v = await c.verify(r.json || {});
      if (v !== true) why = v;
    }
  }
  if (guard) {
    const after = await snapshot();
    const d = diff(before, after);
    if (d) why = (why ? why + '; ' : '') + `refused but ${d}`;
  }
  if (r.status < 300 && c.onAccepted) c.onAccepted(); // even a wrong 2xx: the ledger explains it
  if (r.status < 300 && isWrite(c.method)) await settle();
  report(!why, shown, why);
}

function buildCases(method, tpl, op, conf, forged) {
  const access = op['x-agora-access'];
  const fill = (params) => tpl.replace(/\{([^}]+)\}/g, (_, k) => encodeURIComponent(params[k]));
  const val = (v) => (typeof v === 'function' ? v() : v);
  const base = (caller, expect, over = {}) => {
    const params = { ...defaultParams(tpl), ...(val(over.params) || {}) };
    for (const k of (tpl.match(/\{([^}]+)\}/g) || []).map((s) => s.slice(1, -1)))
      if (params[k] === undefined) throw new Error(`${method} ${tpl}: no fixture for the path parameter {${k}}`);
    const query = val(over.query !== undefined ? over.query : conf.query) || '';
    let body = over.body !== undefined ? over.body : conf.body !== undefined ? val(conf.body) : exampleBody(op);
    if (body === undefined && isWrite(method)) body = {};
    const verify = over.verify || (conf.verify && (typeof conf.verify === 'function' ? conf.verify : conf.verify[caller]));
    return {
      method,
      tpl,
      caller: over.caller || caller,
      token: over.token ? over.token() : caller === 'anonymous' ? undefined : caller === 'forged' ? forged : T[caller],
      url: fill(params) + query,
      body: isWrite(method) ? body : undefined,
      expect: over.expect ? [].concat(over.expect) : expect,
      note: over.note,
      headers: over.headers,
      verify,
      onAccepted: conf.onAccepted,
    };
  };
  const dflt = {
    // probes ignore credentials (a load balancer sends none; a bad one must not fail it)
    public: { anonymous: ['2xx'], forged: tpl.startsWith('/health/') ? ['2xx'] : [401], bob: ['2xx'], alice: ['2xx'], admin: ['2xx'] },
    owner: {
      anonymous: [401],
      forged: [401],
      bob: conf.list || !tpl.includes('{') ? ['2xx'] : [404],
      alice: ['2xx'],
      admin: ['2xx'],
    },
    admin: { anonymous: [401], forged: [401], bob: [403], alice: [403], admin: ['2xx'] },
    carrier: { anonymous: [401], forged: [401], bob: [403], alice: [403], admin: ['2xx'] },
    service: { anonymous: [401], forged: [401], bob: [403], alice: [403], admin: [403] },
  }[access];
  const out = [];
  for (const caller of ['anonymous', 'forged', 'bob', 'alice', 'admin']) {
    const over = (conf.cases && conf.cases[caller]) || {};
    out.push(base(caller, dflt[caller], over));
  }
  for (const x of conf.extra || []) out.push(base(x.caller, x.expect, x));
  return out;
}

async function main() {
  // every operation must say who may call it, consistently with its security
  const all = [];
  for (const [tpl, item] of Object.entries(spec.paths))
    for (const [m, op] of Object.entries(item)) {
      if (!['get', 'post', 'put', 'patch', 'delete'].includes(m)) continue;
      const method = m.toUpperCase();
      const access = op['x-agora-access'];
      const name = `${method} ${tpl} (${op.operationId})`;
      if (!['public', 'owner', 'admin', 'carrier', 'service'].includes(access)) {
        report(false, `${name}: x-agora-access`, `missing or invalid x-agora-access: ${access}`);
        continue;
      }
      const sec = JSON.stringify(op.security);
      const wantSec = access === 'public' ? '[]' : access === 'service' ? '[{"mesh":[]}]' : '[{"bearer":[]}]';
      if (sec !== wantSec) report(false, `${name}: security`, `security ${sec} for ${access} (wants ${wantSec})`);
      all.push({ method, tpl, op, access });
    }
  await fixtures();
  const forged = await forgedToken();
  const OPS = ops();
  const known = new Set(Object.keys(OPS));
  for (const o of all) known.delete(`${o.method} ${o.tpl}`);
  for (const k of known) report(false, `matrix entry ${k}`, 'refines an operation docs/openapi.yaml does not have');
  const phase = (o) => (OPS[`${o.method} ${o.tpl}`] || {}).phase || (isWrite(o.method) ? 1 : 0);
  const ordered = all.map((o, i) => ({ ...o, i })).sort((a, b) => phase(a) - phase(b) || a.i - b.i);
  for (const o of ordered) {
    const conf = OPS[`${o.method} ${o.tpl}`] || {};
    let cases;
    try {
      cases = buildCases(o.method, o.tpl, o.op, conf, forged);
    } catch (e) {
      report(false, `${o.method} ${o.tpl}`, e.message);
      continue;
    }
    for (const c of cases) await runCase(c, o.access);
  }

  // alice's ledger: her balance is her deposits minus what her live orders cost
  await settle();
  const acct = await call('GET', `/api/v1/accounts/${F.AID_A}`, { token: T.admin });
  const list = await call('GET', `/api/v1/orders?customerId=${F.CID_A}&limit=100`, { token: T.admin });
  if (acct.status !== 200 || list.status !== 200) {
    report(false, "alice's ledger", `account ${acct.status}, orders ${list.status}`);
  } else {
    const charged = list.json.items
      .filter((o) => ['confirmed', 'shipped', 'delivered'].includes(o.status))
      .reduce((s, o) => s + o.total.amount, 0);
    const want = F.deposits - charged;
    report(
      acct.json.balance.amount === want,
      `alice's ledger: balance ${acct.json.balance.amount} = deposits ${F.deposits} − charged ${charged}`,
      `expected ${want}`,
    );
  }

  console.log(`${passed} passed, ${failed} failed`);
  if (failed) {
    console.log('# failures:');
    for (const f of failures) console.log(`#   ${f}`);
  }
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(`FAIL: ${e.stack || e}`);
  process.exit(1);
});
