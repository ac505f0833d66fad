#!/usr/bin/env bash
# Integration: saga_crash.sh (unchanged in what it asserts) with the event store on
# PostgreSQL (a throwaway server, tests/lib/pgtmp.sh, AGORA_STORE=postgresql://...):
# agora is SIGKILLed under load ROUNDS times (default 6), and in every even round
# PostgreSQL itself is stopped (immediate: every connection drops) and started
# again while the load runs, before the kill. Then saga_check.py: every saga
# terminal, money and stock conserved, no double charge. Skipped (77) where
# PostgreSQL is not installed. Env: AGORA_BIN, AG_SOURCE_DIR (CTest).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib/pgtmp.sh"
trap pgtmp_stop EXIT
trap 'exit 130' INT TERM
pgtmp_start || exit $?
export PGTMP_DIR
restart="source '$here/../lib/pgtmp.sh'; PGTMP_DIR='$PGTMP_DIR'; pgtmp_kill; sleep 0.3;"
restart+=" pgtmp_restart && sleep 1.5"
AGORA_STORE="$AGORA_TEST_PG_URI&schema=saga" ROUNDS=${ROUNDS:-6} CHAOS=$restart \
    bash "$here/saga_crash.sh"
