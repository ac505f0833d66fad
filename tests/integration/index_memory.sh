#!/usr/bin/env bash
# --index-memory / AGORA_INDEX_MEMORY and --cache-memory: bad sizes are refused with a
# message naming the option (exit 2, nothing started); good ones start the platform,
# whose /metrics reports the stream index's and the aggregate cache's memory, and
# `agora store stats` reports the index tables.
# Env: AGORA_BIN (CTest).
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
# shellcheck source=run_lib.bash
source "$(dirname "$0")/run_lib.bash"
run_frame
D="$TMP/data"

refused() { # expect exit 2 and a message naming $1; the rest of the args run agora
    local want=$1; shift
    set +e
    "$@" >"$TMP/out.log" 2>&1
    local rc=$?
    set -e
    [ "$rc" = 2 ] || fail "'$*' exited $rc, not 2"
    grep -q -- "$want" "$TMP/out.log" || fail "'$*' did not name $want: $(cat "$TMP/out.log")"
}
refused --index-memory "$BIN" run --data "$D" --listen 127.0.0.1:0 --index-memory 12Q
refused --index-memory "$BIN" run --data "$D" --listen 127.0.0.1:0 --index-memory 512K
refused AGORA_INDEX_MEMORY env AGORA_INDEX_MEMORY=lots "$BIN" run --data "$D" --listen 127.0.0.1:0
refused --cache-memory "$BIN" run --data "$D" --listen 127.0.0.1:0 --cache-memory -1
[ ! -e "$D/seg-00000000000000000000.log" ] || fail "a refused start touched the data"

AGORA_INDEX_MEMORY=2M agora_start "$D" live --no-gateway --cache-memory 8M
for _ in $(seq 50); do # the monitor publishes twice a second
    curl -sf "$A/metrics" >"$TMP/metrics" || fail "/metrics"
    grep -q '^agora_store_index_bytes [1-9]' "$TMP/metrics" && grep -q '^agora_es_cache_bytes [1-9]' "$TMP/metrics" && break
    sleep 0.1
done
grep -q '^agora_store_index_bytes [1-9]' "$TMP/metrics" || fail "no agora_store_index_bytes"
grep -q '^agora_store_index_tables ' "$TMP/metrics" || fail "no agora_store_index_tables"
grep -q '^agora_es_cache_bytes [1-9]' "$TMP/metrics" || fail "no agora_es_cache_bytes"
grep -q '^agora_es_cache_entries ' "$TMP/metrics" || fail "no agora_es_cache_entries"
# the seed's appends were group commits, each observed once: count > 0 and +Inf == count
commits=$(awk '$1 == "agora_store_commit_seconds_count" { print $2 }' "$TMP/metrics")
inf=$(awk '$1 == "agora_store_commit_seconds_bucket{le=\"+Inf\"}" { print $2 }' "$TMP/metrics")
[ "${commits:-0}" -gt 0 ] || fail "no group commit observed in agora_store_commit_seconds"
[ "$inf" = "$commits" ] || fail "agora_store_commit_seconds: +Inf bucket $inf != count $commits"
grep -q '^agora_process_heap_pause_seconds_count{op="read"} [1-9]' "$TMP/metrics" ||
    fail "the monitor's first heap read was not timed (agora_process_heap_pause_seconds)"
kill "$SPID"
wait "$SPID" || true
SPID=""
"$BIN" store stats --data "$D" >"$TMP/stats.json" || fail "store stats"
grep -q '"indexTables":' "$TMP/stats.json" || fail "store stats: $(cat "$TMP/stats.json")"
echo "index_memory: ok"
