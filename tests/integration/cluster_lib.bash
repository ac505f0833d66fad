# Helpers for the `agora cluster up` fault tests (cluster_faults.sh, cluster_crash.sh, cluster_mtls.sh,
# cluster_up.sh) and bench/cluster/run.sh; sourced after run_lib.bash. The caller
# sets BIN, SRC, D (the cluster's directory), TMP and defines fail (a test: cluster_test_init).
#   cluster_test_init NAME TAG     the prerequisites (exit 1 / skip 77), TMP, D, fail, pass
#   cluster_cleanup [PID...]       the EXIT trap: the PIDs, LPID, SUP and its members
#   cluster_start PORT LOG [ARGS]  `agora cluster up` in the background (SUP), until
#                                  status.json says running with this supervisor
#   cstatus / member NAME FIELD / member_pids   status.json, as cluster_up.sh reads it
#   cl_token SUB ROLE              a token from `agora token --data D`
#   stream_leader                  the NATS member leading the AGORA stream (/jsz)
#   restock_all                    every product's stock +1000000 (the admin, ADMIN)
#   probe_confirms WHAT            one order by a fresh customer reaches confirmed
#   cluster_settle SECONDS         no saga running, the projections caught up (gateway)
#   cluster_saga_check             `agora store all` + saga_check.py on PostgreSQL
#   field / ADDR / order_confirms  the API tour over cl_req (ADA, CID, KB; sets OID)
# cluster_test_init NAME TAG: the frame of a cluster test. What it needs (nats-server,
# else exit 1; PostgreSQL and, as root, a postgres user, else skip: exit 77), its TMP
# (/tmp/agora-TAG-XXXXXX: short, PostgreSQL's socket path is at most 107 bytes), the
# cluster's directory D=$TMP/c, SUP and LPID empty, `fail MSG` (says "NAME: FAIL: MSG"
# and the last FAIL_TAIL (12) lines of the supervisor's logs, the loads' stderr and
# every member's log, exits 1), `pass MSG` and ASAN_OPTIONS's default (leaks checked,
# abort on error). The caller traps its cleanup (cluster_cleanup).
cluster_test_init() {
    local pgb=${PGBIN:-/usr/lib/postgresql/15/bin}
    CLUSTER_TEST=$1
    command -v nats-server >/dev/null || { echo "$1: nats-server is not installed" >&2; exit 1; }
    [[ -x $pgb/initdb ]] || command -v initdb >/dev/null || { echo "$1: no PostgreSQL" >&2; exit 77; }
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then echo "$1: root without a postgres user" >&2; exit 77; fi
    TMP=$(mktemp -d "/tmp/agora-$2-XXXXXX")
    chmod 755 "$TMP"
    D=$TMP/c SUP="" LPID=""
    fail() {
        echo "$CLUSTER_TEST: FAIL: $*" >&2
        local f
        for f in "$TMP"/supervisor*.log "$TMP"/load*.err "$D"/logs/*.log; do
            [ -f "$f" ] && { echo "--- $f" >&2; tail -"${FAIL_TAIL:-12}" "$f" >&2; }
        done
        exit 1
    }
    pass() { echo "ok - $*"; }
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
}

# cluster_cleanup [PID...]: a cluster test's EXIT trap: kill -9 the PIDs, the load
# (LPID) and, with the supervisor (SUP), its members (they die with it, by their
# parent-death signal; be sure); TMP removed unless KEEP is set
cluster_cleanup() {
    local p
    for p in "$@" ${LPID:-}; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
    if [ -n "${SUP:-}" ]; then for p in $(member_pids) $SUP; do kill -9 "$p" 2>/dev/null; done; fi
    wait 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}

cstatus() { "$BIN" cluster status --dir "$D" --json 2>/dev/null; }
member_pids() { cstatus | json_field '" ".join(str(m["pid"]) for m in d["members"] if m["pid"])' 2>/dev/null; }
member() { cstatus | json_field "[m for m in d['members'] if m['name'] == '$1'][0]['$2']" 2>/dev/null; }
cl_token() { "$BIN" token --data "$D" --sub "$1" --role "$2"; }
cl_pg_uri() { echo "postgresql:///postgres?host=$D/pg&port=5432&user=postgres"; }

cluster_start() { # cluster_start PORT LOG [ARGS...]
    local port=$1 log=$2
    shift 2
    "$BIN" cluster up --dir "$D" --listen "127.0.0.1:$port" "$@" 2>>"$log" &
    SUP=$!
    G=http://127.0.0.1:$port
    for _ in $(seq 1200); do
        # (the grep first: cheaper than `cluster status` under load)
        grep -qs '^  "state": "running"' "$D/status.json" &&
            [ "$(cstatus | json_field '"%s %s" % (d["state"], d["supervisor"]["pid"])' 2>/dev/null)" = "running $SUP" ] && return 0
        kill -0 "$SUP" 2>/dev/null || fail "the supervisor exited: $(tail -5 "$log")"
        sleep 0.1
    done
    fail "not running after 120 s: $("$BIN" cluster status --dir "$D")"
}

# the name of the NATS member leading the AGORA stream (asked of every node: the
# first that knows)
stream_leader() {
    local mp
    for mp in $(cstatus | json_field '" ".join(str(m["monitorPort"]) for m in d["members"] if m["role"] == "nats" and m["health"] == "ready")'); do
        curl -s --max-time 2 "http://127.0.0.1:$mp/jsz?accounts=true&streams=true" | json_field \
            '[s["cluster"]["leader"] for a in d.get("account_details", []) for s in a.get("stream_detail", []) if s["name"] == "AGORA"][0]' 2>/dev/null &&
            return 0
    done
    return 1
}

# GET/POST through the gateway: sets ST and BODY
cl_req() { # cl_req TOKEN METHOD PATH [BODY]
    local t=$1 m=$2 p=$3 d=${4:-}
    local args=(-s --max-time 15 -o "$TMP/body" -w '%{http_code}' -X "$m")
    [ -n "$t" ] && args+=(-H "Authorization: Bearer $t")
    [ -n "$d" ] && args+=(-H 'Content-Type: application/json' --data-binary "$d")
    ST=$(curl "${args[@]}" "$G$p")
    BODY=$(cat "$TMP/body" 2>/dev/null)
}

restock_all() {
    local ids p
    cl_req "" GET "/api/v1/products?limit=100"
    [ "$ST" = 200 ] || fail "products: $ST $BODY"
    ids=$(json_field '" ".join(p["id"] for p in d["items"])' <<<"$BODY")
    for p in $ids; do
        cl_req "$ADMIN" POST "/api/v1/inventory/$p/restock" '{"quantity": 1000000}'
        [[ $ST == 20? ]] || fail "restock $p: $ST $BODY"
    done
    PROBE_PRODUCT=${ids%% *}
}

PROBES=0
probe_confirms() { # probe_confirms WHAT: a new customer's order is confirmed within 60 s
    local what=$1 tok cid aid oid st="" deadline=$((SECONDS + 60))
    PROBES=$((PROBES + 1))
    tok=$(cl_token "probe-$PROBES" customer)
    local addr='"shippingAddress": {"street": "1 Main St", "city": "Springfield", "state": "IL", "zipCode": "62701", "country": "US"}'
    # The first calls after a fault may fail and are retried. A 409 means an earlier
    # try was committed though its answer was lost: the customer is this principal's,
    # found as a client would (GET /customers/me; the read model may lag).
    while [ $SECONDS -lt $deadline ]; do
        cl_req "$tok" POST /api/v1/customers "{\"email\": \"probe$PROBES@example.com\", \"name\": \"Probe $PROBES\"}"
        [ "$ST" = 201 ] && break
        [ "$ST" = 409 ] && cl_req "$tok" GET /api/v1/customers/me && [ "$ST" = 200 ] && break
        sleep 0.5
    done
    [[ $ST == 201 || $ST == 200 ]] || fail "$what: register: $ST $BODY"
    cid=$(json_field 'd["id"]' <<<"$BODY") aid=$(json_field 'd["accountId"]' <<<"$BODY")
    while [ $SECONDS -lt $deadline ]; do
        cl_req "$tok" POST "/api/v1/accounts/$aid/deposits" '{"amount": {"amount": 100000000, "currency": "USD"}}'
        [ "$ST" = 200 ] && break
        sleep 0.5
    done
    [ "$ST" = 200 ] || fail "$what: deposit: $ST $BODY"
    while [ $SECONDS -lt $deadline ]; do
        cl_req "$tok" POST /api/v1/orders "{\"customerId\": \"$cid\", \"items\": [{\"productId\": \"$PROBE_PRODUCT\", \"quantity\": 1}], $addr}"
        [ "$ST" = 202 ] && break
        sleep 0.5
    done
    [ "$ST" = 202 ] || fail "$what: order: $ST $BODY"
    oid=$(json_field 'd["orderId"]' <<<"$BODY")
    while [ $SECONDS -lt $deadline ]; do
        cl_req "$tok" GET "/api/v1/orders/$oid"
        st=$( [ "$ST" = 200 ] && json_field 'd["status"]' <<<"$BODY")
        [[ $st == confirmed || $st == cancelled ]] && break
        sleep 0.2
    done
    [ "$st" = confirmed ] || fail "$what: order $oid: $ST $BODY"
    PROBE_OID=$oid
}

cluster_settle() { # cluster_settle SECONDS: no saga running and no projection lag, twice in a row
    local running lag settled=0 deadline=$((SECONDS + $1))
    while [ $SECONDS -lt $deadline ]; do
        cl_req "$ADMIN" GET "/admin/sagas?status=running&limit=1"
        running=$( [ "$ST" = 200 ] && json_field 'len(d["items"])' <<<"$BODY")
        cl_req "$ADMIN" GET /admin/projections
        lag=$( [ "$ST" = 200 ] && json_field 'sum(p["lagEvents"] for p in d["items"])' <<<"$BODY")
        if [[ $running == 0 && $lag == 0 ]]; then
            settled=$((settled + 1))
            [ $settled -ge 2 ] && return 0
        else
            settled=0
        fi
        sleep 0.5
    done
    fail "not settled after $1 s: sagas running '$running', projection lag '$lag'"
}

# the invariants from the store (sets CHECK_OUT, PLACED_IN_LOG)
cluster_saga_check() {
    local uri
    uri=$(cl_pg_uri)
    "$BIN" store all --store "$uri&schema=es" --limit 100000000 >"$TMP/events.jsonl" ||
        fail "cannot read the log"
    CHECK_OUT=$(python3 "$SRC/tests/integration/saga_check.py" "$TMP/events.jsonl" "$uri" 2>&1) ||
        fail "invariants: $CHECK_OUT"
    PLACED_IN_LOG=$(python3 -c 'import json, sys
print(sum(1 for l in open(sys.argv[1]) if l.strip() and json.loads(l)["type"] == "OrderPlaced"))' "$TMP/events.jsonl")
}

# load_summary FILE: the last JSON line of an `agora load` output, as shell variables
# L_placed L_confirmed L_compensated L_pending L_errors L_transport L_unreachable
load_summary() {
    eval "$(python3 - "$1" <<'PY'
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
for k, v in [("placed", s["placed"]), ("confirmed", s["confirmed"]), ("compensated", s["compensated"]),
             ("pending", s["pending"]), ("errors", s["errors"]), ("transport", s.get("transportErrors", 0)),
             ("unreachable", int(bool(s.get("unreachable"))))]:
    print(f"L_{k}={int(v)}")
PY
)"
}

# make_customers K FILE: K registered, funded customers, "TOKEN CUSTOMER_ID" per line
make_customers() {
    local k tok cid aid
    : >"$2"
    for k in $(seq "$1"); do
        tok=$(cl_token "buyer-$k" customer)
        cl_req "$tok" POST /api/v1/customers "{\"email\": \"buyer$k@example.com\", \"name\": \"Buyer $k\"}"
        [ "$ST" = 201 ] || fail "register buyer $k: $ST $BODY"
        cid=$(json_field 'd["id"]' <<<"$BODY") aid=$(json_field 'd["accountId"]' <<<"$BODY")
        cl_req "$tok" POST "/api/v1/accounts/$aid/deposits" '{"amount": {"amount": 100000000000, "currency": "USD"}}'
        [ "$ST" = 200 ] || fail "deposit buyer $k: $ST $BODY"
        echo "$tok $cid" >>"$2"
    done
}

cluster_stop_clean() { # cluster_stop_clean: SIGINT the supervisor; it exits 0, no member is left, no sanitizer report
    local pids rc=0 p
    pids=$(member_pids)
    kill -INT "$SUP"
    wait "$SUP" || rc=$?
    SUP=""
    [ "$rc" = 0 ] || fail "the supervisor exited $rc on SIGINT"
    for p in $pids; do kill -0 "$p" 2>/dev/null && fail "pid $p is still alive"; done
    grep -l -e 'AddressSanitizer' -e 'runtime error:' -e 'LeakSanitizer' "$D"/logs/*.log "$TMP/supervisor.log" &&
        fail "sanitizer report"
    return 0
}

# The API tour's helpers over cl_req: the answer's field, and one order by the customer
# CID (token ADA) of product KB reaching confirmed (sets OID).
field() { json_field "$1" <<<"$BODY"; }
ADDR='"shippingAddress": {"street": "1 Main St", "city": "Springfield", "state": "IL", "zipCode": "62701", "country": "US"}'
order_confirms() {
    cl_req "$ADA" POST /api/v1/orders "{\"customerId\": \"$CID\", \"items\": [{\"productId\": \"$KB\", \"quantity\": 1}], $ADDR}"
    [ "$ST" = 202 ] || fail "order: $ST $BODY"
    local oid
    oid=$(field 'd["orderId"]')
    for _ in $(seq 300); do
        cl_req "$ADA" GET "/api/v1/orders/$oid"
        [ "$ST" = 200 ] && [[ $(field 'd["status"]') =~ ^(confirmed|cancelled)$ ]] && break
        sleep 0.1
    done
    [ "$(field 'd["status"]')" = confirmed ] || fail "order $oid: $ST $BODY"
    OID=$oid
}
