#!/usr/bin/env bash
# Integration: the README tour (docs/tour.md) against a real `agora run`, and the HTTP
# contract. Every request goes through curl and is recorded; the tour checks the
# answers' meaning (statuses, balances, stock, saga outcomes) as it goes, and at the
# end tests/integration/api_validate.js checks EVERY recorded answer — status code,
# Content-Type, headers and body — against docs/openapi.yaml.
#
#   a customer principal registers its own customer (with its own token) → deposit →
#   list products (public, paginated) → order → confirmed (saga completed, balance and
#   stock moved); an order beyond the balance and an out-of-stock order end cancelled
#   with the reason and nothing kept; Idempotency-Key replays and misuse; bad input →
#   4xx problem+json naming the field; 404s, 405 + Allow, 409 on cancelling a
#   confirmed order; another customer sees none of it (404); the admin token only where
#   the admin acts (restock, dispatch, tiers, /admin/*, /metrics).
#
# Env: AGORA_BIN, AG_SOURCE_DIR, AG_BUILD_DIR (from CTest). API_TOUR_KEEP=DIR keeps the
# recorded exchanges (NNN.req/.hdr/.body) in DIR.
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
SRC="${AG_SOURCE_DIR:?AG_SOURCE_DIR not set}"
[ -x "$BIN" ] || { echo "missing $BIN"; exit 1; }
command -v curl >/dev/null || { echo "FAIL: curl is needed"; exit 1; }
TMP=$(mktemp -d)
EX="$TMP/ex"
mkdir -p "$EX"
SPID=""
cleanup() {
    if [ -n "$SPID" ]; then kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
    if [ -n "${API_TOUR_KEEP:-}" ]; then mkdir -p "$API_TOUR_KEEP" && cp -r "$EX/." "$API_TOUR_KEEP/"; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    if [ -n "${H:-}" ] && [ -f "${H:-}" ]; then
        echo "--- last exchange: $(cat "${H%.hdr}.req")" >&2
        cat "$H" "$B" >&2 && echo >&2
    fi
    echo "--- server log (tail)" >&2
    tail -20 "$TMP/server.log" >&2 || true
    exit 1
}
pass() { echo "ok - $*"; }

# ---- node tools (ajv for the contract check), as openapi_lint.sh installs them ----
cd "$SRC"
command -v node >/dev/null && command -v npm >/dev/null ||
    fail "node and npm are needed (scripts/bootstrap.sh installs them)"
(
    flock 9
    if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] ||
        [ ! -d node_modules/ajv ]; then
        echo "# npm ci --no-audit --no-fund"
        npm ci --no-audit --no-fund >"$TMP/npm.log" 2>&1 || { cat "$TMP/npm.log"; exit 1; }
    fi
) 9>"${AG_BUILD_DIR:-$TMP}/.npm-ci.lock" || fail "npm ci failed"

# ---- helpers ----
N=0
# req METHOD PATH [curl args...]: records the exchange; sets ST (status), H (headers
# file), B (body file).
req() {
    local m=$1 p=$2
    shift 2
    N=$((N + 1))
    local id
    id=$(printf '%03d' "$N")
    H="$EX/$id.hdr" B="$EX/$id.body"
    local auth=()
    # every request carries the caller's token (AUTH: the customer's; AUTH=$ADMIN req ...
    # where the admin acts); NOAUTH=1 sends none
    if [ -z "${NOAUTH:-}" ] && [ -n "${AUTH:-}" ]; then auth=(-H "Authorization: Bearer $AUTH"); fi
    printf '%s %s\nauthorization: %s\n' "$m" "$p" "$([ ${#auth[@]} = 0 ] && echo none || echo bearer)" >"$EX/$id.req"
    curl -sS --max-time 10 -X "$m" -D "$H" -o "$B" "${auth[@]}" "$@" "$BASE$p" || fail "curl $m $p"
    touch "$B"
    ST=$(awk 'NR==1{print $2}' "$H")
}
JSON=(-H 'Content-Type: application/json')
post() { local p=$1 d=$2; shift 2; req POST "$p" "${JSON[@]}" "$@" --data-binary "$d"; }
# hdr NAME: the value of a response header of the last exchange
hdr() { awk -v n="$(echo "$1" | tr 'A-Z' 'a-z')" 'BEGIN{FS=": "} tolower($1)==n{sub(/^[^:]*: /,""); sub(/\r$/,""); print}' "$H"; }
# j EXPR...: evaluate JS expressions on the last body (b); one line each
j() {
    node -e 'const b=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));
        for (const e of process.argv.slice(2)) { const v=eval(e); console.log(typeof v==="object"?JSON.stringify(v):String(v)); }' "$B" "$@"
}
# check EXPR...: each JS expression on the last body (b) must be true
check() {
    node -e 'const b=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));
        for (const e of process.argv.slice(2)) if (!eval(e)) { console.error("not true: "+e); process.exit(1); }' "$B" "$@" ||
        fail "$(cat "${H%.hdr}.req") → $ST"
}
status() { [ "$ST" = "$1" ] || fail "expected $1, got $ST"; }
# problem STATUS [POINTER...]: a problem+json with this status naming these fields
problem() {
    local s=$1
    shift
    status "$s"
    case "$(hdr Content-Type)" in application/problem+json*) ;; *) fail "not problem+json: $(hdr Content-Type)" ;; esac
    local exprs=("b.status===$s" "typeof b.title==='string'" "typeof b.detail==='string' && b.detail.length>0")
    for p in "$@"; do exprs+=("Array.isArray(b.errors) && b.errors.some(e=>e.pointer==='$p' && e.detail.length>0)"); done
    check "${exprs[@]}"
}
# poll PATH EXPR: GET PATH until EXPR (on b) holds, at most 20 s
poll() {
    local p=$1 e=$2 t
    for t in $(seq 200); do
        req GET "$p"
        if [ "$ST" = 200 ] && [ "$(j "$e")" = true ]; then return 0; fi
        sleep 0.1
    done
    fail "GET $p: never true: $e"
}

# ---- start agora ----
"$BIN" run --data "$TMP/data" --listen 127.0.0.1:0 >"$TMP/server.log" 2>&1 &
SPID=$!
BASE=""
for _ in $(seq 300); do
    BASE=$(grep -o 'serving http://[0-9.]*:[0-9]*' "$TMP/server.log" | head -1 | sed 's/^serving //') || true
    [ -n "$BASE" ] && break
    kill -0 "$SPID" 2>/dev/null || fail "agora run exited"
    sleep 0.1
done
[ -n "$BASE" ] || fail "agora run did not start"
for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health/ready")" = 200 ] && break
    sleep 0.1
done
req GET /health/ready
status 200
check "b.status==='up'"
pass "agora run is ready at $BASE"

