# The processes a test or a benchmark starts and the ports they print, for the
# scripts that start servers themselves (tests/integration/gw_lib.bash,
# bench/lib/gateway.bash); sourced, not run. Servers that listen on port 0 print
# "PORT n" on stdout once they listen.

# procs_frame: TMP (a new scratch directory), PIDS (the processes started: the
# caller adds each) and an EXIT trap, procs_cleanup, that SIGTERMs them, waits and
# removes TMP.
procs_frame() {
    TMP=$(mktemp -d)
    PIDS=()
    trap procs_cleanup EXIT
}
procs_cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}

# wait_port FILE [TRIES]: the port a server printed as "PORT n" in FILE, polled
# TRIES (100) times 0.05 s apart; returns 1 if it never did.
wait_port() {
    local p
    for _ in $(seq "${2:-100}"); do
        p=$(awk '/^PORT/{print $2}' "$1" 2>/dev/null || true)
        [ -n "$p" ] && { echo "$p"; return 0; }
        sleep 0.05
    done
    return 1
}

# free_port: a port the kernel has free on 127.0.0.1 now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
