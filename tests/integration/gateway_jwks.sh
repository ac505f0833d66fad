#!/usr/bin/env bash
# Integration: JWT keys from a JWKS URL (jwksUri), refreshed on a schedule.
# A token signed with the published key is accepted; when the identity provider
# rotates its key, the gateway picks the new one up on the next refresh (old tokens
# refused, new ones accepted); when the JWKS URL stops answering, the gateway keeps
# serving with the last good keys (and logs the failed refresh).
set -euo pipefail
source "$(dirname "$0")/gw_lib.bash"
gw_frame gw_upstream

upstream_start v1 up
UPP=$UP_PORT

# the identity provider: a static file server on loopback
jwks() { # kid secret -> a JWKS with one HS256 oct key
    python3 -c "import base64,json,sys; k=base64.urlsafe_b64encode(sys.argv[2].encode()).decode().rstrip('=');
print(json.dumps({'keys':[{'kty':'oct','kid':sys.argv[1],'alg':'HS256','k':k}]}))" "$1" "$2"
}
mkdir -p "$TMP/idp"
jwks k1 "first-secret-0123456789abcdef0123456789" >"$TMP/idp/jwks.json"
IDP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$IDP" --bind 127.0.0.1 --directory "$TMP/idp" >/dev/null 2>&1 &
IDP_PID=$!
PIDS+=($IDP_PID)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$IDP/jwks.json" >/dev/null && break; sleep 0.05; done

cat >"$TMP/gw.yaml" <<YAML
gateway: {listen: 127.0.0.1:0, workers: 1}
jwt:
  issuers:
    - issuer: idp
      audiences: [agora]
      jwksUri: http://127.0.0.1:$IDP/jwks.json
      jwksRefresh: 500ms
destinationRules:
  - host: svc
    endpoints: [{address: 127.0.0.1:$UPP}]
virtualServices:
  - name: t
    http:
      - name: api
        match: [{uri: {prefix: /}}]
        route: [{destination: {host: svc}}]
        auth: {required: true}
YAML
gateway_start
code() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" "http://127.0.0.1:$GP/x"; }

T1=$("$AGORA" token --config "$TMP/gw.yaml" --sub u1) || fail "agora token"
[ "$(code "$T1")" = 200 ] || fail "a token signed with the published key: $(code "$T1")"
pass "keys fetched from the JWKS URL at start; a token signed with them is accepted"

# the identity provider rotates its key
jwks k2 "second-secret-0123456789abcdef012345678" >"$TMP/idp/jwks.json.new"
mv "$TMP/idp/jwks.json.new" "$TMP/idp/jwks.json"
for _ in $(seq 60); do [ "$(code "$T1")" = 401 ] && break; sleep 0.1; done
[ "$(code "$T1")" = 401 ] || fail "the rotated-out key still accepted"
T2=$("$AGORA" token --config "$TMP/gw.yaml" --sub u2) || fail "agora token (new key)"
[ "$(code "$T2")" = 200 ] || fail "a token signed with the new key: $(code "$T2")"
grep -q 'jwks_keys_updated' "$TMP/gw.log" || fail "no jwks_keys_updated log line"
pass "a rotated key is picked up on the next refresh (old tokens 401, new ones 200)"

# the identity provider goes away: keep serving with the last good keys
kill "$IDP_PID"
sleep 1.5
[ "$(code "$T2")" = 200 ] || fail "the last good keys were dropped when the JWKS URL failed"
grep -q 'jwks_refresh_failed' "$TMP/gw.log" || fail "a failed refresh was not logged"
pass "the JWKS URL failing: the last good keys keep serving, the failure is logged"
echo "gateway_jwks: 3 passed, 0 failed"