# ---- tokens: the customer's (ada) for everything she does; the admin's where the admin acts ----
AUTH=$("$BIN" token --data "$TMP/data" --sub ada --role customer) || fail "agora token"
ADMIN=$("$BIN" token --data "$TMP/data" --sub ops --role admin) || fail "agora token (admin)"
BOB=$("$BIN" token --data "$TMP/data" --sub bob --role customer) || fail "agora token (bob)"
CARRIER=$("$BIN" token --data "$TMP/data" --sub parcelco --role carrier) || fail "agora token (carrier)"
NOAUTH=1 post /api/v1/customers '{"email": "nobody@example.com", "name": "No Token"}'
problem 401
[ "$(hdr WWW-Authenticate | cut -c1-6)" = Bearer ] || fail "a 401 without WWW-Authenticate: Bearer"
NOAUTH=1 post /api/v1/customers '{"email": "nobody@example.com", "name": "Bad"}' -H "Authorization: Bearer ${AUTH%?}x"
problem 401
pass "without a valid token: 401 (WWW-Authenticate: Bearer)"

# ---- 1. a customer principal registers its own customer ----
post /api/v1/customers '{"email": "ada@example.com", "name": "Ada Lovelace"}'
status 201
read -r CID AID <<<"$(j "b.id+' '+b.accountId")"
[ "$(hdr Location)" = "/api/v1/customers/$CID" ] || fail "Location $(hdr Location)"
check "b.email==='ada@example.com'" "b.name==='Ada Lovelace'" "b.tier==='standard'"
[ -n "$(hdr X-Request-ID)" ] && [ -n "$(hdr traceparent)" ] || fail "no X-Request-ID/traceparent"
req GET "/api/v1/customers/$CID"
status 200
check "b.id==='$CID'" "b.email==='ada@example.com'" "b.accountId==='$AID'"
[ -n "$(hdr X-Projection-Position)" ] || fail "no X-Projection-Position on a read"
req GET /api/v1/customers/me
status 200
check "b.id==='$CID'"
NOAUTH=1 req GET "/api/v1/customers/$CID"
problem 401
post /api/v1/customers '{"email": "ada2@example.com", "name": "Ada Twice"}'
problem 409 ""
check "b.detail.includes('$CID')"
pass "register her own customer: 201 + Location, GET it back (and /me); anonymous 401; a second one is a 409 naming $CID"

# ---- 2. deposit ----
req GET "/api/v1/accounts/$AID"
status 200
check "b.balance.amount===0" "b.balance.currency==='USD'" "b.status==='open'" "b.transactionCount===0" "b.lastActivity===null"
post "/api/v1/accounts/$AID/deposits" '{"amount": {"amount": 20000, "currency": "USD"}}'
status 200
check "b.id==='$AID'" "b.balance.amount===20000" "b.transactionCount===1" "typeof b.lastActivity==='string'"
poll "/api/v1/accounts/$AID" "b.balance.amount===20000"
pass "deposit 200.00 USD: 200, balance 20000"

# ---- 3. products, paginated ----
NOAUTH=1 req GET /api/v1/products
status 200
TOTAL=$(j b.items.length)
[ "$TOTAL" -ge 5 ] || fail "fewer than 5 products: $TOTAL"
check "b.nextCursor===null" "b.items.every(p=>p.active && p.price.amount>0 && p.price.currency==='USD')"
SEEN=""
CURSOR=""
PAGES=0
while :; do
    req GET "/api/v1/products?limit=2${CURSOR:+&cursor=$CURSOR}"
    status 200
    check "b.items.length>=1 && b.items.length<=2"
    read -r CURSOR PAGE <<<"$(j "b.nextCursor+' '+b.items.map(p=>p.sku+'='+p.id+'='+p.price.amount).join(' ')")"
    SEEN="$SEEN $PAGE"
    PAGES=$((PAGES + 1))
    [ "$CURSOR" = null ] && break
    [ "$PAGES" -lt 100 ] || fail "pagination does not end"
done
COUNT=$(echo "$SEEN" | wc -w)
[ "$COUNT" = "$TOTAL" ] || fail "paginated $COUNT products, listed $TOTAL"
[ "$(echo "$SEEN" | tr ' ' '\n' | grep -v '^$' | sort -u | wc -l)" = "$TOTAL" ] || fail "duplicates across pages"
sku() { echo "$SEEN" | tr ' ' '\n' | awk -F= -v s="$1" '$1==s{print $'"$2"'}'; }
KB=$(sku KB-01 2) KB_PRICE=$(sku KB-01 3)
MN=$(sku MN-03 2) MN_PRICE=$(sku MN-03 3)
WC=$(sku WC-06 2)
CB=$(sku CB-05 2) CB_PRICE=$(sku CB-05 3)
[ -n "$KB" ] && [ -n "$MN" ] && [ -n "$WC" ] && [ -n "$CB" ] || fail "seeded products missing: $SEEN"
req GET "/api/v1/products/$KB"
status 200
check "b.sku==='KB-01'" "b.price.amount===$KB_PRICE"
pass "products: $TOTAL listed, $PAGES pages of limit=2 to nextCursor null"

# ---- 4. inventory ----
stock() { # stock PRODUCT: sets ON, RES, AV (onHand, reserved, available)
    req GET "/api/v1/inventory/$1"
    status 200
    check "b.productId==='$1'" "b.available===b.onHand-b.reserved"
    read -r ON RES AV <<<"$(j "b.onHand+' '+b.reserved+' '+b.available")"
}
stock "$KB"
KB_RES=$RES KB_AV=$AV
[ "$KB_AV" -ge 2 ] || fail "KB-01 has no stock"
pass "inventory of KB-01: onHand $ON, reserved $KB_RES, available $KB_AV"

# ---- 5. place an order → confirmed ----
ADDR='"shippingAddress": {"street": "1 Main St", "city": "Springfield", "state": "IL", "zipCode": "62701", "country": "US"}'
order() { # order PRODUCT QUANTITY [curl args]: POST and check the 202
    local prod=$1 qty=$2
    shift 2
    post /api/v1/orders "{\"customerId\": \"$CID\", \"items\": [{\"productId\": \"$prod\", \"quantity\": $qty}], $ADDR}" "$@"
    status 202
    read -r OID SID <<<"$(j "b.orderId+' '+b.sagaId")"
    [ "$(hdr Location)" = "/api/v1/orders/$OID" ] || fail "Location $(hdr Location)"
    check "b.status==='pending'"
}
order "$KB" 2
O1=$OID S1=$SID
poll "/api/v1/orders/$O1" "b.status==='confirmed' || b.status==='cancelled'"
T1=$((2 * KB_PRICE))
check "b.status==='confirmed'" "typeof b.trackingNumber==='string' && b.trackingNumber.length>0" \
    "b.customerId==='$CID'" "b.total.amount===$T1" "b.items.length===1" \
    "b.items[0].productId==='$KB' && b.items[0].quantity===2 && b.items[0].unitPrice.amount===$KB_PRICE" \
    "b.items[0].subtotal.amount===$T1" "b.cancellationReason===undefined"
