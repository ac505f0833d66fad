#!/usr/bin/env bash
# The operator console (issue 18): its files, its one-time sign-in, its new admin
# routes, and the pages in headless Chromium against `agora run` with orders flowing.
# 0. console/live.js's SSE reader and polling fallback (console_live.mjs, node only).
# 1. HTTP: GET /console answers the page with a strict CSP and a strong ETag
#    (If-None-Match → 304), an unknown file 404; the scripts are served as
#    JavaScript. A code from `agora console-url` trades for an admin token once
#    (the second POST is 401, as is a made-up code); the token reads /admin/stats.
#    (Expiry is proven with an injected clock in tests/unit/gateway/test_console.c.)
# 2. The new admin routes: /admin/stats, /admin/log, /admin/streams and
#    /admin/streams/{name} answer an admin, 401 without a token, 403 a customer;
#    bad parameters are 400.
# 3. `agora load` places orders; tests/integration/console.mjs drives Chromium
#    through every page (screenshots under $AG_BUILD_DIR/console-screenshots).
# 4. A projection rebuild (shipments) runs in the background and its progress
#    shows in /admin/projections until it has caught up.
# Skips (77) when chromium or playwright-core is missing — but not in CI (CI set),
# where that fails. Env: AGORA_BIN, AG_SOURCE_DIR, AG_BUILD_DIR (CTest).
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
SRC="${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
OUT="${AG_BUILD_DIR:-/tmp}/console-screenshots"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
# 0. live() in console/live.js against a small SSE server: needs node only
if command -v node >/dev/null; then
    node --no-warnings "$SRC/tests/integration/console_live.mjs" "$SRC" || { echo "FAIL: live()"; exit 1; }
fi
if [ ! -x "$CHROMIUM" ] || [ ! -d "$SRC/node_modules/playwright-core" ] || ! command -v node >/dev/null; then
    if [ -n "${CI:-}" ]; then
        echo "FAIL: the console's browser test needs chromium ($CHROMIUM) and playwright-core (npm ci) in CI"
        exit 1
    fi
    echo "SKIP: chromium or node_modules/playwright-core missing (apt-get install chromium; npm ci)"
    exit 77
