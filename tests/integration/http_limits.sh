#!/usr/bin/env bash
# Integration: the HTTP server's connection limits over real sockets on loopback.
# - per peer: one client (127.0.0.1) holding more idle connections than
#   max_conns_per_peer gets the extra ones closed at once, while another peer
#   address (the client socket bound to 127.0.0.2) still gets /health/live
#   quickly; refusals are counted in agora_http_connections_refused_total; the
#   count is released when the connections close.
# - first byte: a connection that sends nothing is closed after the first-byte
#   timeout, well before the header timeout.
# - slowloris: a client sending a header byte every second is cut by the header
#   timeout (408), which runs from the first byte and is not reset by each byte.
set -euo pipefail
BIN="${AG_BUILD_DIR:?AG_BUILD_DIR not set}/http_test_server"
[ -x "$BIN" ] || { echo "missing $BIN"; exit 1; }
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok - $*"; }

start_server() { # args... ; sets PORT
    local out="$TMP/server.$RANDOM"
    "$BIN" "$@" >"$out" 2>"$out.log" &
    PIDS+=("$!")
    for _ in $(seq 100); do
        PORT=$(awk '/^PORT/{print $2}' "$out" 2>/dev/null || true)
        [ -n "$PORT" ] && return 0
        sleep 0.05
    done
    fail "server did not start: $(cat "$out.log")"
}

cat >"$TMP/limits.py" <<'PY'
import socket, sys, time
case, port = sys.argv[1], int(sys.argv[2])

def conn(src="127.0.0.1"):
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s

def closed_within(s, t):
    """True when the server closes s (EOF or reset) within t seconds, sending nothing."""
    s.settimeout(t)
    try:
        d = s.recv(100)
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True
    assert d == b"", d
    return True

def get(src, path):
    s = conn(src)
    t0 = time.time()
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d: break
        data += d
    return data, time.time() - t0

if case == "per_peer":      # server: --max-per-peer 100 --workers 2
    cap, extra = 100, 30
    held = [conn() for _ in range(cap)]
    time.sleep(0.3)          # both workers have accepted and counted them
    refused = [conn() for _ in range(extra)]
    assert all(closed_within(s, 2.0) for s in refused), "extra connections not closed"
    assert not any(closed_within(s, 0.05) for s in held[:10]), "held connections were closed"
    data, el = get("127.0.0.2", "/health/live")
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    assert el < 0.5, el
    print("127.0.0.2 /health/live in %.1f ms while 127.0.0.1 holds %d" % (el * 1000, cap))
    data, _ = get("127.0.0.2", "/metrics")
    line = [l for l in data.decode().splitlines()
            if l.startswith('agora_http_connections_refused_total{reason="per_peer"}')]
    assert line and int(float(line[0].split()[-1])) >= extra, line
    for s in held: s.close()
    time.sleep(0.3)
    data, _ = get("127.0.0.1", "/hello")   # the count was released
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
elif case == "first_byte":  # server: --first-byte-timeout 500 --header-timeout 10000
    s = conn(); t0 = time.time()
    assert closed_within(s, 3.0), "a silent connection was not closed"
    el = time.time() - t0
    assert 0.4 <= el < 1.5, el
    print("silent connection closed after %.0f ms" % (el * 1000))
elif case == "slowloris":   # server: --first-byte-timeout 500 --header-timeout 2500
    s = conn(); t0 = time.time()
    s.sendall(b"GET /hello HTTP/1.1\r\nX-Slow: ")
    data = b""
    for _ in range(10):      # one byte a second, longer than the first-byte timeout each
        time.sleep(1.0)
        try:
            s.sendall(b"a")
        except OSError:
            break
        s.settimeout(0.01)
        try:
            d = s.recv(65536)
            data += d
            if not d or data: break
        except socket.timeout:
            pass
    s.settimeout(3)
    try:
        while True:
            d = s.recv(65536)
            if not d: break
            data += d
    except OSError:
        pass
    el = time.time() - t0
    assert data.startswith(b"HTTP/1.1 408"), data[:100]
    assert 2.3 <= el < 4.0, el
    print("slowloris cut after %.1f s" % el)
else:
    raise SystemExit("unknown case " + case)
PY
run() { python3 "$TMP/limits.py" "$1" "$PORT" || fail "$1"; pass "$1"; }

start_server --workers 2 --max-per-peer 100
run per_peer
start_server --workers 2 --first-byte-timeout 500 --header-timeout 10000
run first_byte
start_server --workers 2 --first-byte-timeout 500 --header-timeout 2500
run slowloris
