#!/usr/bin/env bash
# A projection that fails on an event parks it instead of stopping, and the dead
# letters are operated with `agora dlq` and /admin/dlq.
# 1. Two events the catalog projection cannot apply (ProductAdded without sku or
#    name: a NOT NULL constraint) and one that waits behind the first (same
#    stream), appended while agora is stopped, then a good product on another
#    stream. On start: the good product is served (other streams flow), the
#    projection keeps running (/admin/projections: running, parked 3),
#    GET /admin/dlq lists them in order, the later one of the first stream
#    "waiting".
# 2. agora stopped: `agora dlq list --data DIR` reads the same list from the read
#    models; `replay` says agora must run.
# 3. agora running: replay of the head still fails (exit 1, 409 with the error),
#    replay of a waiting one is refused (409), drop of the head releases the one
#    behind it (released 1); the other stream's head is dropped over HTTP
#    (DELETE /admin/dlq/{id}); the list is then empty, and an unknown id is 404.
# Env: AGORA_BIN (CTest).
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
# shellcheck source=run_lib.bash
source "$(dirname "$0")/run_lib.bash"
run_frame
D="$TMP/data"

start() { agora_start "$D" live; }
stop() { agora_stop; }
field() { json_field "$1"; }
uuid() { python3 -c 'import uuid; print(uuid.uuid4())'; }

start
ADMIN=$("$BIN" token --data "$D" --sub ops --role admin) || fail "agora token"
AH="Authorization: Bearer $ADMIN"
stop

P1=$(uuid); P2=$(uuid); P3=$(uuid)
add() { "$BIN" store append "$1" --data "$D" --type "$2" --payload "$3" >/dev/null || fail "append $1 $2"; }
add "product-$P1" ProductAdded '{"price":{"amount":100,"currency":"USD"}}'
add "product-$P1" ProductPriceChanged '{"price":{"amount":200,"currency":"USD"}}'
add "product-$P2" ProductAdded '{"sku":"DLQ-2","name":"Good","price":{"amount":300,"currency":"USD"}}'
add "product-$P3" ProductAdded '{"name":"No sku","price":{"amount":1,"currency":"USD"}}'

start
for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$A/api/v1/products/$P2")" = 200 ] && break
    sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$A/api/v1/products/$P2")" = 200 ] || fail "the good product is not served"
curl -sf -H "$AH" "$A/admin/projections" >"$TMP/p" || fail "GET /admin/projections"
[ "$(field '[p for p in d["items"] if p["name"]=="products"][0]["status"]' <"$TMP/p")" = running ] || fail "products stopped: $(cat "$TMP/p")"
[ "$(field '[p for p in d["items"] if p["name"]=="products"][0]["parked"]' <"$TMP/p")" = 3 ] || fail "parked: $(cat "$TMP/p")"
curl -sf -H "$AH" "$A/admin/dlq" >"$TMP/l" || fail "GET /admin/dlq"
[ "$(field 'len(d["items"])' <"$TMP/l")" = 3 ] || fail "dlq: $(cat "$TMP/l")"
[ "$(field '[(i["stream"][8:], i["type"], i["waiting"]) for i in d["items"]]' <"$TMP/l")" = \
  "[('$P1', 'ProductAdded', False), ('$P1', 'ProductPriceChanged', True), ('$P3', 'ProductAdded', False)]" ] || fail "dlq order: $(cat "$TMP/l")"
H1=$(field 'd["items"][0]["id"]' <"$TMP/l")
W1=$(field 'd["items"][1]["id"]' <"$TMP/l")
H3=$(field 'd["items"][2]["id"]' <"$TMP/l")
field 'd["items"][0]["error"]' <"$TMP/l" | grep -qi "constraint" || fail "the error is not kept: $(cat "$TMP/l")"
stop

# offline: list from the read models; replay needs the server
"$BIN" dlq list --data "$D" >"$TMP/o" || fail "agora dlq list offline"
[ "$(field '[i["id"] for i in d]' <"$TMP/o")" = "['$H1', '$W1', '$H3']" ] || fail "offline list: $(cat "$TMP/o")"
"$BIN" dlq show "$W1" --data "$D" | field 'd["waiting"]' | grep -q True || fail "agora dlq show"
if "$BIN" dlq replay "$H1" --data "$D" 2>"$TMP/e"; then fail "offline replay succeeded"; fi
grep -q "agora run" "$TMP/e" || fail "offline replay: $(cat "$TMP/e")"

start
if "$BIN" dlq replay "$H1" --data "$D" >"$TMP/r" 2>&1; then fail "a replay of a still failing event succeeded"; fi
grep -q "still failing" "$TMP/r" || fail "replay: $(cat "$TMP/r")"
if "$BIN" dlq replay "$W1" --data "$D" >"$TMP/r" 2>&1; then fail "a waiting event overtook its head"; fi
grep -q "waits behind" "$TMP/r" || fail "replay waiting: $(cat "$TMP/r")"
"$BIN" dlq drop "$H1" --data "$D" >"$TMP/r" || fail "agora dlq drop: $(cat "$TMP/r")"
[ "$(field 'd["released"]' <"$TMP/r")" = 1 ] || fail "drop released: $(cat "$TMP/r")"
ST=$(curl -s -o "$TMP/r" -w '%{http_code}' -X DELETE -H "$AH" "$A/admin/dlq/$H3")
[ "$ST" = 200 ] || fail "DELETE /admin/dlq/$H3: $ST $(cat "$TMP/r")"
ST=$(curl -s -o "$TMP/r" -w '%{http_code}' -X POST -H "$AH" "$A/admin/dlq/$H3/replay")
[ "$ST" = 409 ] || fail "replay of a dropped one: $ST $(cat "$TMP/r")"
ST=$(curl -s -o "$TMP/r" -w '%{http_code}' -X POST -H "$AH" "$A/admin/dlq/projection:products:999999/replay")
[ "$ST" = 404 ] || fail "unknown id: $ST"
ST=$(curl -s -o "$TMP/r" -w '%{http_code}' -X POST -H "$AH" "$A/admin/dlq/not-an-id/replay")
[ "$ST" = 404 ] || fail "malformed id: $ST"
[ "$("$BIN" dlq list --data "$D")" = "[]" ] || fail "list after resolving: $("$BIN" dlq list --data "$D")"
curl -sf -H "$AH" "$A/admin/projections" >"$TMP/p"
[ "$(field '[p for p in d["items"] if p["name"]=="products"][0]["parked"]' <"$TMP/p")" = 0 ] || fail "parked after: $(cat "$TMP/p")"
stop
echo "PASS: dead letters parked, listed, replay refused while failing, dropped and released"
