#!/usr/bin/env bash
# The choreographed PlaceOrder's integration events against their contract: agora
# run --saga-mode choreography (local: bus), with ArrangeShipment failing always;
# orders that confirm-path up to the shipment, one beyond the balance and one beyond
# the stock. Every flow ends compensated with the right failed step, and every
# CloudEvent the relay put on the bus (stream _bus-messages) matches the envelope
# and its type's schema in docs/events.md (ajv), each choreography type seen.
# Env: AGORA_BIN, AG_SOURCE_DIR, AG_BUILD_DIR (CTest).
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
SRC=${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
TMP=$(mktemp -d)
SPID=""
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$TMP/log" ] && tail -20 "$TMP/log"; exit 1; }
J='Content-Type: application/json'
f() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

cd "$SRC"
command -v node >/dev/null || { echo "skip: node is needed"; exit 77; }
(
    flock 9
    if [ ! -f node_modules/.package-lock.json ] || [ ! -d node_modules/ajv ]; then
        npm ci --no-audit --no-fund >"$TMP/npm.log" 2>&1 || { cat "$TMP/npm.log"; exit 1; }
    fi
) 9>"${AG_BUILD_DIR:-$TMP}/.npm-ci.lock" || fail "npm ci failed"

AGORA_SAGA_MODE=choreography AGORA_FAULT_ARRANGESHIPMENT=1 "$BIN" run --data "$TMP/d" \
    --listen 127.0.0.1:0 --no-gateway >"$TMP/log" 2>&1 &
SPID=$!
A=""
for _ in $(seq 300); do
    A=$(grep -o 'serving http://127.0.0.1:[0-9]*' "$TMP/log" | head -1 | sed 's/serving //') || true
    [ -n "$A" ] && break
    sleep 0.1
done
[ -n "$A" ] || fail "agora run did not start"
p=$(curl -sf "$A/api/v1/products?limit=1" | f 'd["items"][0]["id"]')
stock=$(curl -sf "$A/api/v1/inventory/$p" | f 'd["available"]')
SAGAS=()
for k in 1 2 3; do # 1: shipment fails; 2: beyond the balance; 3: beyond the stock
    c=$(curl -sf -X POST "$A/api/v1/customers" -H "$J" -d "{\"email\":\"c$k$RANDOM@example.com\",\"name\":\"U\"}")
    aid=$(echo "$c" | f 'd["accountId"]')
    amt=100000 q=1
    [ $k = 2 ] && amt=10
    [ $k = 3 ] && q=$((stock + 1))
    curl -sf -X POST "$A/api/v1/accounts/$aid/deposits" -H "$J" -d "{\"amount\":{\"amount\":$amt,\"currency\":\"USD\"}}" >/dev/null
    o=$(curl -sf -X POST "$A/api/v1/orders" -H "$J" -d "{\"customerId\":\"$(echo "$c" | f 'd["id"]')\",\"items\":[{\"productId\":\"$p\",\"quantity\":$q}],\"shippingAddress\":{\"street\":\"1 Main St\",\"city\":\"X\",\"state\":\"Y\",\"zipCode\":\"1\",\"country\":\"US\"}}") ||
        fail "order $k"
    SAGAS+=("$(echo "$o" | f 'd["sagaId"]')")
done
WANT=(3 2 1) # the step that failed
for k in 0 1 2; do
    s=""
    for _ in $(seq 200); do
        s=$(curl -s "$A/api/v1/sagas/${SAGAS[$k]}")
        [ "$(echo "$s" | f 'd.get("status")')" = compensated ] && break
        sleep 0.05
    done
    echo "$s" | python3 -c "
import json,sys
d=json.load(sys.stdin); i=${WANT[$k]}; st=[x['status'] for x in d['steps']]
assert d['status']=='compensated', d
assert st[i]=='failed' and all(x=='compensated' for x in st[:i]) and all(x=='pending' for x in st[i+1:]), st
" || fail "flow $k: $s"
done
echo "ok - a failing shipment, payment and reservation: each flow compensated, the failed step named"
# let the relay publish the last compensations, then stop (a clean stop: no leaks)
sleep 1
kill -TERM "$SPID"
wait "$SPID" || fail "agora run did not stop cleanly"
SPID=""
"$BIN" store read _bus-messages --data "$TMP/d" --limit 100000 >"$TMP/msgs.jsonl" 2>/dev/null || fail "cannot read the bus"
node - "$TMP/msgs.jsonl" <<'JS' || fail "CloudEvents do not match docs/events.md"
const fs = require('fs');
const Ajv = require('ajv');
const ajv = new Ajv({strict: false});
const schemas = {};
for (const m of fs.readFileSync('docs/events.md', 'utf8').matchAll(/```json schema=(\w+)\n([\s\S]*?)```/g))
  schemas[m[1]] = ajv.compile(JSON.parse(m[2]));
const seen = new Set();
let bad = 0;
for (const line of fs.readFileSync(process.argv[2], 'utf8').split('\n').filter(Boolean)) {
  const ce = JSON.parse(line).data;
  const t = ce.type.split('.').pop();
  seen.add(t);
  if (!schemas.envelope(ce)) { bad++; console.log('envelope', JSON.stringify(schemas.envelope.errors)); }
  if (!schemas[t]) { bad++; console.log('no schema for', t); continue; }
  if (!schemas[t](ce.data)) { bad++; console.log(t, JSON.stringify(schemas[t].errors), JSON.stringify(ce.data)); }
}
const want = ['OrderStockReserved', 'StockReservationFailed', 'OrderStockReleased', 'OrderPaymentCaptured',
              'PaymentFailed', 'OrderPaymentRefunded', 'ShipmentFailed', 'OrderCancelled'];
for (const t of want) if (!seen.has(t)) { bad++; console.log('never published:', t); }
process.exit(bad ? 1 : 0);
JS
echo "ok - every CloudEvent on the bus matches docs/events.md, each choreography event type among them"
