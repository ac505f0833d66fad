#!/usr/bin/env bash
# Admission control of saga-starting commands (issue 11, src/services/admission.c):
# `agora run --max-sagas-in-flight 1 --admission-target off --admission-queue off`
# (a static limit of 1, refusals at once) with the shipment step
# slowed (AGORA_FAULT_ARRANGESHIPMENT=0,4000: no failure, 4 s latency), so one
# accepted order stays in flight for 4 s (the refusals are tried first, with no
# python in between: it can take a second to start on a busy machine). Then:
# - a second POST /api/v1/orders is answered 503 problem+json with Retry-After: 1
#   and X-Agora-Error: service, counted in agora_admission_rejected_total, and leaves
#   nothing behind: no order, no saga, no stock reserved, its Idempotency-Key free;
# - a draft (POST /api/v1/orders with "draft": true) starts no saga and is admitted;
#   placing it (POST /api/v1/orders/{id}/place) is refused the same way;
#   an AI agent's MCP place_order over the limit is an isError result (503), counted;
# - once the first order is confirmed its slot is free: the refused order, retried
#   with the same Idempotency-Key, is accepted; agora_order_confirm_seconds counts
#   the confirmation; a POST refused for bad fields (422) gives its slot back;
# - restarted with --admission-queue 10s: an order over the limit waits (parked)
#   for the slot instead, and is accepted once the order holding it is confirmed.
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
# shellcheck source=tests/integration/run_lib.bash
. "$(dirname "$0")/run_lib.bash"
run_frame
J='Content-Type: application/json'
ADDR='"shippingAddress":{"street":"1 Main St","city":"X","state":"Y","zipCode":"1","country":"US"}'

export AGORA_FAULT_ARRANGESHIPMENT=0,4000
agora_start "$TMP/data" ready --no-gateway --max-sagas-in-flight 1 --admission-target off \
    --admission-queue off