poll "/api/v1/sagas/$S1" "b.status!=='running'"
check "b.status==='completed'" "b.type==='PlaceOrder'" "b.steps.length===5" "b.steps.every(s=>s.status==='succeeded')"
BAL=$((20000 - T1))
poll "/api/v1/accounts/$AID" "b.balance.amount===$BAL"
check "b.transactionCount===2"
poll "/api/v1/inventory/$KB" "b.reserved===$((KB_RES + 2)) && b.available===$((KB_AV - 2))"
pass "order 2 × KB-01: 202 + Location, confirmed with a tracking number, saga completed, balance $BAL, 2 reserved"

# ---- 6. an order beyond the balance → cancelled, stock released ----
stock "$MN"
MN_ON=$ON MN_RES=$RES MN_AV=$AV
[ "$MN_PRICE" -gt "$BAL" ] || fail "MN-03 is not beyond the balance"
order "$MN" 1
O2=$OID S2=$SID
poll "/api/v1/orders/$O2" "b.status==='confirmed' || b.status==='cancelled'"
check "b.status==='cancelled'" "/insufficient funds/.test(b.cancellationReason)" "b.trackingNumber===undefined"
poll "/api/v1/sagas/$S2" "b.status!=='running'"
check "b.status==='compensated'" "/insufficient funds/.test(b.reason)" \
    "b.steps.find(s=>s.name==='ReserveInventory').status==='compensated'" \
    "['failed','compensated'].includes(b.steps.find(s=>s.name==='ProcessPayment').status)" \
    "b.steps.find(s=>s.name==='ConfirmOrder').status==='pending'"
poll "/api/v1/inventory/$MN" "b.onHand===$MN_ON && b.reserved===$MN_RES && b.available===$MN_AV"
poll "/api/v1/accounts/$AID" "b.balance.amount===$BAL"
check "b.transactionCount===2"
pass "order beyond the balance: cancelled (insufficient funds), stock released, nothing charged"

# ---- 7. an out-of-stock order → cancelled, nothing charged ----
stock "$WC"
WC_RES=$RES WC_AV=$AV
order "$WC" $((WC_AV + 1))
O3=$OID S3=$SID
poll "/api/v1/orders/$O3" "b.status==='confirmed' || b.status==='cancelled'"
check "b.status==='cancelled'" "/insufficient stock/.test(b.cancellationReason)"
poll "/api/v1/sagas/$S3" "b.status!=='running'"
check "b.status==='compensated'" "['failed','compensated'].includes(b.steps.find(s=>s.name==='ReserveInventory').status)" \
    "b.steps.find(s=>s.name==='ProcessPayment').status==='pending'"
poll "/api/v1/inventory/$WC" "b.reserved===$WC_RES && b.available===$WC_AV"
req GET "/api/v1/accounts/$AID"
check "b.balance.amount===$BAL" "b.transactionCount===2"
pass "out-of-stock order ($((WC_AV + 1)) × WC-06, $WC_AV available): cancelled (insufficient stock), nothing charged"

# ---- 7b. restock (the admin role) ----
post "/api/v1/inventory/$WC/restock" '{"quantity": 5}'
problem 403
AUTH=$ADMIN post "/api/v1/inventory/$WC/restock" '{"quantity": 5}'
status 200
check "b.productId==='$WC'" "b.available===$((WC_AV + 5))" "b.available===b.onHand-b.reserved"
poll "/api/v1/inventory/$WC" "b.available===$((WC_AV + 5))"
AUTH=$ADMIN post "/api/v1/inventory/$WC/restock" '{"quantity": 0}'
problem 400 /quantity
AUTH=$ADMIN post /api/v1/inventory/nope/restock '{"quantity": 1}'
problem 404
pass "restock WC-06 by 5: 200, available $((WC_AV + 5))"

# ---- 8. Idempotency-Key ----
post "/api/v1/accounts/$AID/deposits" '{"amount": {"amount": 500, "currency": "USD"}}' -H 'Idempotency-Key: tour-deposit-1'
status 200
cp "$B" "$TMP/first"
[ -z "$(hdr Idempotent-Replayed)" ] || fail "first request marked replayed"
BAL=$((BAL + 500))
check "b.balance.amount===$BAL"
post "/api/v1/accounts/$AID/deposits" '{"amount": {"amount": 500, "currency": "USD"}}' -H 'Idempotency-Key: tour-deposit-1'
status 200
[ "$(hdr Idempotent-Replayed)" = true ] || fail "replay without Idempotent-Replayed: true"
cmp -s "$TMP/first" "$B" || fail "replayed body differs: $(cat "$TMP/first") vs $(cat "$B")"
post "/api/v1/accounts/$AID/deposits" '{"amount": {"amount": 700, "currency": "USD"}}' -H 'Idempotency-Key: tour-deposit-1'
problem 422
poll "/api/v1/accounts/$AID" "b.balance.amount===$BAL"
check "b.transactionCount===3"
order "$CB" 1 -H 'Idempotency-Key: tour-order-1'
O4=$OID
LOC=$(hdr Location)
cp "$B" "$TMP/first"
order "$CB" 1 -H 'Idempotency-Key: tour-order-1'
[ "$(hdr Idempotent-Replayed)" = true ] || fail "order replay without Idempotent-Replayed: true"
[ "$(hdr Location)" = "$LOC" ] || fail "replayed Location differs"
cmp -s "$TMP/first" "$B" || fail "replayed order differs"
post /api/v1/orders "{\"customerId\": \"$CID\", \"items\": [{\"productId\": \"$CB\", \"quantity\": 2}], $ADDR}" -H 'Idempotency-Key: tour-order-1'
problem 422
poll "/api/v1/orders/$O4" "b.status==='confirmed'"
BAL=$((BAL - CB_PRICE))
poll "/api/v1/accounts/$AID" "b.balance.amount===$BAL"
check "b.transactionCount===4"
# a customer cannot make itself premium; the admin registers premium customers (for a sub)
post /api/v1/customers '{"email": "grace@example.com", "name": "Grace Hopper", "tier": "premium"}'
problem 403 /tier
GRACE='{"email": "grace@example.com", "name": "Grace Hopper", "tier": "premium", "sub": "grace"}'
AUTH=$ADMIN post /api/v1/customers "$GRACE" -H 'Idempotency-Key: tour-customer-1'
status 201
cp "$B" "$TMP/first"
LOC=$(hdr Location)
check "b.tier==='premium'"
AUTH=$ADMIN post /api/v1/customers "$GRACE" -H 'Idempotency-Key: tour-customer-1'
status 201
[ "$(hdr Idempotent-Replayed)" = true ] && [ "$(hdr Location)" = "$LOC" ] && cmp -s "$TMP/first" "$B" ||
    fail "customer replay differs"
