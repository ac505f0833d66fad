#!/usr/bin/env bash
# tests/lib/pgtmp.sh — a throwaway PostgreSQL for tests (the approach of bench/store/run.sh:
# initdb in a temporary directory, Unix socket only, no TCP, runuser postgres when root).
#
# Two ways to use it:
#   bash tests/lib/pgtmp.sh run CMD [ARGS...]
#       start a cluster, run CMD with AGORA_TEST_PG_URI set, stop and remove the cluster
#       (also when CMD fails or the script is interrupted); exit with CMD's status, or 77
#       (CTest's SKIP_RETURN_CODE) when no PostgreSQL is installed.
#   source tests/lib/pgtmp.sh; pgtmp_start; ...; pgtmp_stop
#       the same from a test script (call pgtmp_stop from your trap cleanup EXIT);
#       pgtmp_start returns 77 when no PostgreSQL is installed; pgtmp_restart and
#       pgtmp_kill (immediate stop) help outage tests.
#
# Environment it sets: AGORA_TEST_PG_URI (postgresql:///postgres?host=SOCKDIR&port=P&user=postgres,
# a libpq URI; agora store/read-model URIs may add their own parameters such as
# &schema=NAME), PGTMP_DIR (the cluster's directory). Input: PGBIN (default
# /usr/lib/postgresql/15/bin, else the directory of `initdb` on PATH), TMPDIR,
# PGTMP_CONF (extra postgresql.conf lines, e.g. "fsync = on" for a benchmark; a
# later line wins, so "listen_addresses = '10.213.7.9'" adds TCP), PGTMP_HBA (extra
# pg_hba.conf lines, e.g. "host all all 10.213.7.0/29 trust" for such addresses).
# C tests read AGORA_TEST_PG_URI through tests/lib/pgtest.h. The one helper for
# every test and benchmark that needs a PostgreSQL (unit.*_pg, unit.readmodel.pg,
# the *_pg integration scripts, bench/readmodel, bench/e2e STORE=postgresql).

PGTMP_BIN=${PGBIN:-/usr/lib/postgresql/15/bin}
if [[ ! -x $PGTMP_BIN/initdb ]] && command -v initdb >/dev/null 2>&1; then
    PGTMP_BIN=$(dirname "$(command -v initdb)")
fi
PGTMP_DIR=""
PGTMP_STARTED=0

pgtmp__as_pg() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pgtmp_start() {
    [[ -x $PGTMP_BIN/initdb ]] || { echo "pgtmp: no PostgreSQL in $PGTMP_BIN" >&2; return 77; }
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        echo "pgtmp: root without a postgres user" >&2; return 77
    fi
    PGTMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/agora-pgtmp.XXXXXX")
    mkdir -p "$PGTMP_DIR/sock"
    [[ $(id -u) -eq 0 ]] && chown -R postgres: "$PGTMP_DIR"
    chmod 755 "$PGTMP_DIR"
    pgtmp__as_pg "$PGTMP_BIN/initdb" -D "$PGTMP_DIR/data" -U postgres -A trust -E UTF8 \
        --no-locale >"$PGTMP_DIR/initdb.log" 2>&1 || { cat "$PGTMP_DIR/initdb.log" >&2; return 1; }
    # fsync off: a test cluster, thrown away; the semantics under test do not change
    pgtmp__as_pg tee -a "$PGTMP_DIR/data/postgresql.conf" >/dev/null <<CONF
listen_addresses = ''
unix_socket_directories = '$PGTMP_DIR/sock'
port = 5432
fsync = off
max_connections = 200
${PGTMP_CONF:-}
CONF
    [[ -z ${PGTMP_HBA:-} ]] ||
        printf '%s\n' "$PGTMP_HBA" | pgtmp__as_pg tee -a "$PGTMP_DIR/data/pg_hba.conf" >/dev/null
    pgtmp__as_pg "$PGTMP_BIN/pg_ctl" -D "$PGTMP_DIR/data" -l "$PGTMP_DIR/server.log" -w -t 60 \
        start >/dev/null || { cat "$PGTMP_DIR/server.log" >&2; return 1; }
    PGTMP_STARTED=1
    export PGTMP_DIR
    export AGORA_TEST_PG_URI="postgresql:///postgres?host=$PGTMP_DIR/sock&port=5432&user=postgres"
}

pgtmp_stop() {
    if [[ $PGTMP_STARTED -eq 1 ]]; then
        pgtmp__as_pg "$PGTMP_BIN/pg_ctl" -D "$PGTMP_DIR/data" -m immediate -w stop \
            >/dev/null 2>&1 || true
        PGTMP_STARTED=0
    fi
    [[ -n $PGTMP_DIR ]] && rm -rf "$PGTMP_DIR"
    PGTMP_DIR=""
}

pgtmp_kill() {
    pgtmp__as_pg "$PGTMP_BIN/pg_ctl" -D "$PGTMP_DIR/data" -m immediate -w stop >/dev/null 2>&1
}

pgtmp_restart() {
    pgtmp__as_pg "$PGTMP_BIN/pg_ctl" -D "$PGTMP_DIR/data" -l "$PGTMP_DIR/server.log" -w -t 60 \
        start >/dev/null
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -uo pipefail
    [[ ${1:-} == run && $# -ge 2 ]] || { echo "usage: pgtmp.sh run CMD [ARGS...]" >&2; exit 2; }
    shift
    trap pgtmp_stop EXIT
    trap 'exit 130' INT TERM
    pgtmp_start
    st=$?
    [[ $st -eq 0 ]] || exit "$st"
    "$@"
    exit $?
fi
