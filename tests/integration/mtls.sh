#!/usr/bin/env bash
# mTLS between `agora gateway` and `agora serve` (issue 14): a cluster CA and member
# certificates from `agora certs`, one instance serving every context over
# PostgreSQL (tests/lib/pgtmp.sh) with --tls-cert/--tls-key/--tls-ca, and the
# gateway configured by deploy/serve/gateway.yaml with its commented `tls:` lines
# enabled (MUTUAL: it presents its member certificate and checks the instance's).
# Checks:
#   - the CLI: certs init (0600 key, kept on a second run), issue, verify; a
#     missing CA, a CA key that does not match, a bad IP refused (exit 1/2);
#     serve refuses half the TLS options and a non-loopback address without TLS
#     material (exit 2), and a wrong key (exit 1);
#   - through the gateway (plain HTTP on its side): the catalog, an admin route and
#     a registered customer work over mTLS to the instance; the instance's HSTS
#     header is not forwarded (the gateway's own listener decides HSTS);
#   - straight to the instance: curl with the gateway's certificate gets 200; with
#     no certificate, with a self-signed certificate from another CA, with an
#     expired certificate from the right CA, and in plain HTTP: refused;
#   - rotation during two request loops (through the gateway, and new TLS
#     connections straight to the instance): the instance's certificate issued
#     again and SIGHUP (the new serial is served), then the gateway's certificate
#     issued again and the gateway's SIGHUP (new upstream contexts): no request
#     fails. (Rotation by a file change alone: tests/unit/http/test_certs.c.)
# Skips (77) without PostgreSQL.
set -uo pipefail
BIN=${AGORA_BIN:?AGORA_BIN not set}
SRC=${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$SRC/tests/lib/pgtmp.sh"
source "$SRC/tests/integration/run_lib.bash"
TMP=$(mktemp -d /tmp/agora-mtls-XXXXXX)
serve_frame mtls L1 L2 GW PA
C=$TMP/certs

# ---- agora certs ----
"$BIN" certs init --dir "$C" | grep -q 'created the CA' || fail "certs init"
[ "$(stat -c %a "$C/ca.key")" = 600 ] && [ "$(stat -c %a "$C")" = 700 ] || fail "CA modes"
"$BIN" certs init --dir "$C" | grep -q 'the CA is there' || fail "certs init again"
"$BIN" certs issue --dir "$C" --name inst-a --ip 127.0.0.1 >/dev/null || fail "issue inst-a"
"$BIN" certs issue --dir "$C" --name gateway >/dev/null || fail "issue gateway"
"$BIN" certs issue --dir "$C" --name old --not-before 2020-01-01 --days 1 >/dev/null || fail "issue old"
[ "$(stat -c %a "$C/inst-a.key")" = 600 ] || fail "member key mode"
"$BIN" certs verify --dir "$C" --name inst-a | grep -q 'valid (/O=agora/CN=inst-a)' || fail "verify inst-a"
out=$("$BIN" certs verify --dir "$C" --name old 2>&1) && fail "an expired certificate verifies"
[[ $out == *expired* ]] || fail "verify old: $out"
openssl verify -CAfile "$C/ca.pem" "$C/inst-a.pem" >/dev/null || fail "openssl does not verify inst-a"
# another CA, and a self-signed client certificate from it
"$BIN" certs init --dir "$TMP/other" >/dev/null && "$BIN" certs issue --dir "$TMP/other" --name rogue >/dev/null ||
    fail "the other CA"
out=$("$BIN" certs issue --dir "$TMP/nowhere" --name x 2>&1)
[ $? = 1 ] && [[ $out == *"nowhere/ca.pem: cannot read it"* ]] || fail "issue without a CA: $out"
mkdir "$TMP/mixed" && cp "$C/ca.pem" "$TMP/mixed/" && cp "$TMP/other/ca.key" "$TMP/mixed/"
out=$("$BIN" certs issue --dir "$TMP/mixed" --name x 2>&1)
[ $? = 1 ] && [[ $out == *"wrong key"* ]] || fail "issue with another CA's key: $out"
out=$("$BIN" certs issue --dir "$C" --name x --ip 10.0.0.300 2>&1)
[ $? = 1 ] && [[ $out == *"not an IP address"* ]] || fail "a bad IP: $out"
pass "agora certs: init (0600 key, kept), issue, verify (expired refused); no CA, a wrong CA key, a bad IP refused"

# ---- agora serve's TLS options ----
mesh_keys
PGX=postgresql:///x
expect2 "go together" all --store $PGX --readmodels $PGX --tls-cert "$C/inst-a.pem"
expect2 "is not loopback and there is no TLS material" all --store $PGX --readmodels $PGX --listen 0.0.0.0:0
expect2 "--insecure-plaintext" all --store $PGX --readmodels $PGX --listen 10.1.2.3:8091
"$BIN" serve --help | grep -q -- '--insecure-plaintext' || fail "serve --help"
out=$("$BIN" serve all --store $PGX --readmodels $PGX --tls-cert "$C/inst-a.pem" --tls-key "$C/gateway.key" \
    --tls-ca "$C/ca.pem" 2>&1)
[ $? = 1 ] && [[ $out == *"does not match"* ]] || fail "serve with a wrong key: $out"
pass "agora serve: half the TLS options, plain HTTP off loopback (without --insecure-plaintext), a wrong key refused"

# ---- an instance with mTLS, the gateway in front ----
pgtmp_start || exit $?
PORTA=$(free_port) PORTG=$(free_port)
mtls=(--tls-cert "$C/inst-a.pem" --tls-key "$C/inst-a.key" --tls-ca "$C/ca.pem")
SERVE_CURL=(--cacert "$C/ca.pem" --cert "$C/gateway.pem" --key "$C/gateway.key")
serve_start a all --listen "127.0.0.1:$PORTA" --store "$AGORA_TEST_PG_URI&schema=mtls" \
    --readmodels "$AGORA_TEST_PG_URI" --data "$TMP/data" --workers 2 --seed "${mtls[@]}"
PA=$SERVE_PID A=$SERVE_BASE
[[ $A == https://* ]] || fail "the instance does not say https: $A"
sed -e "s/127.0.0.1:8091/127.0.0.1:$PORTA/" -e '/127.0.0.1:8092/d' \
    -e "s/listen: 127.0.0.1:8080/listen: 127.0.0.1:$PORTG/" \
    -e 's/# tls: {/tls: {/' -e "s|certs/|$C/|g" "$SRC/deploy/serve/gateway.yaml" >"$TMP/gateway.yaml"
[ "$(grep -c 'tls: {mode: MUTUAL' "$TMP/gateway.yaml")" -ge 8 ] || fail "no tls lines to enable in deploy/serve/gateway.yaml"
gateway_check "$TMP/gateway.yaml" "the gateway configuration with mTLS"
gateway_start "$TMP/gateway.yaml" "$PORTG"
ADMIN=$(tok ops admin) ADA=$(tok ada customer)
st=""
for _ in $(seq 100); do # until the health check has seen the instance
    st=$(curl -s -o "$TMP/products" -w '%{http_code}' "$G/api/v1/products?limit=5")
    [ "$st" = 200 ] && break
    sleep 0.1
done
[ "$st" = 200 ] || fail "products through the gateway: $st"
grep -q '"items"' "$TMP/products" || fail "products: $(cat "$TMP/products")"
st=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ADMIN" "$G/admin/projections")
[ "$st" = 200 ] || fail "admin through the gateway: $st"
st=$(curl -s -o "$TMP/reg" -w '%{http_code}' -H "Authorization: Bearer $ADA" -H 'Content-Type: application/json' \
    --data-binary '{"email": "ada@example.com", "name": "Ada Lovelace"}' "$G/api/v1/customers")
[ "$st" = 201 ] || fail "register through the gateway: $st $(cat "$TMP/reg")"
curl -s -D "$TMP/h.gw" -o /dev/null "$G/api/v1/products?limit=1"
grep -qi '^strict-transport-security' "$TMP/h.gw" && fail "the gateway (plain HTTP) forwards the instance's HSTS"
pass "through the gateway over mTLS: the catalog, an admin route, a registration (no HSTS forwarded)"

# ---- straight to the instance ----
direct() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$C/ca.pem" "$@" "$A/health/live"; }
[ "$(direct --cert "$C/gateway.pem" --key "$C/gateway.key")" = 200 ] || fail "the gateway's certificate is refused"
for who in none rogue old; do
    case $who in
    none) args=() ;;
    rogue) args=(--cert "$TMP/other/rogue.pem" --key "$TMP/other/rogue.key") ;;
    old) args=(--cert "$C/old.pem" --key "$C/old.key") ;;
    esac
    st=$(direct ${args[@]+"${args[@]}"})
    [ "$st" = 000 ] || fail "a client with certificate '$who' got $st, not a refused handshake"
