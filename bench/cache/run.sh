#!/usr/bin/env bash
# Cache benchmark (issue 15): catalog reads (GET /api/v1/products/{id}, one seeded
# product, anonymous) through `agora gateway` in front of `agora run --no-gateway`,
# the same run, four ways:
#   none     --cache off: every read is a SQLite query (JSON built per read)
#   service  --cache local: the services' in-process LRU (cache-aside)
#   gateway  --cache off, the gateway route with cache: {maxAge: 60s}: answered
#            by the gateway's response cache without reaching the services
#   redis    --cache redis://: the catalog cached in a redis-server started here
# wrk, CONNECTIONS connections (default 50), DURATION seconds per run (default 5)
# after a 1 s warm-up; REPEAT rounds (default 1) alternate the modes. The CPU time
# the services' and the gateway's processes spent per request (utime + stime from
# /proc) is meaningful even on a busy machine, unlike req/s and p99. One JSON
# line per run on stdout, appended to bench/results/cache.jsonl, then a table.
# AG_BENCH_BUILD: the build directory (default build/release).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD="${AG_BENCH_BUILD:-$ROOT/build/release}"
DURATION="${DURATION:-5}"
CONNECTIONS="${CONNECTIONS:-50}"
REPEAT="${REPEAT:-1}"
MODES="${MODES:-none service gateway redis}"
OUT="$ROOT/bench/results/cache.jsonl"
[ -x "$BUILD/agora" ] || { echo "missing $BUILD/agora: cmake -S . -B $BUILD -DCMAKE_BUILD_TYPE=Release && ninja -C $BUILD agora" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk not installed" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server not installed (scripts/bootstrap.sh)" >&2; exit 1; }
mkdir -p "$ROOT/bench/results"
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime of a process
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    f = u == "us" ? 1 : u == "ms" ? 1000 : u == "s" ? 1000000 : 1; printf "%.0f", n * f }'; }

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$TMP" --save '' --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done

run_mode() { # mode round
    local mode=$1 cache=off maxage="" sport gport d="$TMP/d-$1-$2" spid gpid
    case $mode in
    service) cache=local ;;
    gateway) maxage="        cache: {maxAge: 60s}" ;;
    redis) cache="redis://127.0.0.1:$RPORT"; redis-cli -p "$RPORT" flushall >/dev/null ;;
    esac
    sport=$(free_port)
    "$BUILD/agora" run --data "$d" --listen "127.0.0.1:$sport" --no-gateway --cache "$cache" \
        >"$TMP/agora-$mode.log" 2>&1 &
    spid=$!
    PIDS+=($spid)
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$sport/health/ready" >/dev/null && break; sleep 0.1; done
    cat >"$TMP/gw-$mode.yaml" <<YAML
gateway: {listen: 127.0.0.1:0, workers: 2, maxConnectionsPerPeer: 100000}
destinationRules:
  - host: platform
    endpoints: [{address: 127.0.0.1:$sport}]
    trafficPolicy:
      connectionPool: {tcp: {maxConnections: 64}, http: {http1MaxPendingRequests: 4096}}
virtualServices:
  - name: bench
    http:
      - name: catalog
        match: [{uri: {prefix: /api/v1/products}}]
        route: [{destination: {host: platform}}]
$maxage
YAML
    "$BUILD/agora" gateway --config "$TMP/gw-$mode.yaml" >"$TMP/gw-$mode.out" 2>"$TMP/gw-$mode.log" &
    gpid=$!
    PIDS+=($gpid)
    for _ in $(seq 100); do gport=$(awk '/^PORT/{print $2}' "$TMP/gw-$mode.out" 2>/dev/null || true); [ -n "$gport" ] && break; sleep 0.05; done
    local base="http://127.0.0.1:$gport"
    local id
    id=$(curl -s "$base/api/v1/products?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
    wrk -t2 -c"$CONNECTIONS" -d1s "$base/api/v1/products/$id" >/dev/null 2>&1 || true
    local s0 g0 s1 g1
    s0=$(cpu_ticks "$spid")
    g0=$(cpu_ticks "$gpid")
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$base/api/v1/products/$id" >"$TMP/wrk-$mode.txt" 2>&1
    s1=$(cpu_ticks "$spid")
    g1=$(cpu_ticks "$gpid")
    local rps p99 errs
    rps=$(awk '/^Requests\/sec/{print $2}' "$TMP/wrk-$mode.txt")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$TMP/wrk-$mode.txt")")
    errs=$(awk '/Non-2xx/{print $4}' "$TMP/wrk-$mode.txt")
    local hits reqs svc_us gw_us
    reqs=$(awk '/requests in/{print $1}' "$TMP/wrk-$mode.txt")
    svc_us=$(awk -v a="$s0" -v b="$s1" -v n="$reqs" -v hz="$HZ" 'BEGIN { printf "%.1f", n ? (b - a) * 1e6 / hz / n : 0 }')
    gw_us=$(awk -v a="$g0" -v b="$g1" -v n="$reqs" -v hz="$HZ" 'BEGIN { printf "%.1f", n ? (b - a) * 1e6 / hz / n : 0 }')
    hits=$(curl -s "http://127.0.0.1:$sport/metrics" | awk '/^agora_cache_hits_total\{cache="(products|redis_products)"\}/{s += $2} END {print s + 0}')
    printf '{"bench":"cache","mode":"%s","round":%s,"connections":%s,"seconds":%s,"rps":%s,"p99_us":%s,"non2xx":%s,"service_cache_hits":%s,"services_cpu_us_per_req":%s,"gateway_cpu_us_per_req":%s,"time":"%s"}\n' \
        "$mode" "$2" "$CONNECTIONS" "$DURATION" "${rps:-0}" "${p99:-0}" "${errs:-0}" "$hits" "$svc_us" "$gw_us" "$(date -u +%FT%TZ)" | tee -a "$OUT" >>"$TMP/all.jsonl"
    kill "$gpid" "$spid" 2>/dev/null || true
    wait "$gpid" "$spid" 2>/dev/null || true
}

for r in $(seq "$REPEAT"); do
    for m in $MODES; do run_mode "$m" "$r"; done
done
cat "$TMP/all.jsonl"
python3 - "$TMP/all.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = [r["rps"] for r in rows if r["mode"] == "none"]
b = sum(base) / len(base) if base else 0
print("%-8s %10s %10s %8s %14s %14s" % ("mode", "req/s", "p99 ms", "x none", "svc CPU us/req", "gw CPU us/req"))
for r in rows:
    print("%-8s %10.0f %10.2f %8s %14.1f %14.1f" % (r["mode"], r["rps"], r["p99_us"] / 1000,
          "%.2f" % (r["rps"] / b) if b else "-", r["services_cpu_us_per_req"], r["gateway_cpu_us_per_req"]))
PY
