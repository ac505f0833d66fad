#!/usr/bin/env bash
# Integration: the read caches (issue 15) with a real redis-server on a loopback
# port in a temp dir (started and killed here), through the gateway (`agora run
# --cache redis://...`):
# - catalog reads hit Redis after the first read (agora_cache_hits_total);
# - cache correctness under concurrent writes: while a writer changes a product's
#   price 12 times, readers through the cache never get an answer older than the
#   X-Projection-Position it claims (every price change before that position is in
#   it), and the last price is read once the writer is done;
# - stock is written through: a restock is in Redis (agora:c:s:<id>) at once;
# - views are written behind: product reads show up in the `views` field;
# - Redis killed mid-load: every answer stays a 200 (from the read models), the
#   breaker opens; Redis back: hits resume;
# - If-None-Match with the answer's ETag is 304 through the gateway;
# - --cache local (the default, in-process LRU): hits, and the same correctness
#   check; --cache off: no cache metrics move.
# Env: AGORA_BIN (CTest). Skips (77) without redis-server.
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
command -v redis-server >/dev/null || { echo "SKIP: redis-server is not installed"; exit 77; }
command -v curl >/dev/null || { echo "FAIL: curl is needed"; exit 1; }
# shellcheck source=run_lib.bash
source "$(dirname "$0")/run_lib.bash"
run_frame RPID
pass() { echo "ok - $*"; }
J='Content-Type: application/json'

RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$TMP/redis"
redis_start() {
    redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$TMP/redis" --save '' --appendonly no \
        >>"$TMP/redis.log" 2>&1 &
    RPID=$!
    for _ in $(seq 100); do
        redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
    done
    fail "redis-server did not start"
}
redis_kill() {
    kill -KILL "$RPID"
    wait "$RPID" 2>/dev/null || true
    RPID=""
}
metric() { # name{labels} -> value (0 when absent)
    curl -s "$BASE/metrics" -H "Authorization: Bearer $ADMIN" |
        awk -v k="$1" '$1 == k { print $2; f = 1 } END { if (!f) print 0 }'
}

# The concurrency check: a writer changes the price N times while readers read;
# then every read (position X, price p) must include every change at a position
# below X (the log's positions, from /admin/streams). Prints a summary.
cat >"$TMP/check.py" <<'PY'
import http.client, json, sys, threading, time
host, port = sys.argv[1].split("//")[1].split(":")
port, pid, admin = int(port), sys.argv[2], sys.argv[3]
changes = int(sys.argv[4]) if len(sys.argv) > 4 else 12
reads, errors, stop = [], [], threading.Event()
def reader():
    c = http.client.HTTPConnection(host, port, timeout=10)
    while not stop.is_set():
        c.request("GET", "/api/v1/products/" + pid)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            errors.append(r.status)
            continue
        reads.append((int(r.getheader("X-Projection-Position")), json.loads(body)["price"]["amount"]))
ts = [threading.Thread(target=reader) for _ in range(3)]
for t in ts: t.start()
w = http.client.HTTPConnection(host, port, timeout=10)
hdr = {"Authorization": "Bearer " + admin, "Content-Type": "application/json"}
base = 5000
for i in range(1, changes + 1):
    w.request("POST", "/api/v1/products/%s/price" % pid,
              json.dumps({"price": {"amount": base + i, "currency": "USD"}}), hdr)
    r = w.getresponse(); r.read()
    assert r.status == 200, r.status
    time.sleep(0.05)
deadline = time.time() + 10
while time.time() < deadline and not any(p == base + changes for _, p in reads[-20:]):
    time.sleep(0.05)
stop.set()
for t in ts: t.join()
w.request("GET", "/admin/streams/product-%s?limit=100" % pid, headers=hdr)
r = w.getresponse()
evs = json.loads(r.read())
evs = evs.get("events", evs.get("items", evs)) if isinstance(evs, dict) else evs
changes_at = sorted((e["position"], e["data"]["price"]["amount"]) for e in evs
                    if e["type"] == "ProductPriceChanged")
