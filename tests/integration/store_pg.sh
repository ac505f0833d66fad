#!/usr/bin/env bash
# The PostgreSQL store from the command line, on a throwaway server (tests/lib/pgtmp.sh):
# `agora store migrate` brings a fresh database to the schema version and is idempotent;
# appends and reads work through --store URI; with the server down an append fails at
# once saying it is unreachable (nothing half-written), and after a restart everything
# acknowledged before is still there and appends work again. Then `agora run --store
# postgresql://…`: ready, PostgreSQL stopped under it → /health/ready 503, restarted →
# ready again by itself. Skips (77) without PostgreSQL.
set -uo pipefail
src=${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${AGORA_BIN:?AGORA_BIN not set}
source "$src/tests/lib/pgtmp.sh"
spid=""
work=$(mktemp -d)
cleanup() {
    [[ -n $spid ]] && { kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null; }
    pgtmp_stop
    rm -rf "$work"
}
trap cleanup EXIT
pgtmp_start || exit $?
uri="$AGORA_TEST_PG_URI&schema=cli&pool_size=2"
fail() { echo "FAIL: $*" >&2; exit 1; }

out=$("$bin" store migrate --store "$uri") || fail "migrate: $out"
[[ $out == '{"migrated":true,"from":0,"to":5}' ]] || fail "first migrate said $out"
out=$("$bin" store migrate --store "$uri") || fail "migrate again"
[[ $out == '{"migrated":false,"from":5,"to":5}' ]] || fail "second migrate said $out"

"$bin" store append order-1 --store "$uri" --type OrderPlaced --payload '{"total":5}' \
    --expected-version no-stream >/dev/null || fail "append"
"$bin" store append order-1 --store "$uri" --type OrderPaid --payload '{}' \
    --expected-version 0 >/dev/null || fail "append 2"
"$bin" store append order-1 --store "$uri" --type OrderPaid --payload '{}' \
    --expected-version 0 >/dev/null 2>&1
[[ $? -eq 3 ]] || fail "a wrong expected version exits 3"
out=$("$bin" store read order-1 --store "$uri") || fail "read"
[[ $(wc -l <<<"$out") -eq 2 && $out == *'"position":1,'*'"type":"OrderPaid"'* ]] || fail "read: $out"

pgtmp_kill
err=$("$bin" store append order-1 --store "$uri" --type X --payload '{}' 2>&1 >/dev/null)
[[ $? -eq 1 && $err == *"postgresql unreachable"* ]] || fail "down: $err"

pgtmp_restart || fail "restart"
"$bin" store append order-1 --store "$uri" --type OrderShipped --payload '{}' \
    --expected-version 1 >/dev/null || fail "append after restart"
out=$("$bin" store all --store "$uri") || fail "all"
[[ $(wc -l <<<"$out") -eq 3 && $out == *'"position":2,'*'"OrderShipped"'* ]] || fail "all: $out"
out=$("$bin" store stats --store "$uri")
[[ $out == '{"store":"uri","events":3,"streams":1,'* ]] || fail "stats: $out"

# the platform on PostgreSQL: not there at start (waited for, with backoff), ready,
# down with the server, back by itself
pgtmp_kill
AGORA_DB_WAIT=60 "$bin" run --data "$work/data" --store "$AGORA_TEST_PG_URI&schema=run" \
    --listen 127.0.0.1:0 >"$work/run.log" 2>&1 &
spid=$!
for _ in $(seq 100); do grep -q 'store.unreachable' "$work/run.log" && break; sleep 0.1; done
grep -q 'store.unreachable' "$work/run.log" || { cat "$work/run.log" >&2; fail "no store.unreachable"; }
kill -0 "$spid" 2>/dev/null || fail "agora run gave up on a store that is not there yet"
pgtmp_restart || fail "restart for agora run"
base=""
for _ in $(seq 600); do
    base=$(grep -o 'serving http://[0-9.]*:[0-9]*' "$work/run.log" | head -1 | sed 's/^serving //')
    [[ -n $base ]] && break
    kill -0 "$spid" 2>/dev/null || { cat "$work/run.log" >&2; fail "agora run exited"; }
    sleep 0.1
done
[[ -n $base ]] || fail "agora run did not start"
ready() { curl -s -o /dev/null -w '%{http_code}' "$base/health/ready"; }
wait_ready() { # CODE: wait up to 20 s for /health/ready to answer CODE
    for _ in $(seq 200); do [[ $(ready) == "$1" ]] && return 0; sleep 0.1; done
    fail "/health/ready is $(ready), wanted $1"
}
wait_ready 200
[[ $(curl -s "$base/api/v1/products") == *'"sku":"KB-01"'* ]] || fail "catalog on postgresql"
pgtmp_kill
wait_ready 503
pgtmp_restart || fail "restart under agora run"
wait_ready 200
echo "store_pg: ok"
