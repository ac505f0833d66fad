#!/usr/bin/env bash
# Integration: saga_crash.sh (unchanged in what it asserts) on a 2-shard store
# (AGORA_STORE=shards:file:T/s0,file:T/s1): agora is SIGKILLed under load ROUNDS
# times (default 8); most saga steps are cross-shard units (stock-<product> and
# reservation-<order> hash apart), so kills land between a unit's coordinator
# append and its far shard's, which the next open completes. Then saga_check.py:
# every saga terminal, money and stock conserved, no double charge.
# Env: AGORA_BIN, AG_SOURCE_DIR (CTest).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d /tmp/agora-saga-shards-XXXXXX)
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM
AGORA_STORE="shards:file:$T/s0,file:$T/s1" ROUNDS=${ROUNDS:-8} bash "$here/saga_crash.sh"
