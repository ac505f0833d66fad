#!/usr/bin/env node
// An outside system reading agora's bus with the npm JetStream client, the way a
// partner would (docs/events.md): a durable pull consumer on stream AGORA, every
// message validated as a CloudEvent 1.0 against the envelope schema and its
// type's data schema taken from docs/events.md, then acked.
//
//   node bus_consumer.js NATS_URL EVENTS_MD EXPECTED_IDS_FILE [DURABLE]
//
// EXPECTED_IDS_FILE holds one "id type" line per integration event in agora's log.
// Reads until every expected id was received (or 30 s pass without progress),
// then fails if a message was invalid, an expected id is missing, an id came twice
// (a duplicate delivered), or an id came that is not in the log. Prints a summary
// line `bus_consumer: N passed, M failed`.
'use strict';
const fs = require('fs');
const { connect } = require('@nats-io/transport-node');
const { jetstream, jetstreamManager, AckPolicy, DeliverPolicy } = require('@nats-io/jetstream');
const Ajv = require('ajv');

const [url, eventsMd, expectedFile, durable = 'outside-test'] = process.argv.slice(2);
if (!url || !eventsMd || !expectedFile) {
  console.error('usage: bus_consumer.js NATS_URL EVENTS_MD EXPECTED_IDS_FILE [DURABLE]');
  process.exit(2);
}

// ```json schema=NAME blocks of docs/events.md
const schemas = {};
for (const m of fs.readFileSync(eventsMd, 'utf8').matchAll(/```json schema=(\w+)\n([\s\S]*?)```/g))
  schemas[m[1]] = JSON.parse(m[2]);
const ajv = new Ajv({ allErrors: true, strict: false });
const envelope = ajv.compile(schemas.envelope);
const byType = {};
for (const [name, s] of Object.entries(schemas)) if (name !== 'envelope') byType[name] = ajv.compile(s);

const expected = new Map();
for (const line of fs.readFileSync(expectedFile, 'utf8').split('\n')) {
  const [id, type] = line.trim().split(/\s+/);
  if (id) expected.set(id, type);
}

const failures = [];
let passed = 0;
const seen = new Map();

function check(m) {
  let ce;
  try {
    ce = m.json();
  } catch (e) {
    return failures.push(`seq ${m.seq}: not JSON: ${e.message}`);
  }
  if (!envelope(ce)) return failures.push(`${ce.id}: envelope: ${ajv.errorsText(envelope.errors)}`);
  const name = ce.type.split('.')[2];
  const v = byType[name];
  if (!v) return failures.push(`${ce.id}: type ${ce.type} has no schema in docs/events.md`);
  if (!v(ce.data)) return failures.push(`${ce.id} ${name}: data: ${ajv.errorsText(v.errors)}`);
  if (m.subject !== ce.type) failures.push(`${ce.id}: subject ${m.subject} != type ${ce.type}`);
  if (m.headers?.get('Nats-Msg-Id') !== ce.id) failures.push(`${ce.id}: Nats-Msg-Id differs`);
  if (seen.has(ce.id)) return failures.push(`${ce.id}: delivered twice (seq ${seen.get(ce.id)} and ${m.seq})`);
  seen.set(ce.id, m.seq);
  if (!expected.has(ce.id)) return failures.push(`${ce.id}: not an integration event of the log`);
  if (expected.get(ce.id) !== name) return failures.push(`${ce.id}: type ${name}, the log says ${expected.get(ce.id)}`);
  passed++;
}

(async () => {
  const nc = await connect({ servers: url, name: 'bus_consumer.js' });
  // a cluster that just lost a node may still be electing its leaders (the meta
  // leader answers account info, the stream's and the consumer's leaders the rest):
  // every JetStream call is retried for a while
  const retry = async (fn) => {
    for (let i = 0; ; i++) {
      try {
        return await fn();
      } catch (e) {
        if (i >= 30) throw e;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  };
  const jsm = await retry(() => jetstreamManager(nc));
  // a cluster that just lost a node may still be electing its leaders: retry a while
  for (let i = 0; ; i++) {
    try {
      await jsm.consumers.add('AGORA', {
        durable_name: durable,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        filter_subject: 'agora.>',
      });
      break;
    } catch (e) {
      if (i >= 30) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  const c = await retry(() => jetstream(nc).consumers.get('AGORA', durable));
  let idle = Date.now();
  while (seen.size < expected.size && Date.now() - idle < 30000) {
    const before = seen.size;
    try { // a fetch cut by a leader change is simply fetched again (the idle clock bounds it)
      const iter = await retry(() => c.fetch({ max_messages: 500, expires: 1000 }));
      for await (const m of iter) {
        check(m);
        m.ack();
      }
    } catch (e) {
      await new Promise((r) => setTimeout(r, 500));
    }
    if (seen.size > before) idle = Date.now();
  }
  // anything more (a duplicate) would come now
  const tail = await retry(() => c.fetch({ max_messages: 100, expires: 1500 }));
  for await (const m of tail) {
    check(m);
    m.ack();
  }
  await nc.drain();
  for (const [id, type] of expected) if (!seen.has(id)) failures.push(`${id} ${type}: never delivered`);
  for (const f of failures.slice(0, 20)) console.log(`not ok - ${f}`);
  console.log(`bus_consumer: ${passed} passed, ${failures.length} failed (${expected.size} expected, ${seen.size} received)`);
  process.exit(failures.length ? 1 : 0);
})().catch((e) => {
  console.error(`bus_consumer: ${e.stack || e}`);
  process.exit(1);
});