assert len(changes_at) >= changes, changes_at
bad = []
for x, p in reads:
    want = [a for pos, a in changes_at if pos < x]
    if want and p < want[-1]:
        bad.append((x, p, want[-1]))
if errors: print("errors", errors[:5]); sys.exit(1)
if bad: print("older than claimed:", bad[:5]); sys.exit(1)
if not reads or reads[-1][1] != base + changes and not any(p == base + changes for _, p in reads):
    print("the last price was never read"); sys.exit(1)
print("%d reads, %d price changes, none older than its position" % (len(reads), len(changes_at)))
PY

# load: N seconds of GETs on 2 connections; prints "<count> <statuses>"
cat >"$TMP/load.py" <<'PY'
import http.client, sys, threading, time
host, port = sys.argv[1].split("//")[1].split(":")
pid, secs = sys.argv[2], float(sys.argv[3])
codes, lock = {}, threading.Lock()
def run():
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    end = time.time() + secs
    while time.time() < end:
        try:
            c.request("GET", "/api/v1/products/" + pid)
            r = c.getresponse(); r.read(); s = r.status
        except Exception as e:
            s = type(e).__name__; c = http.client.HTTPConnection(host, int(port), timeout=10)
        with lock: codes[s] = codes.get(s, 0) + 1
ts = [threading.Thread(target=run) for _ in range(2)]
for t in ts: t.start()
for t in ts: t.join()
print(sum(codes.values()), codes)
PY

new_product() { # sku -> id
    curl -sf -X POST "$BASE/api/v1/products" -H "$J" -H "Authorization: Bearer $ADMIN" \
        -d "{\"sku\":\"$1\",\"name\":\"Cached $1\",\"price\":{\"amount\":5000,\"currency\":\"USD\"}}" |
        json_field 'd["id"]'
}
get_code() { curl -s -o /dev/null -w '%{http_code}' "$BASE/api/v1/products/$1"; }

# ---------------- Redis ----------------
redis_start
D="$TMP/d"
AGORA_VIEWS_FLUSH=1s agora_start "$D" ready --no-seed --cache "redis://127.0.0.1:$RPORT"
ADMIN=$("$BIN" token --data "$D" --sub ops --role admin) || fail "agora token"
P=$(new_product R-1)
for _ in $(seq 50); do [ "$(get_code "$P")" = 200 ] && break; sleep 0.1; done
h0=$(metric 'agora_cache_hits_total{cache="redis_products"}')
for _ in 1 2 3 4 5; do [ "$(get_code "$P")" = 200 ] || fail "product read"; done
h1=$(metric 'agora_cache_hits_total{cache="redis_products"}')
[ "$h1" -ge $((h0 + 3)) ] || fail "Redis hits did not count: $h0 -> $h1" # a view flush may drop it once
redis-cli -p "$RPORT" exists "agora:c:p:$P" | grep -q 1 || fail "the product is not in Redis"
pass "catalog reads hit Redis after the first ($h0 -> $h1 hits)"

out=$(python3 "$TMP/check.py" "$BASE" "$P" "$ADMIN") || fail "Redis cache under concurrent writes: $out"
pass "Redis: $out"

curl -sf -X POST "$BASE/api/v1/inventory/$P/restock" -H "$J" -H "Authorization: Bearer $ADMIN" \
    -d '{"quantity":7}' >/dev/null || fail "restock"
for _ in $(seq 50); do
    redis-cli -p "$RPORT" get "agora:c:s:$P" | grep -q '"onHand":7' && break
    sleep 0.1
done
redis-cli -p "$RPORT" get "agora:c:s:$P" | grep -q '"onHand":7' || fail "stock not written through"
curl -s "$BASE/api/v1/inventory/$P" | grep -q '"available":7' || fail "stock read"
pass "stock written through to Redis by the projection; GET /inventory answers it"

for _ in $(seq 60); do
    v=$(curl -s "$BASE/api/v1/products/$P" | json_field 'd["views"]')
    [ "$v" -gt 0 ] && break
    sleep 0.2
