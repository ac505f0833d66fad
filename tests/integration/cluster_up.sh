#!/usr/bin/env bash
# `agora cluster up|status` (issue 14 item 4; README "Running distributed"): the
# supervisor in a temporary directory, clients talking to its gateway only. Checks:
#   - bad input, before anything starts: no --listen, an unknown context, a
#     directory that is not a cluster's, a cluster.json with a syntax error (its line)
#     or a bad field (its name), --listen on a port in use: a clear message, exit != 0;
#   - the first start: PostgreSQL (initdb), 3 NATS nodes, two groups of contexts in
#     two instances each, the gateway; DIR 0700 (0710 root:postgres as root), the
#     secrets 0600; `cluster status` (table and --json) shows every member up and
#     ready; a second `cluster up` on DIR is refused;
#   - the API tour's core through the gateway, with tokens from `agora token --data
#     DIR`: register, deposit, an order confirmed; GET /admin/cluster: 200 for the
#     admin with the same members, 403 for a customer, 401 anonymous;
#   - kill -9 an instance and a NATS node during an order load: the supervisor logs
#     their exits (with the backoff) and starts them again (new pids, restarts 1 in
#     status), every order the load saw accepted is final and orders confirm; no
#     saga left running and saga_check.py passes on PostgreSQL (every saga ended,
#     money and stock conserved, nothing applied twice, read models = the log);
#   - SIGINT: the supervisor stops the members in order (gateway, instances, NATS,
#     PostgreSQL), exits 0, and none of the pids it ran is left;
#   - a second start on DIR, with --insecure-plaintext (the members on plain HTTP, no
#     tls in gateway.yaml), reuses cluster.json (its ports) and the data (no initdb;
#     the order is still there), and stops again the same way.
# The first start runs with mTLS (the default; tests/integration/cluster_mtls.sh
# checks the certificates), so the tour and the kill test cross it.
# Skips (77) without PostgreSQL; needs nats-server (scripts/bootstrap.sh).
set -uo pipefail
BIN=${AGORA_BIN:?AGORA_BIN not set}
SRC=${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$SRC/tests/integration/run_lib.bash"
source "$SRC/tests/integration/cluster_lib.bash" # cluster_settle, cluster_saga_check
cluster_test_init cluster_up cl
HOLD=""
trap 'cluster_cleanup "$HOLD"' EXIT
# member NAME FIELD: a field of that member in status.json

# ---- bad input ----
expect_err() { # expect_err RC WORDS ARGS...: `agora cluster ARGS` exits RC and says WORDS
    local want_rc=$1 want=$2 out rc
    shift 2
    out=$("$BIN" cluster "$@" 2>&1 >/dev/null)
    rc=$?
    [ "$rc" = "$want_rc" ] || fail "agora cluster $* exited $rc, not $want_rc ($out)"
    [[ $out == *"$want"* ]] || fail "agora cluster $*: '$out' does not say '$want'"
}
expect_err 2 "--listen HOST:PORT is required" up --dir "$D"
expect_err 2 "'billing' is not a context" up --dir "$D" --listen 127.0.0.1:1 --contexts customers,billing
expect_err 2 "no group serves 'shipping'" up --dir "$D" --listen 127.0.0.1:1 --contexts customers+catalog+ordering+inventory+payments+sagas
mkdir -p "$TMP/other" && echo x >"$TMP/other/notes.txt"
expect_err 1 "is not an agora cluster directory" up --dir "$TMP/other" --listen 127.0.0.1:1
expect_err 1 "is not an agora cluster directory" status --dir "$TMP/other"
mkdir -p "$TMP/broken"
printf '{"agoraCluster": 1,\n "contexts": "all",\n "instances": 2,,\n}\n' >"$TMP/broken/cluster.json"
expect_err 1 "cluster.json:3:17" up --dir "$TMP/broken" --listen 127.0.0.1:1
printf '{"agoraCluster": 1, "contexts": "all", "instances": 1, "nats": [{"name": "nats-1", "port": 1, "clusterPort": 2, "monitorPort": 3}, {"name": "nats-2", "port": 4, "clusterPort": 5, "monitorPort": 6}, {"name": "nats-3", "port": 7, "clusterPort": 99999, "monitorPort": 9}], "members": [{"name": "all-1", "port": 10}]}\n' >"$TMP/broken/cluster.json"
expect_err 1 "nats[2].clusterPort: a port number" up --dir "$TMP/broken" --listen 127.0.0.1:1
expect_err 1 "nats[2].clusterPort" status --dir "$TMP/broken"
BUSY=$(free_port)
python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1); time.sleep(60)' "$BUSY" &
HOLD=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$BUSY") 2>/dev/null && break; sleep 0.1; done
expect_err 1 "--listen 127.0.0.1:$BUSY: in use" up --dir "$TMP/busy" --listen "127.0.0.1:$BUSY" --instances 1
kill -9 "$HOLD"
wait "$HOLD" 2>/dev/null
HOLD=""
pass "bad input refused with a clear message: no --listen, unknown or missing contexts, not a cluster directory, cluster.json:LINE, nats[2].clusterPort, --listen in use"

