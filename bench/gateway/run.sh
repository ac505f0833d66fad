#!/usr/bin/env bash
# Gateway benchmark: the same upstream (gw_upstream, 2 workers) reached four ways
# with wrk, same connections, same request (with an Authorization header):
#   direct   the upstream itself
#   agora    agora gateway with JWT verification (HS256), a rate limit and routing on
#   nginx    nginx proxy_pass with upstream keepalive
#   haproxy  HAProxy, http-reuse always
# Proxies run 2 workers/threads. DURATION seconds per run (default 5),
# CONNECTIONS (default "50"). One JSON line per run on stdout and appended to
# bench/results/gateway.jsonl, then a table with the ratio to nginx.
#
# HTTPS=1: agora gateway and nginx both terminate TLS with the same certificate
# (ECDSA P-256, made here), the same protocols (TLS 1.2/1.3) and the same cipher
# list; two runs each: "keepalive" (requests/s over kept-alive TLS connections)
# and "handshake" (Connection: close on every request: a full handshake per
# request, i.e. new handshakes/s). The negotiated protocol and cipher are in
# the JSON lines (bench gateway.https).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$ROOT/bench/lib/gateway.bash"
BUILD="${AG_BENCH_BUILD:-$ROOT/build/release}"
DURATION="${DURATION:-5}"
CONNECTIONS="${CONNECTIONS:-50}"
OUT="$ROOT/bench/results/gateway.jsonl"
for b in agora gw_upstream; do
    [ -x "$BUILD/$b" ] || { echo "missing $BUILD/$b: cmake -S . -B $BUILD -DCMAKE_BUILD_TYPE=Release && ninja -C $BUILD agora gw_upstream" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "wrk not installed" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
mkdir -p "$ROOT/bench/results"
procs_frame

to_us() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    f = u == "us" ? 1 : u == "ms" ? 1000 : u == "s" ? 1000000 : 1; printf "%.0f", n * f }'; }

upstream_start 2
gateway_config 2
"$BUILD/agora" gateway --config "$TMP/gw.yaml" >"$TMP/gw.out" 2>"$TMP/gw.err" &
PIDS+=($!)
GW=$(wait_port "$TMP/gw.out") || { echo "gateway did not start: $(cat "$TMP/gw.err")" >&2; exit 1; }

nginx_config 2

if [ "${HTTPS:-0}" = 1 ]; then # the same certificate, protocols and ciphers as agora
    CIPHERS="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/tls.key" \
        -out "$TMP/tls.pem" -days 2 -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
    sed -i "s|listen 127.0.0.1:$NG reuseport;|listen 127.0.0.1:$NG reuseport ssl;\n        ssl_certificate $TMP/tls.pem; ssl_certificate_key $TMP/tls.key;\n        ssl_protocols TLSv1.2 TLSv1.3; ssl_ciphers $CIPHERS;|" "$TMP/nginx/nginx.conf"
fi
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' 2>"$TMP/nginx.err" &
PIDS+=($!)