done
[ "$v" -gt 0 ] || fail "views never written behind"
pass "product views written behind (views=$v)"

hdrs="$TMP/h"
for _ in 1 2 3 4 5; do # a view flush (every 1 s here) changes the body, and so the tag
    curl -s -D "$hdrs" -o /dev/null "$BASE/api/v1/products/$P"
    etag=$(grep -i '^etag:' "$hdrs" | sed 's/^[^:]*: *//' | tr -d '\r')
    [ -n "$etag" ] || fail "no ETag"
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$BASE/api/v1/products/$P")
    [ "$code" = 304 ] && break
done
[ "$code" = 304 ] || fail "If-None-Match through the gateway: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: "other"' "$BASE/api/v1/products/$P")
[ "$code" = 200 ] || fail "If-None-Match with another tag: $code"
pass "strong ETag; If-None-Match through the gateway answers 304"

python3 "$TMP/load.py" "$BASE" "$P" 3 >"$TMP/load.out" &
LPID=$!
sleep 1
redis_kill
wait "$LPID" || fail "load"
read -r n codes <"$TMP/load.out"
[[ "$codes" == "{200: $n}" ]] || fail "answers while Redis died: $codes"
[ "$n" -gt 20 ] || fail "too few reads during the outage: $n"
e=$(metric agora_cache_redis_errors_total)
[ "$e" -gt 0 ] || fail "no Redis errors counted"
# open (1), or half-open (0.5) when its open time ran out as the load ended
m=$(curl -s "$BASE/metrics" -H "Authorization: Bearer $ADMIN")
grep -qE '^agora_breaker_open\{scope="cache",name="redis"\} (1|0\.5)$' <<<"$m" ||
    fail "the Redis breaker did not trip: $(grep 'scope="cache"' <<<"$m")"
pass "Redis killed mid-load: $n reads, all 200 from the read models; the breaker tripped"

redis_start
sleep 1.5 # the breaker's open time (1 s): then one probe closes it
for _ in $(seq 20); do get_code "$P" >/dev/null; done
h2=$(metric 'agora_cache_hits_total{cache="redis_products"}')
for _ in 1 2 3 4 5; do [ "$(get_code "$P")" = 200 ] || fail "read after Redis came back"; done
h3=$(metric 'agora_cache_hits_total{cache="redis_products"}')
[ "$h3" -ge $((h2 + 3)) ] || fail "hits did not resume: $h2 -> $h3" # a view flush may drop it once
pass "Redis back: hits resume ($h2 -> $h3)"
agora_stop

# ---------------- in-process (default) ----------------
D2="$TMP/d2"
agora_start "$D2" ready --no-seed
ADMIN=$("$BIN" token --data "$D2" --sub ops --role admin) || fail "agora token"
P=$(new_product L-1)
for _ in $(seq 50); do [ "$(get_code "$P")" = 200 ] && break; sleep 0.1; done
h0=$(metric 'agora_cache_hits_total{cache="products"}')
for _ in 1 2 3; do get_code "$P" >/dev/null; done
h1=$(metric 'agora_cache_hits_total{cache="products"}')
[ "$h1" -ge $((h0 + 3)) ] || fail "in-process hits: $h0 -> $h1"
out=$(python3 "$TMP/check.py" "$BASE" "$P" "$ADMIN") || fail "in-process cache under concurrent writes: $out"
pass "in-process cache: hits, and $out"
agora_stop

D3="$TMP/d3"
agora_start "$D3" ready --no-seed --cache off
ADMIN=$("$BIN" token --data "$D3" --sub ops --role admin) || fail "agora token"
P=$(new_product O-1)
for _ in $(seq 50); do [ "$(get_code "$P")" = 200 ] && break; sleep 0.1; done
[ "$(metric 'agora_cache_hits_total{cache="products"}')" = 0 ] || fail "--cache off still caches"
agora_stop
pass "--cache off: no cache"
