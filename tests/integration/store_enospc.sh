#!/usr/bin/env bash
# Integration: a REAL full disk under `agora run`. The data directory is a small
# tmpfs; a filler file takes almost all of it, and orders are placed until the
# event store cannot write. Then, without a restart:
#   - writes answer 503 application/problem+json with Retry-After and a detail that
#     says why ("the event store cannot write: No space left on device; retrying");
#   - reads keep answering 200; /health/ready is 503 naming the "store" check;
#     /metrics shows agora_store_writable 0 and agora_store_write_failures_total > 0;
#   - the store logs ONE store.write_failed line, not one per request.
# The filler is removed ("space freed"), and:
#   - /health/ready is 200 again and writes succeed, with no restart; one
#     store.write_recovered line is logged;
#   - every acknowledged order (202) is readable and ends confirmed or cancelled
#     (its saga resumed; none stays pending);
#   - after kill -9 and a restart every acknowledged order is still there, same status.
#
# Needs root (mount -t tmpfs); says SKIP and exits 0 when mounting is not permitted.
# Env: AGORA_BIN (from CTest). STORE_ENOSPC_NO_GATEWAY=1 runs `agora run --no-gateway`.
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
[ -x "$BIN" ] || { echo "missing $BIN"; exit 1; }
command -v curl >/dev/null || { echo "FAIL: curl is needed"; exit 1; }
command -v python3 >/dev/null || { echo "FAIL: python3 is needed"; exit 1; }
TMP=$(mktemp -d)
MNT="$TMP/mnt"
DATA="$MNT/data"
LOG="$TMP/server.log"
mkdir -p "$MNT"
SPID=""
MOUNTED=""
cleanup() {
    if [ -n "$SPID" ]; then kill -9 "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
    if [ -n "$MOUNTED" ]; then umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    [ -f "$TMP/last.hdr" ] && { echo "--- last answer" >&2; cat "$TMP/last.hdr" "$TMP/last.body" >&2; echo >&2; }
    echo "--- server log (tail)" >&2
    tail -30 "$LOG.run" >&2 || true
    exit 1
}
pass() { echo "ok - $*"; }

if ! mount -t tmpfs -o size=8m tmpfs "$MNT" 2>"$TMP/mount.err"; then
    echo "SKIP: cannot mount a tmpfs here ($(cat "$TMP/mount.err")); this test needs root"
    exit 0
fi
MOUNTED=1

# ---- helpers ----
# req METHOD PATH [curl args...]: sets ST, and the answer in $TMP/last.hdr/.body
req() {
    local m=$1 p=$2
    shift 2
    local auth=()
    [ -n "${AUTH:-}" ] && auth=(-H "Authorization: Bearer $AUTH")
    ST=$(curl -sS --max-time 20 -X "$m" -D "$TMP/last.hdr" -o "$TMP/last.body" -w '%{http_code}' \
        "${auth[@]}" "$@" "$BASE$p") || fail "curl $m $p"
}
post() { local p=$1 d=$2; shift 2; req POST "$p" -H 'Content-Type: application/json' --data-binary "$d" "$@"; }
hdr() { awk -v n="$(echo "$1" | tr 'A-Z' 'a-z')" 'BEGIN{FS=": "} tolower($1)==n{sub(/^[^:]*: /,""); sub(/\r$/,""); print}' "$TMP/last.hdr"; }
# j EXPR: a Python expression on the last body (b)
j() { python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$TMP/last.body" "$1"; }

start() {
    local extra=()
    [ -n "${STORE_ENOSPC_NO_GATEWAY:-}" ] && extra=(--no-gateway)
    : >"$LOG.run"
    "$BIN" run --data "$DATA" --listen 127.0.0.1:0 "${extra[@]}" >"$LOG.run" 2>&1 &
    SPID=$!
    BASE=""
    for _ in $(seq 600); do
        BASE=$(grep -o 'serving http://[0-9.]*:[0-9]*' "$LOG.run" | head -1 | sed 's/^serving //') || true
        [ -n "$BASE" ] && break
        kill -0 "$SPID" 2>/dev/null || { cat "$LOG.run" >>"$LOG"; fail "agora run exited"; }
        sleep 0.1
    done
    [ -n "$BASE" ] || fail "agora run did not start"
    for _ in $(seq 200); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health/ready")" = 200 ] && return 0
        sleep 0.1
    done
    fail "not ready"
}
stop_hard() {
    kill -9 "$SPID"
    wait "$SPID" 2>/dev/null || true
    SPID=""
    cat "$LOG.run" >>"$LOG"
}
# order_status OID: prints the order's status (or the HTTP status when not 200)
order_status() {
    req GET "/api/v1/orders/$1"
    if [ "$ST" = 200 ]; then j "b['status']"; else echo "http-$ST"; fi
}
# settle OID...: wait until each order is confirmed or cancelled (at most 120 s in all)
settle() {
    local deadline=$((SECONDS + 120)) o s
    for o in "$@"; do
        while :; do
            s=$(order_status "$o")
            case "$s" in confirmed | cancelled) break ;; esac
            [ $SECONDS -lt $deadline ] || fail "order $o is still '$s'"
            sleep 0.2
        done
    done
}

