#!/usr/bin/env bash
# `agora cluster up` with mTLS among its members and the gateway on the discovery
# registry (issue 14 items 2+3; README "Running distributed"). One instance of
# 'customers+catalog+ordering+sagas' and one of 'inventory+payments+shipping', so an
# order's saga crosses processes. Checks:
#   - the first start makes the cluster CA in DIR/certs (0700, keys 0600) and a
#     certificate per member (logged cluster.cert_issued); gateway.yaml keeps every
#     cluster on `discovery:` (no endpoint list) with tls MUTUAL;
#   - the API tour's core through the gateway: register, deposit, an order confirmed,
#     its inventory, payment and shipping steps run by the other instance over the
#     mesh (its agora_http_requests_total for POST /internal/v1/steps grows);
#   - straight to an instance: plain HTTP, no client certificate, a certificate from
#     another CA: refused in the handshake (no HTTP status); the cluster's
#     supervisor certificate: 200;
#   - rotation without downtime: during an order load, the participant's certificate
#     is issued again and the instance SIGHUPed: every order final, none failed, and
#     openssl s_client sees the new serial;
#   - renewal: a certificate that expires within 10 days is issued again by the
#     running supervisor (logged with the reason) and served without a signal;
#   - a restart reuses the CA and the certificates (none issued, files unchanged).
# Skips (77) without PostgreSQL; needs nats-server and openssl.
set -uo pipefail
BIN=${AGORA_BIN:?AGORA_BIN not set}
SRC=${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$SRC/tests/integration/run_lib.bash"
source "$SRC/tests/integration/cluster_lib.bash" # cl_req, order_confirms, cstatus, member
command -v openssl >/dev/null || { echo "cluster_mtls: openssl is not installed" >&2; exit 1; }
cluster_test_init cluster_mtls ct
C=$TMP/c/certs
trap cluster_cleanup EXIT

# ---- the first start ----
PORTG=$(free_port)
G=http://127.0.0.1:$PORTG
START=$(date +%s)
cluster_start "$PORTG" "$TMP/supervisor.log" --instances 1 \
    --contexts 'customers+catalog+ordering+sagas,inventory+payments+shipping'
ORCH=customers+catalog+ordering+sagas-1 PART=inventory+payments+shipping-1
OPORT=$(member "$ORCH" address | cut -d: -f2) PPORT=$(member "$PART" address | cut -d: -f2)
[ "$(stat -c %a "$C")" = 700 ] || fail "DIR/certs is $(stat -c %a "$C")"
for n in ca supervisor gateway customers_catalog_ordering_sagas-1 inventory_payments_shipping-1; do
    [ -f "$C/$n.pem" ] || fail "no $n.pem"
    [ "$(stat -c %a "$C/$n.key")" = 600 ] || fail "$n.key is $(stat -c %a "$C/$n.key")"
    [ $n = ca ] && continue
    grep -q "\"cluster.cert_issued\".*\"member\":\"$n\".*\"reason\":\"none yet\"" "$TMP/supervisor.log" ||
        fail "no cluster.cert_issued for $n"
    openssl verify -CAfile "$C/ca.pem" "$C/$n.pem" >/dev/null || fail "$n.pem does not verify"
done
openssl x509 -in "$C/inventory_payments_shipping-1.pem" -noout -ext subjectAltName | grep -q 'IP Address:127.0.0.1' ||
    fail "the instance's certificate does not name 127.0.0.1"
grep -q '"cluster.ca_created"' "$TMP/supervisor.log" || fail "no cluster.ca_created"
grep -q 'endpoints:' "$D/gateway.yaml" && fail "gateway.yaml lists endpoints"
[ "$(grep -c 'discovery: {registry: "postgresql://' "$D/gateway.yaml")" = 8 ] ||
    fail "gateway.yaml: not every cluster (7 contexts and ops) on discovery"
[ "$(grep -c 'tls: {mode: MUTUAL' "$D/gateway.yaml")" = 8 ] || fail "gateway.yaml: not every cluster on mTLS"
pass "cluster up with mTLS in $(($(date +%s) - START)) s: CA and 4 member certificates (0600 keys, DIR/certs 0700), gateway.yaml on discovery + tls MUTUAL"

# ---- straight to an instance ----
direct() { # direct PORT CURL-ARGS...: "<http status> <curl exit>" of GET /health/live
    local port=$1 code rc
    shift
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "https://127.0.0.1:$port/health/live")
    rc=$?
    echo "$code $rc"
}
"$BIN" certs init --dir "$TMP/other" >/dev/null && "$BIN" certs issue --dir "$TMP/other" --name intruder --ip 127.0.0.1 >/dev/null ||
    fail "another CA"
for port in "$OPORT" "$PPORT"; do
    r=$(direct "$port" --cacert "$C/ca.pem")
    [[ $r == "000 35" || $r == "000 56" ]] || fail "no client certificate to :$port: $r"
    r=$(direct "$port" --cacert "$C/ca.pem" --cert "$TMP/other/intruder.pem" --key "$TMP/other/intruder.key")
    [[ $r == "000 35" || $r == "000 56" ]] || fail "another CA's certificate to :$port: $r"
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/health/live")
    [ "$code" = 000 ] || fail "plain HTTP to :$port answered $code"
    r=$(direct "$port" --cacert "$C/ca.pem" --cert "$C/supervisor.pem" --key "$C/supervisor.key")
    [ "$r" = "200 0" ] || fail "the supervisor's certificate to :$port: $r"
done
pass "straight to both instances: no client certificate, another CA's, plain HTTP refused in the handshake; the cluster's certificate 200"

# ---- the API tour's core through the gateway, the saga across processes ----
req() { cl_req "$@"; }
MESH_KEY=$(cat "$D/mesh-key")
steps_served() { # POST /internal/v1/steps answered by the participant, from its /metrics
    local sig
    sig=$(python3 -c 'import hashlib, hmac, sys, time
ts = str(int(time.time()))
mac = hmac.new(sys.argv[1].encode(), "\n".join([ts, "ops", "admin", "GET", "/metrics"]).encode(), hashlib.sha256)
print(ts + "." + mac.hexdigest())' "$MESH_KEY")
    curl -s --max-time 5 --cacert "$C/ca.pem" --cert "$C/supervisor.pem" --key "$C/supervisor.key" \
        -H 'x-user-id: ops' -H 'x-user-roles: admin' -H "x-user-sig: $sig" "https://127.0.0.1:$PPORT/metrics" |
        awk '/^agora_http_requests_total\{/ && /route="\/internal\/v1\/steps"/ { n += $NF } END { print n + 0 }'
}
ADMIN=$(cl_token ops admin) ADA=$(cl_token ada customer)
shopper "$ADA" tour 500000
before=$(steps_served)
order_confirms
after=$(steps_served)
((after >= before + 3)) || fail "the participant served $((after - before)) step calls for order $OID (want >= 3: reserve, pay, ship)"
grep -q '"saga.remote_step"' "$D/logs/$ORCH.log" || fail "the orchestrator does not call its steps remotely"
pass "through the gateway over mTLS: register, deposit, order $OID confirmed; its steps ran at $PART over the mesh ($((after - before)) POST /internal/v1/steps)"

# ---- rotation without downtime ----
serial_served() { # the serial the instance at port $1 presents now
    openssl s_client -connect "127.0.0.1:$1" -CAfile "$C/ca.pem" -cert "$C/supervisor.pem" \
        -key "$C/supervisor.key" </dev/null 2>/dev/null | openssl x509 -noout -serial
}
serial_file() { openssl x509 -in "$C/$1.pem" -noout -serial; }
OLD=$(serial_served "$PPORT")
[ "$OLD" = "$(serial_file inventory_payments_shipping-1)" ] || fail "served $OLD, not the file's serial"
"$BIN" load --target "$G" --token "$ADMIN" --concurrency 2 --duration 4 --customers 2 \
    --order-timeout 40 --quiet >"$TMP/load.json" 2>"$TMP/load.err" &
LPID=$!
sleep 2
"$BIN" certs issue --dir "$C" --name inventory_payments_shipping-1 --ip 127.0.0.1 >/dev/null || fail "certs issue"
kill -HUP "$(member "$PART" pid)"
NEW=$(serial_file inventory_payments_shipping-1)
[ "$NEW" != "$OLD" ] || fail "the same serial after issuing again"
for _ in $(seq 50); do [ "$(serial_served "$PPORT")" = "$NEW" ] && break; sleep 0.1; done
[ "$(serial_served "$PPORT")" = "$NEW" ] || fail "after SIGHUP the instance serves $(serial_served "$PPORT"), not $NEW"
wait "$LPID"
LPID=""
load_check "$TMP/load.json" 's["confirmed"] > 0 and s["pending"] == 0 and s["errors"] == 0 and not s.get("transportErrors")' ||
    fail "the load: $(cat "$TMP/load.json") $(tail -3 "$TMP/load.err")"
[ "$(member "$PART" restarts)" = 0 ] || fail "$PART restarted"
order_confirms
pass "rotation under load: $PART issued again and SIGHUPed, serves ${NEW#serial=} (was ${OLD#serial=}), every order final, none failed; order $OID confirmed after"

# ---- renewal by the supervisor: a certificate near its end ----
"$BIN" certs issue --dir "$C" --name customers_catalog_ordering_sagas-1 --ip 127.0.0.1 --days 5 >/dev/null || fail "certs issue --days 5"
SHORT=$(serial_file customers_catalog_ordering_sagas-1)
for _ in $(seq 150); do
    grep -q '"cluster.cert_issued".*"member":"customers_catalog_ordering_sagas-1".*"reason":"expires within 10 days' "$TMP/supervisor.log" && break
    sleep 0.1
done
grep -q '"cluster.cert_issued".*"member":"customers_catalog_ordering_sagas-1".*"reason":"expires within 10 days' "$TMP/supervisor.log" ||
    fail "the supervisor did not renew a certificate expiring in 5 days"
RENEWED=$(serial_file customers_catalog_ordering_sagas-1)
[ "$RENEWED" != "$SHORT" ] || fail "the same serial after the renewal"
for _ in $(seq 30); do [ "$(serial_served "$OPORT")" = "$RENEWED" ] && break; sleep 0.1; done
[ "$(serial_served "$OPORT")" = "$RENEWED" ] || fail "the renewed certificate is not served: $(serial_served "$OPORT")"
order_confirms
pass "renewal: a certificate expiring in 5 days issued again by the supervisor (logged), served without a signal; order $OID confirmed"

# ---- a restart reuses the CA and the certificates ----
SUMS=$(md5sum "$C"/*.pem "$C"/*.key)
kill -INT "$SUP"
wait "$SUP" || fail "the supervisor exited $? on SIGINT"
SUP=""
cluster_start "$PORTG" "$TMP/supervisor2.log"
grep -q '"cluster.cert_issued"\|"cluster.ca_created"' "$TMP/supervisor2.log" && fail "certificates issued again at the restart"
[ "$(md5sum "$C"/*.pem "$C"/*.key)" = "$SUMS" ] || fail "DIR/certs changed at the restart"
[ "$(serial_served "$PPORT")" = "$NEW" ] || fail "after the restart $PART serves $(serial_served "$PPORT"), not $NEW"
order_confirms
pass "a restart reuses the CA and every certificate (none issued, files unchanged); order $OID confirmed"

# ---- stop ----
kill -INT "$SUP"
wait "$SUP" || fail "the supervisor exited $? on SIGINT"
SUP=""
grep -l -e 'AddressSanitizer' -e 'runtime error:' -e 'LeakSanitizer' "$D"/logs/*.log "$TMP"/supervisor*.log &&
    fail "sanitizer report"
pass "stopped; no sanitizer report"
