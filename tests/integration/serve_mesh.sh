#!/usr/bin/env bash
# Service discovery and the orchestrator through the mesh (issue 14): over one
# PostgreSQL (tests/lib/pgtmp.sh) and NATS JetStream, instance A serves customers,
# catalog, ordering and sagas, B inventory, payments and shipping, behind `agora
# gateway` configured by deploy/serve/gateway-discovery.yaml (every cluster from
# the registry). Checks:
#   - the registry: both instances in GET /admin/cluster (gateway and instance),
#     healthy, with their contexts; the gateway's clusters hold them;
#   - POST /internal/v1/steps is the mesh's only: unsigned straight to B 401, signed
#     as an admin 403, a customer's or an admin's token through the gateway refused,
#     signed as a service reachable (400 for an empty body);
#   - through the gateway: an order confirmed and a poor customer's order
#     cancelled, their participant steps run by B (A's saga steps are remote);
#   - kill -9 B during an order load, start B2 on another port: the registry drops
#     B (TTL) and lists B2, the orchestrator and the gateway call B2, every accepted
#     order ends final, saga_check.py (money and stock conserved, read models equal
#     to the log, nothing applied twice) passes;
#   - B2's clean stop deregisters it.
# Skips (77) without PostgreSQL; needs nats-server (scripts/bootstrap.sh).
set -uo pipefail
BIN=${AGORA_BIN:?AGORA_BIN not set}
SRC=${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$SRC/tests/lib/pgtmp.sh"
source "$SRC/tests/integration/run_lib.bash"
command -v nats-server >/dev/null || { echo "serve_mesh: nats-server is not installed" >&2; exit 1; }
TMP=$(mktemp -d /tmp/agora-mesh-XXXXXX)
serve_frame serve_mesh LPID GW PA PB NPID
FAIL_TAIL=20

pgtmp_start || exit $?
nats_start
STORE="$AGORA_TEST_PG_URI&schema=mesh"
RM=$AGORA_TEST_PG_URI
mesh_keys
PORTA=$(free_port) PORTB=$(free_port) PORTB2=$(free_port) PORTG=$(free_port)
common=(--store "$STORE" --readmodels "$RM" --bus "nats://127.0.0.1:$NPORT" --data "$TMP/data" --workers 2)
serve_start a customers catalog ordering sagas --listen "127.0.0.1:$PORTA" "${common[@]}" --seed
PA=$SERVE_PID A=$SERVE_BASE
serve_start b inventory payments shipping --listen "127.0.0.1:$PORTB" "${common[@]}"
PB=$SERVE_PID B=$SERVE_BASE
python3 - "$SRC/deploy/serve/gateway-discovery.yaml" "$RM" "$PORTG" >"$TMP/gateway.yaml" <<'PY'
import sys
src, rm, g = sys.argv[1:]
text = open(src).read().replace("postgresql:///agora?host=/run/postgresql", rm)
sys.stdout.write(text.replace("listen: 127.0.0.1:8080", "listen: 127.0.0.1:" + g))
PY
gateway_check "$TMP/gateway.yaml" deploy/serve/gateway-discovery.yaml
gateway_start "$TMP/gateway.yaml" "$PORTG"
grep -q '"saga.remote_step".*ReserveInventory' "$TMP/a.log" || fail "A's ReserveInventory is not remote"
ADMIN=$(tok ops admin) ADA=$(tok ada customer) POOR=$(tok poor customer)
pass "PostgreSQL, NATS, A ($A: customers catalog ordering sagas), B ($B: the participants), the gateway ($G)"

# ---- the registry ----
members() { # members URL-OF-/admin/cluster-JSON: "address=healthy ..." of the members
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(" ".join(m["address"]+"="+str(m["healthy"]).lower()+"/"+",".join(m["contexts"]) for m in d["members"]))'
}
want_a="127.0.0.1:$PORTA=true/customers,catalog,ordering,sagas"
want_b="127.0.0.1:$PORTB=true/inventory,payments,shipping"
m=$(curl -sf -H "Authorization: Bearer $ADMIN" "$G/admin/cluster" | members)
[[ " $m " == *" $want_a "* && " $m " == *" $want_b "* ]] || fail "gateway /admin/cluster: $m"
m=$(icurl "$A/admin/cluster" -sf | members)
[[ " $m " == *" $want_a "* && " $m " == *" $want_b "* ]] || fail "A's /admin/cluster: $m"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ADA" "$G/admin/cluster")" = 403 ] ||
    fail "a customer reads /admin/cluster"
