#!/usr/bin/env bash
# Integration: blocking reads of an order (issue 11), through the gateway as users
# call it (`agora run`) and on the services directly (`--no-gateway`):
# - GET /api/v1/orders/{id} answers a strong ETag; If-None-Match with it is 304;
# - with `Prefer: wait=20` a request parked on a pending order (the ConfirmOrder
#   step slowed to 3 s by fault injection: the order must still be pending when
#   the first GET comes, on a loaded machine too, now that the saga reaches that
#   step without a worker hand-off per step) answers 200 "confirmed" as soon as
#   the order is confirmed, well before 20 s, with Preference-Applied: wait=20;
# - a wait that times out answers 304 with the same ETag (through the gateway with
#   wait=6, longer than the reads route's 5 s per-try timeout: the gateway stretches
#   it);
# - another customer waiting on alice's order gets 404 at once, never a wait;
# - the limit (AGORA_MAX_WAITERS=2): a third parked request is 503 with
#   Retry-After; clients that disconnect free their places (the
#   agora_waiting_requests gauge goes back to 0, and two new waits park);
# - a drain answers parked requests at once; no sanitizer report, clean exit.
# Env: AGORA_BIN (CTest).
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
command -v curl >/dev/null || { echo "FAIL: curl is needed"; exit 1; }
# shellcheck source=run_lib.bash
source "$(dirname "$0")/run_lib.bash"
run_frame
J='Content-Type: application/json'
field() { json_field "$1"; }
hdr() { grep -i "^$1:" "$2" | head -1 | sed 's/^[^:]*: *//' | tr -d '\r'; }

# start DIR [ARGS...]: agora run on a free port with the slow ConfirmOrder; sets A
start() {
    local dir=$1
    shift
    AGORA_MAX_WAITERS=2 AGORA_FAULT_CONFIRMORDER=0,3000 agora_start "$dir" ready "$@"
}
stop() {
    kill -TERM "$SPID"
    wait "$SPID" || fail "agora run did not stop cleanly"
    SPID=""
    if grep -q 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' "$TMP/server.log"; then
        fail "sanitizer report in the server log"
    fi
}

# customer AUTH-ARGS...: register + fund a customer as that caller; prints its id
customer() {
    local c aid
    c=$(curl -sf -X POST "$A/api/v1/customers" -H "$J" "$@" \
        -d "{\"email\":\"u$RANDOM$RANDOM@example.com\",\"name\":\"U\"}") || fail "register"
    aid=$(echo "$c" | field 'd["accountId"]')
    curl -sf -X POST "$A/api/v1/accounts/$aid/deposits" -H "$J" "$@" \
        -d '{"amount":{"amount":100000,"currency":"USD"}}' >/dev/null || fail "deposit"
    echo "$c" | field 'd["id"]'
}
# order CID AUTH-ARGS...: place one order; prints its id
order() {
    local cid=$1 p
    shift
    p=$(curl -sf "$A/api/v1/products?limit=1" "$@" | field 'd["items"][0]["id"]')
    curl -sf -X POST "$A/api/v1/orders" -H "$J" "$@" \
        -d "{\"customerId\":\"$cid\",\"items\":[{\"productId\":\"$p\",\"quantity\":1}],\"shippingAddress\":{\"street\":\"1 Main St\",\"city\":\"X\",\"state\":\"Y\",\"zipCode\":\"1\",\"country\":\"US\"}}" |
        field 'd["orderId"]' || fail "order"
}
# get ID OUTPREFIX CURL-ARGS...: GET the order; headers in OUT.h, body in OUT.b;
# prints "status seconds"
get() {
    local id=$1 out=$2
    shift 2
    curl -s -D "$out.h" -o "$out.b" -w '%{http_code} %{time_total}' "$A/api/v1/orders/$id" "$@" || true
}
# wait_status ID STATUS AUTH-ARGS...: until the order has that status
wait_status() {
    local id=$1 st=$2
    shift 2
    for _ in $(seq 200); do
        [ "$(curl -s "$A/api/v1/orders/$id" "$@" | field 'd.get("status")' 2>/dev/null)" = "$st" ] && return
        sleep 0.05
    done
    fail "order $id never became $st"
}

