#!/usr/bin/env bash
# Integration: spans and their OTLP/HTTP JSON export (issue 18, traces).
# - a small OTLP receiver (otlp_receiver.py) on loopback answers the first export
#   503 (the exporter retries) and keeps the rest;
# - `agora run` with AGORA_OTLP_ENDPOINT places an order; the receiver gets the
#   order's trace as one tree: gateway server span -> client span (the service
#   call) -> ordering server span -> saga steps -> store appends (otlp_check.py),
#   with service.name "agora", hex ids and string nanoseconds;
# - GET /admin/orders/{id}/trace and /admin/traces/{traceId} answer the same trace
#   from the recent-span buffer (admin only: 403 for a customer, 401 anonymous);
#   an unknown trace is 404 problem+json;
# - the receiver down: agora keeps serving (another order is confirmed, ready
#   stays 200) and agora_trace_spans_dropped_total counts the lost spans, while
#   agora_trace_spans_exported_total kept what went out before;
# - a clean stop with no sanitizer report.
# Env: AGORA_BIN, AG_SOURCE_DIR (CTest).
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
HERE="${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/integration"
command -v curl >/dev/null || { echo "FAIL: curl is needed"; exit 1; }
# shellcheck source=run_lib.bash
source "$(dirname "$0")/run_lib.bash"
run_frame RPID
J='Content-Type: application/json'
field() { json_field "$1"; }

python3 "$HERE/otlp_receiver.py" "$TMP/port" "$TMP/spans.jsonl" --fail-first 1 &
RPID=$!
for _ in $(seq 100); do [ -f "$TMP/port" ] && break; sleep 0.05; done
[ -f "$TMP/port" ] || fail "the receiver did not start"
RPORT=$(cat "$TMP/port")

AGORA_OTLP_ENDPOINT="http://127.0.0.1:$RPORT" agora_start "$TMP/d" ready
grep -q "exporting spans to http://127.0.0.1:$RPORT" "$TMP/server.log" || fail "no export notice"
ADMIN=(-H "Authorization: Bearer $("$BIN" token --data "$TMP/d" --sub ops --role admin)")
ALICE=(-H "Authorization: Bearer $("$BIN" token --data "$TMP/d" --sub trace-alice --role customer)")

c=$(curl -sf -X POST "$A/api/v1/customers" -H "$J" "${ALICE[@]}" \
    -d "{\"email\":\"trace$RANDOM$RANDOM@example.com\",\"name\":\"Alice\"}") || fail "register"
CID=$(echo "$c" | field 'd["id"]')
AID=$(echo "$c" | field 'd["accountId"]')
curl -sf -X POST "$A/api/v1/accounts/$AID/deposits" -H "$J" "${ALICE[@]}" \
    -d '{"amount":{"amount":100000,"currency":"USD"}}' >/dev/null || fail "deposit"
PRODUCT=$(curl -sf "$A/api/v1/products?limit=1" | field 'd["items"][0]["id"]')
# order: place one; prints "orderId traceId" (the trace id from the answer's traceparent)
order() {
    curl -sf -D "$TMP/h" -X POST "$A/api/v1/orders" -H "$J" "${ALICE[@]}" \
        -d "{\"customerId\":\"$CID\",\"items\":[{\"productId\":\"$PRODUCT\",\"quantity\":1}],\"shippingAddress\":{\"street\":\"1 Main St\",\"city\":\"X\",\"state\":\"Y\",\"zipCode\":\"1\",\"country\":\"US\"}}" \
        >"$TMP/o" || fail "order"
    echo "$(field 'd["orderId"]' <"$TMP/o") $(grep -i '^traceparent:' "$TMP/h" | cut -d- -f2)"
}
wait_confirmed() {
    for _ in $(seq 200); do
        [ "$(curl -s "$A/api/v1/orders/$1" "${ALICE[@]}" | field 'd.get("status")' 2>/dev/null)" = confirmed ] && return
        sleep 0.05
    done
    fail "order $1 never confirmed"
}
metric() { curl -s "$A/metrics" "${ADMIN[@]}" | awk -v m="$1" '$1 == m {print $2}'; }

read -r OID TRACE < <(order)
[ ${#TRACE} = 32 ] || fail "no trace id in the answer's traceparent"
wait_confirmed "$OID"

# the receiver gets the whole tree (the first export was refused with 503: retried)
why=""
for _ in $(seq 100); do
    why=$(python3 "$HERE/otlp_check.py" "$TMP/spans.jsonl" "$TRACE") && break
    sleep 0.1
done
[[ "$why" == ok:* ]] || fail "OTLP export: $why"
echo "export: $why"

# the admin routes answer the same trace from the buffer
curl -sf "$A/admin/orders/$OID/trace" "${ADMIN[@]}" >"$TMP/t" || fail "GET /admin/orders/{id}/trace"
[ "$(field 'd["traceId"]' <"$TMP/t")" = "$TRACE" ] || fail "another trace for the order"
python3 - "$TMP/t" <<'PY' || fail "admin trace body"
import json, sys
d = json.load(open(sys.argv[1]))
ids = {s["spanId"] for s in d["spans"]}
for s in d["spans"]:
    assert set(s) == {"spanId", "parentSpanId", "name", "kind", "startUnixNano", "endUnixNano",
                      "status", "attributes"}, s
    assert s["parentSpanId"] is None or s["parentSpanId"] in ids, s
    assert s["kind"] in ("server", "client", "internal") and s["status"] in ("unset", "ok", "error")
    assert int(s["endUnixNano"]) >= int(s["startUnixNano"])
names = {s["name"] for s in d["spans"]}
assert "store.append" in names and "saga ConfirmOrder" in names, names
PY
[ "$(curl -sf "$A/admin/traces/$TRACE" "${ADMIN[@]}" | field 'len(d["spans"])')" -ge 10 ] ||
    fail "GET /admin/traces/{traceId}"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$A/admin/traces/$TRACE" "${ALICE[@]}")" = 403 ] ||
    fail "a customer read a trace"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$A/admin/orders/$OID/trace")" = 401 ] ||
    fail "anonymous read an order's trace"
code=$(curl -s -D "$TMP/h404" -o /dev/null -w '%{http_code}' "$A/admin/traces/0123456789abcdef0123456789abcdef" "${ADMIN[@]}")
[ "$code" = 404 ] && grep -qi '^content-type: application/problem+json' "$TMP/h404" ||
    fail "an unknown trace: $code"
exported=$(metric agora_trace_spans_exported_total)
[ "${exported:-0}" -gt 0 ] || fail "agora_trace_spans_exported_total is ${exported:-absent}"

# the receiver down: agora keeps serving, the spans it cannot send are counted
kill "$RPID"
wait "$RPID" 2>/dev/null || true
RPID=""
read -r OID2 _ < <(order)
wait_confirmed "$OID2"
dropped=0
for _ in $(seq 200); do
    dropped=$(metric agora_trace_spans_dropped_total)
    [ "${dropped:-0}" -gt 0 ] && break
    sleep 0.1
done
[ "${dropped:-0}" -gt 0 ] || fail "no dropped spans counted with the receiver down"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$A/health/ready")" = 200 ] || fail "not ready"
[ "$(metric agora_trace_spans_exported_total)" = "$exported" ] || fail "exported moved while down"
echo "receiver down: $dropped spans dropped, still serving"

kill -TERM "$SPID"
wait "$SPID" || fail "agora run did not stop cleanly"
SPID=""
if grep -q 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' "$TMP/server.log"; then
    fail "sanitizer report in the server log"
fi
echo "PASS"
