#!/usr/bin/env bash
# Integration: the agora HTTP server over real sockets on 127.0.0.1 — curl for the
# common paths, a raw-socket client (python3) for pipelining, slowloris, oversized
# and smuggled requests, abrupt disconnects and connection backpressure; /metrics
# checked with promtool; graceful drain on SIGTERM.
set -euo pipefail
BIN="${AG_BUILD_DIR:?AG_BUILD_DIR not set}/http_test_server"
[ -x "$BIN" ] || { echo "missing $BIN"; exit 1; }
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok - $*"; }

start_server() { # args... ; sets PORT and SPID
    local out="$TMP/server.$RANDOM"
    "$BIN" "$@" >"$out" 2>"$out.log" &
    SPID=$!
    SLOG="$out.log"
    PIDS+=("$SPID")
    for _ in $(seq 100); do
        PORT=$(awk '/^PORT/{print $2}' "$out" 2>/dev/null || true)
        [ -n "$PORT" ] && return 0
        sleep 0.05
    done
    fail "server did not start: $(cat "$out.log")"
}

cat >"$TMP/raw.py" <<'PY'
import socket, sys, time
def conn(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s
def read_all(s, timeout=3.0):
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d: return data, True   # closed by server
            data += d
    except socket.timeout:
        return data, False
def main():
    port = int(sys.argv[2]); case = sys.argv[1]
    if case == "pipeline":
        s = conn(port)
        s.sendall(b"GET /slow?ms=150 HTTP/1.1\r\nHost: x\r\n\r\nGET /orders/2 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        data, _ = read_all(s, 1.0)
        i1, i2, i3 = data.find(b"slow"), data.find(b'"id":"2"'), data.find(b"\r\n\r\nabc")
        assert data.count(b"HTTP/1.1 200") == 3 and 0 <= i1 < i2 < i3, data
    elif case == "slowloris":
        s = conn(port); t0 = time.time()
        s.sendall(b"GET /hello HTTP/1.1\r\n")
        data = b""; closed = False
        for _ in range(40):
            try:
                s.sendall(b"X-a: b\r\n")
            except OSError:
                closed = True; break
            d, closed = read_all(s, 0.02)
            data += d
            if closed: break
        el = time.time() - t0
        assert b"HTTP/1.1 408" in data and b"Connection: close" in data, data
        assert el < 0.6, el
    elif case == "big_headers":
        s = conn(port)
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        data, closed = read_all(s)
        assert data.startswith(b"HTTP/1.1 431") and closed, data[:200]
    elif case == "big_body":
        s = conn(port)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
        data, closed = read_all(s)
        assert data.startswith(b"HTTP/1.1 413") and closed, data[:200]
        s = conn(port)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(40): s.sendall(b"8000\r\n" + b"z" * 0x8000 + b"\r\n")
        except OSError: pass
        data, closed = read_all(s)
        assert data.startswith(b"HTTP/1.1 413") and closed, data[:200]
    elif case == "smuggle":
        s = conn(port)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"0\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        data, closed = read_all(s)
        assert data.startswith(b"HTTP/1.1 400") and data.count(b"HTTP/1.1") == 1 and closed, data
    elif case == "disconnect":
        for _ in range(20):
            s = conn(port)
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"q" * 5000)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()   # RST mid-body
        s = conn(port)
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, closed = read_all(s)
        assert data.startswith(b"HTTP/1.1 200"), data
    elif case == "backpressure":   # server runs with --max-conns 2 --workers 1
        a = conn(port); b = conn(port)
        a.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"); read_all(a, 0.3)
        b.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"); read_all(b, 0.3)
        c = conn(port)   # the kernel completes the handshake; agora does not accept yet
        c.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        data, _ = read_all(c, 0.4)
        assert data == b"", data
        a.close()
        data, _ = read_all(c, 2.0)
        assert data.startswith(b"HTTP/1.1 200"), data
    else:
        raise SystemExit("unknown case " + case)
main()
PY
raw() { python3 "$TMP/raw.py" "$1" "$PORT" || fail "raw client: $1"; pass "$1"; }

start_server --workers 2 --header-timeout 200 --body-timeout 300 --max-body 1048576
U="http://127.0.0.1:$PORT"

# ---- curl: the common paths ----
out=$(curl -s -D "$TMP/h" "$U/hello")
[ "$out" = '{"message":"hello"}' ] || fail "hello body: $out"
grep -qi '^x-request-id: ' "$TMP/h" || fail "no X-Request-ID"
grep -qi '^traceparent: 00-' "$TMP/h" || fail "no traceparent"
grep -qi '^date: ' "$TMP/h" || fail "no Date"
pass "GET /hello with request id, traceparent and Date"

out=$(curl -s -H 'X-Request-ID: req-42' -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' -D "$TMP/h" "$U/orders/7")
[ "$out" = '{"id":"7","requestId":"req-42"}' ] || fail "orders body: $out"
grep -qi '^traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-' "$TMP/h" || fail "trace id not kept"
pass "X-Request-ID kept and trace continued"

out=$(printf 'hello chunked world' | curl -s -H 'Transfer-Encoding: chunked' --data-binary @- "$U/echo")
[ "$out" = 'hello chunked world' ] || fail "chunked echo: $out"
pass "chunked request body"

head -c 300000 /dev/urandom >"$TMP/body"
curl -s -H 'Expect: 100-continue' --data-binary @"$TMP/body" -o "$TMP/echoed" "$U/echo"
cmp -s "$TMP/body" "$TMP/echoed" || fail "100-continue echo differs"
pass "Expect: 100-continue with a 300 KB body"

curl -s -I "$U/hello" >"$TMP/h"
grep -q '^HTTP/1.1 200' "$TMP/h" && grep -qi '^content-length: 19' "$TMP/h" || fail "HEAD: $(cat "$TMP/h")"
pass "HEAD"

code=$(curl -s -o "$TMP/b" -w '%{http_code} %{content_type}' "$U/nowhere")
[ "$code" = "404 application/problem+json" ] || fail "404: $code"
grep -q '"status":404' "$TMP/b" || fail "404 body"
code=$(curl -s -X DELETE -D "$TMP/h" -o "$TMP/b" -w '%{http_code}' "$U/hello")
[ "$code" = 405 ] && grep -qi '^allow: GET, HEAD' "$TMP/h" || fail "405: $code $(cat "$TMP/h")"
code=$(curl -s -o "$TMP/b" -w '%{http_code}' "$U/problem")
[ "$code" = 422 ] && grep -q '"errors":\[{"pointer":"/items/0/quantity"' "$TMP/b" || fail "problem: $(cat "$TMP/b")"
pass "404, 405 with Allow, problem+json with errors"

out=$(curl -s "$U/hello" "$U/orders/1" "$U/hello" -w '\n%{num_connects}')
[ "$(echo "$out" | tail -1)" = 0 ] || [ "$(echo "$out" | grep -c hello)" = 2 ] || fail "keep-alive: $out"
pass "keep-alive reuse with curl"

# ---- raw sockets ----
raw pipeline
raw slowloris
raw big_headers
raw big_body
raw smuggle
raw disconnect

# ---- ops endpoints ----
curl -s "$U/metrics" >"$TMP/metrics"
grep -q '^agora_http_requests_total{method="GET",route="/hello",status="200"}' "$TMP/metrics" || fail "RED counter missing"
grep -q '^agora_http_request_duration_seconds_bucket{method="GET",route="/hello",le="+Inf"}' "$TMP/metrics" || fail "histogram missing"
grep -q '^agora_http_requests_in_flight ' "$TMP/metrics" || fail "in-flight gauge missing"
promtool check metrics <"$TMP/metrics" || fail "promtool rejected /metrics"
pass "/metrics passes promtool"
[ "$(curl -s -w '%{http_code}' -o "$TMP/b" "$U/health/live")" = 200 ] && grep -q '"status":"up"' "$TMP/b" || fail "live"
[ "$(curl -s -w '%{http_code}' -o "$TMP/b" "$U/health/ready")" = 200 ] && grep -q '"name":"store"' "$TMP/b" || fail "ready"
pass "/health/live and /health/ready"

# ---- graceful drain: an in-flight request completes, then the process exits ----
curl -s -D "$TMP/slowh" "$U/slow?ms=400" >"$TMP/slow" &
CURL=$!
sleep 0.15
kill -TERM "$SPID"
wait "$CURL" || fail "in-flight request failed during drain"
[ "$(cat "$TMP/slow")" = slow ] || fail "drain lost the answer"
grep -qi '^connection: close' "$TMP/slowh" || fail "drained answer not marked Connection: close"
for _ in $(seq 50); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.05; done
kill -0 "$SPID" 2>/dev/null && fail "server still running after drain"
wait "$SPID" || fail "server exit status $?"
grep -q 'Sanitizer' "$SLOG" && fail "sanitizer report: $(cat "$SLOG")"
pass "SIGTERM drains in-flight requests and exits 0"

# ---- backpressure at max connections ----
start_server --workers 1 --max-conns 2
raw backpressure
kill -TERM "$SPID"; wait "$SPID" || fail "exit status after backpressure run"
grep -q 'Sanitizer' "$SLOG" && fail "sanitizer report: $(cat "$SLOG")"
echo "all http server checks passed"
