#!/usr/bin/env bash
# Faults under load against `agora cluster up` (issue 14 "Tests": a NATS node and a
# service instance killed during load; PostgreSQL restarted). Two groups of contexts
# in two instances each; clients talk only to the gateway. During one `agora load`
# through the gateway, one after the other:
#   1. PostgreSQL restarted: its fast shutdown (SIGINT, what `pg_ctl stop -m fast`
#      sends), the supervisor starts it again (restarts 1, ready);
#   2. the NATS node leading the AGORA stream (found on the monitoring port, /jsz)
#      killed -9: another node leads, the supervisor restarts the killed one;
#   3. one service instance (the orchestrator's group) killed -9: restarted.
# After each, a new customer's order is confirmed within 60 s (orders keep
# confirming). At the end: every order the load saw accepted (202) is final, the
# log holds at least as many OrderPlaced as were acknowledged (nothing acknowledged
# lost), no saga is running, and saga_check.py passes on PostgreSQL (every saga
# ended, money and stock conserved, nothing charged or reserved twice, the read
# models equal to the log). Skips (77) without PostgreSQL; needs nats-server.
set -uo pipefail
BIN=${AGORA_BIN:?AGORA_BIN not set}
SRC=${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$SRC/tests/integration/run_lib.bash"
source "$SRC/tests/integration/cluster_lib.bash"
cluster_test_init cluster_faults clf
trap cluster_cleanup EXIT
FAIL_TAIL=8

# back_up NAME OLDPID: the supervisor started NAME again (another pid, ready)
back_up() {
    local name=$1 old=$2
    for _ in $(seq 600); do
        [ "$(member "$name" health)" = ready ] && [ "$(member "$name" pid)" != "$old" ] && return 0
        sleep 0.1
    done
    fail "$name was not started again: $("$BIN" cluster status --dir "$D")"
}

START=$SECONDS
cluster_start "$(free_port)" "$TMP/supervisor.log" --instances 2 \
    --contexts 'customers+catalog+ordering+sagas,inventory+payments+shipping'
ADMIN=$(cl_token ops admin)
restock_all
pass "cluster up in $((SECONDS - START)) s (2 x 2 instances); every product restocked"

LOAD_S=40
"$BIN" load --target "$G" --token "$ADMIN" --concurrency 4 --duration "$LOAD_S" --customers 4 \
    --order-timeout 90 --quiet >"$TMP/load.json" 2>"$TMP/load.err" &
LPID=$!
LOAD_END=$((SECONDS + LOAD_S))
sleep 3

# ---- 1. PostgreSQL restarted ----
PGPID=$(member postgresql pid)
kill -INT "$PGPID" # pg_ctl stop -m fast
back_up postgresql "$PGPID"
probe_confirms "after PostgreSQL's restart"
pass "PostgreSQL stopped (fast) under load and started again by the supervisor (restarts $(member postgresql restarts)); order $PROBE_OID confirmed after"

# ---- 2. the NATS stream leader killed ----
LEADER=$(stream_leader) || fail "no AGORA stream leader found on the monitoring ports"
NPID=$(member "$LEADER" pid)
kill -9 "$NPID"
back_up "$LEADER" "$NPID"
NEWLEADER=""
for _ in $(seq 100); do NEWLEADER=$(stream_leader) && [ -n "$NEWLEADER" ] && break; sleep 0.2; done
probe_confirms "after the NATS stream leader's kill"
pass "the AGORA stream leader $LEADER killed -9 under load: restarted, the stream led by $NEWLEADER; order $PROBE_OID confirmed after"

# ---- 3. a service instance killed ----
VICTIM=customers+catalog+ordering+sagas-1
VPID=$(member "$VICTIM" pid)
kill -9 "$VPID"
back_up "$VICTIM" "$VPID"
probe_confirms "after $VICTIM's kill"
pass "$VICTIM (the orchestrator's group) killed -9 under load: restarted; order $PROBE_OID confirmed after"

[ $SECONDS -lt $LOAD_END ] || echo "# (the faults outlasted the load: the last ones were not under load)"
wait "$LPID"
LPID=""
load_summary "$TMP/load.json"
echo "# load: placed $L_placed, confirmed $L_confirmed, compensated $L_compensated, pending $L_pending, errors $L_errors, transport errors $L_transport"
[ "$L_placed" -gt 0 ] && [ "$L_confirmed" -gt 0 ] && [ "$L_pending" = 0 ] && [ "$L_unreachable" = 0 ] ||
    fail "the load: $(cat "$TMP/load.json")"
for m in postgresql "$LEADER" "$VICTIM"; do
    [ "$(member "$m" restarts)" -ge 1 ] || fail "$m: restarts $(member "$m" restarts)"
done
pass "every order the load saw accepted is final ($L_confirmed confirmed, $L_compensated compensated)"

cluster_settle 60
cluster_saga_check
[ "$PLACED_IN_LOG" -ge $((L_placed + PROBES)) ] ||
    fail "the log has $PLACED_IN_LOG OrderPlaced, $L_placed + $PROBES were acknowledged"
pass "no saga running; $PLACED_IN_LOG orders in the log for $((L_placed + PROBES)) acknowledged; $CHECK_OUT"

cluster_stop_clean
pass "stopped (SIGINT), no member left, no sanitizer report ($((SECONDS - START)) s)"
