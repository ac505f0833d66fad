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
source "$ROOT/bench/lib/gateway.bash"
BUILD="${AG_BENCH_BUILD:-$ROOT/build/release}"
SECONDS_CG="${CG_SECONDS:-8}"
for t in valgrind callgrind_control callgrind_annotate strace wrk; do
    command -v "$t" >/dev/null || { echo "cost.sh needs $t" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
procs_frame
wait_http() { for _ in $(seq 600); do curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "$1" && return 0; sleep 0.1; done; return 1; }

upstream_start 1 1200 # up to 60 s: the machine may be busy
gateway_config 1
nginx_config 1 "master_process off;"

start() { # impl [wrapper...] -> PID, URL
    local impl=$1
    shift
    if [ "$impl" = agora ]; then
        "$@" "$BUILD/agora" gateway --config "$TMP/gw.yaml" >"$TMP/gw.out" 2>"$TMP/gw.err" &
        PID=$!
        URL="http://127.0.0.1:$(wait_port "$TMP/gw.out" 1200)/api/bench"
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
