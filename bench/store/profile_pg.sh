#!/usr/bin/env bash
# bench/store/profile_pg.sh — where the PostgreSQL store spends its CPU (issue 12).
#
# Starts a throwaway cluster (tests/lib/pgtmp.sh, fsync on, pg_stat_statements
# loaded, track = all so the statements inside the server functions count too) and
#   1. appends: bench_store's agora-pg then its postgres baseline, each alone, and
#      prints per appended event the CPU of the server (the postmaster, its live
#      children and the reaped ones: cutime+cstime) plus that of bench_store, the
#      WAL bytes (pg_current_wal_lsn before/after), and the statements by server
#      time (pg_stat_statements, with their WAL bytes);
#   2. $all: builds AG_BENCH_PG_READ_EVENTS events (kept: AG_BENCH_PG_KEEP), reads
#      them with bench_store's page loop, then EXPLAIN (ANALYZE, BUFFERS) of the
#      page statement at the middle of the log.
# Never pass/fail; everything goes to stdout. CPU figures are meaningful on a busy
# machine (they count CPU time, not wall time); rates are not.
#
# Environment: BUILD_DIR (build/release), AG_BENCH_WRITERS (64), AG_BENCH_SECONDS (8),
# PROFILE_ONLY (append,read: both), PROFILE_IMPLS ("agora-pg postgres"),
# PROFILE_URI_EXTRA (appended to agora-pg's URI, e.g. "&append_lanes=2"),
# PROFILE_CONF (more postgresql.conf lines, e.g. "autovacuum = off"),
# PROFILE_EXPLAIN (set: auto_explain logs the plans, with timings, of 1% of the
# statements, those inside the server functions too, copied to PROFILE_EXPLAIN's
# value as a file name), PROFILE_READ_SQL (a psql script run on the $all data, e.g.
# variants of the page statement under EXPLAIN).
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build/release}
bin=$build/bench_store
[[ -x $bin ]] || { echo "profile_pg: $bin not built" >&2; exit 1; }
only=${PROFILE_ONLY:-append,read}
writers=${AG_BENCH_WRITERS:-64}
secs=${AG_BENCH_SECONDS:-8}

