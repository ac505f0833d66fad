#!/usr/bin/env node
// Checks recorded HTTP exchanges against docs/openapi.yaml (used by api_tour.sh).
//
//   node api_validate.js SPEC DIR
//
// DIR holds one exchange per NNN prefix: NNN.req (a line "METHOD URL-PATH", optionally
// followed by "authorization: none|bearer"), NNN.hdr (curl -D: status line and
// headers), NNN.body. For each exchange the operation is found by method + path
// template; then:
//   - an operation whose `security` needs a token must not answer 2xx to a request
//     without one (x-agora-access owner/admin);
//   - the status code must be listed for the operation (405 and unknown paths use
//     components.responses.MethodNotAllowed / NotFound);
//   - the Content-Type must be one of the response's media types;
//   - the body must validate against the media type's schema (JSON Schema 2020-12,
//     formats checked);
//   - every required response header must be present and every documented header
//     present must match its schema.
// Prints one line per failure and exits 1 if any.
'use strict';
const fs = require('fs');
const path = require('path');
const YAML = require('yaml');
const Ajv2020 = require('ajv/dist/2020').default;
const addFormats = require('ajv-formats').default;

const [specPath, dir] = process.argv.slice(2);
if (!specPath || !dir) {
  console.error('usage: api_validate.js SPEC DIR');
  process.exit(2);
}
const spec = YAML.parse(fs.readFileSync(specPath, 'utf8'));

// components.schemas become $defs of one schema document, so $refs resolve.
const ROOT = 'agora:openapi';
const rewrite = (node) =>
  JSON.parse(JSON.stringify(node).replace(/"#\/components\/schemas\//g, `"${ROOT}#/$defs/`));
const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);
ajv.addKeyword('example'); // OpenAPI's own keyword, documentation only
ajv.addSchema({ $id: ROOT, $defs: rewrite(spec.components.schemas) });

const compiled = new Map();
function validator(schema, key) {
  if (!compiled.has(key)) compiled.set(key, ajv.compile(rewrite(schema)));
  return compiled.get(key);
}

function deref(obj) {
  while (obj && obj.$ref) {
    const parts = obj.$ref.replace(/^#\//, '').split('/');
    obj = parts.reduce((o, p) => o[p.replace(/~1/g, '/').replace(/~0/g, '~')], spec);
  }
  return obj;
}

// Path templates → regexps, most specific (fewest parameters) first.
const routes = Object.keys(spec.paths)
  .map((tpl) => ({
    tpl,
    re: new RegExp('^' + tpl.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/]+') + '$'),
    params: (tpl.match(/\{/g) || []).length,
  }))
  .sort((a, b) => a.params - b.params);

function parseHeaders(text) {
  // curl -D may hold several responses (e.g. 100 Continue); take the last.
  const blocks = text.split(/\r?\n\r?\n/).filter((b) => /^HTTP\//.test(b));
  const lines = blocks[blocks.length - 1].split(/\r?\n/);
  const status = parseInt(lines[0].split(' ')[1], 10);
  const headers = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  return { status, headers };
}

const failures = [];
let checked = 0;
const ids = fs
  .readdirSync(dir)
  .filter((f) => f.endsWith('.req'))
  .map((f) => f.slice(0, -4))
  .sort();

for (const id of ids) {
  const reqLines = fs.readFileSync(path.join(dir, id + '.req'), 'utf8').trim().split('\n');
  const [method, url] = reqLines[0].trim().split(/\s+/);
  const authLine = reqLines.find((l) => /^authorization:/i.test(l));
  const anonymous = authLine ? /none/.test(authLine) : undefined;
  const { status, headers } = parseHeaders(fs.readFileSync(path.join(dir, id + '.hdr'), 'utf8'));
  const bodyText = fs.readFileSync(path.join(dir, id + '.body'), 'utf8');
  const where = `${id} ${method} ${url} → ${status}`;
  const fail = (msg) => failures.push(`${where}: ${msg}`);
  checked++;

  const p = url.split('?')[0];
  const route = routes.find((r) => r.re.test(p));
  let resp;
  let key;
  if (!route) {
    if (status !== 404) { fail('unknown path answered with something other than 404'); continue; }
    resp = spec.components.responses.NotFound;
    key = 'NotFound';
  } else if (status === 405) {
    resp = spec.components.responses.MethodNotAllowed;
    key = 'MethodNotAllowed';
    const allowed = Object.keys(spec.paths[route.tpl]).filter((m) => m !== 'parameters').map((m) => m.toUpperCase());
    const allow = (headers.allow || '').split(/,\s*/);
    if (allowed.includes(method)) fail(`405 for ${method}, which the spec documents on ${route.tpl}`);
    for (const m of allowed) if (!allow.includes(m)) fail(`Allow "${headers.allow}" lacks ${m}`);
  } else {
    const op = spec.paths[route.tpl][method.toLowerCase()];
    if (!op) { fail(`${method} is not documented on ${route.tpl} (and the server did not answer 405)`); continue; }
    resp = op.responses[String(status)];
    key = `${method} ${route.tpl} ${status}`;
    if (!resp) { fail(`status ${status} is not documented for ${method} ${route.tpl}`); continue; }
    const needsToken = Array.isArray(op.security) ? op.security.length > 0 : (spec.security || []).length > 0;
    if (anonymous && needsToken && status < 300)
      fail(`answered ${status} without a token, but ${method} ${route.tpl} is ${op['x-agora-access'] || 'not public'}`);
  }
  resp = deref(resp);

  // headers
  for (const [name, h0] of Object.entries(resp.headers || {})) {
    const h = deref(h0);
    const v = headers[name.toLowerCase()];
    if (v === undefined) {
      if (h.required) fail(`missing required header ${name}`);
      continue;
    }
    const validate = validator(h.schema, `${key} header ${name}`);
    if (!validate(v)) fail(`header ${name}: "${v}" ${ajv.errorsText(validate.errors)}`);
  }

  // body
  const content = resp.content || {};
  const types = Object.keys(content);
  if (!types.length) {
    if (bodyText.length) fail('the spec documents no body, but there is one');
    continue;
  }
  const ct = (headers['content-type'] || '').split(';')[0].trim();
  if (!types.includes(ct)) { fail(`Content-Type "${ct}" is not one of ${types.join(', ')}`); continue; }
  const media = content[ct];
  if (!media.schema) continue;
  let body = bodyText;
  if (/json$/.test(ct)) {
    try {
      body = JSON.parse(bodyText);
    } catch (e) {
      fail(`body is not JSON: ${e.message}`);
      continue;
    }
  }
  const validate = validator(media.schema, `${key} ${ct}`);
  if (!validate(body)) {
    for (const e of validate.errors) fail(`body${e.instancePath} ${e.message} ${JSON.stringify(e.params)}`);
  }
  if (body && typeof body === 'object' && 'status' in body && /problem/.test(ct) && body.status !== status)
    fail(`problem status ${body.status} differs from the HTTP status`);
}

if (!checked) failures.push('no exchanges recorded');
for (const f of failures) console.log(`FAIL: ${f}`);
console.log(`api_validate: ${checked} responses checked against ${path.basename(specPath)}, ${failures.length} problems`);
process.exit(failures.length ? 1 : 0);
