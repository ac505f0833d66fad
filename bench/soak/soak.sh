#!/usr/bin/env bash
# Soak benchmark (issue 19): does the cost of an order stay constant as history
# grows? One `agora run` (release build, fsync on, services direct: --no-gateway)
# on a fresh data directory with a catalog no run exhausts, then ORDERS orders at a
# fixed open-loop RATE, placed as back-to-back `agora load --rate RATE --orders
# WINDOW` runs (one per window; each registers its CUSTOMERS customers first and
# waits for its last orders to finish, a second or two between windows). After each
# window it records:
#   POST p99, confirm p99 (POST → confirmed/cancelled)   from the load's summary
#   heap      RssAnon of the server (/proc/PID/status)
#   disk/order  bytes the data directory occupies (du, log + read models) / orders so far
#   log/order   agora_store_bytes (record bytes) / orders so far
#   index     agora_store_index_bytes (memory of the stream index), events, streams
#   cache     agora_es_cache_bytes / _entries (the aggregate cache's estimate)
#   malloc    agora_process_heap_bytes{state="in_use"} and {state="free"} (glibc's
#             arenas: what is allocated, and what they hold free = fragmentation)
#   cpu/order   server CPU (user + system, /proc/PID/stat) spent in the window / its orders
#   commit p99  the event log's group commits (write + fdatasync) in the window, from
#             agora_store_commit_seconds (bucket bounds: the p99's upper bound)
#   heap pause  the longest heap read/trim of the window (agora_process_heap_pause_seconds)
#   parts     bytes on disk (allocated blocks) per order of each piece of the data
#             directory: log segments, stream tables (index-*.sst), index.ckpt,
#             each read-model database (with its -wal), the rest (keys, dictionaries)
# and prints a table (stdout) written also to bench/results/soak-<date>.md.
# Goals (issue 19, reported, not asserted): last window's p99 ≤ 1.2× the first's,
# heap flat (last ≤ 1.2× the first after warm-up), ≤ 4 KB on disk per order.
#
#   ORDERS (default 1000000), WINDOW (default 50000), RATE (default 500/s),
#   CUSTOMERS (default 64 per window), AGORA_BIN (default build/release/agora),
#   KEEP=1 keeps the data directory, AGORA_ARGS adds options to `agora run` (e.g.
#   AGORA_ARGS="--index-memory 8M --cache-memory 8M" to check that the caps hold).
#   Quick check: ORDERS=20000 WINDOW=5000.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
AGORA=${AGORA_BIN:-$ROOT/build/release/agora}
ORDERS=${ORDERS:-1000000}
WINDOW=${WINDOW:-50000}
RATE=${RATE:-500}
CUSTOMERS=${CUSTOMERS:-64}
[[ -x $AGORA ]] || { echo "missing $AGORA: run 'make build' first" >&2; exit 1; }
(( WINDOW > 0 && ORDERS >= WINDOW )) || { echo "soak: need ORDERS >= WINDOW > 0" >&2; exit 2; }
mkdir -p "$ROOT/bench/results"
TMP=$(mktemp -d /tmp/agora-soak-XXXXXX)
DATA=$TMP/data
SPID=
cleanup() {
  [[ -n $SPID ]] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
  [[ -n ${KEEP:-} ]] && echo "soak: data kept in $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT

mkdir -p "$DATA"
python3 "$ROOT/bench/lib/seed_catalog.py" "$AGORA" --data "$DATA" SK

# shellcheck disable=SC2086 # AGORA_ARGS is a list of options, split on purpose
"$AGORA" run --data "$DATA" --listen 127.0.0.1:0 --no-seed --no-gateway ${AGORA_ARGS:-} 2>"$TMP/server.err" >/dev/null &
SPID=$!
PORT=
for _ in $(seq 200); do
  PORT=$(grep -o 'serving http://127.0.0.1:[0-9]*' "$TMP/server.err" | grep -o '[0-9]*$' || true)
  [[ -n $PORT ]] && break
  sleep 0.05
done
[[ -n $PORT ]] || { echo "agora did not start: $(tail -n 5 "$TMP/server.err")" >&2; exit 1; }

metric() { # name: its value from /metrics
  curl -sf "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m { printf "%.0f", $2; exit }'
}
histos() { # the histograms the table reads, as "name{labels} value" lines
  curl -sf "http://127.0.0.1:$PORT/metrics" |
    grep -E '^agora_(store_commit_seconds|process_heap_pause_seconds)_bucket' || true
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SPID/stat"; }

DATE=$(date -u +%Y-%m-%dT%H%MZ)
MD=$ROOT/bench/results/soak-$DATE.md
ROWS=$TMP/rows.jsonl
: >"$ROWS"
done_orders=0
w=0
echo "soak: $ORDERS orders at $RATE/s in windows of $WINDOW (pid $SPID, data $DATA, options: ${AGORA_ARGS:-none})" >&2
histos >"$TMP/histo.prev"
ticks0=$(cpu_ticks)
while (( done_orders < ORDERS )); do
  w=$((w + 1))
  n=$(( ORDERS - done_orders < WINDOW ? ORDERS - done_orders : WINDOW ))
  "$AGORA" load --target "http://127.0.0.1:$PORT" --rate "$RATE" --orders "$n" \
    --customers "$CUSTOMERS" --quiet >"$TMP/load.json" 2>"$TMP/load.err" ||
    { echo "soak: load failed: $(tail -c 400 "$TMP/load.err")" >&2; exit 1; }
  done_orders=$((done_orders + n))
  ticks1=$(cpu_ticks)
  histos >"$TMP/histo.now"
  extra=$(python3 - "$TMP/histo.prev" "$TMP/histo.now" "$((ticks1 - ticks0))" "$(getconf CLK_TCK)" "$n" <<'PY'
import json, re, sys
def load(path):
    h = {}
    for line in open(path):
        m = re.match(r'(\w+)_bucket\{(.*)\} (\S+)', line)
        if not m: continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        le = labels.pop("le")
        key = (m.group(1), tuple(sorted(labels.items())))
        h.setdefault(key, {})[float("inf") if le == "+Inf" else float(le)] = float(m.group(3))
    return h
prev, now = load(sys.argv[1]), load(sys.argv[2])
def delta(key):
    a, b = prev.get(key, {}), now.get(key, {})
    return sorted((le, b[le] - a.get(le, 0)) for le in b)
def quantile(key, q):
    d = delta(key)
    if not d or d[-1][1] <= 0: return 0.0
    for le, c in d:
        if c >= q * d[-1][1]: return le
def top(name):  # upper bound of the slowest bucket that gained an observation
    best = 0.0
    for key in now:
        if key[0] != name: continue
        last = 0
        for le, c in delta(key):
            if c > last: best = max(best, le)
            last = c
    return best
ticks, hz, n = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
key = ("agora_store_commit_seconds", ())
print(json.dumps({"cpu_ms_per_order": ticks * 1000 / hz / n,
                  "commit_p99_ms": quantile(key, 0.99) * 1000,
                  "commit_max_ms": top("agora_store_commit_seconds") * 1000,
                  "heap_pause_max_ms": top("agora_process_heap_pause_seconds") * 1000}))
PY
)
  mv "$TMP/histo.now" "$TMP/histo.prev"
  ticks0=$ticks1
  rss=$(awk '/^RssAnon:/ { print $2 * 1024 }' "/proc/$SPID/status")
  disk=$(( $(du -sk "$DATA" | cut -f1) * 1024 ))
  parts=$(python3 - "$DATA" "$done_orders" <<'PY'
import json, os, sys
data, orders, parts = sys.argv[1], int(sys.argv[2]), {}
for dirpath, _, files in os.walk(data):
    for f in files:
        try:
            b = os.stat(os.path.join(dirpath, f)).st_blocks * 512
        except FileNotFoundError:
            continue
        if f.startswith("seg-"): k = "log"
        elif f.startswith("index-"): k = "tables"
        elif f.startswith("index.ckpt"): k = "ckpt"
        elif os.path.basename(dirpath) == "readmodels": k = "rm:" + f.split(".db")[0]
        else: k = "other"
        parts[k] = parts.get(k, 0) + b
print(json.dumps({k: round(v / orders) for k, v in sorted(parts.items())}))
PY
)
  python3 - "$TMP/load.json" "$w" "$done_orders" "$rss" "$disk" "$(metric agora_store_bytes)" \
    "$(metric agora_store_index_bytes)" "$(metric agora_store_events)" "$(metric agora_store_streams)" \
    "$(metric agora_es_cache_bytes)" "$(metric agora_es_cache_entries)" \
    "$(metric 'agora_process_heap_bytes{state="in_use"}')" "$(metric 'agora_process_heap_bytes{state="free"}')" \
    "$parts" "$extra" >>"$ROWS" <<'PY'
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
w, orders, rss, disk, logb, ixb, events, streams, cb, ce, inuse, free = (int(x or 0) for x in sys.argv[2:14])
print(json.dumps({"window": w, "orders": orders, "post_p99_ms": s["postP99Us"] / 1000,
                  "confirm_p99_ms": s["finalP99Us"] / 1000, "orders_per_s": s["ordersPerSec"],
                  "errors": s["errors"] + s["transportErrors"], "pending": s["pending"],
                  "heap_mb": rss / 2**20, "disk_per_order": disk / orders,
                  "log_per_order": logb / orders, "index_mb": ixb / 2**20,
                  "events": events, "streams": streams, "cache_mb": cb / 2**20, "cache_entries": ce,
                  "malloc_in_use_mb": inuse / 2**20, "malloc_free_mb": free / 2**20,
                  "parts": json.loads(sys.argv[14]), **json.loads(sys.argv[15] or "{}")}))
PY
  tail -n 1 "$ROWS" >&2
done

python3 - "$ROWS" "$MD" "$ORDERS" "$WINDOW" "$RATE" "$CUSTOMERS" "${AGORA_ARGS:-}" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
md, orders, window, rate, customers, args = sys.argv[2], *sys.argv[3:]
head = ("| window | orders | POST p99 ms | confirm p99 ms | orders/s | errors | heap MB (RssAnon) "
        "| disk B/order | log B/order | index MB | events | streams | cache MB (entries) "
        "| malloc in use / free MB | CPU ms/order | commit p99 / max ms | heap pause max ms |")
out = [f"# agora soak — {orders} orders at {rate}/s, windows of {window}", "",
       f"`ORDERS={orders} WINDOW={window} RATE={rate} CUSTOMERS={customers}"
       + (f" AGORA_ARGS='{args}'" if args else "") + " make bench-soak` "
       "(one `agora run`, fsync on, --no-gateway; one `agora load --rate` per window)", "",
       head, "|" + "---|" * 17]
for r in rows:
    out.append(f"| {r['window']} | {r['orders']} | {r['post_p99_ms']:.1f} | {r['confirm_p99_ms']:.1f} "
               f"| {r['orders_per_s']:.0f} | {r['errors']} | {r['heap_mb']:.0f} | {r['disk_per_order']:.0f} "
               f"| {r['log_per_order']:.0f} | {r['index_mb']:.1f} | {r['events']} | {r['streams']} "
               f"| {r['cache_mb']:.1f} ({r['cache_entries']}) "
               f"| {r['malloc_in_use_mb']:.0f} / {r['malloc_free_mb']:.0f} "
               f"| {r.get('cpu_ms_per_order', 0):.2f} "
               f"| {r.get('commit_p99_ms', 0):g} / {r.get('commit_max_ms', 0):g} "
               f"| {r.get('heap_pause_max_ms', 0):g} |")
f, l = rows[0], rows[-1]
warm = rows[1] if len(rows) > 2 else f
def ratio(a, b): return a / b if b else float("inf")
w0 = warm["window"]
out += ["", "Goals (issue 19): last/first window p99 ≤ 1.2, heap last/first ≤ 1.2, ≤ 4096 B on disk "
        f"per order. Window 1 includes the server's warm-up, so the ratios are also given against "
        f"window {w0}.", "",
        f"- POST p99 last/first: {ratio(l['post_p99_ms'], f['post_p99_ms']):.2f}, "
        f"last/window {w0}: {ratio(l['post_p99_ms'], warm['post_p99_ms']):.2f}",
        f"- confirm p99 last/first: {ratio(l['confirm_p99_ms'], f['confirm_p99_ms']):.2f}, "
        f"last/window {w0}: {ratio(l['confirm_p99_ms'], warm['confirm_p99_ms']):.2f}",
        f"- heap last/first: {ratio(l['heap_mb'], f['heap_mb']):.2f}, "
        f"last/window {w0}: {ratio(l['heap_mb'], warm['heap_mb']):.2f}",
        f"- disk per order at the end: {l['disk_per_order']:.0f} B (log records: {l['log_per_order']:.0f} B)"]
parts = l.get("parts", {})
if parts:
    out += ["", "Where the bytes are at the end (allocated bytes on disk per order):", "",
            "| " + " | ".join(parts) + " |", "|" + "---|" * len(parts),
            "| " + " | ".join(str(v) for v in parts.values()) + " |"]
text = "\n".join(out) + "\n"
open(md, "w").write(text)
print(text)
PY
echo "soak: written to $MD" >&2
