#!/usr/bin/env bash
# Integration: regression tests for the attacks agora suffered (ARCHITECTURE.md §8).
# Each attack is replayed against a fresh `agora run` and must be refused with the
# access model's status AND leave nothing changed (alice's balance and transactions,
# the stock, her order's status), settled (no saga running, read models caught up):
#   the /platform/ pass-through (gone: 404); anonymous writes (401); bob ordering on,
#   depositing into, cancelling for alice (404); anonymous reads of private data (401);
#   the admin views for anonymous (401) and customers (403); a second TCP listener and
#   a world-usable services socket; a customer making itself premium (403); a reused
#   Idempotency-Key across principals; an order for a customerId that names an email
#   claim stream; NUL in an id (400); loose data-directory modes; a token with a
#   lifetime over 24 h (401).
# Every check runs (a failure does not stop the others): `ok - ...` / `not ok - ...`
# per check, then `N passed, M failed`; exit 1 on any failure.
#
# Env: AGORA_BIN, AG_SOURCE_DIR, AG_BUILD_DIR (from CTest).
# shellcheck source=tests/integration/authz_lib.bash
source "$(dirname "${BASH_SOURCE[0]}")/authz_lib.bash"
set +e # every check runs; failures are counted, not fatal

PASSED=0 FAILED=0 FAILS=()
ok() { PASSED=$((PASSED + 1)) && echo "ok - $*"; }
bad() { FAILED=$((FAILED + 1)) && FAILS+=("$1 — $2") && echo "not ok - $1 — $2"; }

# req METHOD PATH TOKEN [curl args]: sets ST (status) and B (body file), H (headers)
B="$TMP/body" H="$TMP/hdr"
req() {
    local m=$1 p=$2 t=$3
    shift 3
    local auth=()
    [ -n "$t" ] && auth=(-H "Authorization: Bearer $t")
    ST=$(curl -sS --path-as-is --max-time 15 -X "$m" -D "$H" -o "$B" -w '%{http_code}' "${auth[@]}" "$@" "$BASE$p") || ST=000
}
post() { local p=$1 t=$2 d=$3; shift 3; req POST "$p" "$t" -H 'Content-Type: application/json' --data-binary "$d" "$@"; }
# j EXPR: a JS expression on the last body (b); prints "?" when the body is not JSON
j() {
    node -e 'let b; try { b=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); } catch { console.log("?"); process.exit(0); }
        try { const v=eval(process.argv[2]); console.log(typeof v==="object"?JSON.stringify(v):String(v)); } catch { console.log("?"); }' "$B" "$1"
}
hdr() { awk -v n="$(echo "$1" | tr 'A-Z' 'a-z')" 'BEGIN{FS=": "} tolower($1)==n{sub(/^[^:]*: /,""); sub(/\r$/,""); print}' "$H"; }
snip() { head -c 200 "$B" | tr '\n\r' '  '; }
in_list() { local s=$1 w; shift; for w in "$@"; do [ "$s" = "$w" ] && return 0; done; return 1; }
# expect NAME STATUS...: the last status is one of these (returns 1 if not)
expect() {
    local name=$1
    shift
    if in_list "$ST" "$@"; then ok "$name: $ST"; else bad "$name: $ST" "expected $(echo "$@" | tr ' ' '|'): $(snip)" && return 1; fi
}

# settle: no saga running and every read model caught up (twice in a row), so a
# change seen after a refused request is that request's
settle() {
    local quiet=0
    for _ in $(seq 100); do
        req GET '/admin/sagas?status=running&limit=1' "$ADMIN"
        local a=$ST n
        n=$(j 'b.items.length')
        req GET /admin/projections "$ADMIN"
        if [ "$a" = 200 ] && [ "$n" = 0 ] && [ "$ST" = 200 ] && [ "$(j 'b.items.every(x=>x.lagEvents===0)')" = true ]; then
            quiet=$((quiet + 1))
            [ $quiet -ge 2 ] && return 0
        else
            quiet=0
        fi
        sleep 0.05
    done
}
# snapshot: what no refused request may change
snapshot() {
    settle
    local s=""
    req GET "/api/v1/accounts/$AID_A" "$ADMIN"
    s+="alice's balance/transactions $(j "b.balance.amount+'/'+b.transactionCount"); "
    req GET "/api/v1/inventory/$P" ""
    s+="stock onHand/reserved $(j "b.onHand+'/'+b.reserved"); "
    req GET "/api/v1/orders/$O1" "$ADMIN"
    s+="alice's order $(j b.status); "
    req GET "/api/v1/accounts/$AID_B" "$ADMIN"
    s+="bob's balance $(j b.balance.amount)"
    echo "$s"
}
# attack NAME STATUS... -- METHOD PATH TOKEN [curl args]: the request is refused with
# one of the statuses and changes nothing
attack() {
    local name=$1
    shift
    local want=()
    while [ "$1" != -- ]; do want+=("$1") && shift; done
    shift
    local before after st body
    before=$(snapshot)
    req "$@"
    st=$ST
    body=$(snip)
    after=$(snapshot)
    echo "$body" >"$B"
    ST=$st
    if ! in_list "$st" "${want[@]}"; then
        local extra=""
        [ "$before" = "$after" ] || extra="; and changed: $before → $after"
        bad "$name: $st" "expected $(echo "${want[@]}" | tr ' ' '|'): $body$extra"
    elif [ "$before" != "$after" ]; then
        bad "$name: $st" "refused but changed: $before → $after"
    else
        ok "$name: $st, nothing changed"
    fi
}

