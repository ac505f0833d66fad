// MCP over stdio (`agora mcp --data DIR`), with the official TypeScript SDK client,
// on the data directory mcp_http.test.mjs left (agora run stopped in between).
// Env: AGORA_BIN, DATA, STATE (that test's customers, order and tokens).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { checkTools, ok, toolError, address, eventually } from './common.mjs';

const { AGORA_BIN, DATA, STATE } = process.env;
const state = JSON.parse(fs.readFileSync(STATE, 'utf8'));

// Start `agora mcp` as the SDK's child process; stderr is kept to look for
// sanitizer reports. Returns the client and a function that closes it and
// returns that stderr.
async function start(args) {
  const transport = new StdioClientTransport({
    command: AGORA_BIN,
    args: ['mcp', '--data', DATA, ...args],
    env: { ...process.env },
    stderr: 'pipe',
  });
  let err = '';
  transport.stderr.on('data', (d) => (err += d));
  const client = new Client({ name: 'agora-test', version: '1.0.0' });
  await client.connect(transport);
  return {
    client,
    stop: async () => {
      await client.close();
      assert.doesNotMatch(err, /AddressSanitizer|runtime error:/, 'no sanitizer report');
      return err;
    },
  };
}

test('local operator (no token): every tool, for any customer', async () => {
  const { client: c, stop } = await start([]);
  const tools = checkTools(await c.listTools());
  const products = ok(tools, 'list_products', await c.callTool({ name: 'list_products', arguments: {} }));
  assert.ok(products.items.length >= 5);
  ok(tools, 'get_inventory', await c.callTool({ name: 'get_inventory', arguments: { productId: state.product } }));
  const search = async () => ok(tools, 'search_orders', await c.callTool({ name: 'search_orders', arguments: { customerId: state.alice, limit: 100 } }));
  const all = await eventually(search, (r) => r.items.some((o) => o.id === state.order));
  assert.ok(all.items.some((o) => o.id === state.order), "the operator finds alice's order");
  toolError(await c.callTool({ name: 'place_order', arguments: { items: [{ productId: state.product, quantity: 1 }], shippingAddress: address } }), /customerId is required/);
  const placed = ok(tools, 'place_order', await c.callTool({
    name: 'place_order',
    arguments: { customerId: state.bob, items: [{ productId: state.product, quantity: 1 }], shippingAddress: address },
  }));
  ok(tools, 'get_order_status', await c.callTool({ name: 'get_order_status', arguments: { orderId: placed.orderId } }));
  const res = await c.callTool({ name: 'cancel_order', arguments: { orderId: placed.orderId } });
  if (res.isError) toolError(res, /^409 .*confirmed/); // the saga was faster than the cancel
  else assert.equal(ok(tools, 'cancel_order', res).status, 'cancelled');
  await stop();
});

test("a customer's token: only that customer's orders", async () => {
  const { client: c, stop } = await start(['--token', state.tokens.bob]);
  const tools = checkTools(await c.listTools());
  toolError(await c.callTool({ name: 'get_order_status', arguments: { orderId: state.order } }), /^404/);
  toolError(await c.callTool({ name: 'cancel_order', arguments: { orderId: state.order } }), /^404/);
  const search = async () => ok(tools, 'search_orders', await c.callTool({ name: 'search_orders', arguments: { limit: 100 } }));
  const mine = await eventually(search, (r) => r.items.length >= 1);
  assert.ok(mine.items.length >= 1 && mine.items.every((o) => o.customerId === state.bob), 'bob sees his own only');
  await stop();
  const { client: a, stop: stopA } = await start(['--token', state.tokens.alice]);
  const st = ok(tools, 'get_order_status', await a.callTool({ name: 'get_order_status', arguments: { orderId: state.order } }));
  assert.equal(st.customerId, state.alice);
  await stopA();
});