metric() { # metric NAME_WITH_LABELS: its value in /metrics ("" when absent)
    curl -s "$A/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}
# post PATH BODY [CURL ARGS...]: sets CODE, BODY (file $TMP/b) and headers ($TMP/h)
post() {
    local path=$1 body=$2
    shift 2
    CODE=$(curl -s -o "$TMP/b" -D "$TMP/h" -w '%{http_code}' -X POST "$A$path" -H "$J" -d "$body" "$@")
}
hdr() { grep -i "^$1:" "$TMP/h" | head -1 | cut -d' ' -f2- | tr -d '\r'; }

c=$(curl -sf -X POST "$A/api/v1/customers" -H "$J" -d '{"email":"adm@example.com","name":"A"}') || fail "register"
CID=$(echo "$c" | json_field 'd["id"]')
AID=$(echo "$c" | json_field 'd["accountId"]')
curl -sf -X POST "$A/api/v1/accounts/$AID/deposits" -H "$J" \
    -d '{"amount":{"amount":10000000,"currency":"USD"}}' >/dev/null || fail "deposit"
P=$(curl -sf "$A/api/v1/products?limit=1" | json_field 'd["items"][0]["id"]')
ON_HAND=$(curl -sf "$A/api/v1/inventory/$P" | json_field 'd["onHand"]')
[ "$(metric agora_admission_limit)" = 1 ] || fail "agora_admission_limit $(metric agora_admission_limit), want 1"

# ---- the first order is admitted and stays in flight for 4 s ----
post /api/v1/orders "{\"customerId\":\"$CID\",\"items\":[{\"productId\":\"$P\",\"quantity\":1}],$ADDR}"
[ "$CODE" = 202 ] || fail "first order: HTTP $CODE $(cat "$TMP/b")"
cp "$TMP/b" "$TMP/first"

# ---- the second is refused, and leaves nothing behind ----
post /api/v1/orders "{\"customerId\":\"$CID\",\"items\":[{\"productId\":\"$P\",\"quantity\":2}],$ADDR}" \
    -H 'Idempotency-Key: adm-2'
CODE2=$CODE
cp "$TMP/b" "$TMP/second.b"
cp "$TMP/h" "$TMP/second.h"
# a draft starts no saga: admitted; placing it is refused
post /api/v1/orders "{\"draft\":true,\"customerId\":\"$CID\"}"
[ "$CODE" = 201 ] || fail "draft: HTTP $CODE $(cat "$TMP/b")"
DR=$(grep -o '"id": *"[^"]*"' "$TMP/b" | head -1 | sed 's/.*"\([^"]*\)"$/\1/')
post "/api/v1/orders/$DR/items" "{\"productId\":\"$P\",\"quantity\":3}"
[ "$CODE" = 200 ] || fail "draft item: HTTP $CODE $(cat "$TMP/b")"
post "/api/v1/orders/$DR/place" "{$ADDR}"
[ "$CODE" = 503 ] || fail "placing the draft: HTTP $CODE, want 503 $(cat "$TMP/b")"
[ "$(hdr Retry-After)" = 1 ] || fail "place: Retry-After '$(hdr Retry-After)'"
# an AI agent's place_order (MCP) goes through the same admission: refused, nothing left
MH=(-H 'Accept: application/json, text/event-stream')
post /mcp '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"adm","version":"1"}}}' "${MH[@]}"
MCPS=$(hdr Mcp-Session-Id)
[ "$CODE" = 200 ] && [ -n "$MCPS" ] || fail "MCP initialize: HTTP $CODE $(cat "$TMP/b")"
post /mcp "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"place_order\",\"arguments\":{\"customerId\":\"$CID\",\"items\":[{\"productId\":\"$P\",\"quantity\":4}],$ADDR,\"idempotencyKey\":\"adm-mcp\"}}}" \
    "${MH[@]}" -H "Mcp-Session-Id: $MCPS"
cp "$TMP/b" "$TMP/mcp.b"

cp "$TMP/second.h" "$TMP/h"
[ "$CODE2" = 503 ] || fail "second order: HTTP $CODE2, want 503 $(cat "$TMP/second.b")"
[ "$(hdr Retry-After)" = 1 ] || fail "Retry-After '$(hdr Retry-After)'"
[ "$(hdr X-Agora-Error)" = service ] || fail "X-Agora-Error '$(hdr X-Agora-Error)'"
hdr Content-Type | grep -q 'application/problem+json' || fail "content type $(hdr Content-Type)"
O1=$(json_field 'd["orderId"]' <"$TMP/first")
S1=$(json_field 'd["sagaId"]' <"$TMP/first")
json_field 'd["title"]' <"$TMP/second.b" | grep -qx 'Too many orders in flight' || fail "title $(cat "$TMP/second.b")"
json_field 'd["status"]' <"$TMP/second.b" | grep -qx 503 || fail "problem status $(cat "$TMP/second.b")"
python3 -c "
import json, sys
r = json.load(open('$TMP/mcp.b'))['result']
assert r['isError'] is True, r
assert r['content'][0]['text'].startswith('503 Too many orders in flight'), r
" || fail "MCP place_order over the limit: $(cat "$TMP/mcp.b")"
[ "$(metric agora_admission_rejected_total)" = 3 ] || fail "rejected_total $(metric agora_admission_rejected_total), want 3"
echo "ok - over the limit: 503 problem+json, Retry-After: 1, X-Agora-Error: service, counted"
echo "ok - a draft is admitted (no saga); placing it over the limit is 503"
echo "ok - MCP place_order over the limit: an isError result (503), counted, nothing placed"

# the first order confirms; nothing of the refused ones exists
for _ in $(seq 200); do
    st=$(curl -s "$A/api/v1/orders/$O1" | json_field 'd.get("status")')
    [ "$st" = confirmed ] && break
    sleep 0.05
done
[ "$st" = confirmed ] || fail "first order $st, want confirmed"
orders=$(curl -sf "$A/api/v1/orders?customerId=$CID&limit=50")
echo "$orders" | python3 -c "
import json, sys
d = json.load(sys.stdin)
st = sorted((o['id'], o['status']) for o in d['items'])
assert st == sorted([('$O1', 'confirmed'), ('$DR', 'draft')]), st
" || fail "orders after the refusals: $orders"
sagas=$(curl -sf "$A/admin/sagas?limit=50")
echo "$sagas" | python3 -c "
import json, sys
ids = [s.get('id') or s.get('sagaId') for s in json.load(sys.stdin)['items']]
assert ids == ['$S1'], ids
" || fail "sagas after the refusals: $sagas"
inv=$(curl -sf "$A/api/v1/inventory/$P")
echo "$inv" | python3 -c "
import json, sys
d = json.load(sys.stdin)
assert d['onHand'] == $ON_HAND and d['reserved'] == 1, d  # the first order's unit only
" || fail "stock after the refusals: $inv (on hand before $ON_HAND)"
n=$(metric 'agora_order_confirm_seconds_count{outcome="confirmed"}')
[ "${n:-0}" -ge 1 ] || fail "agora_order_confirm_seconds_count{outcome=\"confirmed\"} '$n'"
[ "$(metric agora_admission_in_flight)" = 0 ] || fail "in flight $(metric agora_admission_in_flight), want 0"
echo "ok - refused orders left no order, no saga, no reservation; the confirmation is in agora_order_confirm_seconds"

# ---- the slot is free again: a 422 gives its slot back, the refused order is accepted ----
post /api/v1/orders "{\"customerId\":\"$CID\",\"items\":[{\"productId\":\"00000000-0000-7000-8000-000000000000\",\"quantity\":1}],$ADDR}"
[ "$CODE" = 422 ] || fail "unknown product: HTTP $CODE $(cat "$TMP/b")"
post /api/v1/orders "{\"customerId\":\"$CID\",\"items\":[{\"productId\":\"$P\",\"quantity\":2}],$ADDR}" \
    -H 'Idempotency-Key: adm-2'
[ "$CODE" = 202 ] || fail "the refused order retried: HTTP $CODE $(cat "$TMP/b")"
[ "$(hdr Idempotent-Replayed)" = "" ] || fail "the retry was a replay of the 503"
echo "ok - after a 422 and the confirmation the refused order, retried with its Idempotency-Key, is accepted"
agora_stop

# ---- with a queue: over the limit a POST waits for the slot ----
agora_start "$TMP/data" ready --no-gateway --max-sagas-in-flight 1 --admission-target off \
    --admission-queue 10s
post /api/v1/orders "{\"customerId\":\"$CID\",\"items\":[{\"productId\":\"$P\",\"quantity\":1}],$ADDR}"
[ "$CODE" = 202 ] || fail "queue: first order: HTTP $CODE $(cat "$TMP/b")"
O3=$(json_field 'd["orderId"]' <"$TMP/b")
post /api/v1/orders "{\"customerId\":\"$CID\",\"items\":[{\"productId\":\"$P\",\"quantity\":1}],$ADDR}"
[ "$CODE" = 202 ] || fail "queue: the waiting order: HTTP $CODE $(cat "$TMP/b")"
# the slot frees as the orders projection applies OrderConfirmed, just before it commits
for _ in $(seq 40); do
    st=$(curl -s "$A/api/v1/orders/$O3" | json_field 'd.get("status")')
    [ "$st" = confirmed ] && break
    sleep 0.05
done
[ "$st" = confirmed ] || fail "queue: the second order was accepted while the first was $st"
[ "$(metric agora_admission_rejected_total)" = 0 ] || fail "queue: rejected $(metric agora_admission_rejected_total)"
echo "ok - with --admission-queue a POST over the limit waits and is accepted once the slot frees"
agora_stop