authz_node_tools
authz_start
J=(-H 'Content-Type: application/json')
ALICE=$(token attack-alice customer)
BOB=$(token attack-bob customer)
ERIN=$(token attack-erin customer)
ADMIN=$(token attack-admin admin)
ADDR='"shippingAddress": {"street": "1 Main St", "city": "Springfield", "state": "IL", "zipCode": "62701", "country": "US"}'

# ---- fixtures: alice and bob register themselves; alice deposits and orders ----
post /api/v1/customers "$ALICE" '{"email": "alice@attack.example", "name": "Alice Attack"}'
[ "$ST" = 201 ] || fail "alice registers: $ST $(cat "$B")"
read -r CID_A AID_A <<<"$(j "b.id+' '+b.accountId")"
post /api/v1/customers "$BOB" '{"email": "bob@attack.example", "name": "Bob Attack"}'
[ "$ST" = 201 ] || fail "bob registers: $ST $(cat "$B")"
read -r CID_B AID_B <<<"$(j "b.id+' '+b.accountId")"
post "/api/v1/accounts/$AID_A/deposits" "$ALICE" '{"amount": {"amount": 50000, "currency": "USD"}}'
[ "$ST" = 200 ] || fail "alice deposits: $ST $(cat "$B")"
post "/api/v1/accounts/$AID_B/deposits" "$BOB" '{"amount": {"amount": 5000, "currency": "USD"}}'
[ "$ST" = 200 ] || fail "bob deposits: $ST $(cat "$B")"
req GET '/api/v1/products?limit=100' ""
P=$(j "b.items.find(p=>p.sku==='CB-05').id")
[ -n "$P" ] && [ "$P" != undefined ] || fail "no CB-05 in the catalog"
post /api/v1/orders "$ALICE" "{\"customerId\": \"$CID_A\", \"items\": [{\"productId\": \"$P\", \"quantity\": 1}], $ADDR}"
[ "$ST" = 202 ] || fail "alice orders: $ST $(cat "$B")"
O1=$(j b.orderId)
for _ in $(seq 200); do
    req GET "/api/v1/orders/$O1" "$ALICE"
    [ "$ST" = 200 ] && [ "$(j b.status)" = confirmed ] && break
    sleep 0.1
done
[ "$(j b.status)" = confirmed ] || fail "alice's order is not confirmed: $(cat "$B")"
ok "fixtures: alice $CID_A (account $AID_A, order $O1), bob $CID_B"

# ---- the /platform/ pass-through is gone ----
attack "anonymous POST /platform/api/v1/accounts/{alice's}/deposits" 404 -- \
    POST "/platform/api/v1/accounts/$AID_A/deposits" "" "${J[@]}" --data-binary '{"amount": {"amount": 100000, "currency": "USD"}}'
attack "bob POST /platform/api/v1/accounts/{alice's}/deposits" 404 -- \
    POST "/platform/api/v1/accounts/$AID_A/deposits" "$BOB" "${J[@]}" --data-binary '{"amount": {"amount": 100000, "currency": "USD"}}'
req GET /platform/admin/circuit-breakers ""
expect "anonymous GET /platform/admin/circuit-breakers" 404

# ---- anonymous writes ----
attack "anonymous deposit into alice's account" 401 -- \
    POST "/api/v1/accounts/$AID_A/deposits" "" "${J[@]}" --data-binary '{"amount": {"amount": 100000, "currency": "USD"}}'
attack "anonymous restock" 401 -- POST "/api/v1/inventory/$P/restock" "" "${J[@]}" --data-binary '{"quantity": 1000}'
attack "anonymous dispatch of alice's order" 401 -- POST "/api/v1/shipments/$O1/dispatch" "" "${J[@]}" --data-binary '{}'
attack "anonymous cancel of alice's order" 401 -- POST "/api/v1/orders/$O1/cancel" "" "${J[@]}" --data-binary '{}'
attack "anonymous order on alice's account" 401 -- POST /api/v1/orders "" "${J[@]}" \
    --data-binary "{\"customerId\": \"$CID_A\", \"items\": [{\"productId\": \"$P\", \"quantity\": 1}], $ADDR}"
