#!/usr/bin/env bash
# What one order costs the server on a given data directory (issue 19: does it
# grow with history?). Starts `agora run` (release, fsync on, --no-gateway) on
# DATA (a new directory is made and given the bench catalog), places a 2,000-order
# warm-up, then ORDERS orders at a fixed open-loop RATE, and prints one line per
# order of the measured load: server CPU (user + system, /proc/PID/stat), wchar
# (bytes passed to write calls), write_bytes (page-cache pages dirtied) and rchar
# (bytes read: mostly SQLite pages missing from its cache) from /proc/PID/io,
# POST and confirm p99, RssAnon at the end. The data directory is kept (it is the
# thing measured).
#
# Fresh vs aged (docs/internals/readmodel.md, "Rows in time order"): age a
# directory once with `AGE=300000 bench/soak/per_order.sh DIR` (closed loop,
# 32 clients, as fast as it goes, before measuring), then alternate
#   bench/soak/per_order.sh /tmp/fresh-N      (a new directory each time)
#   bench/soak/per_order.sh DIR
# with the same AGORA_BIN, and compare binaries on copies of DIR.
#
#   ORDERS (default 20000), RATE (default 350), CUSTOMERS (default 64),
#   AGE (orders placed closed-loop first; default 0), AGORA_BIN (default
#   build/release/agora)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
AGORA=${AGORA_BIN:-$ROOT/build/release/agora}
DATA=${1:?usage: per_order.sh DATA}
ORDERS=${ORDERS:-20000}
RATE=${RATE:-350}
CUSTOMERS=${CUSTOMERS:-64}
AGE=${AGE:-0}
[[ -x $AGORA ]] || { echo "missing $AGORA: run 'make build' first" >&2; exit 1; }
if [[ ! -d $DATA ]]; then
  mkdir -p "$DATA"
  python3 "$ROOT/bench/lib/seed_catalog.py" "$AGORA" --data "$DATA" SK
fi
TMP=$(mktemp -d /tmp/agora-per-order-XXXXXX)
SPID=
cleanup() {
  [[ -n $SPID ]] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
"$AGORA" run --data "$DATA" --listen 127.0.0.1:0 --no-seed --no-gateway 2>"$TMP/server.err" >/dev/null &
SPID=$!
PORT=
for _ in $(seq 6000); do # an old read model is converted at the first start: minutes
  PORT=$(grep -o 'serving http://127.0.0.1:[0-9]*' "$TMP/server.err" | grep -o '[0-9]*$' || true)
  [[ -n $PORT ]] && break
  kill -0 "$SPID" 2>/dev/null || break
  sleep 0.1
done
[[ -n $PORT ]] || { echo "agora did not start: $(tail -n 5 "$TMP/server.err")" >&2; exit 1; }
TARGET=http://127.0.0.1:$PORT
aged=0
while ((aged < AGE)); do
  n=$((AGE - aged < 50000 ? AGE - aged : 50000))
  "$AGORA" load --target "$TARGET" --concurrency 32 --orders "$n" --customers "$CUSTOMERS" --quiet >/dev/null
  aged=$((aged + n))
  echo "per_order: aged $aged" >&2
done
"$AGORA" load --target "$TARGET" --rate "$RATE" --orders 2000 --customers "$CUSTOMERS" --quiet >/dev/null
io() { awk -v k="$1" '$1 == k ":" { print $2 }' "/proc/$SPID/io"; }
t0=$(awk '{ print $14 + $15 }' "/proc/$SPID/stat")
w0=$(io write_bytes) c0=$(io wchar) r0=$(io rchar)
"$AGORA" load --target "$TARGET" --rate "$RATE" --orders "$ORDERS" --customers "$CUSTOMERS" \
  --quiet >"$TMP/load.json"
t1=$(awk '{ print $14 + $15 }' "/proc/$SPID/stat")
w1=$(io write_bytes) c1=$(io wchar) r1=$(io rchar)
rss=$(awk '/^RssAnon:/ { print $2 }' "/proc/$SPID/status")
events=$(curl -sf "$TARGET/metrics" | awk '$1 == "agora_store_events" { print $2 }')
python3 - "$DATA" "$ORDERS" "$((t1 - t0))" "$(getconf CLK_TCK)" "$((c1 - c0))" "$((w1 - w0))" \
  "$((r1 - r0))" "$rss" "$events" "$TMP/load.json" <<'PY'
import json, sys
data, n, ticks, hz, wc, wb, rc, rss, events, path = sys.argv[1:]
n, kb = int(n), 1024 * int(n)
s = json.loads(open(path).read().strip().splitlines()[-1])
print(f"{data}: events {events}, per order: CPU {int(ticks) * 1000 / int(hz) / n:.2f} ms, "
      f"wchar {int(wc) / kb:.1f} KB, write_bytes {int(wb) / kb:.1f} KB, rchar {int(rc) / kb:.1f} KB; "
      f"POST p99 {s['postP99Us'] / 1000:.1f} ms, confirm p99 {s['finalP99Us'] / 1000:.1f} ms, "
      f"{s['ordersPerSec']:.0f}/s, errors {s['errors'] + s['transportErrors']}, RssAnon {int(rss) // 1024} MB")
PY
