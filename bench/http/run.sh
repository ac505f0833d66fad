#!/usr/bin/env bash
# HTTP hello benchmark: agora (bench_http_server) vs nginx (`return 200` with the
# same JSON body), same worker count, wrk on 127.0.0.1; 1 and 2 workers, 50 and
# 500 connections, DURATION seconds each (default 5). One JSON line per run on
# stdout, appended to bench/results/http.jsonl, then a ratio table.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN="${AG_BENCH_BIN:-$ROOT/build/release/bench_http_server}"
DURATION="${DURATION:-5}"
OUT="$ROOT/bench/results/http.jsonl"
[ -x "$BIN" ] || { echo "missing $BIN: run 'make build' first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk not installed" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
mkdir -p "$ROOT/bench/results"
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

to_us() { # "1.23ms" -> 1230
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") f = 1; else if (u == "ms") f = 1000; else if (u == "s") f = 1000000; else f = 1;
        printf "%.0f", n * f }'
}

run_wrk() { # url conns impl workers
    local threads=2 out
    out=$(wrk -t"$threads" -c"$2" -d"${DURATION}s" --latency "$1")
    local rps p50 p99
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    local line
    line=$(printf '{"bench":"http.hello","impl":"%s","params":{"workers":%d,"connections":%d},"ops_per_s":%.0f,"p50_us":%d,"p99_us":%d,"duration_s":%d}' \
        "$3" "$4" "$2" "$rps" "$p50" "$p99" "$DURATION")
    echo "$line"
    echo "$line" >>"$OUT"
    echo "$3 $4 $2 $rps $p50 $p99" >>"$TMP/table"
}

start_agora() { # workers -> PORT
    "$BIN" --workers "$1" >"$TMP/agora.out" 2>"$TMP/agora.err" &
    APID=$!
    PIDS+=("$APID")
    for _ in $(seq 100); do
        PORT=$(awk '/^PORT/{print $2}' "$TMP/agora.out")
        [ -n "$PORT" ] && return 0
        sleep 0.05
    done
    echo "agora did not start: $(cat "$TMP/agora.err")" >&2
    exit 1
}

start_nginx() { # workers port
    mkdir -p "$TMP/nginx/logs"
    cat >"$TMP/nginx/nginx.conf" <<CONF
worker_processes $1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    server {
        listen 127.0.0.1:$2 reuseport;
        location = /hello { default_type application/json; return 200 '{"message":"hello"}'; }
    }
}
CONF
    "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' 2>"$TMP/nginx/stderr" &
    NPID=$!
    PIDS+=("$NPID")
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$2/hello" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "nginx did not start: $(cat "$TMP/nginx/stderr")" >&2
    exit 1
}

stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

NPORT=$((20000 + RANDOM % 20000))
for W in 1 2; do
    start_agora "$W"
    curl -sf "http://127.0.0.1:$PORT/hello" >/dev/null
    start_nginx "$W" "$NPORT"
    for C in 50 500; do
        run_wrk "http://127.0.0.1:$PORT/hello" "$C" agora "$W"
        run_wrk "http://127.0.0.1:$NPORT/hello" "$C" nginx "$W"
    done
    stop "$APID"
    stop "$NPID"
    NPORT=$((NPORT + 1))
done

echo
printf '%-8s %-6s %12s %12s %9s %9s %9s %9s %8s\n' workers conns agora_rps nginx_rps a_p50us n_p50us a_p99us n_p99us ratio
awk '{ k = $2 " " $3; if ($1 == "agora") { ar[k] = $4; a50[k] = $5; a99[k] = $6 } else { nr[k] = $4; n50[k] = $5; n99[k] = $6; order[++n] = k } }
     END { for (i = 1; i <= n; i++) { k = order[i]; split(k, p, " ");
           printf "%-8s %-6s %12.0f %12.0f %9d %9d %9d %9d %7.2fx\n", p[1], p[2], ar[k], nr[k], a50[k], n50[k], a99[k], n99[k], ar[k] / nr[k] } }' "$TMP/table"
