#!/usr/bin/env bash
# Integration: the whole API tour (api_tour.sh, unchanged) on a 2-shard store of
# PostgreSQL members (issue 15): AGORA_STORE=shards:<pg>&schema=s0,<pg>&schema=s1 on a
# throwaway server (tests/lib/pgtmp.sh), the read models on it too. Every write goes
# through the shard router to one of the two PostgreSQL event stores, saga steps
# that touch both commit as cross-shard units, every projection reads both shards'
# $all. Then both schemas hold events and every order's streams sit in one of them.
# Skipped (77) where PostgreSQL is not installed.
# Env: AGORA_BIN, AG_SOURCE_DIR, AG_BUILD_DIR (CTest).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib/pgtmp.sh"
trap pgtmp_stop EXIT
trap 'exit 130' INT TERM
pgtmp_start || exit $?
U=$AGORA_TEST_PG_URI
AGORA_STORE="shards:$U&schema=s0,$U&schema=s1" AGORA_READMODELS=$U \
    bash "$here/api_tour.sh" || exit 1
fail() { echo "FAIL: $*" >&2; exit 1; }
for k in 0 1; do
    n=$(psql "$U" -Atc "SELECT count(*) FROM s$k.events") || fail "psql"
    [ "$n" -gt 10 ] || fail "shard s$k holds $n events"
    echo "ok - PostgreSQL shard s$k holds $n events"
done
both=$(psql "$U" -Atc "SELECT count(*) FROM
    (SELECT substr(stream_name, strpos(stream_name, '-') + 1) AS id FROM s0.streams
      WHERE stream_name ~ '^(order|payment|reservation|shipment)-') a JOIN
    (SELECT substr(stream_name, strpos(stream_name, '-') + 1) AS id FROM s1.streams
      WHERE stream_name ~ '^(order|payment|reservation|shipment)-') b USING (id)") || fail "psql"
[ "$both" = 0 ] || fail "$both order ids have streams on both shards"
echo "ok - every order's streams sit on one PostgreSQL shard"