# ---- a running platform with a customer who can pay ----
start
pass "agora run on an 8 MiB tmpfs at $BASE"
AUTH="" ADMIN=""
if [ -z "${STORE_ENOSPC_NO_GATEWAY:-}" ]; then
    AUTH=$("$BIN" token --data "$DATA" --sub enospc --role customer) || fail "agora token"
    ADMIN=$("$BIN" token --data "$DATA" --sub ops --role admin) || fail "agora token (admin)"
fi
post /api/v1/customers '{"email": "full@example.com", "name": "Disk Full"}'
[ "$ST" = 201 ] || fail "register: $ST"
CID=$(j "b['id']") AID=$(j "b['accountId']")
post "/api/v1/accounts/$AID/deposits" '{"amount": {"amount": 900000000, "currency": "USD"}}'
[ "$ST" = 200 ] || fail "deposit: $ST"
AUTH="" req GET "/api/v1/products?limit=100"
[ "$ST" = 200 ] || fail "products: $ST"
PRODUCTS=$(j "' '.join(p['id'] for p in b['items'])")
read -r -a PRODS <<<"$PRODUCTS"
ADDR='"shippingAddress": {"street": "1 Main St", "city": "Springfield", "state": "IL", "zipCode": "62701", "country": "US"}'
ACKED=()
order() { # order N: POST an order; ST is its status; acknowledged ones are remembered
    local prod=${PRODS[$(($1 % ${#PRODS[@]}))]}
    post /api/v1/orders "{\"customerId\": \"$CID\", \"items\": [{\"productId\": \"$prod\", \"quantity\": 1}], $ADDR}"
    if [ "$ST" = 202 ]; then ACKED+=("$(j "b['orderId']")"); fi
}
for i in 1 2 3; do order $i; [ "$ST" = 202 ] || fail "order before the fault: $ST"; done
settle "${ACKED[@]}"
FIRST=${ACKED[0]}
pass "3 orders before the fault, settled"

# ---- fill the disk ----
FREE_KB=$(df -k --output=avail "$MNT" | tail -1 | tr -d ' ')
dd if=/dev/zero of="$MNT/filler" bs=1k count=$((FREE_KB - 192)) status=none 2>/dev/null || true
sync
N=0
while :; do
    N=$((N + 1))
    [ $N -le 2000 ] || fail "the disk never filled (2000 orders placed)"
    order $N
    case "$ST" in
    202) ;;
    503) break ;;
    *) fail "order $N during the fill: $ST" ;;
    esac
done
pass "the disk filled after $((N - 1)) more acknowledged orders; order $N answered 503"

# ---- during the outage ----
# the write that hit the full disk and the ones after it: 503 + Retry-After + why
for k in 1 2 3; do
    [ "$k" = 1 ] || order $((N + k))
    [ "$ST" = 503 ] || fail "write $k during the outage: $ST (want 503)"
    case "$(hdr Content-Type)" in application/problem+json*) ;; *) fail "not problem+json: $(hdr Content-Type)" ;; esac
    RA=$(hdr Retry-After)
    [[ "$RA" =~ ^[0-9]+$ ]] && [ "$RA" -ge 1 ] || fail "Retry-After '$RA'"
    DETAIL=$(j "b['detail']")
    case "$DETAIL" in
    *"the event store cannot write"*"No space left on device"*retrying*) ;;
    *) fail "503 detail does not say why: $DETAIL" ;;
    esac
    [ "$(j "b['status']")" = 503 ] || fail "problem status"