# ---- the first start ----
PORTG=$(free_port)
G=http://127.0.0.1:$PORTG
START=$(date +%s)
cluster_start "$PORTG" "$TMP/supervisor.log" --instances 2 \
    --contexts 'customers+catalog+ordering+sagas,inventory+payments+shipping'
"$BIN" cluster status --dir "$D" >"$TMP/status.txt" || fail "cluster status exited $? while running"
for m in postgresql nats-1 nats-2 nats-3 customers+catalog+ordering+sagas-1 customers+catalog+ordering+sagas-2 \
    inventory+payments+shipping-1 inventory+payments+shipping-2 gateway; do
    grep -q "^$m .* up .* ready " "$TMP/status.txt" || fail "status: $m is not up and ready: $(cat "$TMP/status.txt")"
done
[ "$(member gateway address)" = "127.0.0.1:$PORTG" ] || fail "the gateway's address"
mode=$(stat -c %a "$D")
[[ $mode == 700 || ($mode == 710 && $(id -u) == 0) ]] || fail "DIR is $mode"
for f in jwt-secret mesh-key cluster.json gateway.yaml status.json; do
    [ "$(stat -c %a "$D/$f")" = 600 ] || fail "$f is $(stat -c %a "$D/$f"), not 600"
done
expect_err 1 "is in use: the supervisor pid $SUP" up --dir "$D" --listen "127.0.0.1:$(free_port)"
pass "cluster up: every member up and ready in $(($(date +%s) - START)) s; DIR $mode, secrets 0600; a second supervisor refused"

# ---- the API tour's core through the gateway ----
req() { cl_req "$@"; }
ADMIN=$(cl_token ops admin) ADA=$(cl_token ada customer)
shopper "$ADA" tour 500000
order_confirms
pass "through the gateway (tokens from agora token --data DIR): register, deposit, order $OID confirmed"

req "$ADMIN" GET /admin/cluster
[ "$ST" = 200 ] || fail "GET /admin/cluster as the admin: $ST $BODY"
[ "$(field '" ".join(sorted(m["name"] for m in d["members"] if m["health"] == "ready"))')" = \
    "$(cstatus | json_field '" ".join(sorted(m["name"] for m in d["members"]))')" ] ||
    fail "/admin/cluster does not list every member ready: $BODY"
[ "$(field 'd["stale"]')" = False ] || fail "/admin/cluster is stale: $BODY"
req "$ADA" GET /admin/cluster
[ "$ST" = 403 ] || fail "GET /admin/cluster as a customer: $ST"
req "" GET /admin/cluster
[ "$ST" = 401 ] || fail "GET /admin/cluster anonymous: $ST"
pass "GET /admin/cluster: the admin sees every member ready (not stale); a customer 403, anonymous 401"

# ---- kill -9 an instance and a NATS node under load ----
VICTIM=inventory+payments+shipping-1
VPID=$(member "$VICTIM" pid) NPID=$(member nats-2 pid)
"$BIN" load --target "$G" --token "$ADMIN" --concurrency 2 --duration 6 --customers 2 \
    --order-timeout 40 --quiet >"$TMP/load.json" 2>"$TMP/load.err" &
