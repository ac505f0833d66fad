# Shared by the gateway benchmarks (bench/gateway/run.sh, bench/gateway/cost.sh):
# the scratch directory and the processes a run starts, the upstream both proxies
# reach (gw_upstream), agora gateway's configuration (JWT HS256, a rate limit and
# routing on) and nginx's (proxy_pass with upstream keep-alive), so that the two
# scripts measure the same setup. Sourced, not run.
#
# The caller sets ROOT (the source tree) before sourcing this and BUILD (where
# agora and gw_upstream are) before calling these; procs_frame, wait_port and
# free_port come from tests/lib/procs.bash.
source "$ROOT/tests/lib/procs.bash"

# upstream_start WORKERS [TRIES]: gw_upstream with WORKERS workers, output in
# $TMP/up.out and up.err; sets UP (its port; wait_port's TRIES) or exits 1.
upstream_start() {
    "$BUILD/gw_upstream" --name bench --workers "$1" >"$TMP/up.out" 2>"$TMP/up.err" &
    PIDS+=($!)
    UP=$(wait_port "$TMP/up.out" "${2:-100}") || { echo "upstream did not start" >&2; exit 1; }
}

# gateway_config WORKERS: $TMP/gw.yaml, agora gateway with WORKERS workers on
# 127.0.0.1:0 routing /api/ to the upstream, JWT (HS256, issuer bench) required
# with role customer, a rate limit per user far above any run's rate; sets TOKEN
# (a customer's, valid an hour).
gateway_config() {
    cat >"$TMP/gw.yaml" <<YAML
gateway: {listen: 127.0.0.1:0, workers: $1}
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
}

# nginx_config WORKERS [MAIN-DIRECTIVES]: $TMP/nginx/nginx.conf, nginx with
# WORKERS worker processes (and MAIN-DIRECTIVES, a line, e.g. "master_process off;")
# proxying everything to the upstream over kept-alive connections; sets NG (its
# port). Run it with: nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;'.
nginx_config() {
    NG=$(free_port)
    mkdir -p "$TMP/nginx/logs"
    cat >"$TMP/nginx/nginx.conf" <<CONF
worker_processes $1;${2:+
$2}
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
}