done
post "/api/v1/accounts/$AID/deposits" '{"amount": {"amount": 100, "currency": "USD"}}'
[ "$ST" = 503 ] || fail "a deposit during the outage: $ST"
pass "writes answer 503 problem+json, Retry-After $RA: $DETAIL"

req GET "/api/v1/orders/$FIRST"
[ "$ST" = 200 ] || fail "reading an order during the outage: $ST"
AUTH="" req GET /api/v1/products
[ "$ST" = 200 ] || fail "reading products during the outage: $ST"
pass "reads answer 200 during the outage"

req GET /health/ready
[ "$ST" = 503 ] || fail "/health/ready during the outage: $ST"
[ "$(j "b['status']")" = down ] || fail "ready body"
SC=$(j "[c for c in b['checks'] if c['name']=='store'][0]")
case "$SC" in *"'status': 'down'"*"No space left on device"*) ;; *) fail "store check: $SC" ;; esac
req GET /health/live
[ "$ST" = 200 ] || fail "/health/live during the outage: $ST"
AUTH=$ADMIN req GET /metrics
grep -q '^agora_store_writable 0$' "$TMP/last.body" || fail "agora_store_writable is not 0"
FAILS=$(awk '$1=="agora_store_write_failures_total"{print $2}' "$TMP/last.body")
[ -n "$FAILS" ] && [ "$FAILS" -ge 1 ] || fail "agora_store_write_failures_total '$FAILS'"
pass "/health/ready 503 naming the store: $SC; metrics writable 0, failures $FAILS"

# ---- free space: recovery without a restart ----
rm -f "$MNT/filler"
for _ in $(seq 150); do
    req GET /health/ready
    [ "$ST" = 200 ] && break
    sleep 0.1
done
[ "$ST" = 200 ] || fail "/health/ready after freeing space: $ST"
AUTH=$ADMIN req GET /metrics
grep -q '^agora_store_writable 1$' "$TMP/last.body" || fail "agora_store_writable is not 1"
M=$N
for k in 1 2 3; do
    order $((M + 10 + k))
    [ "$ST" = 202 ] || fail "order after freeing space: $ST"
done
pass "space freed: ready again, writes acknowledged, no restart"

settle "${ACKED[@]}"
CONF=0 CANC=0
declare -A STATUS
for o in "${ACKED[@]}"; do
    s=$(order_status "$o")
    STATUS[$o]=$s
    [ "$s" = confirmed ] && CONF=$((CONF + 1))
    [ "$s" = cancelled ] && CANC=$((CANC + 1))
done
pass "all ${#ACKED[@]} acknowledged orders settled: $CONF confirmed, $CANC cancelled, none pending"

cat "$LOG.run" >"$TMP/now.log"
WF=$(grep -c '"store.write_failed"' "$TMP/now.log" || true)
WR=$(grep -c '"store.write_recovered"' "$TMP/now.log" || true)
[ "$WF" = 1 ] || fail "store.write_failed logged $WF times (want 1)"
[ "$WR" = 1 ] || fail "store.write_recovered logged $WR times (want 1)"
pass "one store.write_failed line, one store.write_recovered line"

# ---- kill -9 and restart: everything acknowledged is still there ----
stop_hard
start
for o in "${ACKED[@]}"; do
    s=$(order_status "$o")
    [ "$s" = "${STATUS[$o]}" ] || fail "after restart order $o is '$s', was '${STATUS[$o]}'"
done
TOTAL=${#ACKED[@]}
order 99999
[ "$ST" = 202 ] || fail "order after restart: $ST"
pass "after kill -9 and restart all $TOTAL acknowledged orders are there, same status"
