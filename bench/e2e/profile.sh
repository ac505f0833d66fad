#!/usr/bin/env bash
# Where an order's CPU goes (issue 11): `agora run --no-gateway` (release build,
# fsync on) on a fresh data directory with bench-e2e's catalog, under `agora load --concurrency CLIENTS` for
# DURATION seconds, sampled by `perf record -g` for the middle SAMPLE seconds. Prints
# the load's summary (orders confirmed/s), the CPU the server used per order
# whose saga completed inside the sampled window (not per the whole run's rate,
# which would charge a growing backlog's CPU to the confirmed orders), and perf's split of the server's samples by library (dso) and the top
# symbols — the profile the README's benchmark section quotes.
#
#   CLIENTS (default 64), DURATION (default 20), SAMPLE (default 10), PERF_DATA (a
#   path: keep perf.data there for `perf report -i`), AGORA_BIN
#   (default build/release/agora). Needs perf (linux-perf) and a kernel that allows
#   it (perf_event_paranoid ≤ 1, or root).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
AGORA=${AGORA_BIN:-$ROOT/build/release/agora}
CLIENTS=${CLIENTS:-64}
DURATION=${DURATION:-20}
SAMPLE=${SAMPLE:-10}
command -v perf >/dev/null || { echo "profile: perf is not installed" >&2; exit 1; }
[[ -x $AGORA ]] || { echo "missing $AGORA: run 'make build' first" >&2; exit 1; }
TMP=$(mktemp -d /tmp/agora-profile-XXXXXX)
SPID= LPID=
cleanup() {
  [[ -n $LPID ]] && kill "$LPID" 2>/dev/null
  [[ -n $SPID ]] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP/data"
python3 "$ROOT/bench/lib/seed_catalog.py" "$AGORA" --data "$TMP/data"
"$AGORA" run --data "$TMP/data" --listen 127.0.0.1:0 --no-seed --no-gateway 2>"$TMP/server.err" >/dev/null &
SPID=$!
PORT=
for _ in $(seq 200); do
  PORT=$(grep -o 'serving http://127.0.0.1:[0-9]*' "$TMP/server.err" | grep -o '[0-9]*$' || true)
  [[ -n $PORT ]] && break
  sleep 0.05
done
[[ -n $PORT ]] || { echo "agora did not start: $(tail -n 5 "$TMP/server.err")" >&2; exit 1; }
"$AGORA" load --target "http://127.0.0.1:$PORT" --concurrency "$CLIENTS" --duration "$DURATION" \
  --customers 256 --quiet >"$TMP/load.json" &
LPID=$!
sleep $(( (DURATION - SAMPLE) / 2 + 2 )) # customers registered, load steady
done_count() { # sagas completed so far (GET /admin/stats; --no-gateway: the local operator)
  curl -s "http://127.0.0.1:$PORT/admin/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sagas"]["completed"])'
}
done0=$(done_count)
cpu0=$(awk '{print $14 + $15}' "/proc/$SPID/stat")
perf record -g -o "$TMP/perf.data" -p "$SPID" -- sleep "$SAMPLE" 2>/dev/null >/dev/null
cpu1=$(awk '{print $14 + $15}' "/proc/$SPID/stat")
done1=$(done_count)
wait "$LPID"
LPID=
[[ -n ${PERF_DATA:-} ]] && cp "$TMP/perf.data" "$PERF_DATA"
hz=$(getconf CLK_TCK)
echo "load: $(cat "$TMP/load.json")"
python3 - "$TMP/load.json" "$cpu0" "$cpu1" "$hz" "$SAMPLE" "$done0" "$done1" <<'PY'
import json, sys
load = json.load(open(sys.argv[1]))
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
secs = float(sys.argv[5])
done = int(sys.argv[7]) - int(sys.argv[6])  # sagas completed inside the sampled window
print(f"server CPU while sampled: {cpu / secs:.2f} cores; sagas completed in the window: {done} "
      f"({done / secs:.0f}/s; the whole run: {load['confirmedPerSec']:.0f} confirmed/s); "
      f"CPU per order completed in the window: {1000 * cpu / max(done, 1):.2f} ms")
PY
echo "--- samples by library"
perf report -i "$TMP/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -15
echo "--- top symbols"
perf report -i "$TMP/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40
