#!/usr/bin/env bash
# `agora backup` while `agora run` serves under write load, then `agora restore`
# into a new directory: the restored log passes `agora store verify`, holds every
# event committed before the backup started, its first P events (P = the backup's
# position) are byte-for-byte the live log's first P events, and an `agora run` on
# the restored directory serves the same answers as the live one for what was
# settled before the backup. Refusals: an existing --to, a non-empty --data.
# Env: AGORA_BIN (CTest).
set -euo pipefail
BIN="${AGORA_BIN:?AGORA_BIN not set}"
TMP=$(mktemp -d)
SPID=""; RPID=""; LPID=""
cleanup() {
    for p in "$LPID" "$SPID" "$RPID"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in server restored; do [ -f "$TMP/$f.log" ] && tail -5 "$TMP/$f.log"; done; exit 1; }
pass() { echo "ok - $*"; }
J='Content-Type: application/json'
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

start() { # data log -> sets PID_OUT and ADDR
    "$BIN" run --data "$1" --listen 127.0.0.1:0 --no-gateway --workers 2 >"$2" 2>&1 &
    PID_OUT=$!
    ADDR=""
    for _ in $(seq 300); do
        ADDR=$(grep -o 'serving http://127.0.0.1:[0-9]*' "$2" | head -1 | sed 's/serving //') || true
        [ -n "$ADDR" ] && return 0
        kill -0 "$PID_OUT" 2>/dev/null || fail "agora run exited"
        sleep 0.1
    done
    fail "agora run did not start"
}

start "$TMP/data" "$TMP/server.log"; SPID=$PID_OUT; A=$ADDR
p=$(curl -sf "$A/api/v1/products?limit=1" | field 'd["items"][0]["id"]')

# settled before the backup: customers, deposits, orders whose sagas completed
SETTLED=()
for i in 1 2 3 4; do
    c=$(curl -sf -X POST "$A/api/v1/customers" -H "$J" -d "{\"email\":\"s$i@example.com\",\"name\":\"S$i\"}") || fail "register"
    cid=$(echo "$c" | field 'd["id"]'); aid=$(echo "$c" | field 'd["accountId"]')
    curl -sf -X POST "$A/api/v1/accounts/$aid/deposits" -H "$J" -d '{"amount":{"amount":100000,"currency":"USD"}}' >/dev/null || fail "deposit"
    o=$(curl -sf -X POST "$A/api/v1/orders" -H "$J" -d "{\"customerId\":\"$cid\",\"items\":[{\"productId\":\"$p\",\"quantity\":1}],\"shippingAddress\":{\"street\":\"1 Main St\",\"city\":\"X\",\"state\":\"Y\",\"zipCode\":\"1\",\"country\":\"US\"}}") || fail "order"
    oid=$(echo "$o" | field 'd["orderId"]'); sid=$(echo "$o" | field 'd["sagaId"]')
    for _ in $(seq 200); do
        [ "$(curl -s "$A/api/v1/sagas/$sid" | field 'd.get("status")' 2>/dev/null)" = completed ] && break
        sleep 0.05
    done
    SETTLED+=("/api/v1/customers/$cid" "/api/v1/accounts/$aid" "/api/v1/orders/$oid" "/api/v1/sagas/$sid")
done
# the projections have caught up with everything settled
for path in "${SETTLED[@]}"; do curl -sf "$A$path" >/dev/null || fail "GET $path"; done

# write load during the backup: new customers, deposits, orders
cat >"$TMP/load.py" <<'PY'
import json, sys, threading, time, urllib.request
base, product, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
end = time.time() + seconds; n = [0]; errs = []; lock = threading.Lock()
def post(path, body):
    r = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(r, timeout=10))