AUTH=$ADMIN post /api/v1/customers '{"email": "ada@example.com", "name": "Ada again"}' -H 'Idempotency-Key: tour-customer-2'
problem 409 /email
cp "$B" "$TMP/first"
AUTH=$ADMIN post /api/v1/customers '{"email": "ada@example.com", "name": "Ada again"}' -H 'Idempotency-Key: tour-customer-2'
problem 409 /email
[ "$(hdr Idempotent-Replayed)" = true ] || fail "a recorded 409 is not replayed"
pass "Idempotency-Key: replays (deposit, order, customer, a 409) with Idempotent-Replayed: true; another body → 422; charged once; tier premium is the admin's"

# ---- 9. bad input → 4xx problem+json naming the field ----
post /api/v1/customers '{"email": "x@example.com", "name": '
problem 400
post /api/v1/orders '{"customerId": '
problem 400
post "/api/v1/accounts/$AID/deposits" 'not json'
problem 400
post /api/v1/customers '[1, 2]'
problem 400
post /api/v1/customers '{}'
problem 400 /email /name
post /api/v1/customers '{"email": 5, "name": ["Ada"]}'
problem 400 /email /name
post /api/v1/customers '{"email": "eve@example.com", "name": "Eve", "tier": "gold"}'
problem 400 /tier
post /api/v1/customers '{"email": "not-an-email", "name": "Eve"}'
problem 400 /email
AUTH=$ADMIN post /api/v1/customers '{"email": "ADA@example.com", "name": "Ada twice"}'
problem 409 /email
post /api/v1/orders '{}'
problem 400 /items /shippingAddress
post /api/v1/orders "{\"customerId\": 42, \"items\": {\"productId\": \"$KB\"}, \"shippingAddress\": \"here\"}"
problem 400 /customerId /items /shippingAddress
post /api/v1/orders "{\"customerId\": \"$CID\", \"items\": [], $ADDR}"
problem 400 /items
post /api/v1/orders "{\"customerId\": \"$CID\", \"items\": [{\"productId\": \"$KB\", \"quantity\": -1}], $ADDR}"
problem 400 /items/0/quantity
post /api/v1/orders "{\"customerId\": \"$CID\", \"items\": [{\"productId\": \"$KB\", \"quantity\": 0}], $ADDR}"
problem 400 /items/0/quantity
post /api/v1/orders "{\"customerId\": \"$CID\", \"items\": [{\"productId\": \"$KB\", \"quantity\": \"2\"}], $ADDR}"
problem 400 /items/0/quantity
post /api/v1/orders "{\"customerId\": \"$CID\", \"items\": [{\"productId\": \"$KB\", \"quantity\": 1}, {\"quantity\": 1}], $ADDR}"
problem 400 /items/1/productId
post /api/v1/orders "{\"customerId\": \"$CID\", \"items\": [{\"productId\": \"no-such-product\", \"quantity\": 1}], $ADDR}"
problem 422 /items/0/productId
post /api/v1/orders "{\"customerId\": \"no-such-customer\", \"items\": [{\"productId\": \"$KB\", \"quantity\": 1}], $ADDR}"
problem 422 /customerId
post /api/v1/orders "{\"customerId\": \"$CID\", \"items\": [{\"productId\": \"$KB\", \"quantity\": 1}], \"shippingAddress\": {\"street\": \"1 Main St\", \"city\": \"Springfield\", \"state\": \"IL\", \"zipCode\": \"62701\", \"country\": \"USA\"}}"
problem 400 /shippingAddress/country
post /api/v1/orders "{\"customerId\": \"$CID\", \"items\": [{\"productId\": \"$KB\", \"quantity\": 1}], \"shippingAddress\": {\"street\": \"1 Main St\", \"state\": \"IL\", \"zipCode\": \"62701\", \"country\": \"US\"}}"
problem 400 /shippingAddress/city
post "/api/v1/accounts/$AID/deposits" '{}'
problem 400 /amount
post "/api/v1/accounts/$AID/deposits" '{"amount": {"amount": -100, "currency": "USD"}}'
problem 400 /amount/amount
post "/api/v1/accounts/$AID/deposits" '{"amount": {"amount": "100", "currency": "USD"}}'
problem 400 /amount/amount
post "/api/v1/accounts/$AID/deposits" '{"amount": {"amount": 100, "currency": "usd"}}'
problem 400 /amount/currency
post "/api/v1/accounts/$AID/deposits" '{"amount": {"amount": 100, "currency": "EUR"}}'
problem 422 /amount/currency
post "/api/v1/orders/$O1/cancel" '{"reason": 5}'
problem 400 /reason
req GET "/api/v1/products?limit=0"
problem 400 /limit
req GET "/api/v1/products?limit=lots"
problem 400 /limit
req GET "/api/v1/orders?status=lost"
problem 400 /status
req GET "/api/v1/accounts/$AID"
check "b.balance.amount===$BAL" "b.transactionCount===4"
req GET "/api/v1/inventory/$KB"
check "b.reserved===$((KB_RES + 2))"
pass "bad input: malformed JSON, missing fields, wrong types, negative/zero quantity, unknown product (422) or customer (404), empty items, bad address, tier, currency → problem+json naming the field"

# ---- 10. 404, 405 + Allow, 409 ----
for p in /api/v1/customers/nope /api/v1/accounts/nope /api/v1/products/nope /api/v1/inventory/nope \
    /api/v1/orders/nope /api/v1/sagas/nope /api/v1/nothing-here "/api/v1/customers/$CID/nothing"; do
    req GET "$p"
    problem 404
done
post /api/v1/accounts/nope/deposits '{"amount": {"amount": 100, "currency": "USD"}}'
problem 404
post /api/v1/orders/nope/cancel '{}'
problem 404
req DELETE "/api/v1/customers/$CID"
problem 405
[ "$(hdr Allow)" = "GET, HEAD" ] || fail "Allow: $(hdr Allow)"
req PUT /api/v1/orders "${JSON[@]}" --data-binary '{}'
problem 405
[ "$(hdr Allow)" = "GET, POST, HEAD" ] || fail "Allow: $(hdr Allow)"
req GET "/api/v1/accounts/$AID/deposits"
problem 405
[ "$(hdr Allow)" = "POST" ] || fail "Allow: $(hdr Allow)"
post "/api/v1/orders/$O1/cancel" '{"reason": "changed my mind"}'
problem 409
req GET "/api/v1/orders/$O1"
check "b.status==='confirmed'"
post "/api/v1/orders/$O2/cancel" ''
status 202
check "b.orderId==='$O2'" "b.status==='cancelled'"
req GET "/api/v1/orders/$O2"
check "b.status==='cancelled'" "/insufficient funds/.test(b.cancellationReason)"
pass "404 for unknown ids and paths, 405 with Allow, 409 cancelling a confirmed order (a cancelled one: 202, unchanged)"

