#!/usr/bin/env bash
# Integration: an upstream served on a Unix-domain socket behind `agora gateway`
# (endpoint address "unix:/abs/path"). The socket file is mode 0600; a second
# server on the same path is refused while the first listens; the gateway
# proxies to it, pools connections and health-checks it; after the upstream is
# killed -9 (leaving a stale socket file) a new one replaces the file and the
# gateway reaches it again.
set -euo pipefail
source "$(dirname "$0")/gw_lib.bash"
gw_frame http_test_server
SRV=$UP
SOCK="$TMP/up.sock"

start_up() {
    "$SRV" --unix "$SOCK" --workers 2 >"$TMP/up.out" 2>"$TMP/up.log" &
    UPID=$!
    PIDS+=("$UPID")
    for _ in $(seq 100); do grep -q '^PORT' "$TMP/up.out" 2>/dev/null && return 0; sleep 0.05; done
    fail "upstream did not start: $(cat "$TMP/up.log")"
}
start_up
[ -S "$SOCK" ] || fail "no socket at $SOCK"
[ "$(stat -c %a "$SOCK")" = 600 ] || fail "socket mode $(stat -c %a "$SOCK"), want 600"
out=$(curl -s --unix-socket "$SOCK" http://localhost/hello)
[ "$out" = '{"message":"hello"}' ] || fail "direct call over the socket: $out"
pass "upstream listens on a Unix socket, mode 0600"

if "$SRV" --unix "$SOCK" >"$TMP/up2.out" 2>"$TMP/up2.log"; then fail "a second server started on a live socket"; fi
grep -q "another process listens" "$TMP/up2.log" || fail "refusal: $(cat "$TMP/up2.log")"
curl -sf --unix-socket "$SOCK" http://localhost/hello >/dev/null || fail "the first server stopped serving"
pass "a second server on the live socket is refused"

cat >"$TMP/gw.yaml" <<YAML
gateway: {listen: 127.0.0.1:0, workers: 2}
destinationRules:
  - host: svc
    endpoints:
      - {address: "unix:$SOCK"}
    trafficPolicy:
      connectionPool: {tcp: {maxConnections: 4, connectTimeout: 1s}}
      healthCheck: {path: /health/live, interval: 200ms, timeout: 1s}
virtualServices:
  - name: t
    http:
      - name: any
        route: [{destination: {host: svc}}]
        retries: {attempts: 2, retryOn: "connect-failure,reset"}
YAML
gateway_start
U="http://127.0.0.1:$GP"
out=$(curl -s "$U/hello")
[ "$out" = '{"message":"hello"}' ] || fail "through the gateway: $out"
out=$(curl -s -X POST --data-binary 'unix body' "$U/echo")
[ "$out" = 'unix body' ] || fail "POST through the gateway: $out"
for i in $(seq 50); do printf 'url = "%s"\noutput = "/dev/null"\n' "$U/orders/$i"; done >"$TMP/urls"
codes=$(curl -s -K "$TMP/urls" -w '%{http_code}\n' | sort | uniq -c | tr -s ' ')
[ "$codes" = " 50 200" ] || fail "50 requests through the gateway: $codes"
pass "the gateway proxies to unix:$SOCK"

kill -9 "$UPID"
wait "$UPID" 2>/dev/null || true
[ -S "$SOCK" ] || fail "expected a stale socket file after kill -9"
code=$(curl -s -o /dev/null -w '%{http_code}' "$U/hello")
[ "$code" -ge 500 ] || fail "upstream down answered $code"
start_up
[ "$(stat -c %a "$SOCK")" = 600 ] || fail "socket mode after restart"
ok=0
for _ in $(seq 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$U/hello")" = 200 ] && { ok=1; break; }
    sleep 0.1
done
[ "$ok" = 1 ] || fail "the gateway did not reach the restarted upstream"
pass "stale socket replaced after kill -9; the gateway reconnects"
