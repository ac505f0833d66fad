#!/usr/bin/env bash
# A clean stop closes every database: after SIGTERM (and after SIGINT) `agora run`
# exits 0 and leaves no -wal or -shm file of any read model under readmodels/ (each
# WAL was checkpointed into its database by the last connection's close), and the
# next start serves the same data.
# Env: AGORA_BIN (CTest).
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
# shellcheck source=run_lib.bash
source "$(dirname "$0")/run_lib.bash"
run_frame
J='Content-Type: application/json'
D="$TMP/data"

start() { agora_start "$D" live --no-gateway; }
field() { json_field "$1"; }
# stop with SIGNAL, wait for the exit, assert no -wal/-shm is left
stop_clean() {
    kill -"$1" "$SPID"
    wait "$SPID" || fail "agora run exited $? after SIG$1"
    SPID=""
    left=$(find "$D/readmodels" -name '*-wal' -o -name '*-shm')
    [ -z "$left" ] || fail "left after SIG$1: $left"
    n=$(find "$D/readmodels" -name '*.db' | wc -l)
    [ "$n" -ge 8 ] || fail "only $n read-model databases"
}

start
c=$(curl -sf -X POST "$A/api/v1/customers" -H "$J" -d '{"email":"s@example.com","name":"S"}') || fail "register"
cid=$(echo "$c" | field 'd["id"]'); aid=$(echo "$c" | field 'd["accountId"]')
curl -sf -X POST "$A/api/v1/accounts/$aid/deposits" -H "$J" -d '{"amount":{"amount":100000,"currency":"USD"}}' >/dev/null || fail "deposit"
p=$(curl -sf "$A/api/v1/products?limit=1" | field 'd["items"][0]["id"]')
o=$(curl -sf -X POST "$A/api/v1/orders" -H "$J" -d "{\"customerId\":\"$cid\",\"items\":[{\"productId\":\"$p\",\"quantity\":1}],\"shippingAddress\":{\"street\":\"1 Main St\",\"city\":\"X\",\"state\":\"Y\",\"zipCode\":\"1\",\"country\":\"US\"}}") || fail "order"
oid=$(echo "$o" | field 'd["orderId"]'); sid=$(echo "$o" | field 'd["sagaId"]')
for _ in $(seq 200); do
    [ "$(curl -s "$A/api/v1/sagas/$sid" | field 'd.get("status")' 2>/dev/null)" = completed ] && break
    sleep 0.05
done
# every read model has had a query (its read-only handle holds the WAL open)
for path in "/api/v1/customers/$cid" "/api/v1/accounts/$aid" "/api/v1/products" "/api/v1/inventory/$p" \
    "/api/v1/orders/$oid" "/api/v1/sagas/$sid" "/admin/sagas"; do
    curl -sf "$A$path" >/dev/null || fail "GET $path"
done
ls "$D/readmodels"/*-wal >/dev/null 2>&1 || fail "no WAL while running: the test proves nothing"
stop_clean TERM
echo "ok - SIGTERM: agora run exits 0 and leaves no -wal/-shm under readmodels/"

start
st=$(curl -s "$A/api/v1/orders/$oid" | field 'd["status"]')
[ "$st" = confirmed ] || fail "after restart the order is $st"
curl -sf "$A/api/v1/sagas/$sid" >/dev/null || fail "saga after restart"
stop_clean INT
echo "ok - SIGINT: the same, and the data is all there after the restart"

# offline: every read model rebuilds from the log, and holds the same data after
for rm in customers products accounts stock orders shipments sagas; do
    "$BIN" projections rebuild "$rm" --data "$D" >"$TMP/rebuild.log" 2>&1 ||
        fail "agora projections rebuild $rm: $(cat "$TMP/rebuild.log")"
done
start
[ "$(curl -s "$A/api/v1/orders/$oid" | field 'd["status"]')" = confirmed ] || fail "order after rebuild"
[ "$(curl -s "$A/api/v1/sagas/$sid" | field 'd["status"]')" = completed ] || fail "saga after rebuild"
stop_clean TERM
echo "ok - agora projections rebuild: every read model, the same answers after"
echo "clean_shutdown: 3 passed, 0 failed"