# ---- 11. order lists ----
req GET "/api/v1/orders?customerId=$CID"
status 200
check "b.items.length===4" "b.nextCursor===null" "b.items.every(o=>o.customerId==='$CID')"
req GET "/api/v1/orders?customerId=$CID&status=cancelled"
status 200
check "b.items.length===2" "b.items.every(o=>o.status==='cancelled' && o.cancellationReason)"
CURSOR=""
PAGES=0
while :; do
    req GET "/api/v1/orders?customerId=$CID&limit=1${CURSOR:+&cursor=$CURSOR}"
    status 200
    CURSOR=$(j "b.items.length===1 ? b.nextCursor : 'bad page'")
    [ "$CURSOR" != "bad page" ] || fail "not one order per page"
    PAGES=$((PAGES + 1))
    [ "$CURSOR" = null ] && break
    [ "$PAGES" -lt 10 ] || fail "order pagination does not end"
done
[ "$PAGES" = 4 ] || fail "4 orders in $PAGES pages of 1"
pass "orders by customer and status, paginated with limit=1"

# ---- 11b. another customer sees none of it ----
AUTH=$BOB post /api/v1/customers '{"email": "bob@tour.example", "name": "Bob"}'
status 201
for p in "/api/v1/customers/$CID" "/api/v1/accounts/$AID" "/api/v1/orders/$O1" "/api/v1/sagas/$S1" "/api/v1/shipments/$O1"; do
    AUTH=$BOB req GET "$p"
    problem 404
done
AUTH=$BOB post "/api/v1/accounts/$AID/deposits" '{"amount": {"amount": 100, "currency": "USD"}}'
problem 404
AUTH=$BOB post "/api/v1/orders/$O1/cancel" '{}'
problem 404
AUTH=$BOB req GET "/api/v1/orders?customerId=$CID"
status 200
check "b.items.length===0"
AUTH=$BOB req GET /api/v1/accounts
status 200
check "b.items.every(a=>a.id!=='$AID')"
req GET "/api/v1/accounts/$AID"
check "b.balance.amount===$BAL" "b.transactionCount===4"
pass "another customer (bob): ada's customer, account, order, saga, shipment are 404 to him, her orders and account are not in his lists; his deposit and cancel changed nothing"

# ---- 12. request id, trace context, ops endpoints ----
req GET "/api/v1/customers/$CID" -H 'X-Request-ID: tour-request-42' \
    -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
status 200
[ "$(hdr X-Request-ID)" = tour-request-42 ] || fail "X-Request-ID not kept: $(hdr X-Request-ID)"
case "$(hdr traceparent)" in 00-4bf92f3577b34da6a3ce929d0e0e4736-*) ;; *) fail "trace not continued: $(hdr traceparent)" ;; esac
NOAUTH=1 req GET /health/live
status 200
req GET /metrics
problem 403
AUTH=$ADMIN req GET /metrics
status 200
grep -q '^agora_http_request_duration_seconds_count{method="POST",route="/api/v1/orders"}' "$B" || fail "no RED metrics for POST /api/v1/orders"
req GET /admin/projections
problem 403
AUTH=$ADMIN req GET /admin/projections
status 200
check "b.items.length>=7" "b.items.every(p=>p.status==='running')"
AUTH=$ADMIN req GET "/admin/sagas?status=compensated"
status 200
check "b.items.some(s=>s.id==='$S2')" "b.items.some(s=>s.id==='$S3')" "b.items.every(s=>s.status==='compensated')"
AUTH=$ADMIN req GET "/admin/sagas?status=failed"
status 200
check "b.items.length===0"
AUTH=$ADMIN post "/admin/sagas/$S1/retry" ''
problem 409
AUTH=$ADMIN req GET /admin/circuit-breakers
status 200
check "b.breakers.some(c=>c.name==='platform' && c.state==='closed')"
AUTH=$ADMIN req GET /admin/saga-breakers
status 200
check "b.items.length===5" "b.items.every(c=>c.state==='closed')"
AUTH=$ADMIN req GET /admin/upstreams
status 200
check "b.upstreams.some(u=>u.name==='platform')"
AUTH=$ADMIN req GET /admin/config
status 200
check "b.routes.length>0"
AUTH=$ADMIN req GET "/admin/audit?actor=ada&limit=100"
status 200
check "b.items.length>0" "b.items.every(e=>e.actor && e.actor.sub==='ada')" \
    "b.items.some(e=>/Deposited/.test(e.type))"
req GET /platform/admin/circuit-breakers
problem 404
pass "X-Request-ID kept, traceparent continued; /health/live; the admin's /metrics, /admin/projections, /admin/sagas (+ retry), /admin/circuit-breakers, /admin/saga-breakers, /admin/upstreams, /admin/config, /admin/audit (a customer: 403); /platform/ is gone"

# ---- 13. shipping: the warehouse dispatches a confirmed order ----
req GET "/api/v1/inventory/$KB"
read -r KB_ON KB_RE <<<"$(j "b.onHand+' '+b.reserved")"
req GET "/api/v1/shipments/$O1"
status 200
check "b.orderId==='$O1'" "b.status==='arranged'" "typeof b.trackingNumber==='string'" "b.address.city==='Springfield'"
post "/api/v1/shipments/$O1/dispatch" '{}'
problem 403
AUTH=$ADMIN post "/api/v1/shipments/$O1/dispatch" '{}'
status 202
check "b.orderId==='$O1'" "b.status==='dispatched'" "b.orderStatus==='shipped'"
AUTH=$ADMIN post "/api/v1/shipments/$O1/dispatch" '{}'
status 202
poll "/api/v1/orders/$O1" "b.status==='shipped'"
poll "/api/v1/shipments/$O1" "b.status==='dispatched'"
poll "/api/v1/inventory/$KB" "b.onHand===$((KB_ON - 2)) && b.reserved===$((KB_RE - 2))"
AUTH=$ADMIN post "/api/v1/shipments/$O2/dispatch" '{}'
problem 409
AUTH=$ADMIN post /api/v1/shipments/no-such-order/dispatch '{}'
problem 404
req GET /api/v1/shipments/no-such-order
problem 404
pass "shipping: the shipment is arranged; dispatch (admin) ships the order and takes its 2 units off the shelves, idempotently; a cancelled order cannot ship"

