#!/usr/bin/env bash
# What one proxied request costs, measured so that a busy machine does not
# change the answer: agora gateway (JWT, rate limit, routing on, as in run.sh)
# and nginx proxy_pass with upstream keep-alive, one worker each, the same
# upstream (gw_upstream) and request.
#
#   user-space instructions per request  callgrind (valgrind), counters zeroed
#                                        after a warm-up, wrk -c8 for CG_SECONDS (8)
#   system calls per request             strace -c -f over a wrk -c50 run
#
# Prints two tables and the top functions of agora's profile. Takes about a
# minute; valgrind must be installed. AG_BENCH_BUILD as in run.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD="${AG_BENCH_BUILD:-$ROOT/build/release}"
SECONDS_CG="${CG_SECONDS:-8}"
for t in valgrind callgrind_control callgrind_annotate strace wrk; do
    command -v "$t" >/dev/null || { echo "cost.sh needs $t" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 600); do p=$(awk '/^PORT/{print $2}' "$1" 2>/dev/null || true); [ -n "$p" ] && { echo "$p"; return 0; }; sleep 0.1; done; return 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 600); do curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "$1" && return 0; sleep 0.1; done; return 1; }

"$BUILD/gw_upstream" --name bench --workers 1 >"$TMP/up.out" 2>"$TMP/up.err" &
PIDS+=($!)
UP=$(wait_port "$TMP/up.out")
cat >"$TMP/gw.yaml" <<YAML
gateway: {listen: 127.0.0.1:0, workers: 1}
jwt:
  issuers:
    - issuer: bench
      audiences: [agora]
      keys: [{kid: b, alg: HS256, secret: "bench-secret-0123456789abcdef0123456789"}]
destinationRules:
  - host: up
    endpoints: [{address: 127.0.0.1:$UP}]
    trafficPolicy:
      connectionPool: {tcp: {maxConnections: 64}, http: {http1MaxPendingRequests: 4096}}
virtualServices:
  - name: bench
    http:
      - name: api
        match: [{uri: {prefix: /api/}}]
        route: [{destination: {host: up}}]
        auth: {required: true, roles: [customer]}
        rateLimit: {requests: 100000000, per: 1s, burst: 1000000, key: user}
YAML
TOKEN=$("$BUILD/agora" token --sub bench-user --role customer --ttl 3600 --config "$TMP/gw.yaml")
NG=$(free_port)
mkdir -p "$TMP/nginx/logs"
cat >"$TMP/nginx/nginx.conf" <<CONF
worker_processes 1;
master_process off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    upstream up { server 127.0.0.1:$UP; keepalive 64; }
    server {
        listen 127.0.0.1:$NG reuseport;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CONF

start() { # impl [wrapper...] -> PID, URL
    local impl=$1
    shift
    if [ "$impl" = agora ]; then
        "$@" "$BUILD/agora" gateway --config "$TMP/gw.yaml" >"$TMP/gw.out" 2>"$TMP/gw.err" &
        PID=$!
        URL="http://127.0.0.1:$(wait_port "$TMP/gw.out")/api/bench"
    else
        "$@" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' 2>"$TMP/nginx.err" &
        PID=$!
        URL="http://127.0.0.1:$NG/api/bench"
    fi
    PIDS+=("$PID")
    wait_http "$URL" || { echo "$impl did not start" >&2; exit 1; }
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
requests() { awk '/requests in/ {print $1}' "$1"; }

printf '%-8s %10s %14s\n' impl requests "Ir/request"
for impl in agora nginx; do
    start "$impl" valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.$impl"
    wrk -t1 -c8 -d3s -H "Authorization: Bearer $TOKEN" "$URL" >/dev/null
    callgrind_control -z "$PID" >/dev/null
    wrk -t1 -c8 -d"${SECONDS_CG}s" -H "Authorization: Bearer $TOKEN" "$URL" >"$TMP/wrk.$impl"
    callgrind_control -d "$PID" >/dev/null
    sleep 1
    stop "$PID"
    f=$(ls -t "$TMP"/cg."$impl".* | head -1)
    ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
    n=$(requests "$TMP/wrk.$impl")
    printf '%-8s %10d %14d\n' "$impl" "$n" $((ir / n))
    [ "$impl" = agora ] && cp "$f" "$TMP/agora.cg"
done

echo
printf '%-8s %s\n' impl "system calls per request"
for impl in agora nginx; do
    start "$impl"
    wrk -t2 -c50 -d1s -H "Authorization: Bearer $TOKEN" "$URL" >/dev/null
    strace -c -f -p "$PID" -o "$TMP/st.$impl" 2>/dev/null &
    S=$!
    sleep 0.5
    wrk -t2 -c50 -d4s -H "Authorization: Bearer $TOKEN" "$URL" >"$TMP/wrk.$impl"
    kill -INT "$S"
    wait "$S" 2>/dev/null || true
    stop "$PID"
    n=$(requests "$TMP/wrk.$impl")
    line=$(awk -v n="$n" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" && $4 / n >= 0.01 {
        printf "%s %.2f, ", $NF, $4 / n }' "$TMP/st.$impl")
    printf '%-8s %s\n' "$impl" "${line%, }"
done

echo
echo "agora: top functions (exclusive instructions)"
callgrind_annotate --threshold=100 "$TMP/agora.cg" 2>/dev/null |
    awk '/file:function/ {on = 1; next} on && NF >= 3 && $1 ~ /^[0-9,]+$/ {print; if (++k == 16) exit}' |
    grep -v 'clone\|start_thread\|worker_main\|uv_run' | cut -c1-120 || true
