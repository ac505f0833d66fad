#!/usr/bin/env bash
# Integration: the whole API tour (api_tour.sh, unchanged) with the event store AND
# the read models on PostgreSQL: a throwaway server (tests/lib/pgtmp.sh), AGORA_STORE
# (schema "tour") and AGORA_READMODELS pointing `agora run` at it, so every write of
# the tour is an append to PostgreSQL and every query is answered from it; every
# answer is checked against docs/openapi.yaml as on the log and SQLite. Skipped (77)
# where PostgreSQL is not installed.
# Env: AGORA_BIN, AG_SOURCE_DIR, AG_BUILD_DIR (CTest).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib/pgtmp.sh"
trap pgtmp_stop EXIT
trap 'exit 130' INT TERM
pgtmp_start || exit $?
AGORA_STORE="$AGORA_TEST_PG_URI&schema=tour" AGORA_READMODELS=$AGORA_TEST_PG_URI \
    bash "$here/api_tour.sh" || exit 1
n=$(psql "$AGORA_TEST_PG_URI" -Atc "SELECT count(*) FROM rm_orders.orders WHERE status='confirmed'") ||
    { echo "FAIL: psql"; exit 1; }
[ "$n" -ge 1 ] || { echo "FAIL: no confirmed order in rm_orders.orders"; exit 1; }
echo "ok - the tour's orders are rows of PostgreSQL's rm_orders.orders ($n confirmed)"
e=$(psql "$AGORA_TEST_PG_URI" -Atc "SELECT count(*) FROM tour.events e JOIN tour.streams s
    USING (stream_id) WHERE s.stream_name LIKE 'order-%'") || { echo "FAIL: psql"; exit 1; }
p=$(psql "$AGORA_TEST_PG_URI" -Atc "SELECT count(*) FROM tour.events e WHERE NOT EXISTS
    (SELECT 1 FROM tour.positions q WHERE q.global_position = e.global_position)")
[ "$e" -ge 1 ] && [ "$p" = 0 ] || { echo "FAIL: order events in tour.events: $e, unordered: $p"; exit 1; }
echo "ok - the tour's events are rows of PostgreSQL's tour.events ($e order events, all in \$all)"
