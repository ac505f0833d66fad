#!/usr/bin/env bash
# The PostgreSQL store from the command line, on a throwaway server (tests/lib/pgtmp.sh):
# `agora store migrate` brings a fresh database to the schema version and is idempotent;
# appends and reads work through --store URI; with the server down an append fails at
# once saying it is unreachable (nothing half-written), and after a restart everything
# acknowledged before is still there and appends work again. Skips (77) without PostgreSQL.
set -uo pipefail
src=${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${AGORA_BIN:?AGORA_BIN not set}
source "$src/tests/lib/pgtmp.sh"
trap pgtmp_stop EXIT
pgtmp_start || exit $?
uri="$AGORA_TEST_PG_URI&schema=cli&pool_size=2"
fail() { echo "FAIL: $*" >&2; exit 1; }

out=$("$bin" store migrate --store "$uri") || fail "migrate: $out"
[[ $out == '{"migrated":true,"from":0,"to":1}' ]] || fail "first migrate said $out"
out=$("$bin" store migrate --store "$uri") || fail "migrate again"
[[ $out == '{"migrated":false,"from":1,"to":1}' ]] || fail "second migrate said $out"

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
echo "store_pg: ok"