ups=$(curl -sf -H "Authorization: Bearer $ADMIN" "$G/admin/upstreams")
python3 - "$ups" "$PORTA" "$PORTB" <<'PY' || fail "the gateway's clusters: $ups"
import json, sys
u = {c["name"]: [e["address"] for e in c["endpoints"]] for c in json.loads(sys.argv[1])["upstreams"]}
a, b = "127.0.0.1:" + sys.argv[2], "127.0.0.1:" + sys.argv[3]
ok = u["ordering"] == [a] and u["inventory"] == [b] and sorted(u["ops"]) == sorted([a, b])
sys.exit(0 if ok else 1)
PY
pass "the registry lists A and B (gateway and instance /admin/cluster); the gateway's clusters follow it"

# ---- the internal route is the mesh's only ----
STEP=/internal/v1/steps
post_b() { # SIG-or-"" SUB ROLES: status of a POST {} to B's internal route
    local h=(-H 'Content-Type: application/json' -H "x-user-id: $2" -H "x-user-roles: $3")
    [ -n "$1" ] && h+=(-H "x-user-sig: $1")
    curl -s -o /dev/null -w '%{http_code}' -X POST "${h[@]}" --data '{}' "$B$STEP"
}
NOW=$(date +%s)
[ "$(post_b "" service:x service)" = 401 ] || fail "an unsigned service call is not 401"
[ "$(post_b "$(mesh_sig "$NOW" ops admin POST $STEP)" ops admin)" = 403 ] || fail "a signed admin is not refused"
[ "$(post_b "$(mesh_sig "$NOW" ops service POST $STEP)" ops service)" = 403 ] ||
    fail "a signed non-service principal with role service is not refused"
[ "$(post_b "$(mesh_sig "$NOW" service:t service POST $STEP)" service:t service)" = 400 ] ||
    fail "a signed service call does not reach the route"
