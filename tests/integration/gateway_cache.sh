#!/usr/bin/env bash
# Integration: HTTP caching at the gateway (issue 15), `agora gateway` in front of
# gw_upstream (which answers its request counter `n` and the identity it got):
# - an anonymous GET of a route with cache.maxAge is answered from the gateway's
#   response cache the second time (same n), with Cache-Control: public,
#   max-age=N, a strong ETag and Age; the query is part of the key; after maxAge
#   the upstream is asked again;
# - If-None-Match with the tag answers 304 without a body (from the cache and
#   from an upstream answer), another tag 200;
# - a request with a token is never served from, nor stored into, the cache:
#   alice's answer is not served to bob nor to an anonymous caller, and carries no
#   `public`;
# - a config with a bad maxAge is refused with its path;
# - agora_cache_hits_total{cache="gateway"} counts.
# Env: AGORA_BIN, AG_BUILD_DIR (CTest).
set -euo pipefail
source "$(dirname "$0")/gw_lib.bash"
gw_frame gw_upstream
upstream_start v1 up
UPORT=$UP_PORT
SECRET="gateway-cache-test-secret-0123456789abcdef"
write_config() { # maxAge of the public route
    cat >"$TMP/gw.yaml" <<YAML
gateway: {listen: 127.0.0.1:0, workers: 2, responseCacheBytes: 1048576}
jwt:
  issuers:
    - issuer: t
      audiences: [agora]
      keys: [{kid: k, alg: HS256, secret: "$SECRET"}]
destinationRules:
  - host: svc
    endpoints: [{address: 127.0.0.1:$UPORT}]
virtualServices:
  - name: t
    http:
      - name: public
        match: [{uri: {prefix: /pub}}]
        route: [{destination: {host: svc}}]
        cache: {maxAge: $1}
      - name: mine
        match: [{uri: {prefix: /me}}]
        route: [{destination: {host: svc}}]
        cache: {maxAge: 30s}
      - name: any
        route: [{destination: {host: svc}}]
YAML
}
write_config 3s
gateway_start
U="http://127.0.0.1:$GP"
tok() { "$AGORA" token --sub "$1" --role "${2:-customer}" --config "$TMP/gw.yaml" --issuer t; }
n_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["n"])'; }
hdr() { grep -i "^$1:" "$2" | head -1 | sed 's/^[^:]*: *//' | tr -d '\r'; }

curl -s -D "$TMP/h1" "$U/pub/a" >"$TMP/b1"
curl -s -D "$TMP/h2" "$U/pub/a" >"$TMP/b2"
cmp -s "$TMP/b1" "$TMP/b2" || fail "second anonymous GET not from the cache: $(cat "$TMP/b1") / $(cat "$TMP/b2")"
[ "$(hdr cache-control "$TMP/h1")" = "public, max-age=3" ] || fail "Cache-Control: $(hdr cache-control "$TMP/h1")"
etag=$(hdr etag "$TMP/h1")
[[ "$etag" =~ ^\"[0-9a-f]{16}\"$ ]] || fail "strong ETag: '$etag'"
[ "$(hdr etag "$TMP/h2")" = "$etag" ] || fail "the cached answer's ETag differs"
[ -n "$(hdr age "$TMP/h2")" ] || fail "no Age on the cached answer"
pass "anonymous GET served from the gateway cache: Cache-Control public, max-age=3, strong ETag, Age"

code=$(curl -s -o "$TMP/b3" -w '%{http_code}' -H "If-None-Match: $etag" "$U/pub/a")
[ "$code" = 304 ] && [ ! -s "$TMP/b3" ] || fail "If-None-Match from the cache: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: "nope"' "$U/pub/a")
[ "$code" = 200 ] || fail "If-None-Match with another tag: $code"
curl -s -D "$TMP/h4" -o /dev/null "$U/pub/fresh"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $(hdr etag "$TMP/h4")" "$U/pub/fresh?other=1")
[ "$code" = 200 ] || fail "another resource answered 304: $code"
pass "If-None-Match: 304 without a body when the tag matches, 200 otherwise"

nq=$(curl -s "$U/pub/a?x=1" | n_of)
[ "$nq" != "$(n_of <"$TMP/b1")" ] || fail "the query is not part of the key"
pass "the query is part of the key"

sleep 3.2 # maxAge 3s on the gateway's real clock
n3=$(curl -s "$U/pub/a" | n_of)
[ "$n3" != "$(n_of <"$TMP/b1")" ] || fail "entry outlived maxAge"
pass "an entry older than maxAge goes to the upstream again"

A=$(tok alice)
BOB=$(tok bob)
ba=$(curl -s -D "$TMP/ha" "$U/me" -H "Authorization: Bearer $A")
[[ "$ba" == *'"x-user-id":"alice"'* ]] || fail "alice's answer: $ba"
[[ "$(hdr cache-control "$TMP/ha")" != *public* ]] || fail "an authenticated answer was marked public"
bb=$(curl -s "$U/me" -H "Authorization: Bearer $BOB")
[[ "$bb" == *'"x-user-id":"bob"'* && "$bb" != *alice* ]] || fail "bob got: $bb"
banon=$(curl -s "$U/me")
[[ "$banon" != *alice* && "$banon" != *bob* ]] || fail "anonymous got a user's answer: $banon"
ba2=$(curl -s "$U/me" -H "Authorization: Bearer $A")
[ "$(n_of <<<"$ba2")" != "$(n_of <<<"$ba")" ] || fail "alice's second request was served from a cache"
banon2=$(curl -s "$U/me")
[[ "$banon2" != *alice* ]] || fail "anonymous got alice's answer: $banon2"
pass "Authorization-bearing requests bypass the cache: alice's answer never reaches bob or anonymous"

ADMIN=$(tok ops admin)
m=$(curl -s "$U/metrics" -H "Authorization: Bearer $ADMIN")
grep -qE '^agora_cache_hits_total\{cache="gateway"\} [1-9]' <<<"$m" || fail "gateway hits not counted"
grep -qE '^agora_cache_misses_total\{cache="gateway"\} [1-9]' <<<"$m" || fail "gateway misses not counted"
pass "agora_cache_hits_total / misses_total{cache=\"gateway\"}"

write_config 0s
out=$("$AGORA" gateway --config "$TMP/gw.yaml" --check 2>&1 || true)
[[ "$out" == *"cache.maxAge"* ]] || fail "maxAge 0s not refused: $out"
pass "cache.maxAge below 1s refused with its path"
