# Shared by the access-model tests (authz_matrix.sh, authz_attacks.sh); sourced, not a
# test itself (CTest registers tests/integration/*.sh only). It installs the node tools,
# starts `agora run` on a fresh data directory at a free 127.0.0.1 port (port 0), waits until it
# is ready, and kills it (and removes the directory) on exit.
#
# After `authz_start`: TMP (scratch dir), DATA (the data dir), BASE (http://127.0.0.1:P),
# SPID (agora's pid). `fail MSG` prints the server log's tail and exits 1.
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
SRC="${AG_SOURCE_DIR:?AG_SOURCE_DIR not set}"
[ -x "$BIN" ] || { echo "missing $BIN"; exit 1; }
command -v curl >/dev/null || { echo "FAIL: curl is needed"; exit 1; }
TMP=$(mktemp -d)
DATA="$TMP/data"
SPID=""
authz_cleanup() {
    if [ -n "$SPID" ]; then kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap authz_cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    echo "--- server log (tail)" >&2
    tail -20 "$TMP/server.log" >&2 || true
    exit 1
}

# npm ci when node_modules is missing or stale, serialised with the other node tests.
authz_node_tools() {
    cd "$SRC"
    command -v node >/dev/null && command -v npm >/dev/null ||
        fail "node and npm are needed (scripts/bootstrap.sh installs them)"
    (
        flock 9
        if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] ||
            [ ! -d node_modules/ajv ] || [ ! -d node_modules/jose ]; then
            echo "# npm ci --no-audit --no-fund"
            npm ci --no-audit --no-fund >"$TMP/npm.log" 2>&1 || { cat "$TMP/npm.log"; exit 1; }
        fi
    ) 9>"${AG_BUILD_DIR:-$TMP}/.npm-ci.lock" || fail "npm ci failed"
}

# shellcheck source=run_lib.bash
source "$(dirname "${BASH_SOURCE[0]}")/run_lib.bash"
authz_start() {
    agora_start "$DATA" ready
    echo "ok - agora run is ready at $BASE"
}

# token SUB ROLE: a JWT from `agora token` for this data directory
token() { "$BIN" token --data "$DATA" --sub "$1" --role "$2" || fail "agora token --sub $1 --role $2"; }

# No sanitizer report in the server log, and a clean stop on SIGTERM.
authz_stop() {
    kill -TERM "$SPID"
    local rc=0
    wait "$SPID" || rc=$?
    SPID=""
    [ "$rc" = 0 ] || fail "agora run exited with $rc on SIGTERM"
    if grep -q 'ERROR: AddressSanitizer\|runtime error:' "$TMP/server.log"; then fail "sanitizer report in the server log"; fi
    echo "ok - agora run stops cleanly on SIGTERM"
}