def worker(w):
    i = 0
    while time.time() < end:
        i += 1
        try:
            c = post("/api/v1/customers", {"email": f"l{w}-{i}@example.com", "name": f"L{w}"})
            post(f"/api/v1/accounts/{c['accountId']}/deposits", {"amount": {"amount": 5000, "currency": "USD"}})
            post("/api/v1/orders", {"customerId": c["id"], "items": [{"productId": product, "quantity": 1}],
                 "shippingAddress": {"street": "2 Side St", "city": "X", "state": "Y", "zipCode": "1", "country": "US"}})
            with lock: n[0] += 1
        except Exception as e:
            with lock: errs.append(repr(e))
ts = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print(n[0], len(errs), errs[:2])
PY
python3 "$TMP/load.py" "$A" "$p" 4 >"$TMP/load.out" 2>&1 &
LPID=$!
sleep 1.5
"$BIN" backup --data "$TMP/data" --to "$TMP/bk" >"$TMP/backup.json" 2>"$TMP/backup.err" || fail "backup: $(cat "$TMP/backup.err")"
wait "$LPID" || fail "load generator"
LPID=""
read -r loaded lerr _ <"$TMP/load.out"
[ "$loaded" -gt 0 ] || fail "no load ran: $(cat "$TMP/load.out")"
P=$(field 'd["position"]' <"$TMP/backup.json")
C0=$(field 'd["committedAtStart"]' <"$TMP/backup.json")
LIVE=$("$BIN" store stats --data "$TMP/data" | field 'd["events"]')
[ "$P" -ge "$C0" ] || fail "position $P < committed at start $C0"
[ "$LIVE" -gt "$P" ] || fail "the load did not write past the backup ($LIVE <= $P): the test proves little"
[ ! -e "$TMP/bk.partial" ] || fail "bk.partial left"
pass "backup under load ($loaded order flows, $lerr errors): position $P, committed at start $C0, live now $LIVE"

"$BIN" backup --data "$TMP/data" --to "$TMP/bk" >/dev/null 2>&1 && fail "backup over an existing PATH"
mkdir -p "$TMP/full"; touch "$TMP/full/x"
"$BIN" restore --from "$TMP/bk" --data "$TMP/full" >/dev/null 2>&1 && fail "restore into a non-empty directory"
pass "an existing --to and a non-empty --data are refused"

"$BIN" restore --from "$TMP/bk" --data "$TMP/restored" >"$TMP/restore.json" || fail "restore"
[ "$(field 'd["verify"]["ok"]' <"$TMP/restore.json")" = True ] || fail "restore verify"
"$BIN" store verify --data "$TMP/restored" >/dev/null || fail "agora store verify on the restored copy"
[ "$("$BIN" store stats --data "$TMP/restored" | field 'd["events"]')" = "$P" ] || fail "restored events != $P"
"$BIN" store all --data "$TMP/data" --limit "$P" >"$TMP/live.all"
"$BIN" store all --data "$TMP/restored" --limit "$P" >"$TMP/restored.all"
[ "$(wc -l <"$TMP/live.all")" = "$P" ] || fail "live \$all: $(wc -l <"$TMP/live.all") lines, want $P"
cmp -s "$TMP/live.all" "$TMP/restored.all" || fail "the restored log differs from the live one before $P"
cmp -s "$TMP/data/keys/index.key" "$TMP/restored/keys/index.key" || fail "the index key was not restored as it was"
[ -e "$TMP/restored/keys/email-index" ] || fail "the email index marker was not restored"
pass "restored: store verify ok, $P events, identical to the live log's first $P; the index key came back"

start "$TMP/restored" "$TMP/restored.log"; RPID=$PID_OUT; B=$ADDR
for path in "${SETTLED[@]}"; do
    l=$(curl -sf "$A$path") || fail "live GET $path"
    r=""
    for _ in $(seq 100); do r=$(curl -sf "$B$path") && [ "$r" = "$l" ] && break; sleep 0.05; done
    [ "$r" = "$l" ] || fail "restored GET $path differs:\n live $l\n rest $r"
done
pass "the restored instance answers ${#SETTLED[@]} settled resources exactly as the live one"
kill -TERM "$RPID"; wait "$RPID" || fail "restored agora run exit"; RPID=""
kill -TERM "$SPID"; wait "$SPID" || fail "live agora run exit"; SPID=""
