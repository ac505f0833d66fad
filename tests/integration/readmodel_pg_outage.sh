#!/usr/bin/env bash
# Integration: read models on PostgreSQL that is not there at start, and that is
# lost and comes back mid-run (--readmodels postgresql://, the log store).
#
#   1. PostgreSQL down, AGORA_READMODELS_WAIT=1: `agora run` fails with a clear
#      error naming the database;
#   2. PostgreSQL down at start: agora logs readmodels.unreachable and retries with
#      backoff; once the server starts, it serves;
#   3. server lost mid-run: /health/ready is 503 with the "projections" check down,
#      a read answers 503 problem+json with Retry-After; writes still land in the
#      log (the store is the log here);
#   4. server back: ready again without a restart of agora, and the restocks made
#      during the outage are projected exactly once (on_hand counts each one once);
#   5. `agora projections rebuild stock --readmodels postgresql://...` drops the
#      schema and makes it again from the log.
# Skipped (77) where PostgreSQL is not installed. Env: AGORA_BIN (CTest).
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib/pgtmp.sh"
TMP=$(mktemp -d)
SPID=""
cleanup() {
    if [ -n "$SPID" ]; then kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
    pgtmp_stop
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "FAIL: $*"; [ -f "$TMP/server.log" ] && tail -20 "$TMP/server.log"; exit 1; }
pass() { echo "ok - $*"; }
pgtmp_start || exit $?
J='Content-Type: application/json'
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
code() { curl -s -o "$TMP/body" -D "$TMP/hdr" -w '%{http_code}' --max-time 10 "$@"; }
# wait_for CMD...: until CMD succeeds, at most 30 s
wait_for() { for _ in $(seq 300); do "$@" && return 0; sleep 0.1; done; return 1; }

# ---- 1. unreachable, and not waited for: a clear error ----
pgtmp_kill
set +e
AGORA_READMODELS_WAIT=1 "$BIN" run --data "$TMP/d1" --listen 127.0.0.1:0 --no-gateway \
    --readmodels "$AGORA_TEST_PG_URI" >"$TMP/fail.log" 2>&1
rc=$?
set -e
[ $rc -ne 0 ] || fail "agora run started without its read models' database"
grep -q "agora run: .*did not answer in 1 s: .*schema rm_" "$TMP/fail.log" ||
    { cat "$TMP/fail.log"; fail "no clear error"; }
pass "read models' database down, AGORA_READMODELS_WAIT=1: exit $rc, $(grep -o 'did not answer in 1 s' "$TMP/fail.log")"

# ---- 2. unreachable at start: retried until it answers ----
"$BIN" run --data "$TMP/data" --listen 127.0.0.1:0 --no-gateway --readmodels "$AGORA_TEST_PG_URI" \
    >"$TMP/server.log" 2>&1 &
SPID=$!
wait_for grep -q '"readmodels.unreachable"' "$TMP/server.log" || fail "no readmodels.unreachable"
grep -q 'serving http' "$TMP/server.log" && fail "served without its read models"
pgtmp_restart
A=""
for _ in $(seq 300); do
    A=$(grep -o 'serving http://127.0.0.1:[0-9]*' "$TMP/server.log" | head -1 | sed 's/serving //') || true
    [ -n "$A" ] && break
    kill -0 "$SPID" 2>/dev/null || fail "agora run exited"
    sleep 0.1
done
[ -n "$A" ] || fail "agora run did not start once PostgreSQL answered"
ready() { [ "$(code "$A/health/ready")" = 200 ]; }
wait_for ready || fail "not ready"
pass "down at start: $(grep -c '"readmodels.unreachable"' "$TMP/server.log") retries logged, then served"

# a product and its stock, through the read models
PID=$(curl -sf "$A/api/v1/products?limit=1" | field "d['items'][0]['id']") || fail "products"
stock() { curl -sf "$A/api/v1/inventory/$PID" | field "d['onHand']"; }
ON0=$(stock) || fail "stock"

# ---- 3. lost mid-run ----
pgtmp_kill
down() { [ "$(code "$A/health/ready")" = 503 ]; }
wait_for down || fail "/health/ready stayed up with PostgreSQL gone"
field "[c for c in d['checks'] if c['name']=='projections'][0]['status']" <"$TMP/body" |
    grep -qx down || fail "the projections check is not the one down: $(cat "$TMP/body")"
s=$(code "$A/api/v1/inventory/$PID")
[ "$s" = 503 ] || fail "a read during the outage answered $s"
grep -qi '^content-type: application/problem+json' "$TMP/hdr" || fail "not problem+json"
grep -qi '^retry-after: [0-9]' "$TMP/hdr" || fail "no Retry-After"
for i in 1 2 3; do
    s=$(code -X POST "$A/api/v1/inventory/$PID/restock" -H "$J" --data-binary '{"quantity": 7}')
    [ "$s" = 200 ] || fail "restock $i during the outage answered $s: $(cat "$TMP/body")"
done
pass "PostgreSQL lost: ready 503 (projections), a read 503 problem+json + Retry-After, 3 restocks accepted"

# ---- 4. back: resumes by itself, each event projected once ----
pgtmp_restart
wait_for ready || fail "not ready again after PostgreSQL came back"
want=$((ON0 + 21))
caught_up() { [ "$(stock)" = "$want" ]; }
wait_for caught_up || fail "on hand $(stock), want $want"
sleep 1.5 # a second idle ping and page: still exactly once
[ "$(stock)" = "$want" ] || fail "on hand moved on to $(stock), want $want"
pass "PostgreSQL back: ready without restarting agora; on hand $ON0 + 3 × 7 = $want (each restock once)"
kill -TERM "$SPID"
wait "$SPID" || fail "agora run exited $? on SIGTERM"
SPID=""
pass "stopped cleanly"

# ---- 5. rebuild: the schema is dropped and made again from the log ----
psql "$AGORA_TEST_PG_URI" -qc "UPDATE rm_stock.stock SET on_hand = -1" || fail "psql"
"$BIN" projections rebuild stock --data "$TMP/data" --readmodels "$AGORA_TEST_PG_URI" 2>"$TMP/rebuild.log" ||
    { cat "$TMP/rebuild.log"; fail "agora projections rebuild stock"; }
got=$(psql "$AGORA_TEST_PG_URI" -Atc "SELECT on_hand FROM rm_stock.stock WHERE product_id='$PID'")
[ "$got" = "$want" ] || fail "rebuilt on hand $got, want $want"
pass "agora projections rebuild stock --readmodels postgresql://: on hand $got again"
