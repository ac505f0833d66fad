# Shared by the integration tests that start and restart `agora run` (the first
# half of this file: run_frame, agora_start, agora_stop, json_field, free_port;
# `grep -l run_lib.bash tests/integration/*` lists them) and by those around
# `agora serve` behind `agora gateway` (serve.sh, serve_mesh.sh, mtls.sh,
# host_loss.sh: the second half); sourced, not a test itself (CTest registers *.sh
# only). A test defines its own function of the same name after sourcing this to
# replace one.
#
# The caller defines BIN (the agora binary), TMP (its scratch directory, removed by
# its own trap, or by run_cleanup or serve_cleanup) and `fail MSG` (or has
# run_frame or serve_frame define them). agora_start appends the server's output
# to $TMP/server.log across restarts, so a failure shows the whole history.

# run_frame [PIDVAR...]: the frame of a test around `agora run` (set -e or not):
# TMP (a new scratch directory), SPID and the pid variables named (empty), PIDS
# (an empty array the caller may add pids to), `fail MSG` (says "FAIL: MSG" and
# the last 20 lines of $TMP/server.log, exits 1) and `trap run_cleanup EXIT`
# (SIGTERM to every pid in PIDS, SPID and the named variables, wait, TMP removed).
run_frame() {
    TMP=$(mktemp -d)
    SPID=""
    PIDS=()
    RUN_PIDVARS=(SPID "$@")
    local v
    for v in "$@"; do printf -v "$v" '%s' ""; done
    fail() { echo "FAIL: $*"; [ -f "$TMP/server.log" ] && tail -20 "$TMP/server.log"; exit 1; }
    trap run_cleanup EXIT
}
run_cleanup() {
    local v p
    for p in ${PIDS[@]+"${PIDS[@]}"}; do kill "$p" 2>/dev/null || true; done
    for v in "${RUN_PIDVARS[@]}"; do
        [ -n "${!v:-}" ] && kill "${!v}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}

# agora_start DATA [live|ready] [ARGS...]: `agora run --data DATA` on a free
# 127.0.0.1 port (port 0: agora prints "serving http://..."), then wait until
# /health/live (default) or /health/ready answers 200. Sets SPID and BASE (and A,
# the same address, for the older scripts).
agora_start() {
    local data=$1 wait=${2:-live} from=1
    shift $(($# < 2 ? $# : 2))
    [ -f "$TMP/server.log" ] && from=$(($(wc -l <"$TMP/server.log") + 1))
    "$BIN" run --data "$data" --listen 127.0.0.1:0 "$@" >>"$TMP/server.log" 2>&1 &
    SPID=$!
    BASE=""
    for _ in $(seq 300); do
        BASE=$(tail -n +"$from" "$TMP/server.log" | grep -o 'serving http://[0-9.]*:[0-9]*' | head -1 |
            sed 's/^serving //') || true
        [ -n "$BASE" ] && break
        kill -0 "$SPID" 2>/dev/null || fail "agora run exited"
        sleep 0.1
    done
    [ -n "$BASE" ] || fail "agora run did not start"
    A=$BASE
    for _ in $(seq 300); do
        kill -0 "$SPID" 2>/dev/null || fail "agora run exited"
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/health/$wait")" = 200 ] && return 0
        sleep 0.1
    done
    fail "agora run is not $wait at $BASE"
}

# agora_stop: SIGTERM, and agora must exit 0 (a clean drain).
agora_stop() {
    kill -TERM "$SPID"
    local rc=0
    wait "$SPID" || rc=$?
    SPID=""
    [ "$rc" = 0 ] || fail "agora run exited with $rc on SIGTERM"
}

# json_field EXPR: evaluate a Python expression over the JSON on stdin (as `d`).
json_field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

# serve_start NAME ARGS...: `agora serve ARGS...` (which include --listen), output in
# $TMP/NAME.log; waits until it prints "serving ... on http(s)://" and /health/ready
# answers 200. Sets SERVE_PID (the caller keeps it) and SERVE_BASE. With mTLS, set
# the array SERVE_CURL to the curl options the readiness check needs (--cacert,
# --cert, --key). With SERVE_NETNS set, runs it in that network namespace (`ip netns
# exec`, which execs: the pid is agora's).
serve_start() {
    local name=$1 wrap=()
    shift
    [ -n "${SERVE_NETNS:-}" ] && wrap=(ip netns exec "$SERVE_NETNS")
    "${wrap[@]}" "$BIN" serve "$@" >>"$TMP/$name.log" 2>&1 &
    SERVE_PID=$!
    SERVE_BASE=""
    for _ in $(seq 600); do
        SERVE_BASE=$(grep -Eo 'on https?://[0-9.]*:[0-9]*' "$TMP/$name.log" | head -1 | sed 's/^on //') || true
        [ -n "$SERVE_BASE" ] && break
        kill -0 "$SERVE_PID" 2>/dev/null || fail "agora serve ($name) exited: $(tail -5 "$TMP/$name.log")"
        sleep 0.1
    done
    [ -n "$SERVE_BASE" ] || fail "agora serve ($name) did not start"
    for _ in $(seq 300); do
        [ "$(curl -s ${SERVE_CURL[@]+"${SERVE_CURL[@]}"} -o /dev/null -w '%{http_code}' "$SERVE_BASE/health/ready")" = 200 ] && return 0
        kill -0 "$SERVE_PID" 2>/dev/null || fail "agora serve ($name) exited"
        sleep 0.1
    done
    fail "agora serve ($name) is not ready at $SERVE_BASE"
}

# free_port: a port the kernel has free now (for addresses a configuration names).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---- the tests around `agora serve`: frame, NATS, the mesh, the gateway ----

# serve_frame NAME PIDVAR...: the frame of a test around `agora serve` (TMP made
# by the caller): `fail MSG` (says "NAME: FAIL: MSG" and the last FAIL_TAIL (15)
# lines of every $TMP/*.log, exits 1), `pass MSG`, ASAN_OPTIONS's default (leaks
# checked, abort on error), the pid variables named emptied and `trap serve_cleanup
# EXIT` (a caller with more to undo traps its own cleanup, which calls serve_cleanup).
serve_frame() {
    SERVE_TEST=$1
    shift
    SERVE_PIDVARS=("$@")
    local v
    for v in "$@"; do printf -v "$v" '%s' ""; done
    fail() {
        echo "$SERVE_TEST: FAIL: $*" >&2
        for f in "$TMP"/*.log; do echo "--- $f" >&2; tail -"${FAIL_TAIL:-15}" "$f" >&2; done
        exit 1
    }
    pass() { echo "ok - $*"; }
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
    trap serve_cleanup EXIT
}

# serve_cleanup: SIGKILL to the pids the frame's variables hold, wait, pgtmp_stop
# (tests/lib/pgtmp.sh), and $TMP removed unless KEEP is set.
serve_cleanup() {
    local v p
    for v in "${SERVE_PIDVARS[@]}"; do
        for p in ${!v:-}; do kill -9 "$p" 2>/dev/null; done
    done
    wait 2>/dev/null
    pgtmp_stop
    [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}

# no_sanitizer_report: fails if a log in $TMP holds an ASan, UBSan or LSan report.
no_sanitizer_report() {
    grep -l -e 'AddressSanitizer' -e 'runtime error:' -e 'LeakSanitizer' "$TMP"/*.log && fail "sanitizer report"
}

# expect2 WORDS ARGS...: `agora serve ARGS...` exits 2 and its stderr says WORDS.
expect2() {
    local want=$1 out rc
    shift
    out=$("$BIN" serve "$@" 2>&1 >/dev/null)
    rc=$?
    [ "$rc" = 2 ] || fail "agora serve $* exited $rc, not 2"
    [[ $out == *"$want"* ]] || fail "agora serve $*: '$out' does not say '$want'"
}

# nats_start [ADDR]: `nats-server -js` on a free port at ADDR (127.0.0.1), its
# store in $TMP/js, its log $TMP/nats.log; sets NPID and NPORT and waits (10 s at
# most) until it accepts connections.
nats_start() {
    local addr=${1:-127.0.0.1}
    NPORT=$(free_port)
    nats-server -js -a "$addr" -p "$NPORT" -sd "$TMP/js" -l "$TMP/nats.log" &
    NPID=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/$addr/$NPORT") 2>/dev/null && break; sleep 0.1; done
}

# mesh_keys: a fresh AGORA_JWT_SECRET (the gateway's tokens) and AGORA_MESH_KEY
# (the identity headers the gateway signs and the instances check), exported.
mesh_keys() {
    export AGORA_JWT_SECRET AGORA_MESH_KEY
    AGORA_JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    AGORA_MESH_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
}

# mesh_sig TS SUB ROLES METHOD TARGET: the x-user-sig the gateway would send.
mesh_sig() {
    python3 -c 'import hashlib, hmac, os, sys
ts, sub, roles, m, t = sys.argv[1:]
mac = hmac.new(os.environ["AGORA_MESH_KEY"].encode(), "\n".join([ts, sub, roles, m, t]).encode(), hashlib.sha256)
print(ts + "." + mac.hexdigest())' "$@"
}

# icurl URL CURL-ARGS...: a GET straight to an instance as the gateway sends it
# (identity ops/admin, signed with the mesh key); the array ICURL_OPTS, if set,
# goes first (e.g. --max-time).
icurl() {
    local url=$1
    shift
    curl ${ICURL_OPTS[@]+"${ICURL_OPTS[@]}"} -H 'x-user-id: ops' -H 'x-user-roles: admin' \
        -H "x-user-sig: $(mesh_sig "$(date +%s)" ops admin GET "/${url#http://*/}")" "$@" "$url"
}

# statuses URL: every projection's status at an instance, "name=status ...".
statuses() {
    icurl "$1/admin/projections" -sf |
        python3 -c 'import json,sys; print(" ".join(p["name"]+"="+p["status"] for p in json.load(sys.stdin)["items"]))' 2>/dev/null
}

# relay_status URL: the outbox relay's status at an instance (running, standby...).
relay_status() { icurl "$1/admin/bus" -sf | json_field 'd["relay"]["status"]' 2>/dev/null; }

# gateway_check CONFIG WHAT: fails unless `agora gateway --check` accepts CONFIG.
gateway_check() {
    "$BIN" gateway --config "$1" --check >/dev/null 2>"$TMP/check.log" ||
        fail "$2 does not compile: $(cat "$TMP/check.log")"
}

# gateway_start CONFIG PORT [LOG]: `agora gateway --config CONFIG --workers 2`
# (listening on 127.0.0.1:PORT, as CONFIG says), output appended to $TMP/LOG
# (gateway.log); sets GW (its pid) and G (its base URL) and waits (20 s at most)
# until /health/ready answers 200.
gateway_start() {
    "$BIN" gateway --config "$1" --workers 2 >>"$TMP/${3:-gateway.log}" 2>&1 &
    GW=$!
    G=http://127.0.0.1:$2
    for _ in $(seq 200); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$G/health/ready")" = 200 ] && break; sleep 0.1; done
}

# tok SUB ROLE: a token for SUB with ROLE from $TMP/gateway.yaml's JWT settings.
tok() { "$BIN" token --config "$TMP/gateway.yaml" --sub "$1" --role "$2"; }

# req TOKEN METHOD PATH [BODY]: a request through the gateway ($G); sets ST (the
# status) and BODY. field EXPR: json_field over BODY.
req() {
    local t=$1 m=$2 p=$3 d=${4:-}
    local args=(-s -o "$TMP/body" -w '%{http_code}' -X "$m" -H "Authorization: Bearer $t")
    [ -n "$d" ] && args+=(-H 'Content-Type: application/json' --data-binary "$d")
    ST=$(curl "${args[@]}" "$G$p")
    BODY=$(cat "$TMP/body")
}
field() { json_field "$1" <<<"$BODY"; }

# order TOKEN CID PRODUCT [TRIES]: places an order of one PRODUCT for CID through
# the gateway (fails unless 202) and polls it (TRIES (300) times, 0.1 s apart)
# until it is confirmed or cancelled; sets OID and FINAL (its last status).
order() {
    local addr='"shippingAddress": {"street": "1 Main St", "city": "Springfield", "state": "IL", "zipCode": "62701", "country": "US"}'
    req "$1" POST /api/v1/orders "{\"customerId\": \"$2\", \"items\": [{\"productId\": \"$3\", \"quantity\": 1}], $addr}"
    [ "$ST" = 202 ] || fail "order: $ST $BODY"
    OID=$(field 'd["orderId"]')
    for _ in $(seq "${4:-300}"); do
        req "$1" GET "/api/v1/orders/$OID"
        [ "$ST" = 200 ] && [[ $(field 'd["status"]') =~ ^(confirmed|cancelled)$ ]] && break
        sleep 0.1
    done
    FINAL=$(field 'd["status"]')
}

# load_check FILE COND: prints the summary `agora load` wrote last in FILE as a
# "# load: ..." line; returns 1 unless the Python expression COND over it (`s`) holds.
load_check() {
    python3 - "$1" "$2" <<'PY'
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(f"# load: placed {s['placed']}, confirmed {s['confirmed']}, compensated {s['compensated']},"
      f" pending {s['pending']}, errors {s['errors']}, transport errors {s.get('transportErrors')}")
sys.exit(0 if eval(sys.argv[2]) else 1)
PY
}

# shopper TOKEN WHAT [CENTS]: through the gateway, registers the customer Ada Lovelace
# with TOKEN, deposits CENTS (50000: 500.00 USD) into her account and finds the demo
# catalog's KB-01; sets CID, AID and KB (fails "WHAT: register: ..." and so on).
shopper() {
    req "$1" POST /api/v1/customers '{"email": "ada@example.com", "name": "Ada Lovelace"}'
    [ "$ST" = 201 ] || fail "$2: register: $ST $BODY"
    CID=$(field 'd["id"]') AID=$(field 'd["accountId"]')
    req "$1" POST "/api/v1/accounts/$AID/deposits" "{\"amount\": {\"amount\": ${3:-50000}, \"currency\": \"USD\"}}"
    [ "$ST" = 200 ] || fail "$2: deposit: $ST $BODY"
    req "$1" GET "/api/v1/products?limit=50"
    [ "$ST" = 200 ] || fail "$2: products: $ST"
    KB=$(field '[p["id"] for p in d["items"] if p["sku"] == "KB-01"][0]')
}