# ---- 13b. delivery: the carrier reports the parcel handed over ----
post "/api/v1/shipments/$O1/deliver" '{}'
problem 403
AUTH=$CARRIER post "/api/v1/shipments/$O4/deliver" '{}'
problem 409
check "b.detail.includes('confirmed')"
AUTH=$CARRIER post "/api/v1/shipments/$O2/deliver" '{}'
problem 409
AUTH=$CARRIER post "/api/v1/shipments/$O1/deliver" '{"signedBy": "Ada"}'
problem 400 /signedBy
AUTH=$CARRIER post "/api/v1/shipments/$O1/deliver" '[1]'
problem 400 ""
AUTH=$CARRIER post /api/v1/shipments/no-such-order/deliver '{}'
problem 404
AUTH=$CARRIER post "/api/v1/shipments/$O1/deliver" '{}'
status 202
check "b.orderId==='$O1'" "b.status==='delivered'" "b.orderStatus==='delivered'"
AUTH=$ADMIN post "/api/v1/shipments/$O1/deliver" ''
status 202
check "b.orderStatus==='delivered'"
poll "/api/v1/orders/$O1" "b.status==='delivered'"
poll "/api/v1/shipments/$O1" "b.status==='delivered'"
req GET "/api/v1/orders?status=delivered"
status 200
check "b.items.length===1" "b.items[0].id==='$O1'"
AUTH=$CARRIER post "/api/v1/shipments/$O4/dispatch" '{}'
problem 403
AUTH=$CARRIER req GET "/api/v1/orders/$O1"
problem 404
AUTH=$ADMIN req GET "/admin/audit?actor=parcelco&limit=100"
status 200
check "b.items.some(e=>e.type==='OrderDelivered' && e.actor.roles.includes('carrier'))"
pass "delivery: the carrier (role carrier) delivers a shipped order (202, again 202), order and shipment delivered; a customer 403, a confirmed or cancelled order 409, an unknown field 400, the carrier cannot dispatch or read orders"

# ---- 14. catalog admin: add a product, change its price, discontinue it ----
HUB='{"sku": "HD-07", "name": "USB hub", "price": {"amount": 2499, "currency": "USD"}}'
post /api/v1/products "$HUB"
problem 403
AUTH=$ADMIN post /api/v1/products "$HUB"
status 201
HD=$(j b.id)
[ "$(hdr Location)" = "/api/v1/products/$HD" ] || fail "Location $(hdr Location)"
check "b.sku==='HD-07'" "b.active===true" "b.price.amount===2499"
AUTH=$ADMIN post /api/v1/products '{"sku": "HD-07", "name": "Another hub", "price": {"amount": 1, "currency": "USD"}}'
problem 409 /sku
AUTH=$ADMIN post /api/v1/products '{"sku": "", "name": "Hub", "price": {"amount": 1, "currency": "usd"}, "color": "red"}'
problem 400 /sku /price/currency /color
AUTH=$ADMIN post /api/v1/products '{"sku": "HD-08", "name": "Hub", "price": {"amount": -1, "currency": "USD"}}'
problem 400 /price/amount
NOAUTH=1 req GET "/api/v1/products/$HD"
status 200
check "b.name==='USB hub'"
AUTH=$ADMIN post "/api/v1/products/$HD/price" '{"price": {"amount": 1999, "currency": "USD"}}'
status 200
check "b.id==='$HD'" "b.price.amount===1999"
AUTH=$ADMIN post "/api/v1/products/$HD/price" '{"price": {"amount": 1999, "currency": "EUR"}}'
problem 409
AUTH=$ADMIN post "/api/v1/products/$HD/price" '{"price": 1999}'
problem 400 /price
post "/api/v1/products/$HD/price" '{"price": {"amount": 1, "currency": "USD"}}'
problem 403
AUTH=$ADMIN post "/api/v1/inventory/$HD/restock" '{"quantity": 10}'
status 200
post "/api/v1/accounts/$AID/deposits" '{"amount": {"amount": 10000, "currency": "USD"}}'
status 200
poll "/api/v1/products/$HD" "b.price.amount===1999"
order "$HD" 1
poll "/api/v1/orders/$OID" "b.status==='confirmed' || b.status==='cancelled'"
check "b.status==='confirmed'" "b.items[0].unitPrice.amount===1999"
AUTH=$ADMIN post "/api/v1/products/$HD/discontinue" '{"reason": "replaced by HD-08"}'
status 200
check "b.active===false"
AUTH=$ADMIN post "/api/v1/products/$HD/discontinue" '{}'
status 200
AUTH=$ADMIN post "/api/v1/products/$HD/discontinue" '{"why": "x"}'
problem 400 /why
poll "/api/v1/products/$HD" "b.active===false"
post /api/v1/orders "{\"customerId\": \"$CID\", \"items\": [{\"productId\": \"$CB\", \"quantity\": 1}, {\"productId\": \"$HD\", \"quantity\": 1}], $ADDR}"
problem 422 /items/1/productId
check "b.errors[0].detail.includes('discontinued')"
AUTH=$ADMIN post "/api/v1/products/$HD/price" '{"price": {"amount": 999, "currency": "USD"}}'
problem 409
AUTH=$ADMIN post /api/v1/products/nope/discontinue '{}'
problem 404
pass "catalog admin: add HD-07 (201 + Location; a customer 403, its SKU again 409, bad fields 400 by pointer), reprice it (orders then pay 19.99; another currency 409), discontinue it (ordering it is a 422 on /items/1/productId; repricing 409)"

