#!/usr/bin/env bash
# bench/store/run.sh — the event store benchmark (`make bench-store`, part of `make bench`).
#
# Starts a throwaway PostgreSQL 15 cluster (unix socket only, fsync=on,
# synchronous_commit=on), runs bench_store against agora's log, the raw
# fdatasync ceiling and that cluster, appends the JSON lines to
# bench/results/store.jsonl, and always stops and removes the cluster and the
# scratch data (trap), also on failure.
#
# Environment: BUILD_DIR (default build/release), PGBIN (default
# /usr/lib/postgresql/15/bin), TMPDIR (scratch location; agora, raw and
# PostgreSQL all write under it, i.e. to the same filesystem), plus the
# AG_BENCH_* knobs documented at the top of bench_store.c.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build/release}
bin=$build/bench_store
results=$root/bench/results/store.jsonl
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}
tmp=${TMPDIR:-/tmp}

[[ -x $bin ]] || { echo "bench-store: $bin not built (make build)" >&2; exit 1; }

work=$(mktemp -d "$tmp/agora-bench-store.XXXXXX")
pgroot=""
pg_started=0

# Run a PostgreSQL binary as a non-root user: initdb and postgres refuse root.
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
    if [[ $pg_started -eq 1 ]]; then
        as_pg "$pgbin/pg_ctl" -D "$pgroot/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    [[ -n $pgroot ]] && rm -rf "$pgroot"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Start the cluster and set $conninfo; leaves it empty when PostgreSQL is unavailable.
# Not called in $(...): cleanup needs pgroot and pg_started in this shell.
start_pg() {
    if [[ ! -x $pgbin/initdb ]]; then
        echo "bench-store: no PostgreSQL in $pgbin, postgres skipped" >&2; return 0
    fi
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        echo "bench-store: running as root without a postgres user, postgres skipped" >&2; return 0
    fi
    # Its own directory: as root it must belong to postgres, which cannot enter $work.
    pgroot=$(mktemp -d "$tmp/agora-bench-pg.XXXXXX")
    mkdir -p "$pgroot/sock"
    [[ $(id -u) -eq 0 ]] && chown -R postgres: "$pgroot"
    chmod 755 "$pgroot"
    as_pg "$pgbin/initdb" -D "$pgroot/data" -U postgres -A trust -E UTF8 --no-locale \
        >"$pgroot/initdb.log" 2>&1 || { cat "$pgroot/initdb.log" >&2; return 1; }
    # 256 writers each hold a connection; the defaults otherwise (shared_buffers...).
    as_pg tee -a "$pgroot/data/postgresql.conf" >/dev/null <<EOF
listen_addresses = ''
unix_socket_directories = '$pgroot/sock'
port = 5432
fsync = on
synchronous_commit = on
max_connections = 300
EOF
    as_pg "$pgbin/pg_ctl" -D "$pgroot/data" -l "$pgroot/server.log" -w -t 60 start >/dev/null \
        || { cat "$pgroot/server.log" >&2; return 1; }
    pg_started=1
    conninfo="host=$pgroot/sock port=5432 user=postgres dbname=postgres"
    pguri="postgresql:///postgres?host=$pgroot/sock&port=5432&user=postgres"
}

conninfo=""
pguri=""
start_pg
mkdir -p "$(dirname "$results")"
echo "bench-store: $(nproc) CPUs, load $(cut -d" " -f1-3 /proc/loadavg), scratch $work ($(df --output=source,fstype "$work" | tail -1 | tr -s " "))" >&2

AG_BENCH_DIR=$work AG_BENCH_PG=$conninfo AG_BENCH_PG_URI=$pguri "$bin" | tee -a "$results"
