// MCP over streamable HTTP (POST /mcp through agora run's gateway), with the
// official TypeScript SDK client. Env: BASE (http://127.0.0.1:P), AGORA_BIN, DATA,
// STATE (a JSON file this test writes for mcp_stdio.test.mjs).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { checkTools, ok, toolError, address, eventually } from './common.mjs';

const { BASE, AGORA_BIN, DATA, STATE } = process.env;
const mint = (sub, role) =>
  execFileSync(AGORA_BIN, ['token', '--data', DATA, '--sub', sub, '--role', role], { encoding: 'utf8' }).trim();
const T = { alice: mint('mcp-alice', 'customer'), bob: mint('mcp-bob', 'customer'), admin: mint('mcp-admin', 'admin') };

async function rest(method, path, token, body) {
  const r = await fetch(BASE + path, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body && JSON.stringify(body),
  });
  return { status: r.status, json: await r.json().catch(() => undefined) };
}

async function connect(token) {
  const client = new Client({ name: 'agora-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(`${BASE}/mcp`), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  return { client, transport };
}

const S = {}; // customers, clients, tools, orders
before(async () => {
  for (const who of ['alice', 'bob']) {
    const r = await rest('POST', '/api/v1/customers', T[who], { email: `${who}-mcp@example.com`, name: who });
    assert.equal(r.status, 201, JSON.stringify(r.json));
    S[who] = { cid: r.json.id, aid: r.json.accountId };
    const d = await rest('POST', `/api/v1/accounts/${r.json.accountId}/deposits`, T[who], { amount: { amount: 500000, currency: 'USD' } });
    assert.equal(d.status, 200);
    Object.assign(S[who], await connect(T[who]));
  }
  Object.assign((S.admin = {}), await connect(T.admin));
});
after(async () => {
  for (const who of ['alice', 'bob', 'admin']) await S[who]?.client.close();
});

test('initialize negotiates 2025-11-25 and lists six tools with schemas and annotations', async () => {
  assert.equal(S.alice.client.getServerVersion().name, 'agora');
  assert.ok(S.alice.transport.sessionId, 'an Mcp-Session-Id was issued');
  S.tools = checkTools(await S.alice.client.listTools());
});

test("every tool, as alice, on alice's own data", async () => {
  const c = S.alice.client;
  const products = ok(S.tools, 'list_products', await c.callTool({ name: 'list_products', arguments: { limit: 100 } }));
  const p = products.items.find((x) => x.active);
  assert.ok(p, 'an active product');
  const inv = ok(S.tools, 'get_inventory', await c.callTool({ name: 'get_inventory', arguments: { productId: p.id } }));
  assert.equal(inv.productId, p.id);
  const placed = ok(S.tools, 'place_order', await c.callTool({
    name: 'place_order',
    arguments: { items: [{ productId: p.id, quantity: 1 }], shippingAddress: address, idempotencyKey: 'mcp-a-1' },
  }));
  assert.equal(placed.status, 'pending');
  const again = ok(S.tools, 'place_order', await c.callTool({
    name: 'place_order',
    arguments: { items: [{ productId: p.id, quantity: 1 }], shippingAddress: address, idempotencyKey: 'mcp-a-1' },
  }));
  assert.equal(again.orderId, placed.orderId, 'the same idempotencyKey places the order once');
  const st = ok(S.tools, 'get_order_status', await c.callTool({ name: 'get_order_status', arguments: { orderId: placed.orderId } }));
  assert.equal(st.orderId, placed.orderId);
  assert.equal(st.customerId, S.alice.cid);
  const search = async () => ok(S.tools, 'search_orders', await c.callTool({ name: 'search_orders', arguments: { limit: 100 } }));
  const mine = await eventually(search, (r) => r.items.some((o) => o.id === placed.orderId));
  assert.ok(mine.items.some((o) => o.id === placed.orderId));
  assert.ok(mine.items.every((o) => o.customerId === S.alice.cid), 'alice sees only her orders');
  // a second order to cancel (the first stays for the stdio test)
  const second = ok(S.tools, 'place_order', await c.callTool({
    name: 'place_order', arguments: { items: [{ productId: p.id, quantity: 1 }], shippingAddress: address },
  }));
  // the saga may confirm the order before the cancel arrives: then the tool must
  // report the domain's refusal as a tool error, and the order must be confirmed
  const res = await c.callTool({ name: 'cancel_order', arguments: { orderId: second.orderId, reason: 'changed my mind' } });
  if (res.isError) {
    toolError(res, /^409 .*confirmed/);
    // the refusal comes from the order itself; the status tool reads the read model,
    // which may lag it by a projection batch
    const status2 = async () => ok(S.tools, 'get_order_status', await c.callTool({ name: 'get_order_status', arguments: { orderId: second.orderId } }));
    const st2 = await eventually(status2, (r) => r.status === 'confirmed');
    assert.equal(st2.status, 'confirmed');
  } else {
    assert.equal(ok(S.tools, 'cancel_order', res).status, 'cancelled');
  }
  S.order = placed.orderId;
  S.product = p.id;
});

test("bob's agent cannot see or cancel alice's orders", async () => {
  const c = S.bob.client;
  toolError(await c.callTool({ name: 'get_order_status', arguments: { orderId: S.order } }), /^404/);
  toolError(await c.callTool({ name: 'cancel_order', arguments: { orderId: S.order } }), /^404/);
  const list = ok(S.tools, 'search_orders', await c.callTool({ name: 'search_orders', arguments: { customerId: S.alice.cid } }));
  assert.equal(list.items.length, 0, "bob's search for alice's orders is empty");
  toolError(await c.callTool({
    name: 'place_order',
    arguments: { customerId: S.alice.cid, items: [{ productId: S.product, quantity: 1 }], shippingAddress: address },
  }), /customerId/);
  const st = ok(S.tools, 'get_order_status', await S.alice.client.callTool({ name: 'get_order_status', arguments: { orderId: S.order } }));
  assert.notEqual(st.status, 'cancelled', "bob's cancel changed nothing");
  // the admin sees alice's order
  ok(S.tools, 'get_order_status', await S.admin.client.callTool({ name: 'get_order_status', arguments: { orderId: S.order } }));
});

test('tool errors are isError results, unknown tools are JSON-RPC errors', async () => {
  const c = S.alice.client;
  toolError(await c.callTool({ name: 'get_order_status', arguments: {} }), /orderId is required/);
  toolError(await c.callTool({ name: 'get_order_status', arguments: { orderId: 'not-a-uuid' } }), /^404/);
  toolError(await c.callTool({ name: 'place_order', arguments: { items: [], shippingAddress: address } }), /\/items/);
  toolError(await c.callTool({ name: 'search_orders', arguments: { status: 'lost' } }), /status/);
  await assert.rejects(c.callTool({ name: 'no_such_tool', arguments: {} }), (e) => e.code === -32602);
  assert.deepEqual(await c.ping(), {});
});

// ---- the transport's rules, with raw HTTP ----
async function post(body, headers = {}) {
  const r = await fetch(`${BASE}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: r.status, headers: r.headers, json };
}
const auth = (who) => ({ authorization: `Bearer ${T[who]}` });
const init = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } };

test('streamable HTTP: bearer, Origin, sessions, protocol version, malformed JSON-RPC', async () => {
  assert.equal((await post(init)).status, 401, 'no token');
  assert.equal((await post(init, { ...auth('alice'), origin: 'https://evil.example' })).status, 403, 'unknown Origin');
  assert.equal((await post(init, { ...auth('alice'), origin: 'http://localhost:6274' })).status, 200, 'a loopback Origin');
  const r = await post({ ...init, params: { ...init.params, protocolVersion: '2099-01-01' } }, auth('alice'));
  assert.equal(r.json.result.protocolVersion, '2025-11-25', 'an unknown version gets the latest');
  const sid = r.headers.get('mcp-session-id');
  assert.match(sid, /^[0-9a-f]{32}$/);
  const list = { jsonrpc: '2.0', id: 2, method: 'tools/list' };
  assert.equal((await post(list, auth('alice'))).status, 400, 'no Mcp-Session-Id');
  assert.equal((await post(list, { ...auth('alice'), 'mcp-session-id': 'f'.repeat(32) })).status, 404, 'unknown session');
  assert.equal((await post(list, { ...auth('bob'), 'mcp-session-id': sid })).status, 404, "another principal's session");
  assert.equal((await post(list, { ...auth('alice'), 'mcp-session-id': sid, 'mcp-protocol-version': '1999-01-01' })).status, 400);
  const good = await post(list, { ...auth('alice'), 'mcp-session-id': sid, 'mcp-protocol-version': '2025-11-25' });
  assert.equal(good.json.result.tools.length, 6);
  const note = await post({ jsonrpc: '2.0', method: 'notifications/initialized' }, { ...auth('alice'), 'mcp-session-id': sid });
  assert.equal(note.status, 202);
  const parse = await post('{"jsonrpc": "2.0", "id": 1, "method": ', { ...auth('alice'), 'mcp-session-id': sid });
  assert.equal(parse.status, 400);
  assert.equal(parse.json.error.code, -32700);
  const batch = await post([list], { ...auth('alice'), 'mcp-session-id': sid });
  assert.equal(batch.json.error.code, -32600);
  const nomethod = await post({ jsonrpc: '2.0', id: 3, method: 'resources/list' }, { ...auth('alice'), 'mcp-session-id': sid });
  assert.equal(nomethod.json.error.code, -32601);
  const badparams = await post({ jsonrpc: '2.0', id: 4, method: 'tools/call', params: [1] }, { ...auth('alice'), 'mcp-session-id': sid });
  assert.equal(badparams.json.error.code, -32602);
  const disc = await post({ jsonrpc: '2.0', id: 5, method: 'server/discover' }, auth('alice'));
  assert.ok(disc.json.result.supportedVersions.includes('2025-11-25'), 'server/discover without a session');
  const get = await fetch(`${BASE}/mcp`, { headers: { ...auth('alice'), accept: 'text/event-stream', 'mcp-session-id': sid } });
  assert.equal(get.status, 405, 'no SSE stream');
  const del = await fetch(`${BASE}/mcp`, { method: 'DELETE', headers: { ...auth('alice'), 'mcp-session-id': sid } });
  assert.equal(del.status, 204);
  assert.equal((await post(list, { ...auth('alice'), 'mcp-session-id': sid })).status, 404, 'an ended session');
  fs.writeFileSync(STATE, JSON.stringify({ alice: S.alice.cid, bob: S.bob.cid, order: S.order, product: S.product, tokens: T }));
});