# ---- 15. promotions: admin-managed codes, applied with the pricing service ----
post /api/v1/promotions '{"code": "SAVE15", "kind": "percent", "value": 1500}'
problem 403
AUTH=$ADMIN post /api/v1/promotions '{"code": "SAVE15", "kind": "percent", "value": 1500}'
status 201
SAVE15=$(j b.id)
[ "$(hdr Location)" = "/api/v1/promotions/$SAVE15" ] || fail "Location $(hdr Location)"
check "b.code==='SAVE15'" "b.used===0" "b.stackable===true" "b.usageLimit===undefined"
AUTH=$ADMIN post /api/v1/promotions '{"code": "FIVEOFF", "kind": "fixed", "value": 500, "currency": "USD", "usageLimit": 1}'
status 201
FIVEOFF=$(j b.id)
AUTH=$ADMIN post /api/v1/promotions '{"code": "SOLO20", "kind": "percent", "value": 2000, "stackable": false}'
status 201
AUTH=$ADMIN post /api/v1/promotions '{"code": "OLD", "kind": "percent", "value": 500, "validFrom": "2020-01-01T00:00:00Z", "validUntil": "2021-01-01T00:00:00Z"}'
status 201
AUTH=$ADMIN post /api/v1/promotions '{"code": "LATER", "kind": "percent", "value": 500, "validFrom": "2099-01-01T00:00:00Z"}'
status 201
AUTH=$ADMIN post /api/v1/promotions '{"code": "SAVE15", "kind": "percent", "value": 100}'
problem 409 /code
AUTH=$ADMIN post /api/v1/promotions '{"code": "save 15", "kind": "half", "value": "15", "bonus": 1}'
problem 400 /code /kind /value /bonus
AUTH=$ADMIN post /api/v1/promotions '{"code": "TEN", "kind": "fixed", "value": 1000, "validUntil": "tomorrow"}'
problem 400 /currency /validUntil
promo_order() { # promo_order CODES-JSON: ada orders 1 × CB-05 with these codes
    post /api/v1/orders "{\"items\": [{\"productId\": \"$CB\", \"quantity\": 1}], \"promotionCodes\": $1, $ADDR}"
}
promo_order '["SAVE15", "FIVEOFF"]'
status 202
OP=$(j b.orderId)
poll "/api/v1/orders/$OP" "b.status==='confirmed' || b.status==='cancelled'"
DISC=$(( (CB_PRICE * 1500 + 5000) / 10000 + 500 ))
check "b.status==='confirmed'" "b.subtotal.amount===$CB_PRICE" "b.discount.amount===$DISC" "b.total.amount===$((CB_PRICE - DISC))"
promo_order '["FIVEOFF"]'
problem 422 /promotionCodes/0
check "b.detail.includes('FIVEOFF') && b.detail.includes('exhausted')"
promo_order '["SAVE15", "NOPE"]'
problem 422 /promotionCodes/1
check "b.detail.includes('unknown promotion code NOPE')"
promo_order '["OLD"]'
problem 422 /promotionCodes/0
check "b.detail.includes('OLD expired')"
promo_order '["LATER"]'
problem 422 /promotionCodes/0
check "b.detail.includes('not valid yet')"
promo_order '["SOLO20", "SAVE15"]'
problem 422 /promotionCodes/0
check "b.detail.includes('cannot be combined')"
promo_order '"SAVE15"'
problem 400 /promotionCodes
promo_order '["SAVE15", "SAVE15"]'
problem 400 /promotionCodes/1
post /api/v1/orders "{\"items\": [{\"productId\": \"$CB\", \"quantity\": 1}], \"coupon\": \"SAVE15\", $ADDR}"
problem 400 /coupon
AUTH=$ADMIN req GET "/api/v1/promotions/$FIVEOFF"
status 200
check "b.used===1" "b.usageLimit===1" "b.currency==='USD'"
AUTH=$ADMIN req GET "/api/v1/promotions/$SAVE15"
check "b.used===1"
req GET "/api/v1/promotions/$SAVE15"
problem 403
pass "promotions: SAVE15 (15%) + FIVEOFF (5.00, once) take $DISC off a $CB_PRICE order; FIVEOFF again (exhausted), NOPE (unknown), OLD (expired), LATER (not yet), SOLO20 with others → 422 naming the code; a customer cannot create or read codes"

# ---- 16. accounts: withdraw, transfer (one atomic append), close ----
AUTH=$BOB req GET /api/v1/customers/me
BAID=$(j b.accountId)
req GET "/api/v1/accounts/$AID"
ABAL=$(j b.balance.amount)
post "/api/v1/accounts/$AID/withdrawals" '{"amount": {"amount": 1000, "currency": "USD"}}'
status 200
check "b.balance.amount===$((ABAL - 1000))"
post "/api/v1/accounts/$AID/deposits" '{"amount": {"amount": 300, "currency": "USD"}}' -H 'Idempotency-Key: tour-money-1'
status 200
post "/api/v1/accounts/$AID/withdrawals" '{"amount": {"amount": 300, "currency": "USD"}}' -H 'Idempotency-Key: tour-money-1'
status 200
[ -z "$(hdr Idempotent-Replayed)" ] || fail "a withdrawal replayed a deposit with the same key and body"
check "b.balance.amount===$((ABAL - 1000))"
post "/api/v1/accounts/$AID/withdrawals" '{"amount": {"amount": 300, "currency": "USD"}}' -H 'Idempotency-Key: tour-money-1'
[ "$(hdr Idempotent-Replayed)" = true ] || fail "withdrawal retry not replayed"
check "b.balance.amount===$((ABAL - 1000))"
post "/api/v1/accounts/$AID/withdrawals" "{\"amount\": {\"amount\": $((ABAL * 10)), \"currency\": \"USD\"}}"
problem 422 /amount/amount
post "/api/v1/accounts/$AID/withdrawals" '{"amount": {"amount": 0, "currency": "USD"}, "note": 1}'
problem 400 /amount/amount /note
post "/api/v1/accounts/$AID/transfers" "{\"toAccountId\": \"$BAID\", \"amount\": {\"amount\": 500, \"currency\": \"USD\"}}"
status 200
check "b.id==='$AID'" "b.balance.amount===$((ABAL - 1500))"
AUTH=$BOB poll "/api/v1/accounts/$BAID" "b.balance.amount===500"
post "/api/v1/accounts/$AID/transfers" "{\"toAccountId\": \"$AID\", \"amount\": {\"amount\": 1, \"currency\": \"USD\"}}"
problem 422 /toAccountId
post "/api/v1/accounts/$AID/transfers" '{"toAccountId": "no-such-account", "amount": {"amount": 1, "currency": "USD"}}'
problem 422 /toAccountId
post "/api/v1/accounts/$AID/transfers" "{\"toAccountId\": \"$BAID\", \"amount\": {\"amount\": $((ABAL * 10)), \"currency\": \"USD\"}}"
problem 422 /amount/amount
AUTH=$BOB post "/api/v1/accounts/$AID/transfers" "{\"toAccountId\": \"$BAID\", \"amount\": {\"amount\": 1, \"currency\": \"USD\"}}"
problem 404
AUTH=$BOB post "/api/v1/accounts/$AID/withdrawals" '{"amount": {"amount": 1, "currency": "USD"}}'
problem 404
post "/api/v1/accounts/$AID/close" '{}'
problem 409
check "b.detail.includes('positive balance')"
AUTH=$BOB post "/api/v1/accounts/$BAID/withdrawals" '{"amount": {"amount": 500, "currency": "USD"}}'
status 200
AUTH=$BOB post "/api/v1/accounts/$BAID/close" ''
status 200
check "b.status==='closed'" "b.balance.amount===0"
post "/api/v1/accounts/$AID/transfers" "{\"toAccountId\": \"$BAID\", \"amount\": {\"amount\": 1, \"currency\": \"USD\"}}"
problem 409
check "b.detail.includes('closed')"
poll "/api/v1/accounts/$AID" "b.balance.amount===$((ABAL - 1500))"
pass "accounts: withdraw 10.00, transfer 5.00 to bob (both legs in one append), overdraft 422, to itself or an unknown account 422, bob on ada's account 404; a funded account cannot close (409), bob's emptied one closes, and a transfer to it is a 409"

