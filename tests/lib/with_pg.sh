#!/usr/bin/env bash
# tests/lib/with_pg.sh CMD [ARGS...] — run CMD against a throwaway PostgreSQL
# (tests/lib/pg.sh) with AG_PG_URI and AG_TEST_RM_URI set to it; the cluster is
# stopped and removed when CMD ends, whatever happens. Exits 77 (CTest: skipped)
# when PostgreSQL is not installed. Used by CTest for the read-model conformance
# suite on PostgreSQL (unit.readmodel.pg).
set -uo pipefail
source "$(dirname "$0")/pg.sh"
trap ag_pg_stop EXIT
trap 'exit 130' INT TERM
ag_pg_start || exit 77
export AG_TEST_RM_URI=$AG_PG_URI
"$@"