fi
TMP=$(mktemp -d)
SPID=""
LPID=""
cleanup() {
    [ -n "$LPID" ] && kill "$LPID" 2>/dev/null
    [ -n "$SPID" ] && kill "$SPID" 2>/dev/null
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$TMP/server.log" ] && tail -20 "$TMP/server.log"; exit 1; }
# shellcheck source=run_lib.bash
source "$(dirname "$0")/run_lib.bash"
D="$TMP/data"

agora_start "$D" ready
LISTEN=${A#http://}
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

# ---- 1. files and the one-time sign-in ----
curl -s -D "$TMP/h" -o "$TMP/index.html" "$A/console" || fail "GET /console"
grep -qi '^content-security-policy: default-src .none.; script-src .self.' "$TMP/h" || fail "no strict CSP: $(cat "$TMP/h")"
grep -qi '^content-type: text/html' "$TMP/h" || fail "not HTML"
grep -q '/console/app.js' "$TMP/index.html" || fail "not the console page"
ETAG=$(grep -i '^etag:' "$TMP/h" | cut -d' ' -f2 | tr -d '\r')
[[ $ETAG =~ ^\"[0-9a-f]{16}\"$ ]] || fail "no strong ETag: $ETAG"
[ "$(code -H "If-None-Match: $ETAG" "$A/console")" = 304 ] || fail "If-None-Match must answer 304"
[ "$(code "$A/console/nope.js")" = 404 ] || fail "an unknown file must be 404"
curl -s -D "$TMP/h" -o /dev/null "$A/console/app.js"
grep -qi '^content-type: text/javascript' "$TMP/h" || fail "app.js is not JavaScript"
echo "ok - /console: page, CSP, ETag, 304, 404"

LINK=$("$BIN" console-url --data "$D" --listen "$LISTEN") || fail "agora console-url"
[[ $LINK =~ ^http://127.0.0.1:[0-9]+/console#code=[0-9a-f]{64}$ ]] || fail "bad link: $LINK"
C=${LINK##*#code=}
[ "$(code -X POST -d '{"code":"'"$(printf '%064d' 7)"'"}' "$A/admin/console/session")" = 401 ] || fail "a made-up code must be 401"
curl -s -o "$TMP/s.json" -w '%{http_code}' -X POST -d "{\"code\":\"$C\"}" "$A/admin/console/session" >"$TMP/st"
[ "$(cat "$TMP/st")" = 200 ] || fail "the code was refused: $(cat "$TMP/s.json")"
TOK=$(field 'd["token"]' <"$TMP/s.json")
[ "$(field 'd["sub"]' <"$TMP/s.json")" = console ] || fail "sub"
[ "$(code -X POST -d "{\"code\":\"$C\"}" "$A/admin/console/session")" = 401 ] || fail "a used code must be 401"
[ "$(code -H "Authorization: Bearer $TOK" "$A/admin/stats")" = 200 ] || fail "the console's token must read /admin/stats"
grep -q "$C" "$TMP/server.log" && fail "the code appears in the server's log"
ls "$D/console-codes" | grep -q "$C" && fail "the code is stored as itself"
echo "ok - console-url: a code works once, for an admin token"

# ---- 2. the new admin routes ----
ADMIN=$("$BIN" token --data "$D" --sub ops --role admin)
CUST=$("$BIN" token --data "$D" --sub someone --role customer)
for r in /admin/stats "/admin/log?limit=5" "/admin/streams?prefix=product-&limit=5"; do
    [ "$(code "$A$r")" = 401 ] || fail "$r anonymous"
    [ "$(code -H "Authorization: Bearer $CUST" "$A$r")" = 403 ] || fail "$r customer"
    [ "$(code -H "Authorization: Bearer $ADMIN" "$A$r")" = 200 ] || fail "$r admin"
done
[ "$(code -H "Authorization: Bearer $ADMIN" "$A/admin/log?limit=0")" = 400 ] || fail "limit=0 must be 400"
[ "$(code -H "Authorization: Bearer $ADMIN" "$A/admin/log?after=x")" = 400 ] || fail "after=x must be 400"
curl -s -H "Authorization: Bearer $ADMIN" "$A/admin/streams?prefix=product-&limit=2" >"$TMP/st.json"
P=$(field 'd["items"][0]["name"]' <"$TMP/st.json")
[[ $P == product-* ]] || fail "no product stream listed: $(cat "$TMP/st.json")"
curl -s -H "Authorization: Bearer $ADMIN" "$A/admin/streams/$P?from=0&limit=1" >"$TMP/ev.json"
[ "$(field 'd["items"][0]["type"]' <"$TMP/ev.json")" = ProductAdded ] || fail "stream read: $(cat "$TMP/ev.json")"
[ "$(code -H "Authorization: Bearer $ADMIN" "$A/admin/streams/no-such-stream")" = 404 ] || fail "missing stream 404"
curl -s -H "Authorization: Bearer $ADMIN" "$A/admin/log?after=0&limit=3" >"$TMP/log.json"
[ "$(field 'd["items"][0]["position"]' <"$TMP/log.json")" = 1 ] || fail "log after=0 starts at 1: $(cat "$TMP/log.json")"
echo "ok - /admin/stats, /admin/log, /admin/streams: access and answers"

# ---- 3. orders flowing, the browser ----
# (no --token: load mints its own admin token from the data directory's secret)
AGORA_DATA="$D" "$BIN" load --target "$A" --rate 15 --duration 600 --customers 8 --poor-ratio 0.25 --quiet \
    >"$TMP/load.log" 2>&1 &
LPID=$!
LINK2=$("$BIN" console-url --data "$D" --listen "$LISTEN")
node "$SRC/tests/integration/console.mjs" "$LINK2" "$A" "$ADMIN" "$OUT" || fail "the console in Chromium"
curl -s -H "Authorization: Bearer $ADMIN" "$A/admin/stats" >"$TMP/stats.json"
python3 - "$TMP/stats.json" <<'PY' || fail "stats: $(cat "$TMP/stats.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["orders"]["placed"] > 0 and s["sagas"]["started"] > 0, s
assert s["confirmLatencyMs"]["samples"] > 0 and s["confirmLatencyMs"]["p50"] > 0, s
assert {p["name"] for p in s["projections"]} >= {"orders", "sagas", "saga_starter"}, s
PY
echo "ok - /admin/stats with orders flowing"

# ---- 4. a rebuild in the background ----
curl -s -o "$TMP/rb.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $ADMIN" \
    "$A/admin/projections/shipments/rebuild" >"$TMP/st"
[ "$(cat "$TMP/st")" = 202 ] || fail "rebuild: $(cat "$TMP/rb.json")"
[ "$(code -X POST -H "Authorization: Bearer $CUST" "$A/admin/projections/shipments/rebuild")" = 403 ] || fail "rebuild customer"
[ "$(code -X POST -H "Authorization: Bearer $ADMIN" "$A/admin/projections/saga_starter/rebuild")" = 409 ] || fail "saga_starter rebuild"
[ "$(code -X POST -H "Authorization: Bearer $ADMIN" "$A/admin/projections/nope/rebuild")" = 404 ] || fail "unknown projection"
done_=""
for _ in $(seq 300); do
    st=$(curl -s -H "Authorization: Bearer $ADMIN" "$A/admin/projections" |
        field '[p["status"] for p in d["items"] if p["name"]=="shipments"][0]')
    [ "$st" = running ] && { done_=1; break; }
    [ "$st" = rebuilding ] || fail "shipments is $st during its rebuild"
    sleep 0.1
done
[ -n "$done_" ] || fail "the rebuild of shipments did not finish"
echo "ok - a projection rebuilds in the background"
kill "$LPID"; wait "$LPID" 2>/dev/null || true; LPID=""
ls "$OUT"/console-*.png >/dev/null || fail "no screenshots"
echo "screenshots: $OUT"
