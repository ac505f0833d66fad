#!/usr/bin/env bash
# Integration: `agora run` under order load is frozen with SIGSTOP for 20 s and
# resumed. It used to die ~0.3 s after SIGCONT: the loop woke to more ready
# sockets than one epoll batch holds, libuv polled again before running write
# callbacks, and the gateway's upstream pool reused a connection whose uv_write_t
# was still queued (src/http/client.c, "Writes"). 20 s is longer than the
# gateway's 15 s write timeout, so the resumed loop also fires every upstream
# deadline at once. Asserts: the process survives, keeps serving (health and a
# fresh burst of orders), and every order a witness client saw acknowledged (202)
# before, during or after the freeze can be read back.
set -euo pipefail
AGORA="${AGORA_BIN:-${AG_BUILD_DIR:?AG_BUILD_DIR not set}/agora}"
FREEZE_S="${AG_FREEZE_S:-20}"
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; tail -30 "$TMP/run.log" >&2 || true; exit 1; }
pass() { echo "ok - $*"; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" \
    "$AGORA" run --data "$TMP/data" --listen "127.0.0.1:$PORT" --workers 2 >"$TMP/run.log" 2>&1 &
APID=$!
PIDS+=("$APID")
for _ in $(seq 200); do curl -sf "$URL/health/live" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "$URL/health/live" >/dev/null || fail "agora run did not start"
TOKEN=$("$AGORA" token --data "$TMP/data" --sub freeze --role customer)
# the load registers and funds many customers: an operator's (admin) token
LOADTOKEN=$("$AGORA" token --data "$TMP/data" --sub freeze-load --role admin)

# The witness: a few keep-alive clients placing orders with long timeouts
# through the freeze, writing every acknowledged order id to acked.txt.
cat >"$TMP/witness.py" <<'PY'
import http.client, json, os, sys, threading, time
port, token, stop, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
H = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
def call(c, method, path, body=None, headers=H):
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = c.getresponse()
    return r.status, r.read()
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
st, b = call(c, "POST", "/api/v1/customers", {"email": "witness@freeze.example", "name": "W"})
assert st == 201, (st, b)
cust = json.loads(b)
st, b = call(c, "POST", "/api/v1/accounts/%s/deposits" % cust["accountId"],
             {"amount": {"amount": 10**12, "currency": "USD"}})
assert st == 200, (st, b)
st, b = call(c, "GET", "/api/v1/products?limit=3")
products = [p["id"] for p in json.loads(b)["items"]]
acked, lock, errors = [], threading.Lock(), []
def worker(n):
    conn, i = None, 0
    while not os.path.exists(stop):
        i += 1
        body = {"customerId": cust["id"], "items": [{"productId": products[i % len(products)], "quantity": 1}],
                "shippingAddress": {"street": "1 Freeze St", "city": "Springfield", "state": "IL",
                                    "zipCode": "62701", "country": "US"}}
        hdr = dict(H, **{"Idempotency-Key": "witness-%d-%d" % (n, i)})
        try:
            conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            st, b = call(conn, "POST", "/api/v1/orders", body, hdr)
        except Exception as e:  # a transport error is no acknowledgement
            errors.append(repr(e)); conn = None; continue
        if st == 202:
            with lock: acked.append(json.loads(b)["orderId"])
        time.sleep(0.05)
ts = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
open(out, "w").write("\n".join(acked) + "\n")
print("witness: %d acknowledged, %d transport errors" % (len(acked), len(errors)))
PY
python3 "$TMP/witness.py" "$PORT" "$TOKEN" "$TMP/stop" "$TMP/acked.txt" >"$TMP/witness.log" 2>&1 &
WPID=$!
PIDS+=("$WPID")

# Background load: open loop at 300 orders/s (it gives up 2 s into the freeze,
# leaving its connections and queued requests for the resumed loop).
"$AGORA" load --target "$URL" --token "$LOADTOKEN" --rate 300 --duration 30 --quiet \
    >"$TMP/load1.json" 2>"$TMP/load1.log" &
LPID=$!
PIDS+=("$LPID")
sleep 6
kill -0 "$APID" || fail "agora died under load before the freeze"
kill -STOP "$APID"
sleep "$FREEZE_S"
kill -CONT "$APID"
sleep 3
kill -0 "$APID" 2>/dev/null || fail "agora died after SIGCONT"
grep -q "AddressSanitizer\|runtime error" "$TMP/run.log" && fail "sanitizer report after SIGCONT"
pass "agora survived a ${FREEZE_S} s SIGSTOP under load"
wait "$LPID" || true

t0=$(date +%s%N)
curl -sf --max-time 5 "$URL/health/live" >/dev/null || fail "/health/live after the freeze"
pass "/health/live answers after the freeze ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"

# The upstream deadlines that expired during the freeze open the gateway's
# circuit breaker (openTime 5 s): wait until reads pass through it again.
for _ in $(seq 150); do
    curl -sf --max-time 2 "$URL/api/v1/products?limit=1" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf --max-time 2 "$URL/api/v1/products?limit=1" >/dev/null || fail "reads do not recover"
pass "reads pass the gateway again"
"$AGORA" load --target "$URL" --token "$LOADTOKEN" --orders 100 --concurrency 8 --quiet \
    >"$TMP/load2.json" 2>"$TMP/load2.log" || fail "load after the freeze: $(cat "$TMP/load2.log")"
python3 - "$TMP/load2.json" <<'PY' || fail "orders after the freeze: $(cat "$TMP/load2.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["placed"] == 100 and s["errors"] == 0 and s["transportErrors"] == 0, s
PY
pass "100 orders placed after the freeze without an error"

touch "$TMP/stop"
wait "$WPID" || fail "witness: $(cat "$TMP/witness.log")"
cat "$TMP/witness.log"
python3 - "$PORT" "$TMP/acked.txt" "$TOKEN" <<'PY' || fail "an acknowledged order was lost"
import http.client, sys
port, ids = int(sys.argv[1]), [l.strip() for l in open(sys.argv[2]) if l.strip()]
H = {"Authorization": "Bearer " + sys.argv[3]}  # the witness's own orders
assert len(ids) >= 20, "too few acknowledged orders to mean anything: %d" % len(ids)
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
for i in ids:
    c.request("GET", "/api/v1/orders/" + i, headers=H)
    r = c.getresponse(); r.read()
    assert r.status == 200, (i, r.status)
print("witness: all %d acknowledged orders read back" % len(ids))
PY
pass "no acknowledged order lost"
kill -TERM "$APID"
wait "$APID" || fail "agora did not stop cleanly"
grep -q "AddressSanitizer\|runtime error" "$TMP/run.log" && fail "sanitizer report"
pass "agora stopped cleanly"
