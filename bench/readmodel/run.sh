#!/usr/bin/env bash
# bench/readmodel/run.sh — the read-model port on SQLite and on PostgreSQL, the
# same work on each (`make bench-readmodel`, part of `make bench`): projection
# pages and point queries (see bench_readmodel.c). Starts a throwaway PostgreSQL
# (tests/lib/pgtmp.sh, fsync off as for tests: this measures the adapter, not the
# disk; the SQLite read models run synchronous=NORMAL) and always removes it.
# Appends JSON lines to bench/results/readmodel.jsonl.
# Environment: BUILD_DIR (default build/release), TMPDIR, AG_BENCH_* (bench_readmodel.c).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build/release}
bin=$build/bench_readmodel
results=$root/bench/results/readmodel.jsonl
[[ -x $bin ]] || { echo "bench-readmodel: $bin not built (make build)" >&2; exit 1; }
source "$root/tests/lib/pgtmp.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/agora-bench-rm.XXXXXX")
trap 'pgtmp_stop; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
uris="sqlite:$work"
if pgtmp_start; then uris="$uris $AGORA_TEST_PG_URI"; else echo "bench-readmodel: no PostgreSQL, sqlite only" >&2; fi
mkdir -p "$(dirname "$results")"
echo "bench-readmodel: $(nproc) CPUs, load $(cut -d" " -f1-3 /proc/loadavg)" >&2
AG_BENCH_RM_URIS=$uris "$bin" | tee -a "$results"
