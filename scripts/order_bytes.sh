#!/usr/bin/env bash
# What the log costs per order, window by window (issue 19's measurement):
#   scripts/order_bytes.sh [WINDOWS [ORDERS]]   (defaults 3 x 4000)
# starts `agora run` on a fresh data directory (127.0.0.1, ephemeral port), restocks
# every product so orders confirm, then WINDOWS times places ORDERS orders with
# `agora load --concurrency 8 --customers 16` and prints the log bytes and events
# per order of that window (from `agora store stats --by-type`, read-only beside
# the server), then the latest snapshots per stream kind.
#   AGORA=path/to/agora (default build/release/agora)   KEEP=1 keeps the data
set -uo pipefail
W=${1:-3} N=${2:-4000}
BIN=${AGORA:-build/release/agora}
[[ -x $BIN ]] || { echo "order_bytes: $BIN not built (make build, or AGORA=...)" >&2; exit 1; }
DATA=$(mktemp -d /tmp/agora-order-bytes-XXXXXX)
export AGORA_JWT_SECRET=order-bytes-0123456789abcdef0123456789
SPID=
cleanup() {
  [[ -n $SPID ]] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
  [[ -n ${KEEP:-} ]] && echo "data kept: $DATA" || rm -rf "$DATA"
}
trap cleanup EXIT
"$BIN" run --data "$DATA/d" --listen 127.0.0.1:0 --no-gateway --workers 2 2>"$DATA/server.log" >/dev/null &
SPID=$!
PORT=
for _ in $(seq 400); do
  PORT=$(grep -o 'serving http://127.0.0.1:[0-9]*' "$DATA/server.log" 2>/dev/null | grep -o '[0-9]*$')
  [[ -n $PORT ]] && break
  sleep 0.05
done
[[ -n $PORT ]] || { echo "order_bytes: the server did not start" >&2; exit 1; }
URL=http://127.0.0.1:$PORT
TOKEN=$("$BIN" token --sub order-bytes --role admin)
for pid in $(curl -s "$URL/api/v1/products?limit=100" |
  python3 -c 'import json,sys; print(" ".join(p["id"] for p in json.load(sys.stdin)["items"]))'); do
  curl -s -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"quantity":1000000000}' "$URL/api/v1/inventory/$pid/restock"
done
pb=0 pe=0 po=0
for w in $(seq "$W"); do
  "$BIN" load --target "$URL" --concurrency 8 --orders "$N" --customers 16 --quiet --token "$TOKEN" \
    >"$DATA/load$w.json" 2>&1 || { echo "order_bytes: load failed: $(tail -3 "$DATA/load$w.json")" >&2; exit 1; }
  sleep 2 # the sagas' last events
  s=$("$BIN" store stats --by-type --data "$DATA/d" | head -1)
  read -r b e o < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["logBytes"], d["events"], d["orders"])' "$s")
  python3 -c 'import sys
b, e, o, pb, pe, po, w = map(int, sys.argv[1:])
print(f"window {w}: orders {po}..{o}: {(b - pb) / max(o - po, 1):.0f} log bytes/order, {(e - pe) / max(o - po, 1):.2f} events/order")' \
    "$b" "$e" "$o" "$pb" "$pe" "$po" "$w"
  pb=$b pe=$e po=$o
done
"$BIN" store stats --by-type --data "$DATA/d" | grep '"snapshots"'