if [ "${HTTPS:-0}" = 1 ]; then
    "$BUILD/agora" gateway --config "$TMP/gw.yaml" --tls-cert "$TMP/tls.pem" --tls-key "$TMP/tls.key" \
        >"$TMP/gws.out" 2>"$TMP/gws.err" &
    PIDS+=($!)
    GWS=$(wait_port "$TMP/gws.out") || { echo "TLS gateway did not start: $(cat "$TMP/gws.err")" >&2; exit 1; }
    runs() { # impl port conns mode
        local hdr=() url="https://127.0.0.1:$2/api/bench" out rps line proto
        [ "$4" = handshake ] && hdr=(-H "Connection: close")
        curl -sfk -o /dev/null -H "Authorization: Bearer $TOKEN" "$url" || { echo "$1 is not answering over TLS" >&2; return 1; }
        proto=$(echo | openssl s_client -connect "127.0.0.1:$2" 2>/dev/null | awk '/^New,/ {print $2 $5}')
        out=$(wrk -t2 -c"$3" -d"${DURATION}s" -H "Authorization: Bearer $TOKEN" "${hdr[@]}" "$url")
        grep -q 'Non-2xx' <<<"$out" && echo "warning: $1 $4 had errors: $(grep 'Non-2xx' <<<"$out")" >&2
        rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        line=$(printf '{"bench":"gateway.https","impl":"%s","mode":"%s","tls":"%s","params":{"connections":%d,"workers":2},"ops_per_s":%.0f,"duration_s":%d}' \
            "$1" "$4" "$proto" "$3" "$rps" "$DURATION")
        echo "$line"
        echo "$line" >>"$OUT"
        echo "$1 $4 $rps" >>"$TMP/tls_table"
    }
    for c in $CONNECTIONS; do
        for m in keepalive handshake; do runs agora "$GWS" "$c" "$m"; runs nginx "$NG" "$c" "$m"; done
    done
    echo
    awk '{ r[$1" "$2] = $3 } END {
        printf "%-8s %-10s %10s %10s\n", "impl", "mode", "req/s", "vs nginx"
        split("keepalive handshake", ms, " ")
        for (i = 1; i <= 2; i++) for (j = 0; j < 2; j++) { im = j ? "nginx" : "agora"; k = im " " ms[i]
            printf "%-8s %-10s %10.0f %9.2fx\n", im, ms[i], r[k], r["nginx " ms[i]] ? r[k] / r["nginx " ms[i]] : 0 }
    }' "$TMP/tls_table"
    exit 0
fi

HP=$(free_port)
cat >"$TMP/haproxy.cfg" <<CONF
global
    nbthread 2
    maxconn 4000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend fe
    bind 127.0.0.1:$HP
    default_backend be
backend be
    server s1 127.0.0.1:$UP maxconn 64
CONF
"$HAPROXY" -f "$TMP/haproxy.cfg" -db 2>"$TMP/haproxy.err" &
PIDS+=($!)
sleep 0.5

run() { # impl port conns
    curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$2/api/bench" || { echo "$1 is not answering" >&2; return 1; }
    local out rps p50 p99 line
    out=$(wrk -t2 -c"$3" -d"${DURATION}s" --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$2/api/bench")
    grep -q 'Non-2xx\|Socket errors' <<<"$out" && echo "warning: $1 had errors: $(grep 'Non-2xx\|Socket' <<<"$out")" >&2
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    line=$(printf '{"bench":"gateway.proxy","impl":"%s","params":{"connections":%d,"workers":2},"ops_per_s":%.0f,"p50_us":%d,"p99_us":%d,"duration_s":%d}' \
        "$1" "$3" "$rps" "$p50" "$p99" "$DURATION")
    echo "$line"
    echo "$line" >>"$OUT"
    echo "$1 $3 $rps $p50 $p99" >>"$TMP/table"
}

for c in $CONNECTIONS; do
    run direct "$UP" "$c"
    run agora "$GW" "$c"
    run nginx "$NG" "$c"
    run haproxy "$HP" "$c"
done

echo
awk '{ rps[$1" "$2] = $3; p50[$1" "$2] = $4; p99[$1" "$2] = $5; conns[$2] = 1 }
END {
    printf "%-8s %6s %10s %8s %8s %10s %12s\n", "impl", "conns", "req/s", "p50_us", "p99_us", "vs nginx", "added p50_us"
    n = split("direct agora nginx haproxy", impls, " ")
    for (c in conns) for (i = 1; i <= n; i++) { k = impls[i] " " c; if (!(k in rps)) continue
        printf "%-8s %6s %10.0f %8d %8d %9.2fx %12d\n", impls[i], c, rps[k], p50[k], p99[k],
            rps["nginx " c] ? rps[k] / rps["nginx " c] : 0, p50[k] - p50["direct " c] }
}' "$TMP/table"
