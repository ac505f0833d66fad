#!/usr/bin/env bash
# Integration: Server-Sent Events (issue 18) with a real client through the
# gateway of `agora run` (tests/integration/sse_reader.py reads the chunked
# text/event-stream as it arrives):
# - GET /api/v1/orders/{id}/events: the order's status at once (pending), then
#   `confirmed` when the slowed ConfirmOrder step (8 s, so the stream opens before it under load) confirms it, later than
#   the first event (streamed, not buffered by the gateway); the stream stays open
#   through `shipped` (dispatch) and ends after `delivered`, a final state;
# - reconnecting with Last-Event-ID 2 gets only the newest status (`delivered`),
#   with 5 nothing (no repeats) and the stream ends at once;
# - another customer gets 404 problem+json (not a stream), anonymous 401;
# - GET /admin/log/stream: ?from=0&type=OrderPlaced shows this OrderPlaced with
#   {position, stream, type, version, time, data}; Last-Event-ID resumes right
#   after the given position; a live tail (no from) shows an order placed after it
#   opened; a customer gets 403, anonymous 401, both problem+json;
# - /metrics has agora_sse_streams and agora_sse_dropped_total; clean stop, no
#   sanitizer report.
# Env: AGORA_BIN, AG_SOURCE_DIR (CTest).
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
SRC="${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
READER="$SRC/tests/integration/sse_reader.py"
command -v curl >/dev/null || { echo "FAIL: curl is needed"; exit 1; }
# shellcheck source=run_lib.bash
source "$(dirname "$0")/run_lib.bash"
run_frame
J='Content-Type: application/json'
field() { json_field "$1"; }
# lines FILE EXPR: evaluate EXPR over the JSON lines of FILE (list `L`)
lines() { python3 -c "import json,sys; L=[json.loads(l) for l in open(sys.argv[1])]; print(eval(sys.argv[2]))" "$1" "$2"; }

AGORA_FAULT_CONFIRMORDER=0,8000 agora_start "$TMP/gw" ready
ALICE=$("$BIN" token --data "$TMP/gw" --sub sse-alice --role customer)
BOB=$("$BIN" token --data "$TMP/gw" --sub sse-bob --role customer)
ADMIN=$("$BIN" token --data "$TMP/gw" --sub sse-ops --role admin)
AH="Authorization: Bearer $ALICE"

# a customer with money, and one order
c=$(curl -sf -X POST "$A/api/v1/customers" -H "$J" -H "$AH" \
    -d '{"email":"sse-alice@example.com","name":"A"}') || fail "register"
cid=$(echo "$c" | field 'd["id"]')
aid=$(echo "$c" | field 'd["accountId"]')
curl -sf -X POST "$A/api/v1/accounts/$aid/deposits" -H "$J" -H "$AH" \
    -d '{"amount":{"amount":100000,"currency":"USD"}}' >/dev/null || fail "deposit"
curl -sf -X POST "$A/api/v1/customers" -H "$J" -H "Authorization: Bearer $BOB" \
    -d '{"email":"sse-bob@example.com","name":"B"}' >/dev/null || fail "register bob"
pid=$(curl -sf "$A/api/v1/products?limit=1" -H "$AH" | field 'd["items"][0]["id"]')
place() {
    curl -sf -X POST "$A/api/v1/orders" -H "$J" -H "$AH" \
        -d "{\"customerId\":\"$cid\",\"items\":[{\"productId\":\"$pid\",\"quantity\":1}],\"shippingAddress\":{\"street\":\"1 Main St\",\"city\":\"X\",\"state\":\"Y\",\"zipCode\":\"1\",\"country\":\"US\"}}" |
        field 'd["orderId"]'
}
t0=$(date +%s.%N); o=$(place) || fail "order"; echo "# placed in $(python3 -c "import sys,time; print(round(time.time()-float(sys.argv[1]),3))" "$t0") s"

