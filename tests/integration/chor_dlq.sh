#!/usr/bin/env bash
# Choreography's bus workers park what keeps failing, and their dead letters are
# operated like the projections' with `agora dlq` and /admin/dlq.
# 1. agora run --saga-mode choreography (local: bus) once, to create the four
#    consumers; stopped, two messages about one aggregate are put on the bus
#    (stream _bus-messages): an OrderPlaced whose orderId no order can have (too
#    long: chor-inventory's reaction fails with AG_EINVAL, which is never retried)
#    and an OrderShipped after it.
# 2. On start: GET /admin/dlq and `agora dlq list` show bus:chor-inventory:1
#    (kind bus, the error kept) and bus:chor-inventory:2 waiting behind it; `agora
#    dlq show` finds the head; an order placed meanwhile (another aggregate)
#    completes: the parked one holds only its own aggregate back.
# 3. Replay of the head still fails (409, "still failing"), replay of the waiting
#    one is refused (409, "waits behind"), an unknown consumer is 404, drop of the
#    head releases the one behind it (released 1), a second drop is 409, and the
#    list is empty again.
# Making a real reaction fail and then succeed on replay needs a fault hook the
# reactions do not have (AGORA_FAULT_* turns into the flow's failure events, not
# into handler errors); the worker's replay-success path is in tests/unit/bus.
# Env: AGORA_BIN (CTest).
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
# shellcheck source=run_lib.bash
source "$(dirname "$0")/run_lib.bash"
run_frame
J='Content-Type: application/json'
D="$TMP/d"
f() { json_field "$1"; }

start() { agora_start "$D" live --saga-mode choreography; }
stop() { agora_stop; }

start
ADMIN=$("$BIN" token --data "$D" --sub ops --role admin) || fail "agora token"
AH="Authorization: Bearer $ADMIN"
stop

AGG="dlq-test-$RANDOM"
LONG=$(python3 -c 'print("x" * 300)')
msg() { # id type data
    python3 -c 'import json,sys; print(json.dumps({"specversion": "1.0", "id": sys.argv[1], "source": "/agora/ordering",
  "type": "agora.ordering." + sys.argv[2], "subject": sys.argv[4], "datacontenttype": "application/json",
  "data": json.loads(sys.argv[3])}))' "$1" "$2" "$3" "$AGG"
}
put() { "$BIN" store append _bus-messages --data "$D" --type "agora.ordering.$2" --payload "$(msg "$@")" >/dev/null || fail "put $2"; }
put "$AGG-1" OrderPlaced "{\"orderId\":\"$LONG\"}"
put "$AGG-2" OrderShipped "{\"orderId\":\"$AGG\",\"shippedAt\":\"2026-01-01T00:00:00Z\"}"

start
for _ in $(seq 200); do
    curl -sf -H "$AH" "$A/admin/dlq" >"$TMP/l" || fail "GET /admin/dlq"
    [ "$(f 'len([i for i in d["items"] if i["kind"] == "bus"])' <"$TMP/l")" = 2 ] && break
    sleep 0.1
done
[ "$(f '[(i["id"], i["consumer"], i["aggregate"], i["waiting"], i.get("behind")) for i in d["items"]]' <"$TMP/l")" = \
  "[('bus:chor-inventory:1', 'chor-inventory', '$AGG', False, None), ('bus:chor-inventory:2', 'chor-inventory', '$AGG', True, 'bus:chor-inventory:1')]" ] ||
    fail "GET /admin/dlq: $(cat "$TMP/l")"
f 'd["items"][0]["error"]' <"$TMP/l" | grep -q "too long" || fail "the error is not kept: $(cat "$TMP/l")"
"$BIN" dlq list --data "$D" >"$TMP/o" || fail "agora dlq list"
[ "$(f '[i["id"] for i in d]' <"$TMP/o")" = "['bus:chor-inventory:1', 'bus:chor-inventory:2']" ] || fail "agora dlq list: $(cat "$TMP/o")"
"$BIN" dlq show bus:chor-inventory:1 --data "$D" | f 'd["type"]' | grep -q OrderPlaced || fail "agora dlq show"

# another aggregate flows: an order completes
p=$(curl -sf -H "$AH" "$A/api/v1/products?limit=1" | f 'd["items"][0]["id"]')
c=$(curl -sf -H "$AH" -X POST "$A/api/v1/customers" -H "$J" -d "{\"email\":\"d$RANDOM@example.com\",\"name\":\"U\"}") || fail "customer"
curl -sf -H "$AH" -X POST "$A/api/v1/accounts/$(echo "$c" | f 'd["accountId"]')/deposits" -H "$J" \
    -d '{"amount":{"amount":100000,"currency":"USD"}}' >/dev/null || fail "deposit"
o=$(curl -sf -H "$AH" -X POST "$A/api/v1/orders" -H "$J" -d "{\"customerId\":\"$(echo "$c" | f 'd["id"]')\",\"items\":[{\"productId\":\"$p\",\"quantity\":1}],\"shippingAddress\":{\"street\":\"1 Main St\",\"city\":\"X\",\"state\":\"Y\",\"zipCode\":\"1\",\"country\":\"US\"}}") ||
    fail "order"
saga=$(echo "$o" | f 'd["sagaId"]')
s=""
for _ in $(seq 300); do
    s=$(curl -s -H "$AH" "$A/api/v1/sagas/$saga")
    [ "$(echo "$s" | f 'd.get("status")')" = completed ] && break
    sleep 0.05
done
[ "$(echo "$s" | f 'd.get("status")')" = completed ] || fail "another order did not complete: $s"

code() { curl -s -o "$TMP/r" -w '%{http_code}' -X "$1" -H "$AH" "$A/admin/dlq/$2"; }
if "$BIN" dlq replay bus:chor-inventory:1 --data "$D" >"$TMP/r" 2>&1; then fail "a replay of a still failing message succeeded"; fi
grep -q "still failing" "$TMP/r" || fail "replay: $(cat "$TMP/r")"
[ "$(code POST bus:chor-inventory:2/replay)" = 409 ] || fail "a waiting message overtook its head: $(cat "$TMP/r")"
grep -q "waits behind" "$TMP/r" || fail "replay waiting: $(cat "$TMP/r")"
[ "$(code POST bus:chor-nobody:1/replay)" = 404 ] || fail "unknown consumer: $(cat "$TMP/r")"
[ "$(code DELETE bus:chor-inventory:99)" = 404 ] || fail "unknown message: $(cat "$TMP/r")"
"$BIN" dlq drop bus:chor-inventory:1 --data "$D" >"$TMP/r" || fail "agora dlq drop: $(cat "$TMP/r")"
[ "$(f 'd["released"]' <"$TMP/r")" = 1 ] || fail "drop released: $(cat "$TMP/r")"
[ "$(code DELETE bus:chor-inventory:1)" = 409 ] || fail "a second drop: $(cat "$TMP/r")"
[ "$("$BIN" dlq list --data "$D")" = "[]" ] || fail "list after resolving: $("$BIN" dlq list --data "$D")"
stop
echo "PASS: choreography's parked messages listed, shown, refused while failing or waiting, dropped and released"
