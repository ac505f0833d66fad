#!/usr/bin/env bash
# `agora serve` (issue 14): two instances, A and B, each serving every context over
# one PostgreSQL (store and read models, tests/lib/pgtmp.sh) and one NATS JetStream
# (nats-server -js on loopback), behind `agora gateway` configured by
# deploy/serve/gateway.yaml (its two endpoints moved to the test's ports). Checks:
#   - the CLI: --help, no context / an unknown one / file: / sqlite: / local: refused
#     with exit 2 and a clear message;
#   - leases: every projection and the relay run in exactly one instance, standby in
#     the other;
#   - the mesh key: serve refuses to start without AGORA_MESH_KEY or with a short
#     one; a request straight to an instance with forged x-user-id/x-user-roles
#     (no x-user-sig, a bad one, a stale one, one made for another request) is
#     anonymous there (401 on an admin and on an owner route, counted as
#     bad_signature) while the same through the gateway (which signs) works;
#   - the API tour's core, through the gateway only (tokens from `agora token
#     --config`): register, deposit, order confirmed, another customer cannot read it;
#   - an order load through the gateway while the instance holding the saga starter's
#     lease (the sagas' owner) is SIGKILLed: the other takes its leases over, every
#     order the load saw accepted reaches a final state, and saga_check.py (money and
#     stock conserved, read models equal to the log: no page applied twice) passes;
#   - then the split shape, --saga-mode choreography on a new store: C serves
#     customers, catalog, ordering and sagas, D inventory, payments and shipping (the
#     gateway's clusters each list one of them): each answers only its contexts'
#     routes, the tour's core and a small load go through, and saga_check.py passes.
# Skips (77) without PostgreSQL; needs nats-server (scripts/bootstrap.sh).
set -uo pipefail
BIN=${AGORA_BIN:?AGORA_BIN not set}
SRC=${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$SRC/tests/lib/pgtmp.sh"
source "$SRC/tests/integration/run_lib.bash"
command -v nats-server >/dev/null || { echo "serve: nats-server is not installed" >&2; exit 1; }
TMP=$(mktemp -d /tmp/agora-serve-XXXXXX)
serve_frame serve LPID GW PA PB NPID

# ---- the command line ----
"$BIN" serve --help | grep -q 'usage: agora serve <context>' || fail "serve --help"
PGX=postgresql:///x
expect2 "name the contexts" --store $PGX --readmodels $PGX
expect2 "unknown context 'billing'" customers billing --store $PGX --readmodels $PGX
expect2 "--store (AGORA_STORE) must be postgresql://" all --store "file:$TMP/d" --readmodels $PGX
expect2 "--readmodels (AGORA_READMODELS) must be postgresql://" all --store $PGX --readmodels "sqlite:$TMP/r"
expect2 "--bus (AGORA_BUS) must be nats://" all --store $PGX --readmodels $PGX --bus local:
expect2 "needs --bus nats://" all --store $PGX --readmodels $PGX --saga-mode choreography
unset AGORA_MESH_KEY
expect2 "set AGORA_MESH_KEY" all --store $PGX --readmodels $PGX
AGORA_MESH_KEY=short expect2 "needs 32 at least" all --store $PGX --readmodels $PGX
"$BIN" serve --help | grep -q 'AGORA_MESH_KEY' || fail "serve --help does not name AGORA_MESH_KEY"
pass "agora serve --help; no context, an unknown one, file:, sqlite:, local:, no or a short mesh key refused (exit 2)"

# ---- PostgreSQL, NATS ----
pgtmp_start || exit $?
nats_start
STORE="$AGORA_TEST_PG_URI&schema=serve"
RM=$AGORA_TEST_PG_URI
mesh_keys # the gateway's and the instances' (the same)
PORTA=$(free_port) PORTB=$(free_port) PORTG=$(free_port)
common=(--store "$STORE" --readmodels "$RM" --bus "nats://127.0.0.1:$NPORT" --data "$TMP/data" --workers 2)

# A first and alone with --seed (the demo catalog), then B
serve_start a all --listen "127.0.0.1:$PORTA" "${common[@]}" --seed
PA=$SERVE_PID A=$SERVE_BASE
serve_start b all --listen "127.0.0.1:$PORTB" "${common[@]}"
PB=$SERVE_PID B=$SERVE_BASE

sed -e "s/127.0.0.1:8091/127.0.0.1:$PORTA/; s/127.0.0.1:8092/127.0.0.1:$PORTB/" \
    -e "s/listen: 127.0.0.1:8080/listen: 127.0.0.1:$PORTG/" "$SRC/deploy/serve/gateway.yaml" >"$TMP/gateway.yaml"
gateway_check "$TMP/gateway.yaml" deploy/serve/gateway.yaml
gateway_start "$TMP/gateway.yaml" "$PORTG"
pass "PostgreSQL, NATS, instances A ($A) and B ($B), the gateway ($G)"

ADMIN=$(tok ops admin) ADA=$(tok ada customer) BOB=$(tok bob customer)

# ---- leases: each projection and the relay run in one instance ----
# (statuses and relay_status ask an instance straight, as the gateway would: the
# instances believe its signed identity headers)
leases_split() { # every projection running in exactly one of A, B; the relay too
    local sa sb
    sa=$(statuses "$A") && sb=$(statuses "$B") || return 1
    python3 - "$sa" "$sb" <<'PY' || return 1
import sys
a = dict(x.split("=") for x in sys.argv[1].split())
b = dict(x.split("=") for x in sys.argv[2].split())
ok = all(sorted([a[n], b[n]]) == ["running", "standby"] for n in a)
sys.exit(0 if ok and a.keys() == b.keys() else 1)
PY
    [[ "$(relay_status "$A") $(relay_status "$B")" =~ ^(running\ standby|standby\ running)$ ]]
}
for _ in $(seq 100); do leases_split && break; sleep 0.1; done
leases_split || fail "leases not split: A: $(statuses "$A") relay $(relay_status "$A"); B: $(statuses "$B") relay $(relay_status "$B")"
pass "each projection and the relay run in one instance, standby in the other"

# ---- the API tour's core, through the gateway ----
shopper "$ADA" tour
order "$ADA" "$CID" "$KB" 200
[ "$FINAL" = confirmed ] || fail "order $OID: $ST $BODY"
req "$BOB" GET "/api/v1/orders/$OID"
[ "$ST" = 404 ] || fail "bob reads ada's order: $ST"
req "$BOB" GET "/api/v1/customers/$CID"
[ "$ST" = 404 ] || fail "bob reads ada: $ST"
pass "through the gateway: register, deposit, order $OID confirmed; another customer gets 404"

# ---- the mesh key: forged identity straight to an instance is anonymous ----
forged() { # forged SIG-or-"" PATH: status of a GET to A as ops/admin with that x-user-sig
    local h=()
    [ -n "$1" ] && h=(-H "x-user-sig: $1")
    curl -s -o /dev/null -w '%{http_code}' -H 'x-user-id: ops' -H 'x-user-roles: admin' "${h[@]}" "$A$2"
}
denied_sig() { curl -s "$A/metrics" | awk '/^agora_authz_denied_total\{reason="bad_signature"\}/ {print $2}'; }
before=$(denied_sig)
NOW=$(date +%s)
for p in /admin/projections "/api/v1/orders/$OID"; do
    [ "$(forged "" "$p")" = 401 ] || fail "forged admin, no x-user-sig, $p: not 401"
    [ "$(forged "$NOW.$(printf '0%.0s' {1..64})" "$p")" = 401 ] || fail "forged admin, a bad x-user-sig, $p: not 401"
    [ "$(forged "$(mesh_sig $((NOW - 120)) ops admin GET "$p")" "$p")" = 401 ] ||
        fail "forged admin, a stale x-user-sig, $p: not 401"
    [ "$(forged "$(mesh_sig "$NOW" ops admin GET /admin/bus)" "$p")" = 401 ] ||
        fail "forged admin, another request's x-user-sig, $p: not 401"
    [ "$(forged "$(mesh_sig "$NOW" ops admin GET "$p")" "$p")" = 200 ] || fail "a signed request, $p: not 200"
done
after=$(denied_sig)
[ -n "$after" ] && [ "${after%.*}" -ge $((${before:-0} + 8)) ] 2>/dev/null ||
    fail "bad_signature denials not counted: before '$before', after '$after'"
req "$ADMIN" GET /admin/projections
[ "$ST" = 200 ] || fail "admin through the gateway: $ST"
ST=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ADA" -H 'x-user-sig: 1.00' "$G/api/v1/orders/$OID")
[ "$ST" = 200 ] || fail "the owner through the gateway (with a client's own x-user-sig): $ST"
pass "straight to an instance, forged admin with no, a bad, a stale or another request's x-user-sig: 401 (admin and owner routes, counted); through the gateway: 200"

# ---- kill -9 the sagas' owner during a load ----
owner_of_sagas() { # A or B: where saga_starter runs
    if [[ $(statuses "$A") == *saga_starter=running* ]]; then echo A; else echo B; fi
}
OWNER=$(owner_of_sagas)
"$BIN" load --target "$G" --token "$ADMIN" --concurrency 4 --duration 6 --customers 4 \
    --poor-ratio 0.25 --order-timeout 40 --quiet >"$TMP/load.json" 2>"$TMP/load.err" &
LPID=$!
sleep 2.5
if [ "$OWNER" = A ]; then kill -9 "$PA"; wait "$PA" 2>/dev/null; PA="" SURV=$B SPID=$PB; else
    kill -9 "$PB"; wait "$PB" 2>/dev/null; PB="" SURV=$A SPID=$PA; fi
wait "$LPID"
LPID=""
kill -0 "$SPID" 2>/dev/null || fail "the surviving instance died"
load_check "$TMP/load.json" 's["placed"] > 0 and s["pending"] == 0' ||
    fail "the load: $(cat "$TMP/load.json") $(tail -3 "$TMP/load.err")"
grep -q '"projection.lease_taken".*saga_starter\|saga_starter.*projection.lease_taken' "$TMP/$([ "$OWNER" = A ] && echo b || echo a).log" ||
    fail "the survivor did not take the saga starter's lease"
settled=0
for _ in $(seq 600); do
    running=$(icurl "$SURV/admin/sagas?status=running&limit=1" -sf |
        json_field 'len(d["items"])' 2>/dev/null)
    st=$(statuses "$SURV")
    lag=$(icurl "$SURV/admin/projections" -sf |
        json_field 'sum(p["lagEvents"] for p in d["items"])' 2>/dev/null)
    if [[ $running == 0 && $lag == 0 && $st != *standby* ]]; then
        settled=$((settled + 1))
        ((settled >= 3)) && break
    else
        settled=0
    fi
    sleep 0.1
done
((settled >= 3)) || fail "not settled after the kill: running=$running lag=$lag $st"
pass "killed the sagas' owner ($OWNER) under load: the other took every lease over, every accepted order is final"

"$BIN" store all --store "$STORE" --limit 100000000 >"$TMP/events.jsonl" || fail "cannot read the log"
out=$(python3 "$SRC/tests/integration/saga_check.py" "$TMP/events.jsonl" "$RM" 2>&1) || fail "invariants: $out"
pass "$out"

kill -TERM "$GW"
wait "$GW" || fail "the gateway exited with $? on SIGTERM"
GW=""
kill -TERM "$SPID"
wait "$SPID" || fail "the surviving instance exited with $? on SIGTERM"
PA="" PB=""
no_sanitizer_report
pass "the survivor and the gateway stop cleanly"

# ---- the split shape: choreography, C = customers catalog ordering sagas, D = the rest ----
psql "$AGORA_TEST_PG_URI" -qX -c 'CREATE DATABASE split' >/dev/null || fail "CREATE DATABASE split"
RM=${AGORA_TEST_PG_URI/\/\/\/postgres?/\/\/\/split?} # a database of its own: new read models
STORE="$RM&schema=es"
PORTA=$(free_port) PORTB=$(free_port) PORTG=$(free_port)
common=(--store "$STORE" --readmodels "$RM" --bus "nats://127.0.0.1:$NPORT" --data "$TMP/data"
    --workers 2 --saga-mode choreography)
serve_start c customers catalog ordering sagas --listen "127.0.0.1:$PORTA" "${common[@]}" --seed
PA=$SERVE_PID A=$SERVE_BASE
serve_start d inventory payments shipping --listen "127.0.0.1:$PORTB" "${common[@]}"
PB=$SERVE_PID B=$SERVE_BASE
# the gateway: customers, catalog, ordering, sagas at C only; inventory, payments,
# shipping at D only; ops at both
python3 - "$SRC/deploy/serve/gateway.yaml" "$PORTA" "$PORTB" "$PORTG" >"$TMP/gateway.yaml" <<'PY'
import sys
src, a, b, g = sys.argv[1:]
host = None
for line in open(src):
    if line.startswith("  - host: "):
        host = line.split()[-1]
    line = line.replace("listen: 127.0.0.1:8080", "listen: 127.0.0.1:" + g)
    if "{address: 127.0.0.1:8091}" in line:
        if host in ("inventory", "payments", "shipping"):
            continue
        line = line.replace("8091", a)
    if "{address: 127.0.0.1:8092}" in line:
        if host in ("customers", "catalog", "ordering", "sagas"):
            continue
        line = line.replace("8092", b)
    sys.stdout.write(line)
PY
gateway_start "$TMP/gateway.yaml" "$PORTG" gateway2.log
code() { icurl "$1" -s -o /dev/null -w '%{http_code}'; }
[ "$(code "$A/api/v1/inventory/00000000-0000-4000-8000-000000000000")" = 404 ] &&
    [ "$(code "$B/api/v1/orders/00000000-0000-4000-8000-000000000000")" = 404 ] &&
    [ "$(code "$B/api/v1/products")" = 404 ] && [ "$(code "$A/api/v1/products")" = 200 ] ||
    fail "an instance answers routes of a context it does not serve"
[[ $(statuses "$A") == *"stock=standby"* && $(statuses "$B") == *"orders=standby"* ]] ||
    fail "projections of contexts served elsewhere run: C: $(statuses "$A"); D: $(statuses "$B")"
pass "split: C ($A) serves customers, catalog, ordering, sagas; D ($B) the rest; each only its own"

shopper "$ADA" split
order "$ADA" "$CID" "$KB"
[ "$FINAL" = confirmed ] || fail "split: order $OID: $ST $BODY"
req "$ADA" GET "/api/v1/inventory/$KB"
[ "$ST" = 200 ] || fail "split: inventory through the gateway: $ST"
pass "split, choreography: register, deposit, order $OID confirmed across the two instances"

"$BIN" load --target "$G" --token "$ADMIN" --concurrency 4 --orders 40 --customers 3 \
    --poor-ratio 0.34 --order-timeout 40 --quiet >"$TMP/load2.json" 2>"$TMP/load2.err" ||
    fail "split: load: $(tail -3 "$TMP/load2.err")"
load_check "$TMP/load2.json" 's["placed"] == 40 and s["pending"] == 0 and s["errors"] == 0' ||
    fail "split: the load: $(cat "$TMP/load2.json")"
for _ in $(seq 300); do # every projection caught up (each at its instance)
    lag=$(for x in "$A" "$B"; do icurl "$x/admin/projections" -sf && echo; done |
        python3 -c 'import json,sys; print(sum(p["lagEvents"] for l in sys.stdin for p in json.loads(l)["items"]))' 2>/dev/null)
    [[ $lag == 0 ]] && break
    sleep 0.1
done
"$BIN" store all --store "$STORE" --limit 100000000 >"$TMP/events2.jsonl" || fail "cannot read the split log"
out=$(AGORA_SAGA_MODE=choreography python3 "$SRC/tests/integration/saga_check.py" "$TMP/events2.jsonl" "$RM" 2>&1) ||
    fail "split invariants: $out"
pass "split: $out"
kill -TERM "$GW" && wait "$GW" || fail "the gateway exited with $? on SIGTERM"
GW=""
kill -TERM "$PA" && wait "$PA" || fail "C exited with $? on SIGTERM"
PA=""
kill -TERM "$PB" && wait "$PB" || fail "D exited with $? on SIGTERM"
PB=""
no_sanitizer_report
pass "split: both instances and the gateway stop cleanly"
