// Shared by the MCP tests (mcp_http.test.mjs, mcp_stdio.test.mjs): the tools every
// transport must offer, and a check of a tool list and of one call's result
// against the tool's outputSchema (ajv), as an MCP client would.
import assert from 'node:assert/strict';
import Ajv from 'ajv';

export const TOOLS = {
  search_orders: { readOnly: true, destructive: false },
  get_order_status: { readOnly: true, destructive: false },
  list_products: { readOnly: true, destructive: false },
  get_inventory: { readOnly: true, destructive: false },
  place_order: { readOnly: false, destructive: false },
  cancel_order: { readOnly: false, destructive: true },
};

const ajv = new Ajv({ strict: false, allErrors: true });

// The tool list: exactly TOOLS, each with schemas that compile and honest annotations.
export function checkTools(list) {
  const byName = Object.fromEntries(list.tools.map((t) => [t.name, t]));
  assert.deepEqual(Object.keys(byName).sort(), Object.keys(TOOLS).sort());
  for (const [name, want] of Object.entries(TOOLS)) {
    const t = byName[name];
    assert.equal(t.inputSchema.type, 'object', `${name}: inputSchema`);
    assert.equal(t.outputSchema.type, 'object', `${name}: outputSchema`);
    ajv.compile(t.inputSchema);
    ajv.compile(t.outputSchema);
    assert.ok(t.description && t.description.length > 20, `${name}: description`);
    assert.equal(t.annotations.readOnlyHint, want.readOnly, `${name}: readOnlyHint`);
    assert.equal(t.annotations.destructiveHint, want.destructive, `${name}: destructiveHint`);
    assert.equal(typeof t.annotations.idempotentHint, 'boolean', `${name}: idempotentHint`);
  }
  return byName;
}

// A successful result: structuredContent valid against the output schema, and the
// same JSON as text. Returns structuredContent.
export function ok(tools, name, res) {
  assert.equal(res.isError, false, `${name} failed: ${JSON.stringify(res.content)}`);
  const validate = ajv.compile(tools[name].outputSchema);
  assert.ok(validate(res.structuredContent), `${name}: ${ajv.errorsText(validate.errors)}`);
  assert.equal(res.content[0].type, 'text');
  assert.deepEqual(JSON.parse(res.content[0].text), res.structuredContent);
  return res.structuredContent;
}

// A tool error: isError with a text that matches `re`, never a JSON-RPC error.
export function toolError(res, re) {
  assert.equal(res.isError, true, `expected a tool error, got ${JSON.stringify(res)}`);
  assert.match(res.content[0].text, re);
}

export const address = { street: '1 Main St', city: 'Springfield', state: 'IL', zipCode: '62701', country: 'US' };

// Read models are eventually consistent: call `fn` until `pred` holds of its
// answer (at most ~10 s), and return the last answer.
export async function eventually(fn, pred) {
  let v;
  for (let i = 0; i < 100; i++) {
    v = await fn();
    if (pred(v)) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  return v;
}