scenario() {
    local name=$1
    shift
    local ALICE=("$@")
    local cid o r etag
    cid=$(customer "${ALICE[@]}")

    # a strong ETag; If-None-Match with it is 304 (no wait asked: no Preference-Applied)
    o=$(order "$cid" "${ALICE[@]}")
    r=$(get "$o" "$TMP/a" "${ALICE[@]}")
    [ "${r%% *}" = 200 ] || fail "$name: GET is $r"
    etag=$(hdr ETag "$TMP/a.h")
    [[ $etag == \"pending-* ]] || fail "$name: the ETag of a pending order is '$etag'"
    r=$(get "$o" "$TMP/b" "${ALICE[@]}" -H "If-None-Match: $etag")
    [ "${r%% *}" = 304 ] || fail "$name: If-None-Match with the current ETag is $r"
    [ "$(hdr ETag "$TMP/b.h")" = "$etag" ] || fail "$name: 304 without the ETag"
    echo "ok - $name: ETag $etag, If-None-Match is 304"

    # parked on the pending order: answered the moment it is confirmed
    r=$(get "$o" "$TMP/c" "${ALICE[@]}" -H "If-None-Match: $etag" -H 'Prefer: wait=20')
    [ "${r%% *}" = 200 ] || fail "$name: the parked GET answered $r"
    [ "$(field 'd["status"]' <"$TMP/c.b")" = confirmed ] || fail "$name: parked GET: $(cat "$TMP/c.b")"
    python3 -c "import sys; t=float(sys.argv[1]); sys.exit(0 if 0.5 < t < 8 else 1)" "${r#* }" ||
        fail "$name: the parked GET took ${r#* } s (the confirmation comes after ~3 s)"
    [ "$(hdr Preference-Applied "$TMP/c.h")" = "wait=20" ] || fail "$name: no Preference-Applied: wait=20"
    local etag2
    etag2=$(hdr ETag "$TMP/c.h")
    [[ $etag2 == \"confirmed-* ]] || fail "$name: ETag after the wait is '$etag2'"
    echo "ok - $name: a parked GET answered 200 confirmed after ${r#* } s (of wait=20)"

    # nothing changes: 304 with the same ETag when the wait ends
    local w=${WAIT_TIMEOUT:-1}
    r=$(get "$o" "$TMP/d" "${ALICE[@]}" -H "If-None-Match: $etag2" -H "Prefer: wait=$w")
    [ "${r%% *}" = 304 ] || fail "$name: a wait that timed out answered $r"
    [ "$(hdr ETag "$TMP/d.h")" = "$etag2" ] || fail "$name: the 304 has another ETag"
    [ "$(hdr Preference-Applied "$TMP/d.h")" = "wait=$w" ] || fail "$name: 304 without Preference-Applied"
    python3 -c "import sys; t=float(sys.argv[1]); sys.exit(0 if $w - 0.2 < t < $w + 3 else 1)" "${r#* }" ||
        fail "$name: the timed-out wait took ${r#* } s, not ~$w"
    echo "ok - $name: wait=$w on an unchanged order is 304 with its ETag after ${r#* } s"
}

# ---- through the gateway ----
start "$TMP/gw"
ALICE_T=$("$BIN" token --data "$TMP/gw" --sub wait-alice --role customer)
BOB_T=$("$BIN" token --data "$TMP/gw" --sub wait-bob --role customer)
WAIT_TIMEOUT=6 scenario gateway -H "Authorization: Bearer $ALICE_T"

# bob cannot wait on alice's order: 404 at once, like the plain GET
BOB=(-H "Authorization: Bearer $BOB_T")
customer "${BOB[@]}" >/dev/null
cid=$(curl -sf "$A/api/v1/customers/me" -H "Authorization: Bearer $ALICE_T" | field 'd["id"]')
o=$(order "$cid" -H "Authorization: Bearer $ALICE_T")
wait_status "$o" confirmed -H "Authorization: Bearer $ALICE_T"
etag=$(curl -s -D - -o /dev/null "$A/api/v1/orders/$o" -H "Authorization: Bearer $ALICE_T" | grep -i '^etag:' | sed 's/^[^:]*: *//' | tr -d '\r')
r=$(get "$o" "$TMP/e" "${BOB[@]}" -H "If-None-Match: $etag" -H 'Prefer: wait=20')
[ "${r%% *}" = 404 ] || fail "bob waiting on alice's order got $r"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 2 else 1)" "${r#* }" || fail "bob's 404 took ${r#* } s"
echo "ok - gateway: another customer waiting on alice's order gets 404 at once"
stop
echo "ok - gateway: clean stop"

# ---- the services directly: the limit, disconnects, drain ----
start "$TMP/direct" --no-gateway
scenario direct
cid=$(customer)
o=$(order "$cid")
wait_status "$o" confirmed
etag=$(curl -s -D - -o /dev/null "$A/api/v1/orders/$o" | grep -i '^etag:' | sed 's/^[^:]*: *//' | tr -d '\r')
# two clients park and go away after 0.5 s: their places must be freed
for i in 1 2; do
    curl -s -o /dev/null --max-time 0.5 "$A/api/v1/orders/$o" -H "If-None-Match: $etag" -H 'Prefer: wait=30' || true
done
# waiting_is N: the agora_waiting_requests gauge (published twice a second) reaches N
waiting_is() {
    for _ in $(seq 40); do
        [ "$(curl -s "$A/metrics" | awk '$1=="agora_waiting_requests"{print $2+0}')" = "$1" ] && return
        sleep 0.1
    done
    fail "agora_waiting_requests never became $1"
}
waiting_is 0
echo "ok - direct: clients that disconnected left no parked request (agora_waiting_requests 0)"
# two park (the limit), a third is refused with 503 + Retry-After
for i in 1 2; do
    curl -s -o /dev/null -w '%{http_code}' "$A/api/v1/orders/$o" -H "If-None-Match: $etag" \
        -H 'Prefer: wait=30' >"$TMP/parked$i" &
    PIDS+=($!)
done
waiting_is 2
r=$(get "$o" "$TMP/f" -H "If-None-Match: $etag" -H 'Prefer: wait=30')
[ "${r%% *}" = 503 ] || fail "a request over the limit of parked requests got $r (disconnected ones not freed?)"
[ -n "$(hdr Retry-After "$TMP/f.h")" ] || fail "503 without Retry-After"
echo "ok - direct: over AGORA_MAX_WAITERS=2 parked requests: 503 with Retry-After; disconnected ones were freed"
# the drain answers the parked ones at once (304), the server stops cleanly
t0=$(date +%s.%N)
stop
for p in "${PIDS[@]}"; do wait "$p" || true; done
PIDS=()
for i in 1 2; do [ "$(cat "$TMP/parked$i")" = 304 ] || fail "a parked request got $(cat "$TMP/parked$i") at the drain"; done
python3 -c "import sys,time; sys.exit(0 if time.time() - float(sys.argv[1]) < 5 else 1)" "$t0" || fail "the drain waited for parked requests"
echo "ok - direct: a drain answers parked requests 304 at once; clean stop"
