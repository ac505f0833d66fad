#!/usr/bin/env bash
# Integration: the whole API tour (api_tour.sh, unchanged) with the read models on
# PostgreSQL: a throwaway server (tests/lib/pgtmp.sh) and AGORA_READMODELS pointing
# `agora run` at it, so every query of the tour is answered from PostgreSQL and
# every answer is checked against docs/openapi.yaml as on SQLite. Skipped (77)
# where PostgreSQL is not installed.
# Env: AGORA_BIN, AG_SOURCE_DIR, AG_BUILD_DIR (CTest).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib/pgtmp.sh"
trap pgtmp_stop EXIT
trap 'exit 130' INT TERM
pgtmp_start || exit $?
AGORA_READMODELS=$AGORA_TEST_PG_URI bash "$here/api_tour.sh" || exit 1
n=$(psql "$AGORA_TEST_PG_URI" -Atc "SELECT count(*) FROM rm_orders.orders WHERE status='confirmed'") ||
    { echo "FAIL: psql"; exit 1; }
[ "$n" -ge 1 ] || { echo "FAIL: no confirmed order in rm_orders.orders"; exit 1; }
echo "ok - the tour's orders are rows of PostgreSQL's rm_orders.orders ($n confirmed)"