LPID=$!
sleep 1.5
kill -9 "$VPID" "$NPID"
wait "$LPID"
LPID=""
load_check "$TMP/load.json" 's["confirmed"] > 0 and s["pending"] == 0' ||
    fail "the load: $(cat "$TMP/load.json") $(tail -3 "$TMP/load.err")"
for _ in $(seq 300); do
    [ "$(member "$VICTIM" health)/$(member nats-2 health)" = ready/ready ] && break
    sleep 0.1
done
for m in "$VICTIM" nats-2; do
    [ "$(member "$m" health)" = ready ] || fail "$m was not restarted: $("$BIN" cluster status --dir "$D")"
    [ "$(member "$m" restarts)" = 1 ] || fail "$m: restarts $(member "$m" restarts), not 1"
    [ "$(member "$m" lastExit)" = "signal 9" ] || fail "$m: lastExit $(member "$m" lastExit)"
done
[ "$(member "$VICTIM" pid)" != "$VPID" ] && [ "$(member nats-2 pid)" != "$NPID" ] || fail "the same pids"
for m in "$VICTIM" nats-2; do
    grep -q "\"cluster.member_exited\".*\"member\":\"$m\".*\"restartInMs\"" "$TMP/supervisor.log" ||
        fail "no cluster.member_exited for $m in the supervisor's log"
done
order_confirms
pass "killed $VICTIM and nats-2 (-9) under load: every accepted order final, both restarted (logged, restarts 1, new pids), order $OID confirmed after"
cluster_settle 60
cluster_saga_check
pass "after the kills: no saga running; $CHECK_OUT"

# ---- SIGINT stops everything, in order ----
stop_cluster() { # cluster_stop_clean, and stopped in order (LOG), status.json says so; sets ORDER, NPIDS
    local log=$1
    NPIDS=$(member_pids | wc -w)
    cluster_stop_clean
    ORDER=$(grep -o '"cluster.stopping".*"role":"[a-z]*"' "$log" | grep -o '"role":"[a-z]*"' | tr -d '"' | sed 's/role://' | tr '\n' ' ')
    [ "$ORDER" = "gateway instance nats postgresql " ] || fail "stop order: '$ORDER'"
    [ "$(cstatus | json_field 'd["state"]')" = stopped ] || fail "status.json does not say stopped"
    "$BIN" cluster status --dir "$D" >/dev/null
    [ $? = 3 ] || fail "cluster status of a stopped cluster does not exit 3"
}
stop_cluster "$TMP/supervisor.log"
pass "SIGINT: stopped in order ($ORDER), exit 0, none of the $NPIDS member pids left"

# ---- a second start: the same ports, the same data, no initdb ----
SUM=$(md5sum <"$D/cluster.json")
cluster_start "$PORTG" "$TMP/supervisor2.log" --insecure-plaintext
[ "$(md5sum <"$D/cluster.json")" = "$SUM" ] || fail "cluster.json changed at the second start"
grep -q '"cluster.initdb"' "$TMP/supervisor2.log" && fail "initdb ran again"
IPORT=$(member "$VICTIM" address | cut -d: -f2)
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$IPORT/health/live")" = 200 ] ||
    fail "--insecure-plaintext: $VICTIM does not answer plain HTTP"
grep -q 'tls: {mode: MUTUAL' "$D/gateway.yaml" && fail "--insecure-plaintext: gateway.yaml has tls"
req "$ADA" GET "/api/v1/orders/$OID"
[ "$ST" = 200 ] && [ "$(field 'd["status"]')" = confirmed ] || fail "order $OID after the restart: $ST $BODY"
stop_cluster "$TMP/supervisor2.log"
grep -l -e 'AddressSanitizer' -e 'runtime error:' -e 'LeakSanitizer' "$D"/logs/*.log "$TMP"/supervisor*.log &&
    fail "sanitizer report"
pass "a second start on DIR with --insecure-plaintext: the same cluster.json (ports), no initdb, instances on plain HTTP, order $OID still confirmed; stopped again ($NPIDS pids gone)"
