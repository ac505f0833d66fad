#!/usr/bin/env bash
# HTTPS at the gateway of `agora run` (certificates in tests/data/tls), checked with
# curl and `openssl s_client`: TLS 1.2 and 1.3 served, TLS 1.0/1.1 and a CBC cipher
# refused, ALPN http/1.1 (h2 alone refused), SNI picks the certificate, a verifying
# client refuses a certificate from another issuer, HSTS on answers, plain HTTP on
# --http-redirect answers 308 to https; SIGHUP under load (keep-alive and new
# handshakes) drops nothing while new handshakes get the renewed certificate; a bad
# file on reload is refused and the old one serves; a bad file at start is a CLI
# error naming the path.
# Env: AGORA_BIN, AG_SOURCE_DIR (CTest).
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
SRC="${AG_SOURCE_DIR:?AG_SOURCE_DIR not set}"
C="$SRC/tests/data/tls"
TMP=$(mktemp -d)
SPID=""
LPID=""
GPID=""
cleanup() {
    [ -n "$LPID" ] && kill "$LPID" 2>/dev/null
    [ -n "$GPID" ] && kill "$GPID" 2>/dev/null
    [ -n "$SPID" ] && kill "$SPID" 2>/dev/null
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$TMP/server.log" ] && tail -20 "$TMP/server.log"; exit 1; }
pass() { echo "ok - $*"; }

# the served files are copies, so the test can renew them
cp "$C/server.pem" "$TMP/cert.pem"; cp "$C/server.key" "$TMP/cert.key"

# a bad file at start: a CLI error with the path, exit 1, nothing served
if "$BIN" run --data "$TMP/bad" --listen 127.0.0.1:0 --tls-cert "$TMP/missing.pem" \
    --tls-key "$TMP/cert.key" >"$TMP/bad.log" 2>&1; then fail "started with a missing certificate"; fi
grep -q "$TMP/missing.pem" "$TMP/bad.log" || fail "the error does not name the file: $(cat "$TMP/bad.log")"
"$BIN" run --tls-cert "$TMP/cert.pem" --data "$TMP/bad" >/dev/null 2>&1 && fail "--tls-cert without --tls-key accepted"
pass "a missing certificate or key is a CLI error naming the path"

"$BIN" run --data "$TMP/data" --listen 127.0.0.1:0 --workers 2 --no-seed \
    --tls-cert "$TMP/cert.pem" --tls-key "$TMP/cert.key" --tls-cert "$C/b.pem" --tls-key "$C/b.key" \
    --http-redirect 127.0.0.1:0 >"$TMP/server.log" 2>&1 &
SPID=$!
P=""; R=""
for _ in $(seq 300); do
    P=$(grep -o 'serving https://127.0.0.1:[0-9]*' "$TMP/server.log" | head -1 | sed 's/.*://') || true
    R=$(grep -o 'plain http on port [0-9]*' "$TMP/server.log" | head -1 | sed 's/.* //') || true
    [ -n "$P" ] && [ -n "$R" ] && break
    kill -0 "$SPID" 2>/dev/null || fail "agora run exited"
    sleep 0.1
done
[ -n "$P" ] && [ -n "$R" ] || fail "agora run did not start"
U="https://127.0.0.1:$P"

# verified HTTPS, HSTS
h=$(curl -sS -D - -o /dev/null --cacert "$C/ca.pem" "$U/health/live") || fail "curl over TLS"
grep -q '^HTTP/1.1 200' <<<"$h" || fail "no 200: $h"
grep -qi '^strict-transport-security: max-age=31536000' <<<"$h" || fail "no HSTS: $h"
pass "HTTPS verified by curl against the CA, HSTS present"

# SNI: b.test gets b.pem (curl verifies the name b.test)
curl -sSf -o /dev/null --cacert "$C/ca.pem" --resolve "b.test:$P:127.0.0.1" "https://b.test:$P/health/live" \
    || fail "SNI b.test"
sub=$(echo | openssl s_client -connect "127.0.0.1:$P" -servername b.test 2>/dev/null | grep '^subject=')
grep -q 'b.test' <<<"$sub" || fail "SNI b.test served $sub"
sub=$(echo | openssl s_client -connect "127.0.0.1:$P" -servername a.test 2>/dev/null | grep '^subject=')
grep -q 'a.test' <<<"$sub" || fail "SNI a.test served $sub"
pass "SNI picks the certificate for the name asked"

# a verifying client refuses a certificate it cannot chain to its CA
if curl -sS -o /dev/null --cacert "$C/rogue.pem" "$U/health/live" 2>"$TMP/curl.err"; then
    fail "curl accepted a certificate from another issuer"
fi
grep -qi 'certificate' "$TMP/curl.err" || fail "unexpected curl error: $(cat "$TMP/curl.err")"
if echo | openssl s_client -connect "127.0.0.1:$P" -CAfile "$C/rogue.pem" -verify_return_error \
    >/dev/null 2>&1; then fail "s_client -verify_return_error accepted it"; fi
pass "a verifying client refuses a certificate from another issuer"

# protocol versions: the client is told to allow old protocols (SECLEVEL=0), the server refuses
for v in tls1 tls1_1; do
    out=$(echo | openssl s_client -connect "127.0.0.1:$P" "-$v" -cipher 'DEFAULT@SECLEVEL=0' 2>&1 || true)
    grep -q 'Cipher is (NONE)' <<<"$out" || fail "$v was accepted: $out"
done
for v in tls1_2 tls1_3; do
    out=$(echo | openssl s_client -connect "127.0.0.1:$P" "-$v" -CAfile "$C/ca.pem" 2>&1 || true)
    grep -q 'Verify return code: 0' <<<"$out" || fail "$v refused: $out"
done
out=$(echo | openssl s_client -connect "127.0.0.1:$P" -tls1_2 -cipher 'AES128-SHA:@SECLEVEL=0' 2>&1 || true)
grep -q 'Cipher is (NONE)' <<<"$out" || fail "a CBC, non-ECDHE cipher was accepted"
pass "TLS 1.2 and 1.3 served; TLS 1.0, 1.1 and a non-ECDHE CBC cipher refused"

out=$(echo | openssl s_client -connect "127.0.0.1:$P" -alpn h2,http/1.1 2>&1 || true)
grep -q 'ALPN protocol: http/1.1' <<<"$out" || fail "ALPN: $out"
out=$(echo | openssl s_client -connect "127.0.0.1:$P" -alpn h2 2>&1 || true)
grep -q 'Cipher is (NONE)' <<<"$out" || fail "ALPN h2 alone was accepted"
pass "ALPN selects http/1.1; a client offering only h2 is refused"

# plain HTTP redirect
h=$(curl -sS -D - -o /dev/null "http://127.0.0.1:$R/api/v1/products?limit=1") || fail "redirect listener"
grep -q '^HTTP/1.1 308' <<<"$h" || fail "no 308: $h"
grep -qi "^location: https://127.0.0.1:$P/api/v1/products?limit=1" <<<"$h" || fail "Location: $h"
pass "plain HTTP on --http-redirect answers 308 to the https URL"

# SIGHUP under load: keep-alive connections and new handshakes, nothing may fail
cat >"$TMP/load.py" <<'PY'
import http.client, ssl, sys, threading, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ok = [0]; bad = []; lock = threading.Lock(); end = time.time() + seconds
def worker(fresh):
    c = None
    while time.time() < end:
        try:
            if c is None or fresh:
                if c: c.close()
                c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
            c.request("GET", "/health/live"); r = c.getresponse(); r.read()
            with lock:
                if r.status == 200: ok[0] += 1
                else: bad.append(r.status)
        except Exception as e:
            with lock: bad.append(repr(e))
            c = None
ts = [threading.Thread(target=worker, args=(i % 2 == 0,)) for i in range(6)]
[t.start() for t in ts]; [t.join() for t in ts]
print(ok[0], len(bad), bad[:3])
PY
python3 "$TMP/load.py" "$P" 4 >"$TMP/load.out" 2>&1 &
LPID=$!
sleep 0.5
cp "$C/rogue.pem" "$TMP/cert.pem"; cp "$C/rogue.key" "$TMP/cert.key" # renewed on disk
for _ in 1 2 3 4 5; do kill -HUP "$SPID"; sleep 0.4; done
wait "$LPID" || fail "load generator"
LPID=""
read -r okn badn rest <"$TMP/load.out"
[ "$badn" = 0 ] || fail "$badn requests failed during reloads: $rest"
[ "$okn" -gt 50 ] || fail "only $okn requests during the reloads"
sub=$(echo | openssl s_client -connect "127.0.0.1:$P" 2>/dev/null | openssl x509 -noout -issuer)
grep -q 'CN = a.test' <<<"$sub" || fail "new handshakes do not get the renewed certificate: $sub"
pass "5 SIGHUP reloads under load: $okn requests, none failed; new handshakes get the renewed file"

echo garbage >"$TMP/cert.pem"
kill -HUP "$SPID"
sleep 0.5
grep -q "reload refused: TLS certificate $TMP/cert.pem" "$TMP/server.log" || fail "bad reload not reported"
curl -sSf -o /dev/null -k "$U/health/live" || fail "stopped serving after a bad reload"
pass "a bad certificate on reload is refused with its path; the running one serves"

# agora gateway with gateway.tls in its YAML, proxying to agora run over TLS (which
# serves the renewed, self-signed certificate now: trusted by "run", not by "rogue")
cat >"$TMP/gw.yaml" <<YAML
gateway:
  listen: 127.0.0.1:0
  tls:
    certificates: [{cert: "$C/server.pem", key: "$C/server.key"}]
    hstsMaxAge: 600
destinationRules:
  - host: run
    endpoints: [{address: "127.0.0.1:$P"}]
    trafficPolicy:
      tls: {mode: MUTUAL, caCertificates: "$C/rogue.pem", sni: a.test, clientCertificate: "$C/client.pem", privateKey: "$C/client.key"}
  - host: rogue
    endpoints: [{address: "127.0.0.1:$P"}]
    trafficPolicy:
      tls: {mode: SIMPLE, caCertificates: "$C/ca.pem", sni: a.test}
virtualServices:
  - name: t
    http:
      - name: wrong-name
        match: [{uri: {prefix: /rogue/}}]
        rewrite: {uri: /}
        route: [{destination: {host: rogue}}]
      - name: run
        route: [{destination: {host: run}}]
YAML
"$BIN" gateway --config "$TMP/gw.yaml" >"$TMP/gw.out" 2>"$TMP/gw.log" &
GPID=$!
G=""
for _ in $(seq 100); do G=$(awk '/^PORT/{print $2}' "$TMP/gw.out" 2>/dev/null || true); [ -n "$G" ] && break; sleep 0.05; done
[ -n "$G" ] || fail "agora gateway did not start"
h=$(curl -sS -D - -o /dev/null --cacert "$C/ca.pem" "https://127.0.0.1:$G/health/live") || fail "gateway over TLS"
grep -qi '^strict-transport-security: max-age=600' <<<"$h" || fail "gateway.tls.hstsMaxAge: $h"
grep -q 'serving https' "$TMP/gw.log" || fail "the gateway does not say https"
b=$(curl -sS --cacert "$C/ca.pem" "https://127.0.0.1:$G/api/v1/products?limit=1") || fail "through two TLS hops"
grep -q '"items"' <<<"$b" || fail "gateway -> agora run over TLS: $b"
code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$C/ca.pem" "https://127.0.0.1:$G/rogue/api/v1/products")
[ "$code" = 502 ] || fail "an upstream certificate from an untrusted issuer gave $code, not 502"
kill -TERM "$GPID"; wait "$GPID" || fail "agora gateway exit"; GPID=""
pass "agora gateway: HTTPS from gateway.tls (hstsMaxAge), upstream over TLS with trafficPolicy.tls (MUTUAL: verified + client certificate; an untrusted issuer is 502)"

kill -TERM "$SPID"
wait "$SPID" || fail "agora run exited $? after SIGTERM"
SPID=""
pass "clean stop"

