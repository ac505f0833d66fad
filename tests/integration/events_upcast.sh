#!/usr/bin/env bash
# Integration: a log written with a previous event shape still reads (event schema
# versions, src/es/upcast.c, docs/events.md). tests/fixtures/events/v1_address.jsonl
# holds a customer whose AddressAdded is version 1 (no addressId, no schemaVersion).
# agora run seeds a fresh data directory and stops; the fixture is appended with
# `agora store append`; agora run starts again on it and:
#   - GET /customers/{id}/addresses lists the old address with the id the upcaster
#     derives (the id of the event that added it), read through the repository;
#   - the customers read model (a projection) shows the fixture customer;
#   - an order with that shippingAddressId is confirmed and its shipment goes there;
#   - a new address is written as version 2 (schemaVersion 2 in its metadata) and
#     the log keeps the old event untouched.
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
SRC="${AG_SOURCE_DIR:?AG_SOURCE_DIR not set}"
FIX="$SRC/tests/fixtures/events/v1_address.jsonl"
command -v curl >/dev/null && command -v node >/dev/null || { echo "FAIL: curl and node are needed"; exit 1; }
TMP=$(mktemp -d)
SPID=""
cleanup() {
    if [ -n "$SPID" ]; then kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; tail -20 "$TMP/server.log" >&2 || true; exit 1; }
pass() { echo "ok - $*"; }
DATA="$TMP/data"
# shellcheck source=run_lib.bash
source "$(dirname "$0")/run_lib.bash"
start() { agora_start "$DATA" ready; }
stop() { agora_stop; }
# api METHOD PATH [BODY]: as the admin; sets ST and B (the body)
api() {
    local args=(-sS --max-time 10 -X "$1" -H "Authorization: Bearer $ADMIN" -o "$TMP/body" -w '%{http_code}')
    [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
    ST=$(curl "${args[@]}" "$BASE$2") || fail "curl $1 $2"
    B=$(cat "$TMP/body")
}
# js EXPR: EXPR on the last body (b)
js() { node -e 'const b=JSON.parse(process.argv[1]); const v=eval(process.argv[2]); console.log(typeof v==="object"?JSON.stringify(v):String(v))' "$B" "$1"; }
want() { [ "$(js "$1")" = true ] || fail "$2: not true: $1 in $B"; }

start
stop
n=0
while IFS= read -r line; do
    [ -n "$line" ] || continue
    IFS=$'\t' read -r stream type id data meta < <(node -e 'const e=JSON.parse(process.argv[1]);
        console.log([e.stream,e.type,e.id,JSON.stringify(e.data),JSON.stringify(e.metadata)].join("\t"))' "$line")
    "$BIN" store append --data "$DATA" "$stream" --type "$type" --id "$id" --payload "$data" --metadata "$meta" >/dev/null ||
        fail "appending $type to $stream"
    n=$((n + 1))
done <"$FIX"
pass "appended the $n events of $(basename "$FIX") (AddressAdded of schema version 1)"

start
ADMIN=$("$BIN" token --data "$DATA" --sub ops --role admin)
CID=0190a000-0000-7000-8000-00000000c001
AID=0190a000-0000-7000-8000-00000000a001
OLD=0190a000-0000-7000-8000-0000000e0003 # the v1 AddressAdded's event id
api GET "/api/v1/customers/$CID/addresses"
[ "$ST" = 200 ] || fail "addresses: $ST $B"
want "b.items.length===1 && b.items[0].id==='$OLD' && b.items[0].street==='12 Legacy Lane'" "the v1 address"
for _ in $(seq 100); do
    api GET "/api/v1/customers/$CID"
    [ "$ST" = 200 ] && break
    sleep 0.1
done
want "b.name==='Old Shape' && b.accountId==='$AID'" "the customers read model"
pass "the v1 address reads with the id derived from its event ($OLD); the fixture customer is in the read model"

api GET '/api/v1/products?limit=100'
PID=$(js "b.items.find(p=>p.sku==='CB-05').id")
api POST "/api/v1/accounts/$AID/deposits" '{"amount": {"amount": 100000, "currency": "USD"}}'
[ "$ST" = 200 ] || fail "deposit: $ST $B"
api POST /api/v1/orders "{\"customerId\": \"$CID\", \"items\": [{\"productId\": \"$PID\", \"quantity\": 1}], \"shippingAddressId\": \"$OLD\"}"
[ "$ST" = 202 ] || fail "order: $ST $B"
OID=$(js b.orderId)
for _ in $(seq 200); do
    api GET "/api/v1/orders/$OID"
    [ "$ST" = 200 ] && [ "$(js "b.status!=='pending'")" = true ] && break
    sleep 0.1
done
want "b.status==='confirmed' && b.shippingAddress.street==='12 Legacy Lane'" "the order"
api GET "/api/v1/shipments/$OID"
want "b.address.city==='Oldtown'" "the shipment"
pass "an order naming the v1 address by that id is confirmed and ships to 12 Legacy Lane"

api POST "/api/v1/customers/$CID/addresses" '{"street": "1 New St", "city": "Newtown", "state": "OR", "zipCode": "97002", "country": "US"}'
[ "$ST" = 201 ] || fail "new address: $ST $B"
NEW=$(js b.id)
api GET "/api/v1/customers/$CID/addresses"
want "b.items.length===2 && b.items[0].id==='$OLD' && b.items[1].id==='$NEW'" "both addresses"
stop
"$BIN" store read --data "$DATA" "customer-$CID" >"$TMP/stream"
node -e 'const ev=require("fs").readFileSync(process.argv[1],"utf8").trim().split("\n").map(JSON.parse)
    .filter(e=>e.type==="AddressAdded");
  const meta=(e)=>typeof e.metadata==="string"?JSON.parse(e.metadata):e.metadata;
  const data=(e)=>typeof e.data==="string"?JSON.parse(e.data):e.data;
  if (ev.length!==2) throw new Error("AddressAdded events: "+ev.length);
  if (meta(ev[0]).schemaVersion!==undefined || data(ev[0]).addressId!==undefined) throw new Error("the v1 event changed: "+JSON.stringify(ev[0]));
  if (meta(ev[1]).schemaVersion!==2 || data(ev[1]).addressId!==process.argv[2]) throw new Error("the new event is not v2: "+JSON.stringify(ev[1]));' \
    "$TMP/stream" "$NEW" || fail "the log's AddressAdded events"
pass "a new address is written as schema version 2 (addressId, schemaVersion 2); the v1 event in the log is untouched"