# the order's events until the stream ends: pending, confirmed (the slowed step),
# then shipped and delivered as the shipment is dispatched and delivered; delivered
# is final, so the stream ends there
python3 "$READER" "$A/api/v1/orders/$o/events" --header "$AH" --timeout 40 >"$TMP/ev1" &
RPID=$!
for _ in $(seq 300); do grep -q '"id": "3"' "$TMP/ev1" && break; sleep 0.1; done
grep -q '"id": "3"' "$TMP/ev1" || fail "no confirmed event: $(cat "$TMP/ev1")"
lines "$TMP/ev1" 'L[-1].get("end") is None or sys.exit(1)' >/dev/null ||
    fail "the stream ended at confirmed: $(cat "$TMP/ev1")"
r=$(curl -s -w " %{http_code}" -X POST "$A/api/v1/shipments/$o/dispatch" -H "Authorization: Bearer $ADMIN") && [ "${r##* }" = 202 ] || fail "dispatch: $r"
for _ in $(seq 300); do grep -q '"id": "4"' "$TMP/ev1" && break; sleep 0.1; done
r=$(curl -s -w " %{http_code}" -X POST "$A/api/v1/shipments/$o/deliver" -H "Authorization: Bearer $ADMIN") && [[ "${r##* }" == 20[02] ]] || fail "deliver: $r"
wait "$RPID" || fail "reader"
[ "$(lines "$TMP/ev1" 'L[-1]["end"]')" = True ] || fail "the stream did not end: $(cat "$TMP/ev1")"
[ "$(lines "$TMP/ev1" 'L[-1]["contentType"]')" = text/event-stream ] || fail "content type: $(cat "$TMP/ev1")"
seq=$(lines "$TMP/ev1" '",".join(json.loads(e["data"])["status"]+"/"+e["id"]+"/"+e["event"] for e in L[:-1])')
[ "$seq" = "pending/2/status,confirmed/3/status,shipped/4/status,delivered/5/status" ] ||
    fail "events: $seq ($(cat "$TMP/ev1"))"
[ "$(lines "$TMP/ev1" 'json.loads(L[1]["data"])["id"]')" = "$o" ] || fail "the data is not the order"
lines "$TMP/ev1" 'L[1]["t"] - L[0]["t"] > 0.5 or sys.exit(1)' >/dev/null ||
    fail "confirmed did not come later than pending (buffered?): $(cat "$TMP/ev1")"
echo "ok - order events through the gateway: $seq, streamed as they came, then the end"

# resume: Last-Event-ID 2 -> only the newest status (delivered); 5 -> nothing, and
# the stream ends at once
python3 "$READER" "$A/api/v1/orders/$o/events" --header "$AH" --last-event-id 2 >"$TMP/ev2"
[ "$(lines "$TMP/ev2" '",".join(e["id"] for e in L[:-1])')" = 5 ] || fail "resume from 2: $(cat "$TMP/ev2")"
python3 "$READER" "$A/api/v1/orders/$o/events" --header "$AH" --last-event-id 5 >"$TMP/ev3"
[ "$(lines "$TMP/ev3" 'len(L)')" = 1 ] || fail "resume from 5 repeated: $(cat "$TMP/ev3")"
[ "$(lines "$TMP/ev3" 'L[-1]["end"]')" = True ] || fail "resume from 5 did not end"
echo "ok - Last-Event-ID resumes without repeats"

# someone else's order: 404 problem+json; anonymous: 401
python3 "$READER" "$A/api/v1/orders/$o/events" --header "Authorization: Bearer $BOB" >"$TMP/ev4"
[ "$(lines "$TMP/ev4" 'L[0]["status"]')" = 404 ] || fail "bob: $(cat "$TMP/ev4")"
[ "$(lines "$TMP/ev4" 'L[0]["contentType"]')" = application/problem+json ] || fail "bob: not a problem"
python3 "$READER" "$A/api/v1/orders/$o/events" >"$TMP/ev5"
[ "$(lines "$TMP/ev5" 'L[0]["status"]')" = 401 ] || fail "anonymous: $(cat "$TMP/ev5")"
echo "ok - another customer gets 404, anonymous 401 (problem+json, no stream)"