# shellcheck source=../../tests/lib/pgtmp.sh
source "$root/tests/lib/pgtmp.sh"
work=""
cleanup() {
    pgtmp_stop
    [[ -n $work ]] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export PGTMP_CONF="fsync = on
synchronous_commit = on
max_connections = 300
shared_preload_libraries = 'pg_stat_statements,auto_explain'
pg_stat_statements.track = all
${PROFILE_CONF:-}"
if [[ -n ${PROFILE_EXPLAIN:-} ]]; then # plans with timings of 1% of the statements, nested too
    PGTMP_CONF+="
auto_explain.log_min_duration = 0
auto_explain.log_analyze = on
auto_explain.log_buffers = on
auto_explain.log_nested_statements = on
auto_explain.sample_rate = 0.01"
fi
pgtmp_start || exit $?
work=$(mktemp -d "${TMPDIR:-/tmp}/agora-profile-pg.XXXXXX")
sock=$PGTMP_DIR/sock
conninfo="host=$sock port=5432 user=postgres dbname=postgres"
q() { psql -X -q -At -h "$sock" -p 5432 -U postgres -d postgres -c "$1"; }
q "CREATE EXTENSION pg_stat_statements" >/dev/null

pm=$(head -1 "$PGTMP_DIR/data/postmaster.pid")
# CPU ticks of the server: the postmaster, its children still running, and (cutime,
# cstime) those it has reaped. Fields 14-17 of /proc/PID/stat.
server_ticks() {
    local t=0 p f
    read -ra f < <(sed 's/^.*) //' "/proc/$pm/stat")
    t=$((f[11] + f[12] + f[13] + f[14]))
    for p in $(pgrep -P "$pm"); do
        read -ra f < <(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        t=$((t + f[11] + f[12]))
    done
    echo "$t"
}
hz=$(getconf CLK_TCK)

append_one() {
    local impl=$1
    q "SELECT pg_stat_statements_reset()" >/dev/null
    local lsn0 t0 out
    lsn0=$(q "SELECT pg_current_wal_lsn()")
    t0=$(server_ticks)
    out=$( { /usr/bin/time -f "client %U %S" env AG_BENCH_DIR="$work" AG_BENCH_PG="$conninfo" \
        AG_BENCH_PG_URI="$AGORA_TEST_PG_URI${PROFILE_URI_EXTRA:-}" AG_BENCH_ONLY=append \
        AG_BENCH_IMPLS="$impl" \
        AG_BENCH_WRITERS="$writers" AG_BENCH_SECONDS="$secs" AG_BENCH_ROUNDS=1 \
        "$bin"; } 2>&1)
    local t1 wal
    t1=$(server_ticks)
    wal=$(q "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')")
    echo "$out" | grep -E '^\{|^client' | sed 's/^/  /'
    local ops cu cs
    ops=$(echo "$out" | grep '^{' | python3 -c 'import json,sys
for l in sys.stdin:
    j = json.loads(l)
    if j.get("bench") == "store.append": print(int(j["ops_per_s"] * j["seconds"]))')
    read -r _ cu cs < <(echo "$out" | grep '^client')
    awk -v impl="$impl" -v ops="${ops:-0}" -v st=$((t1 - t0)) -v hz="$hz" -v cu="$cu" -v cs="$cs" \
        -v wal="$wal" 'BEGIN { if (ops < 1) ops = 1;
        printf "  %s: %d events; CPU per event: server %.0f us + client %.0f us = %.0f us;" \
               " WAL %.0f bytes per event\n", impl, ops, st / hz * 1e6 / ops,
               (cu + cs) * 1e6 / ops, (st / hz + cu + cs) * 1e6 / ops, wal / ops }'
    q "SELECT rpad(left(regexp_replace(query, '\s+', ' ', 'g'), 70), 70) || ' calls ' || calls ||
       ' total_ms ' || round(total_exec_time::numeric, 0) || ' mean_ms ' ||
       round(mean_exec_time::numeric, 3) || ' rows ' || rows || ' wal_bytes ' || wal_bytes
       FROM pg_stat_statements WHERE total_exec_time > 0
       ORDER BY total_exec_time DESC LIMIT 14" | sed 's/^/    /'
}

if [[ $only == *append* ]]; then
    echo "== appends: $writers writers, $secs s, load $(cut -d' ' -f1-3 /proc/loadavg)"
    for impl in ${PROFILE_IMPLS:-agora-pg postgres}; do append_one "$impl"; done
fi

if [[ -n ${PROFILE_EXPLAIN:-} ]]; then
    cp "$PGTMP_DIR/server.log" "$PROFILE_EXPLAIN"
fi

if [[ $only == *read* ]]; then
    echo "== \$all reads, load $(cut -d' ' -f1-3 /proc/loadavg)"
    q "SELECT pg_stat_statements_reset()" >/dev/null
    env AG_BENCH_DIR="$work" AG_BENCH_PG="$conninfo" AG_BENCH_PG_URI="$AGORA_TEST_PG_URI" \
        AG_BENCH_ONLY=read_pg AG_BENCH_PG_KEEP=1 "$bin" 2>&1 | grep -E 'read_all|built' | sed 's/^/  /'
    q "VACUUM ANALYZE bench_read.events, bench_read.positions, bench_read.streams" >/dev/null
    mid=$(q "SELECT next / 2 FROM bench_read.head")
    q "SET search_path = bench_read; SET plan_cache_mode = force_generic_plan;
       PREPARE p(bigint, bigint) AS SELECT s.stream_name, e.version, p.position, e.event_id,
         e.type, e.created_at, e.data, e.metadata FROM positions p JOIN events e USING
         (global_position) JOIN streams s USING (stream_id) WHERE p.position >= \$1
         ORDER BY p.position LIMIT \$2;
       EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE p($mid, 1000);
       EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE p($mid, 1000);" | sed 's/^/    /'
    if [[ -n ${PROFILE_READ_SQL:-} ]]; then # more statements to try on the same data
        psql -X -h "$sock" -p 5432 -U postgres -d postgres -f "$PROFILE_READ_SQL" 2>&1 |
            sed 's/^/    /'
    fi
    q "SELECT rpad(left(regexp_replace(query, '\s+', ' ', 'g'), 70), 70) || ' calls ' || calls ||
       ' mean_ms ' || round(mean_exec_time::numeric, 3) || ' rows ' || rows
       FROM pg_stat_statements WHERE query LIKE '%positions p%' ORDER BY total_exec_time DESC
       LIMIT 3" | sed 's/^/    /'
fi