# ---- 17. addresses: saved on the customer, named by an order ----
post "/api/v1/customers/$CID/addresses" '{"street": "7 Elm St", "city": "Shelbyville", "state": "IL", "zipCode": "62565", "country": "US"}'
status 201
ADR=$(j b.id)
check "b.street==='7 Elm St'" "b.country==='US'" "/^[0-9a-f-]{36}$/.test(b.id)"
post "/api/v1/customers/$CID/addresses" '{"street": "7 Elm St", "city": "Shelbyville", "state": "IL", "zipCode": "62565", "country": "US"}'
status 200
check "b.id==='$ADR'"
post "/api/v1/customers/$CID/addresses" '{"street": "", "city": "X", "state": "Y", "zipCode": "1", "country": "usa", "floor": 2}'
problem 400 /street /floor
req GET "/api/v1/customers/$CID/addresses"
status 200
check "b.items.length===1" "b.items[0].id==='$ADR'" "b.items[0].city==='Shelbyville'" "b.nextCursor===null"
AUTH=$BOB req GET "/api/v1/customers/$CID/addresses"
problem 404
AUTH=$BOB post "/api/v1/customers/$CID/addresses" '{"street": "1 Bob Rd", "city": "B", "state": "B", "zipCode": "1", "country": "US"}'
problem 404
post "/api/v1/accounts/$AID/deposits" '{"amount": {"amount": 100000, "currency": "USD"}}'
status 200
post /api/v1/orders "{\"items\": [{\"productId\": \"$KB\", \"quantity\": 1}], \"shippingAddressId\": \"$ADR\"}"
status 202
OA=$(j b.orderId)
poll "/api/v1/orders/$OA" "b.status==='confirmed' || b.status==='cancelled'"
check "b.status==='confirmed'" "b.shippingAddress.street==='7 Elm St'"
poll "/api/v1/shipments/$OA" "b.status!==undefined"
check "b.address.street==='7 Elm St'" "b.address.city==='Shelbyville'"
post /api/v1/orders "{\"items\": [{\"productId\": \"$KB\", \"quantity\": 1}], \"shippingAddressId\": \"00000000-0000-7000-8000-000000000000\"}"
problem 422 /shippingAddressId
post /api/v1/orders "{\"items\": [{\"productId\": \"$KB\", \"quantity\": 1}], \"shippingAddressId\": \"$ADR\", $ADDR}"
problem 400 /shippingAddressId
pass "addresses: add (201; the same again 200 with its id; bad fields 400 by pointer), list; bob 404 on both; an order with shippingAddressId ships to it (order and shipment), another id 422, both forms 400"

# ---- 18. draft orders: create, add and remove items, then place ----
post /api/v1/orders '{"draft": true}'
status 201
DR=$(j b.id)
[ "$(hdr Location)" = "/api/v1/orders/$DR" ] || fail "Location $(hdr Location)"
check "b.status==='draft'" "b.items.length===0" "b.customerId==='$CID'" "b.total.amount===0"
post "/api/v1/orders/$DR/items" "{\"productId\": \"$KB\", \"quantity\": 2}"
status 200
check "b.items.length===1" "b.items[0].quantity===2" "b.total.amount===$((2 * KB_PRICE))"
post "/api/v1/orders/$DR/items" "{\"productId\": \"$WC\", \"quantity\": 1}"
status 200
check "b.items.length===2"
post "/api/v1/orders/$DR/items" "{\"productId\": \"$KB\", \"quantity\": 0}"
problem 400 /quantity
post "/api/v1/orders/$DR/items" '{"productId": "00000000-0000-7000-8000-000000000000", "quantity": 1}'
problem 422 /productId
req DELETE "/api/v1/orders/$DR/items/$WC"
status 200
check "b.items.length===1" "b.items[0].productId==='$KB'" "b.total.amount===$((2 * KB_PRICE))"
req DELETE "/api/v1/orders/$DR/items/$WC"
problem 404
poll "/api/v1/orders/$DR" "b.status==='draft' && b.items.length===1"
AUTH=$BOB post "/api/v1/orders/$DR/items" "{\"productId\": \"$KB\", \"quantity\": 1}"
problem 404
AUTH=$BOB post "/api/v1/orders/$DR/place" "{\"shippingAddressId\": \"$ADR\"}"
problem 404
post "/api/v1/orders/$DR/place" '{}'
problem 400 /shippingAddress
post "/api/v1/orders/$DR/place" "{\"shippingAddressId\": \"$ADR\"}" -H 'Idempotency-Key: tour-draft-1'
status 202
DS=$(j b.sagaId)
check "b.orderId==='$DR'" "b.status==='pending'"
post "/api/v1/orders/$DR/place" "{\"shippingAddressId\": \"$ADR\"}" -H 'Idempotency-Key: tour-draft-1'
[ "$(hdr Idempotent-Replayed)" = true ] || fail "place retry not replayed"
check "b.sagaId==='$DS'"
poll "/api/v1/orders/$DR" "b.status==='confirmed' || b.status==='cancelled'"
check "b.status==='confirmed'" "b.total.amount===$((2 * KB_PRICE))" "b.shippingAddress.city==='Shelbyville'"
poll "/api/v1/sagas/$DS" "b.status!=='running'"
check "b.status==='completed'"
post "/api/v1/orders/$DR/items" "{\"productId\": \"$KB\", \"quantity\": 1}"
problem 409
req DELETE "/api/v1/orders/$DR/items/$KB"
problem 409
post "/api/v1/orders/$DR/place" "{\"shippingAddressId\": \"$ADR\"}"
problem 409
post /api/v1/orders '{"draft": true}'
DE=$(j b.id)
post "/api/v1/orders/$DE/place" "{\"shippingAddressId\": \"$ADR\"}"
problem 409
check "b.detail.includes('no items')"
pass "draft orders: create (201), add 2 × KB-01 and a WC-06, remove it (again: 404), place with a saved address (202; the key replays the saga id), confirmed by the saga; bob 404; a placed order no longer changes (409); an empty draft cannot be placed (409)"

# ---- every answer against docs/openapi.yaml ----
node "$SRC/tests/integration/api_validate.js" "$SRC/docs/openapi.yaml" "$EX" || fail "answers do not match docs/openapi.yaml"
pass "all $N answers match docs/openapi.yaml"

# ---- graceful stop ----
kill -TERM "$SPID"
rc=0
wait "$SPID" || rc=$?
SPID=""
[ "$rc" = 0 ] || fail "agora run exited with $rc on SIGTERM"
if grep -q 'ERROR: AddressSanitizer\|runtime error:' "$TMP/server.log"; then fail "sanitizer report in the server log"; fi
pass "agora run stops cleanly on SIGTERM"