done
st=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORTA/health/live")
[ "$st" = 000 ] || fail "plain HTTP to the instance got $st"
pass "straight to the instance: the gateway's certificate 200; none, another CA's, an expired one and plain HTTP refused"

# ---- rotation during request loops ----
serial() {
    openssl s_client -connect "127.0.0.1:$PORTA" -CAfile "$C/ca.pem" -cert "$C/gateway.pem" \
        -key "$C/gateway.key" </dev/null 2>/dev/null | openssl x509 -noout -serial
}
S1=$(serial)
[ -n "$S1" ] || fail "no serial from the instance"
loop() { # loop NAME CURL-ARGS...: requests until $TMP/stop, a line per answer
    local name=$1
    shift
    while [ ! -e "$TMP/stop" ]; do
        curl -s -o /dev/null -w '%{http_code}\n' --max-time 10 "$@" >>"$TMP/$name.codes"
    done
}
# the direct loop's curl reads its own copy: it is no agora process watching the
# files, and could load the gateway's pair half-replaced by the reissue below
cp "$C/gateway.pem" "$TMP/loop.pem" && cp "$C/gateway.key" "$TMP/loop.key"
loop viagw "$G/api/v1/products?limit=5" &
L1=$!
loop direct --cacert "$C/ca.pem" --cert "$TMP/loop.pem" --key "$TMP/loop.key" "$A/health/live" &
L2=$!
sleep 1
"$BIN" certs issue --dir "$C" --name inst-a --ip 127.0.0.1 >/dev/null || fail "reissue inst-a"
kill -HUP "$PA"
for _ in $(seq 50); do grep -q 'SIGHUP: certificates reloaded' "$TMP/a.log" && break; sleep 0.1; done
grep -q 'SIGHUP: certificates reloaded' "$TMP/a.log" || fail "the instance did not reload at SIGHUP"
sleep 1
S2=$(serial)
[ -n "$S2" ] && [ "$S1" != "$S2" ] || fail "the instance still serves $S1 after the rotation ($S2)"
"$BIN" certs issue --dir "$C" --name gateway >/dev/null || fail "reissue gateway"
sleep 1
kill -HUP "$GW" # a reload: new upstream TLS contexts from the reissued files
for _ in $(seq 50); do grep -q 'configuration reloaded' "$TMP/gateway.log" && break; sleep 0.1; done
grep -q 'configuration reloaded' "$TMP/gateway.log" || fail "the gateway did not reload at SIGHUP"
sleep 2
touch "$TMP/stop"
wait "$L1" "$L2"
L1="" L2=""
kill -0 "$PA" 2>/dev/null || fail "the instance died"
for name in viagw direct; do
    total=$(wc -l <"$TMP/$name.codes")
    bad=$(grep -vc '^200$' "$TMP/$name.codes")
    [ "$total" -ge 10 ] || fail "$name: only $total requests in the loop"
    [ "$bad" = 0 ] || fail "$name: $bad of $total requests failed: $(sort "$TMP/$name.codes" | uniq -c | tr '\n' ' ')"
done
[ "$(direct --cert "$C/gateway.pem" --key "$C/gateway.key")" = 200 ] || fail "the new gateway certificate is refused"
pass "rotation during $(wc -l <"$TMP/viagw.codes") requests through the gateway and $(wc -l <"$TMP/direct.codes") new TLS connections: serial ${S1#serial=} -> ${S2#serial=} at SIGHUP, the gateway's certificate reissued and SIGHUP; none failed"

kill -TERM "$PA"
rc=0
wait "$PA" || rc=$?
PA=""
[ "$rc" = 0 ] || fail "the instance exited $rc on SIGTERM"
kill -TERM "$GW"
wait "$GW" 2>/dev/null
GW=""
echo "mtls: all passed"