attack "anonymous registration" 401 -- POST /api/v1/customers "" "${J[@]}" --data-binary '{"email": "anon@attack.example", "name": "Anon"}'
post /api/v1/customers "$ADMIN" '{"email": "anon@attack.example", "name": "Anon", "sub": "attack-anon"}'
expect "the anonymous registration registered nothing (the admin can take its email)" 201

# ---- bob on alice's resources ----
attack "bob orders with customerId=alice" 404 422 -- POST /api/v1/orders "$BOB" "${J[@]}" \
    --data-binary "{\"customerId\": \"$CID_A\", \"items\": [{\"productId\": \"$P\", \"quantity\": 1}], $ADDR}"
attack "bob deposits into alice's account" 404 -- \
    POST "/api/v1/accounts/$AID_A/deposits" "$BOB" "${J[@]}" --data-binary '{"amount": {"amount": 100, "currency": "USD"}}'
attack "bob cancels alice's order" 404 -- POST "/api/v1/orders/$O1/cancel" "$BOB" "${J[@]}" --data-binary '{}'

# ---- anonymous reads of private data ----
for p in /api/v1/orders /api/v1/accounts "/api/v1/customers/$CID_A" "/api/v1/shipments/$O1" \
    "/api/v1/orders/$O1" "/api/v1/accounts/$AID_A"; do
    req GET "$p" ""
    expect "anonymous GET $p" 401 && { [ "$(hdr WWW-Authenticate | cut -c1-6)" = Bearer ] || bad "anonymous GET $p" "no WWW-Authenticate: Bearer"; }
done

# ---- the admin views ----
for p in /admin/config /admin/sagas /admin/upstreams /metrics /admin/projections /admin/audit \
    /admin/circuit-breakers /admin/saga-breakers; do
    req GET "$p" ""
    expect "anonymous GET $p" 401
    req GET "$p" "$ALICE"
    expect "customer GET $p" 403
done

# ---- one way in: the gateway is the only TCP listener; the services' socket is private ----
LISTEN=$(ss -Hltnp 2>/dev/null | grep "pid=$SPID," | awk '{print $4}' | sort -u)
if [ "$LISTEN" = "${BASE#http://}" ]; then
    ok "agora listens on one TCP address, the gateway's ($LISTEN)"
else
    bad "agora's TCP listeners" "expected only ${BASE#http://}, found: $(echo "$LISTEN" | tr '\n' ' ')"
fi
SOCKS=$(find "$DATA" -type s)
if [ -z "$SOCKS" ]; then
    bad "the services' Unix socket" "no socket under the data directory"
else
    for s in $SOCKS; do
        m=$(stat -c %a "$s")
        if [ "$m" = 600 ]; then ok "socket ${s#"$DATA"/} is 0600"; else bad "socket ${s#"$DATA"/}" "mode $m, not 0600"; fi
    done
fi

# ---- a customer cannot make itself premium ----
post /api/v1/customers "$ERIN" '{"email": "erin@attack.example", "name": "Erin Attack", "tier": "premium"}'
if expect "a customer registers itself premium" 403; then
    [ "$(j "b.errors && b.errors.some(e=>e.pointer==='/tier')")" = true ] || bad "the premium 403" "does not name /tier: $(cat "$B")"
fi
req GET /api/v1/customers/me "$ERIN"
if [ "$ST" = 404 ] || { [ "$ST" = 200 ] && [ "$(j b.tier)" = standard ]; }; then
    ok "erin is not premium (GET /me: $ST $(j b.tier))"
else
    bad "erin after the premium attempt" "GET /me: $ST $(snip)"
fi

# ---- Idempotency-Key is per principal ----
KEY="attack-shared-key-1"
ABODY="{\"customerId\": \"$CID_A\", \"items\": [{\"productId\": \"$P\", \"quantity\": 1}], $ADDR}"
BBODY="{\"customerId\": \"$CID_B\", \"items\": [{\"productId\": \"$P\", \"quantity\": 1}], $ADDR}"
post /api/v1/orders "$ALICE" "$ABODY" -H "Idempotency-Key: $KEY"
expect "alice orders with Idempotency-Key $KEY" 202
OA=$(j b.orderId)
attack "bob replays alice's request (her key, her body)" 404 422 -- POST /api/v1/orders "$BOB" "${J[@]}" \
    -H "Idempotency-Key: $KEY" --data-binary "$ABODY"