SVC=$(python3 -c 'import base64,hashlib,hmac,json,os,time
def b(x): return base64.urlsafe_b64encode(x).rstrip(b"=")
h=b(json.dumps({"alg":"HS256","typ":"JWT","kid":"dev"}).encode()); n=int(time.time())
p=b(json.dumps({"sub":"service:t","roles":["service","admin"],"iss":"agora-dev","aud":"agora","iat":n,"exp":n+600}).encode())
s=b(hmac.new(os.environ["AGORA_JWT_SECRET"].encode(), h+b"."+p, hashlib.sha256).digest())
print((h+b"."+p+b"."+s).decode())')
for t in "$ADA" "$ADMIN" "$SVC"; do
    st=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $t" \
        -H 'Content-Type: application/json' --data '{}' "$G$STEP")
    [[ $st =~ ^40[134]$ ]] || fail "$STEP through the gateway with a token: $st"
done
pass "$STEP: unsigned 401, a signed admin 403, a signed service 400 (reached); tokens through the gateway refused"

# ---- orders across the two instances ----
shopper "$ADA" "ada (the deposit: payments, at B)"
req "$ADA" GET "/api/v1/inventory/$KB"
before=$(field 'd["reserved"]')
order "$ADA" "$CID" "$KB"
[ "$FINAL" = confirmed ] || fail "ada's order: $FINAL"
req "$POOR" POST /api/v1/customers '{"email": "poor@example.com", "name": "No Money"}'
PCID=$(field 'd["id"]')
order "$POOR" "$PCID" "$KB"
[ "$FINAL" = cancelled ] || fail "the poor customer's order: $FINAL"
for _ in $(seq 100); do
    req "$ADA" GET "/api/v1/inventory/$KB"
    [ "$(field 'd["reserved"]')" = $((before + 1)) ] && break
    sleep 0.1
done
[ "$(field 'd["reserved"]')" = $((before + 1)) ] ||
    fail "stock: reserved $(field 'd["reserved"]'), want $((before + 1)) (the cancelled order's released)"
grep -q '"path":"/internal/v1/steps"\|internal/v1/steps' "$TMP/b.log" ||
    echo "# (B's log does not show the internal calls: no access log)"
pass "through the gateway: an order confirmed, a poor customer's cancelled (its reservation released by B)"

# ---- kill -9 B under load; B2 on another port takes its place ----
"$BIN" load --target "$G" --token "$ADMIN" --concurrency 4 --duration 8 --customers 4 \
    --poor-ratio 0.25 --order-timeout 60 --quiet >"$TMP/load.json" 2>"$TMP/load.err" &
LPID=$!
sleep 2.5
kill -9 "$PB"
wait "$PB" 2>/dev/null
PB=""
serve_start b2 inventory payments shipping --listen "127.0.0.1:$PORTB2" "${common[@]}"
PB=$SERVE_PID B2=$SERVE_BASE
wait "$LPID"
LPID=""
load_check "$TMP/load.json" 's["placed"] > 0 and s["pending"] == 0' ||
    fail "the load: $(cat "$TMP/load.json") $(tail -3 "$TMP/load.err")"
want_b2="127.0.0.1:$PORTB2=true/inventory,payments,shipping"
for _ in $(seq 100); do
    m=$(curl -sf -H "Authorization: Bearer $ADMIN" "$G/admin/cluster" | members)
    [[ " $m " == *" $want_b2 "* && " $m " != *" $want_b "* ]] && break
    sleep 0.1
done
[[ " $m " == *" $want_b2 "* && " $m " != *" $want_b "* ]] || fail "registry after the kill: $m"
grep -q '"mesh: endpoint added".*'"$PORTB2" "$TMP/a.log" || fail "A's orchestrator did not add B2"
settled=0 end=$((SECONDS + 120))
while ((SECONDS < end)); do
    running=$(icurl "$A/admin/sagas?status=running&limit=1" -sf --max-time 5 | json_field 'len(d["items"])' 2>/dev/null)
    lag=$( (icurl "$A/admin/projections" -sf --max-time 5; echo; icurl "$B2/admin/projections" -sf --max-time 5; echo) |
        python3 -c 'import json,sys; print(sum(p["lagEvents"] for l in sys.stdin if l.strip() for p in json.loads(l)["items"]))' 2>&1)
    if [[ $running == 0 && $lag == 0 ]]; then
        settled=$((settled + 1))
        ((settled >= 3)) && break
    else
        settled=0
    fi
    sleep 0.2
done
((settled >= 3)) || fail "not settled after B's kill: running=$running lag=$lag; A: $(icurl "$A/admin/projections" -s --max-time 5); B2: $(icurl "$B2/admin/projections" -s --max-time 5)"
failed=$(icurl "$A/admin/sagas?status=failed&limit=100" -sf | json_field 'len(d["items"])')
[ "$failed" = 0 ] || fail "$failed sagas failed"
pass "killed B under load, B2 ($B2) registered: the registry and A's orchestrator follow, every accepted order is final, no saga failed"

"$BIN" store all --store "$STORE" --limit 100000000 >"$TMP/events.jsonl" || fail "cannot read the log"
out=$(python3 "$SRC/tests/integration/saga_check.py" "$TMP/events.jsonl" "$RM" 2>&1) || fail "invariants: $out"
pass "$out"

kill -TERM "$PB" && wait "$PB" || fail "B2 exited with $? on SIGTERM"
PB=""
for _ in $(seq 50); do
    m=$(icurl "$A/admin/cluster" -sf | members)
    [[ $m != *":$PORTB2="* ]] && break
    sleep 0.1
done
[[ $m != *":$PORTB2="* ]] || fail "B2 still registered after its clean stop: $m"
kill -TERM "$GW" && wait "$GW" || fail "the gateway exited with $? on SIGTERM"
GW=""
kill -TERM "$PA" && wait "$PA" || fail "A exited with $? on SIGTERM"
PA=""
no_sanitizer_report
pass "B2 deregistered on its clean stop; A and the gateway stop cleanly"
