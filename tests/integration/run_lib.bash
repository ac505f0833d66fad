# Shared by the integration tests that start and restart `agora run` on one data
# directory (dlq.sh, readmodel_corrupt.sh, chor_dlq.sh, events_upcast.sh,
# authz_lib.bash); sourced, not a test itself (CTest registers *.sh only).
#
# The caller defines BIN (the agora binary), TMP (its scratch directory, removed by
# its own trap) and `fail MSG`. The server's output goes to $TMP/server.log, appended
# across restarts, so a failure shows the whole history.

# agora_start DATA [live|ready] [ARGS...]: `agora run --data DATA` on a free
# 127.0.0.1 port (port 0: agora prints "serving http://..."), then wait until
# /health/live (default) or /health/ready answers 200. Sets SPID and BASE (and A,
# the same address, for the older scripts).
agora_start() {
    local data=$1 wait=${2:-live} from=1
    shift $(($# < 2 ? $# : 2))
    [ -f "$TMP/server.log" ] && from=$(($(wc -l <"$TMP/server.log") + 1))
    "$BIN" run --data "$data" --listen 127.0.0.1:0 "$@" >>"$TMP/server.log" 2>&1 &
    SPID=$!
    BASE=""
    for _ in $(seq 300); do
        BASE=$(tail -n +"$from" "$TMP/server.log" | grep -o 'serving http://[0-9.]*:[0-9]*' | head -1 |
            sed 's/^serving //') || true
        [ -n "$BASE" ] && break
        kill -0 "$SPID" 2>/dev/null || fail "agora run exited"
        sleep 0.1
    done
    [ -n "$BASE" ] || fail "agora run did not start"
    A=$BASE
    for _ in $(seq 300); do
        kill -0 "$SPID" 2>/dev/null || fail "agora run exited"
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health/$wait")" = 200 ] && return 0
        sleep 0.1
    done
    fail "agora run is not $wait at $BASE"
}

# agora_stop: SIGTERM, and agora must exit 0 (a clean drain).
agora_stop() {
    kill -TERM "$SPID"
    local rc=0
    wait "$SPID" || rc=$?
    SPID=""
    [ "$rc" = 0 ] || fail "agora run exited with $rc on SIGTERM"
}

# json_field EXPR: evaluate a Python expression over the JSON on stdin (as `d`).
json_field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

# serve_start NAME ARGS...: `agora serve ARGS...` (which include --listen), output in
# $TMP/NAME.log; waits until it prints "serving ... on http(s)://" and /health/ready
# answers 200. Sets SERVE_PID (the caller keeps it) and SERVE_BASE. With mTLS, set
# the array SERVE_CURL to the curl options the readiness check needs (--cacert,
# --cert, --key). With SERVE_NETNS set, runs it in that network namespace (`ip netns
# exec`, which execs: the pid is agora's).
serve_start() {
    local name=$1 wrap=()
    shift
    [ -n "${SERVE_NETNS:-}" ] && wrap=(ip netns exec "$SERVE_NETNS")
    "${wrap[@]}" "$BIN" serve "$@" >>"$TMP/$name.log" 2>&1 &
    SERVE_PID=$!
    SERVE_BASE=""
    for _ in $(seq 600); do
        SERVE_BASE=$(grep -Eo 'on https?://[0-9.]*:[0-9]*' "$TMP/$name.log" | head -1 | sed 's/^on //') || true
        [ -n "$SERVE_BASE" ] && break
        kill -0 "$SERVE_PID" 2>/dev/null || fail "agora serve ($name) exited: $(tail -5 "$TMP/$name.log")"
        sleep 0.1
    done
    [ -n "$SERVE_BASE" ] || fail "agora serve ($name) did not start"
    for _ in $(seq 300); do
        [ "$(curl -s ${SERVE_CURL[@]+"${SERVE_CURL[@]}"} -o /dev/null -w '%{http_code}' "$SERVE_BASE/health/ready")" = 200 ] && return 0
        kill -0 "$SERVE_PID" 2>/dev/null || fail "agora serve ($name) exited"
        sleep 0.1
    done
    fail "agora serve ($name) is not ready at $SERVE_BASE"
}

# free_port: a port the kernel has free now (for addresses a configuration names).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