grep -q "$OA" "$B" && bad "bob with alice's key" "got alice's order id $OA"
post /api/v1/orders "$BOB" "$BBODY" -H "Idempotency-Key: $KEY"
if expect "bob orders with alice's Idempotency-Key and his own body" 202; then
    OBOB=$(j b.orderId)
    if [ "$OBOB" != "$OA" ] && [ -z "$(hdr Idempotent-Replayed)" ]; then ok "bob gets his own order ($OBOB), not a replay"; else bad "bob's order with alice's key" "replayed or alice's: $OBOB"; fi
    req GET "/api/v1/orders/$OBOB" "$BOB"
    [ "$ST" = 200 ] && [ "$(j b.customerId)" = "$CID_B" ] && ok "bob's order is his" || bad "bob's order $OBOB" "$ST $(snip)"
fi
post /api/v1/orders "$ALICE" "$ABODY" -H "Idempotency-Key: $KEY"
if [ "$ST" = 202 ] && [ "$(j b.orderId)" = "$OA" ] && [ "$(hdr Idempotent-Replayed)" = true ]; then
    ok "alice's retry with her key still replays her own order"
else
    bad "alice's retry with her key" "$ST replayed=$(hdr Idempotent-Replayed) $(snip) (wanted her order $OA)"
fi

# ---- a customerId naming another stream (the email claim customer-email-<hash>) ----
req GET '/admin/audit?actor=attack-alice&limit=100' "$ADMIN"
EMAILID=$(j "(b.items.map(e=>e.stream).find(s=>/^customer-email-[0-9a-f]{16}$/.test(s))||'').replace(/^customer-/,'')")
case "$EMAILID" in email-????????????????) ;; *) EMAILID="email-0123456789abcdef" ;; esac
attack "bob orders with customerId=$EMAILID" 404 422 -- POST /api/v1/orders "$BOB" "${J[@]}" \
    --data-binary "{\"customerId\": \"$EMAILID\", \"items\": [{\"productId\": \"$P\", \"quantity\": 1}], $ADDR}"
attack "alice orders with customerId=$EMAILID" 404 422 -- POST /api/v1/orders "$ALICE" "${J[@]}" \
    --data-binary "{\"customerId\": \"$EMAILID\", \"items\": [{\"productId\": \"$P\", \"quantity\": 1}], $ADDR}"

# ---- control characters in ids ----
attack "alice deposits into {her account}%00junk" 400 -- \
    POST "/api/v1/accounts/$AID_A%00junk/deposits" "$ALICE" "${J[@]}" --data-binary '{"amount": {"amount": 100, "currency": "USD"}}'
attack "the admin deposits into {alice's account}%00junk" 400 -- \
    POST "/api/v1/accounts/$AID_A%00junk/deposits" "$ADMIN" "${J[@]}" --data-binary '{"amount": {"amount": 100, "currency": "USD"}}'
req GET "/api/v1/accounts/$AID_A%00junk" "$ALICE"
expect "GET /api/v1/accounts/{alice's}%00junk" 400
req GET "/api/v1/orders/$O1%0a" "$ALICE"
expect "GET /api/v1/orders/{alice's}%0a" 400

# ---- the data directory ----
m=$(stat -c %a "$DATA")
[ "$m" = 700 ] && ok "the data directory is 0700" || bad "the data directory" "mode $m, not 0700"
LOOSE=$( (find "$DATA" -type f ! -perm 0600; find "$DATA" -mindepth 1 -type d ! -perm 0700) | sed "s|^$DATA/||")
[ -z "$LOOSE" ] && ok "every file under it is 0600, every directory 0700" ||
    bad "files or directories with other modes" "$(echo "$LOOSE" | head -10 | tr '\n' ' ')"

# ---- a token valid for more than 24 hours ----
mint() { # mint LIFETIME_SECONDS: an HS256 token as `agora token` makes them, with this lifetime
    (cd "$SRC" && node -e '
        const jose = require("jose"); const fs = require("fs");
        const secret = fs.readFileSync(process.argv[1], "utf8").trim();
        const now = Math.floor(Date.now() / 1000), life = Number(process.argv[2]);
        new jose.SignJWT({ roles: ["customer"] }).setProtectedHeader({ alg: "HS256", kid: "dev" })
          .setIssuer("agora-dev").setAudience("agora").setSubject("attack-alice")
          .setIssuedAt(now).setNotBefore(now).setExpirationTime(now + life)
          .sign(new TextEncoder().encode(secret)).then(console.log);' "$DATA/jwt-secret" "$1")
}
req GET "/api/v1/accounts/$AID_A" "$(mint 3600)"
expect "a 1 h token minted like agora token's is accepted (control)" 200
req GET "/api/v1/accounts/$AID_A" "$(mint $((25 * 3600)))"
expect "a token with a 25 h lifetime" 401
req GET /api/v1/products "$(mint $((25 * 3600)))"
expect "a token with a 25 h lifetime, on a public route" 401

authz_stop
echo "$PASSED passed, $FAILED failed"
if [ "$FAILED" -gt 0 ]; then
    echo "# failures:"
    for f in "${FAILS[@]}"; do echo "#   $f"; done
    exit 1
fi
