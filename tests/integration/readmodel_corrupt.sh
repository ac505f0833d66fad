#!/usr/bin/env bash
# Damaged read models are repaired from the event log, never served.
# 1. At start: 4 KiB of random bytes past the first page of readmodels/sagas.db
#    (header intact, agora stopped) is found by PRAGMA quick_check on restart; the
#    file is set aside (kept as sagas.db.corrupt-*), logged once, and rebuilt: GET
#    /api/v1/sagas/{id} and /admin/sagas (admin token) answer 200 with the same
#    sagas as before the damage, and never 500.
# 2. At run time: every page past the first overwritten while agora runs; reads
#    answer 503 "read model rebuilding" (problem+json) or 200 -- never 500 -- and
#    within a few seconds 200 with correct data, with no restart; reads of the
#    other read models keep answering 200 meanwhile.
# Env: AGORA_BIN (CTest).
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
# shellcheck source=run_lib.bash
source "$(dirname "$0")/run_lib.bash"
run_frame
J='Content-Type: application/json'
D="$TMP/data"
RM="$D/readmodels"

start() { agora_start "$D" live; }
stop() { agora_stop; }
field() { json_field "$1"; }

start
ADMIN=$("$BIN" token --data "$D" --sub ops --role admin) || fail "agora token"
AH="Authorization: Bearer $ADMIN"

# one order by a new funded customer (own principal); prints the saga id
place() {
    local tok c cid aid p o
    tok=$("$BIN" token --data "$D" --sub "c$1" --role customer) || fail "agora token"
    c=$(curl -sf -X POST "$A/api/v1/customers" -H "$J" -H "Authorization: Bearer $tok" \
        -d "{\"email\":\"c$1-$RANDOM@example.com\",\"name\":\"C $1\"}") || fail "register"
    cid=$(echo "$c" | field 'd["id"]'); aid=$(echo "$c" | field 'd["accountId"]')
    curl -sf -X POST "$A/api/v1/accounts/$aid/deposits" -H "$J" -H "Authorization: Bearer $tok" \
        -d '{"amount":{"amount":100000,"currency":"USD"}}' >/dev/null || fail "deposit"
    p=$(curl -sf "$A/api/v1/products?limit=1" | field 'd["items"][0]["id"]')
    o=$(curl -sf -X POST "$A/api/v1/orders" -H "$J" -H "Authorization: Bearer $tok" \
        -d "{\"customerId\":\"$cid\",\"items\":[{\"productId\":\"$p\",\"quantity\":1}],\"shippingAddress\":{\"street\":\"1 Main St\",\"city\":\"X\",\"state\":\"Y\",\"zipCode\":\"1\",\"country\":\"US\"}}") || fail "order"
    echo "$o" | field 'd["sagaId"]'
}
# GET PATH -> sets ST (status) and writes the body to $TMP/b
get() { ST=$(curl -s -o "$TMP/b" -w '%{http_code}' -H "$AH" "$A$1"); }
# the saga's terminal state, as "status step:status ..."
saga_sig() { field '" ".join([d["status"]] + [s["name"]+":"+s["status"] for s in d["steps"]])' <"$TMP/b"; }
# poll PATH until 200 and the saga is completed (or the listing holds N sagas); no 500 ever
poll_ok() {
    local seen=""
    for _ in $(seq 200); do
        get "$1"
        seen="$seen $ST"
        [ "$ST" = 500 ] && fail "GET $1 answered 500: $(cat "$TMP/b")"
        if [ "$ST" = 503 ]; then
            grep -q '"title": *"Read model rebuilding"' "$TMP/b" || fail "503 without the problem: $(cat "$TMP/b")"
        fi
        if [ "$ST" = 200 ] && eval "$2"; then ALL_SEEN="$ALL_SEEN$seen"; return 0; fi
        sleep 0.05
    done
    fail "GET $1 never answered 200 with correct data (statuses:$seen) $(cat "$TMP/b")"
}

SAGAS=()
ALL_SEEN=""
for i in 1 2 3; do SAGAS+=("$(place "$i")"); done
declare -A WANT
for s in "${SAGAS[@]}"; do
    poll_ok "/api/v1/sagas/$s" '[ "$(field "d[\"status\"]" <"$TMP/b")" = completed ]'
    WANT[$s]=$(saga_sig)
done
get "/admin/sagas?limit=100"
[ "$ST" = 200 ] || fail "/admin/sagas: $ST"
NSAGAS=$(field 'len(d["items"])' <"$TMP/b")
[ "$NSAGAS" -ge 3 ] || fail "/admin/sagas lists $NSAGAS sagas"
stop

# ---- 1. damage while stopped, found at start ----
SIZE=$(stat -c %s "$RM/sagas.db")
[ "$SIZE" -ge 8192 ] || fail "sagas.db is only $SIZE bytes"
dd if=/dev/urandom of="$RM/sagas.db" bs=4096 seek=1 count=1 conv=notrunc status=none
head -c 16 "$RM/sagas.db" | grep -q "SQLite format 3" || fail "the header should be intact"
start
check_sagas() {
    for s in "${SAGAS[@]}"; do
        poll_ok "/api/v1/sagas/$s" '[ "$(field "d[\"status\"]" <"$TMP/b")" = completed ]'
        [ "$(saga_sig)" = "${WANT[$s]}" ] || fail "saga $s: $(saga_sig), want ${WANT[$s]}"
    done
    poll_ok "/admin/sagas?limit=100" '[ "$(field "len(d[\"items\"])" <"$TMP/b")" = "$NSAGAS" ]'
    for s in "${SAGAS[@]}"; do grep -q "\"$s\"" "$TMP/b" || fail "/admin/sagas misses $s"; done
}
check_sagas
n=$(grep -c '"msg":"projection.corrupt_rebuilding".*sagas.db' "$TMP/server.log" || true)
[ "$n" = 1 ] || fail "the damage was logged $n times, want once"
ls "$RM"/sagas.db.corrupt-* >/dev/null 2>&1 || fail "the damaged file was not kept aside"
echo "ok - 4 KiB of random bytes in sagas.db found at start, set aside, rebuilt: 200 with the same sagas"
stop

# ---- 2. damage at run time, no restart ----
start
# the query handles have not read sagas.db yet: its pages come from the file
ALL_SEEN=""
SIZE=$(stat -c %s "$RM/sagas.db")
dd if=/dev/urandom of="$RM/sagas.db" bs=4096 seek=1 count=$((SIZE / 4096 - 1)) conv=notrunc status=none
check_sagas
echo "  statuses after the damage:$ALL_SEEN"
# the other read models kept working
ST=$(curl -s -o /dev/null -w '%{http_code}' "$A/api/v1/products?limit=1")
[ "$ST" = 200 ] || fail "products answered $ST while sagas was rebuilt"
n=$(grep -c '"msg":"projection.corrupt_rebuilding".*sagas.db' "$TMP/server.log" || true)
[ "$n" = 2 ] || fail "the run-time damage was logged $((n - 1)) times, want once"
# a new order after the rebuild is projected into the new file
SAGAS+=("$(place 4)")
NSAGAS=$((NSAGAS + 1))
poll_ok "/api/v1/sagas/${SAGAS[3]}" '[ "$(field "d[\"status\"]" <"$TMP/b")" = completed ]'
WANT[${SAGAS[3]}]=$(saga_sig)
check_sagas
echo "ok - sagas.db damaged at run time: 503 read model rebuilding, then 200 with correct data, no restart"
stop
echo "readmodel_corrupt: 2 passed, 0 failed"
