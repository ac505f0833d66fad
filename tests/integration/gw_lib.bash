# Shared by the tests of `agora gateway` in front of test upstreams
# (gateway_basic.sh, gateway_breaker.sh, gateway_cache.sh, gateway_jwks.sh,
# gateway_unix.sh); sourced, not a test itself (CTest registers *.sh only).
#
# The caller runs with set -euo pipefail under CTest: B is the build directory
# (AG_BUILD_DIR), AGORA the agora binary (AGORA_BIN, or $B/agora). Servers print
# "PORT n" on stdout once they listen (port 0 asked for); the gateway's output
# goes to $TMP/gw.out, its log to $TMP/gw.log, which `fail` shows.
B="${AG_BUILD_DIR:?AG_BUILD_DIR not set}"
AGORA="${AGORA_BIN:-$B/agora}"
source "$(dirname "${BASH_SOURCE[0]}")/../lib/procs.bash"

# gw_frame SERVER: UP, the upstream server's binary $B/SERVER (exit 1 if it is
# missing), then procs_frame (tests/lib/procs.bash: TMP, PIDS, the EXIT trap).
gw_frame() {
    UP="$B/$1"
    [ -x "$UP" ] || { echo "missing $UP"; exit 1; }
    procs_frame
}

# fail MSG (with the gateway's last 20 log lines), pass MSG.
fail() { echo "FAIL: $*" >&2; [ -f "$TMP/gw.log" ] && tail -20 "$TMP/gw.log" >&2; exit 1; }
pass() { echo "ok - $*"; }

# upstream_start NAME [FILE]: "$UP" --name NAME, output in $TMP/FILE.out and
# FILE.log (FILE: NAME); sets UP_PORT, or fails.
upstream_start() {
    local f=${2:-$1}
    "$UP" --name "$1" >"$TMP/$f.out" 2>"$TMP/$f.log" &
    PIDS+=($!)
    UP_PORT=$(wait_port "$TMP/$f.out") || fail "upstream $1 did not start"
}

# gateway_start: `agora gateway --config $TMP/gw.yaml` (output $TMP/gw.out, log
# $TMP/gw.log); sets GWPID and GP (its port), or fails with its log.
gateway_start() {
    "$AGORA" gateway --config "$TMP/gw.yaml" >"$TMP/gw.out" 2>"$TMP/gw.log" &
    GWPID=$!
    PIDS+=($GWPID)
    GP=$(wait_port "$TMP/gw.out") || fail "gateway did not start: $(cat "$TMP/gw.log")"
}
