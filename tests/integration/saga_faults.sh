#!/usr/bin/env bash
# The PlaceOrder saga with a failure injected at each step and at each
# compensation (AGORA_FAULT_<STEP>=rate[,latency_ms[,compensation_rate]]):
# - a step that always fails: the order ends cancelled, the saga compensated, the
#   steps before it (and itself) compensated, stock and money back where they were;
# - a compensation that always fails: the saga ends failed, is listed at
#   /admin/sagas?status=failed, and the failure is logged at error level.
# Env: AGORA_BIN (CTest); AGORA_SAGA_MODE=choreography runs the same checks on the
# choreographed flow (saga_faults_chor.sh), except a failure of PlaceOrder itself:
# there PlaceOrder is the HTTP command, with no reaction to fail.
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
# shellcheck source=run_lib.bash
source "$(dirname "$0")/run_lib.bash"
run_frame
J='Content-Type: application/json'

# start DIR [NAME=VALUE...]: agora run without the gateway on a free port, with
# those variables in its environment; sets A. $TMP/server.log holds this run only
# (the checks grep it).
start() {
    local dir=$1 kv
    shift
    for kv in "$@"; do local -x "$kv"; done
    : >"$TMP/server.log"
    agora_start "$dir" live --no-gateway
}
stop() { kill "$SPID"; wait "$SPID" || fail "agora run did not stop cleanly"; SPID=""; }
field() { json_field "$1"; }

# one order by a funded customer; prints "order_id saga_id product_id account_id"
place() {
    local email="u$RANDOM$RANDOM@example.com" c cid aid p
    c=$(curl -sf -X POST "$A/api/v1/customers" -H "$J" -d "{\"email\":\"$email\",\"name\":\"U\"}") || fail "register"
    cid=$(echo "$c" | field 'd["id"]'); aid=$(echo "$c" | field 'd["accountId"]')
    curl -sf -X POST "$A/api/v1/accounts/$aid/deposits" -H "$J" -d '{"amount":{"amount":100000,"currency":"USD"}}' >/dev/null || fail "deposit"
    p=$(curl -sf "$A/api/v1/products?limit=1" | field 'd["items"][0]["id"]')
    local o
    o=$(curl -sf -X POST "$A/api/v1/orders" -H "$J" -d "{\"customerId\":\"$cid\",\"items\":[{\"productId\":\"$p\",\"quantity\":1}],\"shippingAddress\":{\"street\":\"1 Main St\",\"city\":\"X\",\"state\":\"Y\",\"zipCode\":\"1\",\"country\":\"US\"}}") || fail "order"
    echo "$(echo "$o" | field 'd["orderId"]') $(echo "$o" | field 'd["sagaId"]') $p $aid"
}

# wait until the saga is terminal; prints its JSON
saga_final() {
    local s
    for _ in $(seq 200); do
        s=$(curl -s "$A/api/v1/sagas/$1")
        case "$(echo "$s" | field 'd.get("status")' 2>/dev/null)" in completed | compensated | failed) echo "$s"; return ;; esac
        sleep 0.05
    done
    fail "saga $1 did not finish: $s"
}

STEPS=(PLACEORDER RESERVEINVENTORY PROCESSPAYMENT ARRANGESHIPMENT CONFIRMORDER)
NAMES=(PlaceOrder ReserveInventory ProcessPayment ArrangeShipment ConfirmOrder)

# ---- a failure at each step ----
passed=0
for i in "${!STEPS[@]}"; do
    if [ "${AGORA_SAGA_MODE:-}" = choreography ] && [ "$i" = 0 ]; then
        echo "skip - a failure at PlaceOrder: in choreography it is the HTTP command itself"
        continue
    fi
    start "$TMP/data-step-$i" "AGORA_FAULT_${STEPS[$i]}=1"
    read -r oid sid pid aid < <(place)
    before=$(curl -s "$A/api/v1/inventory/$pid" | field 'd["reserved"]')
    s=$(saga_final "$sid")
    echo "$s" | field 'd["status"]' | grep -qx compensated || fail "${NAMES[$i]} failing: saga $s"
    echo "$s" | python3 -c "
import json,sys
d=json.load(sys.stdin); i=$i
st=[x['status'] for x in d['steps']]
assert st[i]=='failed', st
assert all(x=='compensated' for x in st[:i]), st
assert all(x=='pending' for x in st[i+1:]), st
" || fail "${NAMES[$i]} failing: step statuses $s"
    o=$(curl -s "$A/api/v1/orders/$oid")
    echo "$o" | field 'd["status"]' | grep -qx cancelled || fail "${NAMES[$i]} failing: order $o"
    echo "$o" | field 'd["cancellationReason"]' | grep -q "injected fault" || fail "reason: $o"
    # compensated: nothing stays reserved, nothing stays charged
    for _ in $(seq 100); do
        r=$(curl -s "$A/api/v1/inventory/$pid" | field 'd["reserved"]')
        b=$(curl -s "$A/api/v1/accounts/$aid" | field 'd["balance"]["amount"]')
        [ "$r" = 0 ] && [ "$b" = 100000 ] && break
        sleep 0.05
    done
    [ "$r" = 0 ] || fail "${NAMES[$i]} failing: $r units still reserved (was $before)"
    [ "$b" = 100000 ] || fail "${NAMES[$i]} failing: balance $b, want 100000"
    stop
    passed=$((passed + 1))
    echo "ok - a failure at ${NAMES[$i]}: order cancelled, earlier steps compensated, stock and money restored"
done

# ---- a compensation that keeps failing, at each compensable step ----
for i in 0 1 2 3; do
    # step i+1 fails so that step i's compensation runs (and always fails)
    next=$((i + 1))
    start "$TMP/data-comp-$i" "AGORA_FAULT_${STEPS[$next]}=1" "AGORA_FAULT_${STEPS[$i]}=0,0,1"
    read -r oid sid pid aid < <(place)
    s=$(saga_final "$sid")
    echo "$s" | field 'd["status"]' | grep -qx failed || fail "compensation of ${NAMES[$i]} failing: saga $s"
    echo "$s" | field "[x['status'] for x in d['steps']][$i]" | grep -qx compensation_failed || fail "step status: $s"
    curl -s "$A/admin/sagas?status=failed" | grep -q "\"$sid\"" || fail "saga not listed at /admin/sagas?status=failed"
    grep -q '"level":"error","msg":"saga.compensation_failed"' "$TMP/server.log" || fail "no error-level log line"
    stop
    passed=$((passed + 1))
    echo "ok - compensation of ${NAMES[$i]} keeps failing: saga failed, listed, logged at error level"
done
echo "saga_faults: $passed passed, 0 failed (${AGORA_SAGA_MODE:-orchestration})"
