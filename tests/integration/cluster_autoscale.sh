#!/usr/bin/env bash
# `agora cluster up` autoscaling (issue 14 item 5; README "Running distributed"): one
# group of every context, `all=1..2`, target 3 in-flight requests per instance, a 3 s
# cooldown. Checks:
#   - at the start one instance runs and the second slot is parked (status, and the
#     gateway's /admin/upstreams lists one endpoint);
#   - a load step (12 concurrent clients through the gateway): the group scales up to 2
#     (cluster.scale logged, all-2 started and ready, the gateway lists 2 endpoints);
#   - a light load after it (2 orders/s, polled every 0.5 s): the group scales back down to 1 after the
#     cooldown (all-2 drained: out of the endpoints, SIGTERM, parked), and the light
#     load meanwhile sees no error and no transport error (no request dropped);
#   - the decisions in status.json (as many downs as ups) and GET /admin/cluster;
#   - the gateway's /metrics: agora_cluster_scale_decisions_total{context="all",
#     direction} 0 at the start, then the ups and downs (the counter moved),
#     agora_cluster_instances 1 -> 2 -> 1, agora_cluster_utilisation,
#     agora_cluster_member_restarts_total{member="all-2"} 0 (a scale-up is no restart).
# Skips (77) without PostgreSQL; needs nats-server (scripts/bootstrap.sh).
set -uo pipefail
BIN=${AGORA_BIN:?AGORA_BIN not set}
SRC=${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$SRC/tests/integration/run_lib.bash"
source "$SRC/tests/integration/cluster_lib.bash" # cluster_start, member, cl_token, cluster_stop_clean
cluster_test_init cluster_autoscale cla
trap cluster_cleanup EXIT
group() { cstatus | json_field "d['groups'][0]['$1']"; }
endpoints() { # the gateway's endpoints for the ordering cluster
    curl -s -H "Authorization: Bearer $ADMIN" "$G/admin/upstreams" |
        json_field 'len([u for u in d["upstreams"] if u["name"] == "ordering"][0]["endpoints"])'
}
metric() { # metric 'NAME{LABELS}': its value on the gateway's /metrics (admin)
    curl -s -H "Authorization: Bearer $ADMIN" "$G/metrics" | awk -v k="$1" '$1 == k {print $2}'
}
waitfor() { # waitfor SECONDS WHAT CMD...: until CMD succeeds
    local s=$1 what=$2
    shift 2
    for _ in $(seq $((s * 10))); do "$@" && return 0; sleep 0.1; done
    fail "$what (after $s s): $("$BIN" cluster status --dir "$D")"
}

cluster_start "$(free_port)" "$TMP/supervisor.log" --contexts 'all=1..2' --target-inflight 3 --cooldown 3s
ADMIN=$(cl_token ops admin)
[ "$(member all-2 state)" = parked ] || fail "all-2 is $(member all-2 state), not parked"
[ "$(group instances)/$(group min)/$(group max)" = 1/1/2 ] || fail "group: $(cstatus)"
[ "$(endpoints)" = 1 ] || fail "the gateway lists $(endpoints) ordering endpoints, not 1"
UPS='agora_cluster_scale_decisions_total{context="all",direction="up"}'
DOWNS='agora_cluster_scale_decisions_total{context="all",direction="down"}'
[ "$(metric "$UPS")/$(metric "$DOWNS")/$(metric 'agora_cluster_instances{context="all"}')" = 0/0/1 ] ||
    fail "/metrics at the start: $(curl -s -H "Authorization: Bearer $ADMIN" "$G/metrics" | grep agora_cluster_)"
pass "all=1..2: one instance, the second slot parked, one endpoint at the gateway; /metrics: 0 decisions, 1 instance"

# ---- a load step: up to 2 ----
"$BIN" load --target "$G" --token "$ADMIN" --concurrency 12 --duration 12 --customers 4 \
    --order-timeout 40 --quiet >"$TMP/load.json" 2>"$TMP/load.err" &
LPID=$!
up2() { [ "$(member all-2 health)" = ready ] && [ "$(endpoints)" = 2 ]; }
waitfor 30 "not scaled up to 2 under the load" up2
wait "$LPID"
LPID=""
grep -q '"cluster.scale".*"direction":"up".*"member":"all-2"' "$TMP/supervisor.log" || fail "no cluster.scale up logged"
[ "$(metric "$UPS")" -ge 1 ] || fail "the decision counter did not move: $UPS $(metric "$UPS")"
pass "a load step (12 clients): scaled up to 2 (logged; all-2 ready, 2 endpoints at the gateway)"

# ---- a light load: back down to 1, no request dropped ----
"$BIN" load --target "$G" --token "$ADMIN" --rate 2 --poll-ms 500 --duration 20 --customers 1 \
    --order-timeout 40 --quiet >"$TMP/light.json" 2>"$TMP/light.err" &
LPID=$!
down1() { [ "$(member all-2 state)" = parked ] && [ "$(endpoints)" = 1 ]; }
waitfor 40 "not scaled down to 1 with a light load" down1
kill -0 "$LPID" 2>/dev/null || fail "scaled down only after the light load had ended: the drain was not under load"
grep -q '"cluster.scale".*"direction":"down".*"member":"all-2"' "$TMP/supervisor.log" || fail "no cluster.scale down logged"
grep -q '"cluster.member_parked".*"member":"all-2"' "$TMP/supervisor.log" || fail "all-2 not parked in the log"
wait "$LPID"
LPID=""
load_check "$TMP/light.json" 's["placed"] > 0 and s["pending"] == 0 and s["errors"] == 0 and s["transportErrors"] == 0' ||
    fail "the light load: $(cat "$TMP/light.json") $(tail -3 "$TMP/light.err")"
# (a loaded machine may see the group go up and down more than once: 3 s cooldown)
ups=$(group scaleUps) downs=$(group scaleDowns)
[ "$ups" -ge 1 ] && [ "$downs" = "$ups" ] && [ "$(group instances)" = 1 ] ||
    fail "decisions: $(cstatus | json_field 'd["groups"]')"
[ "$(curl -s -H "Authorization: Bearer $ADMIN" "$G/admin/cluster" | json_field 'd["groups"][0]["scaleDowns"]')" = "$downs" ] ||
    fail "GET /admin/cluster does not export the decisions"
mets=$(curl -s -H "Authorization: Bearer $ADMIN" "$G/metrics" | grep agora_cluster_)
[ "$(metric "$UPS")/$(metric "$DOWNS")" = "$ups/$downs" ] || fail "/metrics decisions, not $ups/$downs: $mets"
[ "$(metric 'agora_cluster_instances{context="all"}')" = 1 ] || fail "/metrics instances: $mets"
[ -n "$(metric 'agora_cluster_utilisation{context="all"}')" ] || fail "/metrics utilisation: $mets"
[ "$(metric 'agora_cluster_member_restarts_total{member="all-2"}')" = 0 ] || fail "/metrics restarts: $mets"
pass "a light load (2 orders/s): scaled down to 1 after the cooldown (drained, parked); no error, no transport error; decisions in status.json, /admin/cluster and /metrics (agora_cluster_scale_decisions_total up $ups, down $downs)"

cluster_stop_clean
pass "stopped (SIGINT), no member left"
