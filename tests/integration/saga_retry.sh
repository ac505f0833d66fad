#!/usr/bin/env bash
# A PlaceOrder saga whose compensation keeps failing, then retried by an operator
# (POST /admin/sagas/{id}/retry), against `agora run --no-gateway`:
# - ProcessPayment fails and so does its compensation (the refund)
#   (AGORA_FAULT_PROCESSPAYMENT=1,0,1): the saga ends failed, the log and the read
#   model name ProcessPayment's compensation, and the compensations before it still
#   ran: the stock reserved for the order is released, the order cancelled;
# - ArrangeShipment fails and the refund fails (the payment WAS taken): the same,
#   with the money held while the saga is failed;
# - restarted without faults, a retry of each answers 202 and ends the saga
#   compensated; money and stock are back where they were before the orders (and
#   saga_check.py finds the whole log consistent);
# - a retry of a compensated or a completed saga answers 409, of an unknown one 404.
# Env: AGORA_BIN, AG_SOURCE_DIR (CTest).
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
SRC=${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
# shellcheck source=run_lib.bash
source "$(dirname "$0")/run_lib.bash"
run_frame
DATA=$TMP/data
J='Content-Type: application/json'
N=0
ok() { N=$((N + 1)); echo "ok - $*"; }

# start [NAME=VALUE...]: agora run without the gateway on a free port, with those
# variables in its environment; sets A. $TMP/server.log holds this run only.
start() {
    local kv
    for kv in "$@"; do local -x "$kv"; done
    : >"$TMP/server.log"
    agora_start "$DATA" live --no-gateway --workers 2
}
# until every projection has caught up with the log
caught_up() {
    local lag=""
    for _ in $(seq 200); do
        lag=$(curl -sf "$A/admin/projections" | field 'sum(p["lagEvents"] for p in d["items"])') || true
        [ "$lag" = 0 ] && return 0
        sleep 0.05
    done
    fail "projections lag by $lag events"
}
# stop once every projection has caught up (the read models are checked offline)
stop() {
    caught_up
    kill "$SPID"
    wait "$SPID" || fail "agora run did not stop cleanly"
    SPID=""
    ! grep -q -e 'AddressSanitizer' -e 'runtime error:' "$TMP/server.log" || fail "sanitizer report"
}
field() { json_field "$1"; }

PRODUCT="" CUSTOMER="" ACCOUNT=""
# one funded customer (100000) and the first product
setup() {
    local c
    c=$(curl -sf -X POST "$A/api/v1/customers" -H "$J" -d "{\"email\":\"r$RANDOM$RANDOM@example.com\",\"name\":\"R\"}") || fail "register"
    CUSTOMER=$(echo "$c" | field 'd["id"]')
    ACCOUNT=$(echo "$c" | field 'd["accountId"]')
    curl -sf -X POST "$A/api/v1/accounts/$ACCOUNT/deposits" -H "$J" -d '{"amount":{"amount":100000,"currency":"USD"}}' >/dev/null || fail "deposit"
    PRODUCT=$(curl -sf "$A/api/v1/products?limit=1" | field 'd["items"][0]["id"]')
}
reserved() { curl -sf "$A/api/v1/inventory/$PRODUCT" | field 'd["reserved"]'; }
balance() { curl -sf "$A/api/v1/accounts/$ACCOUNT" | field 'd["balance"]["amount"]'; }

# place one order of 1 x PRODUCT; prints "order_id saga_id"
place() {
    local o
    o=$(curl -sf -X POST "$A/api/v1/orders" -H "$J" -d "{\"customerId\":\"$CUSTOMER\",\"items\":[{\"productId\":\"$PRODUCT\",\"quantity\":1}],\"shippingAddress\":{\"street\":\"1 Main St\",\"city\":\"X\",\"state\":\"Y\",\"zipCode\":\"1\",\"country\":\"US\"}}") || fail "order"
    echo "$(echo "$o" | field 'd["orderId"]') $(echo "$o" | field 'd["sagaId"]')"
}

# saga_wait ID STATUS: until the sagas read model says STATUS; prints the saga
saga_wait() {
    local s
    for _ in $(seq 300); do
        s=$(curl -s "$A/api/v1/sagas/$1")
        [ "$(echo "$s" | field 'd.get("status")' 2>/dev/null)" = "$2" ] && { echo "$s"; return; }
        sleep 0.05
    done
    fail "saga $1 is not $2: $s"
}

# until CMD prints WANT (the read models follow the log; caught up first, so that
# a read model that has not seen the reservation yet cannot pass for released)
eventually() {
    local want=$1 got=""
    shift
    caught_up
    for _ in $(seq 100); do
        got=$("$@") || true
        [ "$got" = "$want" ] && return 0
        sleep 0.05
    done
    fail "$* is $got, want $want"
}

# post_retry ID: prints "HTTP_STATUS BODY"
post_retry() {
    local code
    code=$(curl -s -o "$TMP/retry.json" -w '%{http_code}' -X POST "$A/admin/sagas/$1/retry")
    echo "$code $(cat "$TMP/retry.json")"
}

# the saga's event types with the step they are about, from the log (agora stopped)
saga_log() {
    "$BIN" store read "saga-$1" --data "$DATA" | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    n = e["data"].get("name")
    print(e["type"] + (":" + n if n else ""), end=" ")
'
}

# ---- a failing compensation, with faults ----
start "AGORA_FAULT_PROCESSPAYMENT=1,0,1"
setup
R0=$(reserved)
read -r O1 S1 < <(place)
s=$(saga_wait "$S1" failed)
echo "$s" | python3 -c '
import json, sys
d = json.load(sys.stdin)
st = {x["name"]: x for x in d["steps"]}
assert st["ProcessPayment"]["status"] == "compensation_failed", st
assert "injected fault in compensation of ProcessPayment" in st["ProcessPayment"]["compensationError"], st
assert st["ReserveInventory"]["status"] == "compensated", st
assert st["PlaceOrder"]["status"] == "compensated", st
assert "compensation failed: ProcessPayment" in d["reason"], d["reason"]
' || fail "failed saga in the read model: $s"
eventually "$R0" reserved
o=$(curl -sf "$A/api/v1/orders/$O1")
echo "$o" | field 'd["status"]' | grep -qx cancelled || fail "order not cancelled: $o"
curl -sf "$A/admin/sagas?status=failed" | grep -q "\"$S1\"" || fail "not listed at /admin/sagas?status=failed"
ok "payment and refund failing: saga failed naming ProcessPayment's compensation; stock released ($R0 reserved), order cancelled"

# the payment taken, the shipment fails, the refund fails: the money is held
stop
start "AGORA_FAULT_ARRANGESHIPMENT=1" "AGORA_FAULT_PROCESSPAYMENT=0,0,1"
read -r O2 S2 < <(place)
saga_wait "$S2" failed >/dev/null
eventually "$R0" reserved
total=$(curl -sf "$A/api/v1/orders/$O2" | field 'd["total"]["amount"]')
[ "$(balance)" = $((100000 - total)) ] || fail "balance $(balance), want $((100000 - total)) while the refund failed"
curl -sf "$A/api/v1/orders/$O2" | field 'd["status"]' | grep -qx cancelled || fail "order 2 not cancelled"
ok "shipment and refund failing: saga failed, stock released, order cancelled, $total held until a retry"
stop

log=$(saga_log "$S1")
want="SagaStarted StepSucceeded:PlaceOrder StepSucceeded:ReserveInventory StepFailed:ProcessPayment CompensationFailed:ProcessPayment CompensationSucceeded:ReserveInventory CompensationSucceeded:PlaceOrder SagaFailed "
[ "$log" = "$want" ] || fail "saga log: $log"
"$BIN" store read "saga-$S1" --data "$DATA" | tail -1 | field '[f["name"] for f in d["data"]["failedCompensations"]]' | grep -qx "\['ProcessPayment'\]" ||
    fail "SagaFailed does not name exactly ProcessPayment"
ok "the log: CompensationFailed for ProcessPayment, the earlier compensations still ran, SagaFailed names it"

# every saga event: correlated by the saga id, caused by the event before it (the
# OrderPlaced for SagaStarted), acted by the saga on behalf of the order's actor,
# in the order request's trace
"$BIN" store read "order-$O1" --data "$DATA" | grep -m1 '"type":"OrderPlaced"' >"$TMP/placed.json"
"$BIN" store read "saga-$S1" --data "$DATA" >"$TMP/saga.jsonl"
python3 - "$S1" "$TMP/placed.json" "$TMP/saga.jsonl" <<'PY' || fail "saga event metadata"
import json, sys
sid, placed = sys.argv[1], json.load(open(sys.argv[2]))
log = [json.loads(l) for l in open(sys.argv[3])]
assert placed["type"] == "OrderPlaced", placed
pm, cause = placed["metadata"], placed["id"]
for ev in log:
    m = ev["metadata"]
    assert m["correlationId"] == sid, m
    assert m["causationId"] == cause, (ev["type"], m, cause)
    assert m["actor"]["sub"] == "saga:PlaceOrder" and m["actor"]["roles"] == ["system"], m
    assert m["actor"]["onBehalfOf"] == pm["actor"], (m, pm)
    assert m.get("traceparent") and m["traceparent"] == pm.get("traceparent"), (m, pm)
    cause = ev["id"]
PY
ok "saga events carry correlationId, causationId, the saga as actor on behalf of the order's, and its traceparent"

# ---- restarted without faults: retry ----
start
r=$(post_retry "$S1")
[ "${r%% *}" = 202 ] || fail "retry: $r"
echo "${r#* }" | field 'd["id"] == "'"$S1"'" and d["status"] == "running"' | grep -qx True || fail "retry body: $r"
saga_wait "$S1" compensated >/dev/null
r=$(post_retry "$S2")
[ "${r%% *}" = 202 ] || fail "retry 2: $r"
s=$(saga_wait "$S2" compensated)
echo "$s" | field '[x["status"] for x in d["steps"]]' | grep -qx "\['compensated', 'compensated', 'compensated', 'failed', 'pending'\]" ||
    fail "steps after the retry: $s"
eventually 100000 balance
eventually "$R0" reserved
ok "retried without faults: both sagas compensated, balance 100000 and $R0 reserved as before the orders"

r=$(post_retry "$S1")
[ "${r%% *}" = 409 ] || fail "retry of a compensated saga: $r"
echo "${r#* }" | grep -q "only a failed saga can be retried" || fail "409 body: $r"
read -r O3 S3 < <(place)
saga_wait "$S3" completed >/dev/null
r=$(post_retry "$S3")
[ "${r%% *}" = 409 ] || fail "retry of a completed saga: $r"
r=$(post_retry "no-such-saga")
[ "${r%% *}" = 404 ] || fail "retry of an unknown saga: $r"
ok "retry refused: compensated 409, completed 409, unknown 404"
stop

log=$(saga_log "$S1")
want="${want}SagaRetried CompensationSucceeded:ProcessPayment SagaCompensated "
[ "$log" = "$want" ] || fail "saga log after the retry: $log"
"$BIN" store all --data "$DATA" --limit 100000000 >"$TMP/events.jsonl" || fail "cannot read the log"
out=$(python3 "$SRC/tests/integration/saga_check.py" "$TMP/events.jsonl" "$DATA/readmodels") || fail "$out"
ok "the log after the retry: SagaRetried, the refund, SagaCompensated; $out"
echo "saga_retry: $N passed, 0 failed"
