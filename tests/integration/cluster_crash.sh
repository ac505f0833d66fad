#!/usr/bin/env bash
# The crash test against `agora cluster up` (issue 14 "Tests"): clients talk only to
# the gateway. Two groups of contexts, one instance each.
#   1. In the middle of an order load (cluster_orders.py, which keeps every 202's
#      order id, and an `agora load` beside it), kill -9 the supervisor AND every
#      member (PostgreSQL's postmaster, the 3 NATS nodes, the instances, the
#      gateway) at once; `cluster up` again on the same DIR (its supervisor.lock and
#      status.json are a dead supervisor's, postmaster.pid a killed postmaster's):
#      it starts, and every order acknowledged before the crash reaches a final
#      state; the log holds at least as many OrderPlaced as were acknowledged.
#   2. Under load again, kill -9 the supervisor alone: its members get their
#      parent-death signal and are still shutting down (or, without it, would live
#      on) when `cluster up` starts again at once: the new supervisor stops them
#      (cluster.orphan_* in its log, none of the old pids left) and starts; every
#      acknowledged order is final.
#   3. No saga running; saga_check.py passes on PostgreSQL (every saga ended,
#      money and stock conserved, nothing applied twice, the read models equal to
#      the log). Skips (77) without PostgreSQL; needs nats-server.
set -uo pipefail
BIN=${AGORA_BIN:?AGORA_BIN not set}
SRC=${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$SRC/tests/integration/run_lib.bash"
source "$SRC/tests/integration/cluster_lib.bash"
cluster_test_init cluster_crash clc
PPID_="" OLD=""
cleanup() { # the members also when the supervisor was killed alone, and the old one
    local p
    for p in $(member_pids) $OLD; do kill -9 "$p" 2>/dev/null; done
    cluster_cleanup "$PPID_"
}
trap cleanup EXIT
FAIL_TAIL=8
CONTEXTS='customers+catalog+ordering+sagas,inventory+payments+shipping'

START=$SECONDS
PORTG=$(free_port)
cluster_start "$PORTG" "$TMP/supervisor.log" --instances 1 --contexts "$CONTEXTS"
ADMIN=$(cl_token ops admin)
restock_all
make_customers 3 "$TMP/customers"
pass "cluster up in $((SECONDS - START)) s; every product restocked, 3 buyers funded"

ACKED=0 LOADPLACED=0
# under_load N SECONDS: the two loads in the background for SECONDS
under_load() {
    python3 "$SRC/tests/integration/cluster_orders.py" place "$G" "$TMP/customers" "$PROBE_PRODUCT" \
        "$2" "$TMP/acked.txt" >"$TMP/place$1.out" 2>&1 &
    PPID_=$!
    "$BIN" load --target "$G" --token "$ADMIN" --concurrency 2 --duration "$2" --customers 2 \
        --order-timeout 5 --quiet >"$TMP/load$1.json" 2>"$TMP/load$1.err" &
    LPID=$!
}
# loads_done N: wait for both; add what they say was acknowledged
loads_done() {
    wait "$PPID_"
    wait "$LPID"
    PPID_="" LPID=""
    load_summary "$TMP/load$1.json"
    LOADPLACED=$((LOADPLACED + L_placed))
    ACKED=$(wc -l <"$TMP/acked.txt")
    echo "# crash $1: $(cat "$TMP/place$1.out"); agora load placed $L_placed"
}
# acked_final: every order acknowledged so far is final (read through the gateway)
acked_final() {
    OUT=$(python3 "$SRC/tests/integration/cluster_orders.py" verify "$G" "$TMP/customers" "$TMP/acked.txt" 90) ||
        fail "$OUT"
}

# ---- 1. kill -9 the supervisor and every member ----
under_load 1 12
sleep 4
[ -s "$TMP/acked.txt" ] || fail "no order acknowledged before the crash: $(cat "$TMP/place1.out")"
pids=$(member_pids)
kill -9 "$SUP" $pids
wait "$SUP" 2>/dev/null
SUP=""
alive() { kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
for p in $pids; do
    for _ in $(seq 50); do alive "$p" || break; sleep 0.1; done
    alive "$p" && fail "pid $p survived kill -9 for 5 s"
done
RESTART=$SECONDS
cluster_start "$PORTG" "$TMP/supervisor.log"
pass "kill -9 of the supervisor and its $(wc -w <<<"$pids") members under load; cluster up again on DIR in $((SECONDS - RESTART)) s"
loads_done 1
acked_final
pass "crash 1: $OUT"

# ---- 2. kill -9 the supervisor alone: its members are orphans ----
orphans_before=$(grep -c '"cluster.orphan_stopping"' "$TMP/supervisor.log")
under_load 2 10
sleep 4
pids=$(member_pids)
kill -9 "$SUP"
wait "$SUP" 2>/dev/null
SUP=""
RESTART=$SECONDS
cluster_start "$PORTG" "$TMP/supervisor.log"
for p in $pids; do # (a pid reused since would not name DIR)
    alive "$p" && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "$D/" &&
        fail "the old member pid $p is still alive"
done
orphans=$(($(grep -c '"cluster.orphan_stopping"' "$TMP/supervisor.log") - orphans_before))
pass "kill -9 of the supervisor alone under load: cluster up again in $((SECONDS - RESTART)) s; $orphans orphans still shutting down were stopped by the new supervisor; none of the $(wc -w <<<"$pids") old member pids left"
loads_done 2
acked_final
pass "crash 2: $OUT"

# ---- 3. the invariants ----
cluster_settle 60
cluster_saga_check
[ "$PLACED_IN_LOG" -ge $((ACKED + LOADPLACED)) ] ||
    fail "the log has $PLACED_IN_LOG OrderPlaced, $ACKED + $LOADPLACED were acknowledged"
pass "no saga running; $PLACED_IN_LOG orders in the log for $((ACKED + LOADPLACED)) acknowledged; $CHECK_OUT"

cluster_stop_clean
pass "stopped (SIGINT), no member left, no sanitizer report ($((SECONDS - START)) s)"
