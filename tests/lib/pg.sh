#!/usr/bin/env bash
# tests/lib/pg.sh — a throwaway PostgreSQL for tests (sourced): initdb in a
# temporary directory, Unix socket only (no TCP listener), trust authentication,
# fsync off (test data). The method of bench/store/run.sh. A stop-gap owned by
# the read-model work until the store adapter's helper lands (the lead unifies).
#
#   source tests/lib/pg.sh
#   ag_pg_start || exit 77      # 77: no PostgreSQL here (CTest SKIP_RETURN_CODE)
#   ... "$AG_PG_URI" ...        # postgresql://postgres@/postgres?host=<sock>
#   ag_pg_stop                  # also from the caller's EXIT trap
#   ag_pg_kill / ag_pg_restart  # lose the server mid-run and bring it back
#
# Environment: PGBIN (default /usr/lib/postgresql/15/bin, else initdb on PATH).
# As root, the cluster runs as the `postgres` user (initdb refuses root).

ag_pg_root=""
ag_pg_started=0

ag__pg() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ag__pg_bin() {
    local d=${PGBIN:-/usr/lib/postgresql/15/bin}
    if [[ -x $d/initdb ]]; then echo "$d"; return 0; fi
    d=$(dirname "$(command -v initdb 2>/dev/null)" 2>/dev/null) || return 1
    [[ -x $d/initdb && -x $d/pg_ctl ]] && echo "$d"
}

# Start the cluster; sets AG_PG_URI. Returns 1 (with a reason on stderr) when
# PostgreSQL is not available on this machine.
ag_pg_start() {
    AG_PG_BIN=$(ag__pg_bin) || { echo "pg.sh: no initdb (set PGBIN)" >&2; return 1; }
    [[ -n $AG_PG_BIN ]] || { echo "pg.sh: no initdb (set PGBIN)" >&2; return 1; }
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        echo "pg.sh: running as root without a postgres user" >&2; return 1
    fi
    ag_pg_root=$(mktemp -d "${TMPDIR:-/tmp}/agora-pg.XXXXXX")
    mkdir -p "$ag_pg_root/sock"
    chmod 755 "$ag_pg_root"
    [[ $(id -u) -eq 0 ]] && chown -R postgres: "$ag_pg_root"
    ag__pg "$AG_PG_BIN/initdb" -D "$ag_pg_root/data" -U postgres -A trust -E UTF8 --no-locale \
        >"$ag_pg_root/initdb.log" 2>&1 || { cat "$ag_pg_root/initdb.log" >&2; return 1; }
    ag__pg tee -a "$ag_pg_root/data/postgresql.conf" >/dev/null <<CONF
listen_addresses = ''
unix_socket_directories = '$ag_pg_root/sock'
port = 5432
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
CONF
    ag_pg_started=1
    ag__pg "$AG_PG_BIN/pg_ctl" -D "$ag_pg_root/data" -l "$ag_pg_root/server.log" -w -t 60 start \
        >/dev/null || { cat "$ag_pg_root/server.log" >&2; return 1; }
    export AG_PG_URI="postgresql://postgres@/postgres?host=$ag_pg_root/sock&port=5432"
}

# Stop it now (immediate: the clients see their connections drop), keep the data.
ag_pg_kill() {
    ag__pg "$AG_PG_BIN/pg_ctl" -D "$ag_pg_root/data" -m immediate -w stop >/dev/null 2>&1
}

# Start it again on the same data and socket.
ag_pg_restart() {
    ag__pg "$AG_PG_BIN/pg_ctl" -D "$ag_pg_root/data" -l "$ag_pg_root/server.log" -w -t 60 start \
        >/dev/null
}

# Stop and remove the cluster (safe to call twice, and when it never started).
ag_pg_stop() {
    if [[ $ag_pg_started -eq 1 ]]; then
        ag__pg "$AG_PG_BIN/pg_ctl" -D "$ag_pg_root/data" -m immediate -w stop >/dev/null 2>&1 || true
        ag_pg_started=0
    fi
    [[ -n $ag_pg_root ]] && rm -rf "$ag_pg_root"
    ag_pg_root=""
}
