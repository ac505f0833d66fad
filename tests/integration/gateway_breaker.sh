#!/usr/bin/env bash
# The gateway's breaker and outlier detection count upstream failures, not the
# services' own errors: while an upstream answers every write with 503
# problem+json marked `X-Agora-Error: service` (its store is full), writes get
# that 503 (header passed through) but the cluster's breaker stays closed, the
# endpoint is not ejected and reads keep answering 200. A 503 without the mark
# (and a bare 502) still counts: the breaker opens and the endpoint is ejected.
# Also: every upstream process this script starts is killed at exit.
set -euo pipefail
source "$(dirname "$0")/gw_lib.bash"
gw_frame gw_upstream
upstream_start v1 up
UPP=$UP_PORT
cat >"$TMP/gw.yaml" <<YAML
gateway: {listen: 127.0.0.1:0, workers: 1}
destinationRules:
  - host: svc
    endpoints: [{address: 127.0.0.1:$UPP}]
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 3, baseEjectionTime: 30s, maxEjectionPercent: 100}
      circuitBreaker: {consecutiveErrors: 3, openTime: 30s}
virtualServices:
  - name: t
    http:
      - name: any
        route: [{destination: {host: svc}}]
        idempotency: false
YAML
gateway_start
U="http://127.0.0.1:$GP"
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
breaker() { curl -s "$U/admin/circuit-breakers" | python3 -c 'import json,sys; print(json.load(sys.stdin)["breakers"][0]["state"])'; }
ejected() { curl -s "$U/admin/upstreams" | python3 -c 'import json,sys; print(json.load(sys.stdin)["upstreams"][0]["endpoints"][0]["ejected"])'; }

[ "$(code "$U/r")" = 200 ] || fail "no 200 at start"
curl -s -X POST "127.0.0.1:$UPP/admin/fail-writes" >/dev/null
for i in $(seq 10); do
    curl -s -D "$TMP/h" -o "$TMP/b" -X POST "$U/w" -d '{}' -H 'Content-Type: application/json' >/dev/null
    head -1 "$TMP/h" | grep -q ' 503' || fail "write $i: $(head -1 "$TMP/h")"
    grep -qi '^X-Agora-Error: service' "$TMP/h" || fail "write $i: no X-Agora-Error header"
    grep -q 'the store is full' "$TMP/b" || fail "write $i: not the service's problem: $(cat "$TMP/b")"
done
[ "$(breaker)" = closed ] || fail "10 service errors opened the breaker: $(breaker)"
[ "$(ejected)" = False ] || fail "10 service errors ejected the endpoint"
for i in $(seq 5); do [ "$(code "$U/r")" = 200 ] || fail "read $i during the write outage: $(code "$U/r")"; done
pass "writes answer the service's 503 (X-Agora-Error: service); breaker closed, endpoint not ejected, reads 200"

curl -s -X POST "127.0.0.1:$UPP/admin/recover" >/dev/null
curl -s -X POST "127.0.0.1:$UPP/admin/fail" >/dev/null
for i in 1 2 3; do [ "$(code "$U/r")" = 503 ] || fail "unmarked 503 $i"; done
[ "$(breaker)" = open ] || fail "3 unmarked 503s did not open the breaker: $(breaker)"
[ "$(ejected)" = True ] || fail "3 unmarked 503s did not eject the endpoint"
curl -s "$U/r" | grep -q 'circuit breaker is open' || fail "the open breaker does not answer"
pass "503s without the mark still count: the breaker opens and the endpoint is ejected"
echo "gateway_breaker: 2 passed, 0 failed"