# the admin log stream: OrderPlaced from the start of the log
ADH="Authorization: Bearer $ADMIN"
python3 "$READER" "$A/admin/log/stream?from=0&type=OrderPlaced" --header "$ADH" --max 1 \
    --timeout 10 >"$TMP/log1"
d=$(lines "$TMP/log1" 'L[0]["data"]')
[ "$(echo "$d" | field 'd["type"]')" = OrderPlaced ] || fail "log stream: $(cat "$TMP/log1")"
[ "$(echo "$d" | field 'd["stream"]')" = "order-$o" ] || fail "log stream: not this order: $d"
[ "$(echo "$d" | field 'sorted(d)')" = "['data', 'position', 'stream', 'time', 'type', 'version']" ] ||
    fail "log stream fields: $d"
[ "$(lines "$TMP/log1" 'L[0]["id"]')" = "$(echo "$d" | field 'd["position"]')" ] || fail "id is not the position"
[ "$(lines "$TMP/log1" 'L[0]["event"]')" = OrderPlaced ] || fail "event is not the type"
echo "ok - admin log stream: OrderPlaced at position $(echo "$d" | field 'd["position"]')"
python3 "$READER" "$A/admin/log/stream?from=0" --header "$ADH" --max 3 --timeout 10 >"$TMP/log2"
p1=$(lines "$TMP/log2" 'L[1]["id"]')
python3 "$READER" "$A/admin/log/stream" --header "$ADH" --last-event-id "$p1" --max 1 \
    --timeout 10 >"$TMP/log3"
[ "$(lines "$TMP/log3" 'L[0]["id"]')" = "$(lines "$TMP/log2" 'L[2]["id"]')" ] ||
    fail "Last-Event-ID $p1 did not resume right after it: $(cat "$TMP/log3")"
echo "ok - admin log stream resumes after Last-Event-ID"
# live: a stream opened now sees an order placed afterwards
python3 "$READER" "$A/admin/log/stream?type=OrderPlaced" --header "$ADH" --max 1 --timeout 15 \
    >"$TMP/log4" 2>"$TMP/log4.err" &
PIDS+=($!)
for _ in $(seq 100); do grep -q open "$TMP/log4.err" && break; sleep 0.1; done
o2=$(place) || fail "second order"
wait "${PIDS[-1]}" || true
[ "$(lines "$TMP/log4" 'json.loads(L[0]["data"])["stream"]')" = "order-$o2" ] ||
    fail "the live tail did not show the new order: $(cat "$TMP/log4")"
echo "ok - admin log stream tails live events"
python3 "$READER" "$A/admin/log/stream" --header "$AH" >"$TMP/log5"
[ "$(lines "$TMP/log5" 'L[0]["status"]')" = 403 ] || fail "customer on the log: $(cat "$TMP/log5")"
[ "$(lines "$TMP/log5" 'L[0]["contentType"]')" = application/problem+json ] || fail "403 not a problem"
python3 "$READER" "$A/admin/log/stream" >"$TMP/log6"
[ "$(lines "$TMP/log6" 'L[0]["status"]')" = 401 ] || fail "anonymous on the log: $(cat "$TMP/log6")"
echo "ok - the log stream is admin only (403, 401 as problem+json)"

m=$(curl -s "$A/metrics" -H "$ADH")
grep -q '^agora_sse_streams' <<<"$m" || fail "no agora_sse_streams"
grep -q '^agora_sse_dropped_total' <<<"$m" || fail "no agora_sse_dropped_total"
echo "ok - metrics agora_sse_streams, agora_sse_dropped_total"

kill -TERM "$SPID"
wait "$SPID" || fail "agora run did not stop cleanly"
SPID=""
if grep -q 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' "$TMP/server.log"; then
    fail "sanitizer report in the server log"
fi
echo "ok - clean stop"
