#!/usr/bin/env bash
# Server CPU per confirmed order (issue 11), a figure that stays repeatable on a
# busy machine where wall-clock throughput does not: `agora run --no-gateway`
# (release build, fsync on) on a fresh data directory seeded with bench-e2e's
# catalog; a warm-up `agora load --orders WARMUP` (customers registered, caches
# and read models warm), then `perf stat -e task-clock,instructions,
# context-switches -p <server>` around `agora load --orders ORDERS`, a fixed amount
# of work. Prints one JSON line per run: the server's CPU ms, instructions (0
# where the VM has no hardware counters) and context switches, each also per
# confirmed order, and the load's confirmed/s (wall clock: noise on a busy host).
#
#   AGORA_BIN   the server (default build/release/agora)
#   LOAD_BIN    the load client (default AGORA_BIN; point it at a newer build to
#               drive an older server with the same client)
#   ORDERS (default 6000), WARMUP (default 1500: past the first dictionary
#   training at 4 MiB of log, a one-off second of CPU), CLIENTS (default 64),
#   CUSTOMERS (default 64), WAIT (default 10: blocking polls; 0 plain polls every
#   POLL_MS, default 50), RUNS (default 3), AGORA_ARGS (extra `agora run` flags)
#   RATE        open loop: `agora load --rate RATE` (orders started per second
#               whatever the answers, as the soak does) instead of CLIENTS
#               closed-loop clients; the warm-up runs at the same rate
#   THREADS=1   also print the server's CPU per order by thread name (utime +
#               stime of /proc/PID/task/*/stat before and after the measured load)
#   PERF_DATA   a path: also `perf record -g` the measured load into it (PERF_CG
#               replaces -g, e.g. "--call-graph dwarf,16384 -F 499": the release
#               build has no frame pointers)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
AGORA=${AGORA_BIN:-$ROOT/build/release/agora}
LOAD=${LOAD_BIN:-$AGORA}
ORDERS=${ORDERS:-6000}
WARMUP=${WARMUP:-1500}
CLIENTS=${CLIENTS:-64}
CUSTOMERS=${CUSTOMERS:-64}
WAIT=${WAIT:-10}
POLL_MS=${POLL_MS:-50}
RUNS=${RUNS:-3}
RATE=${RATE:-}
command -v perf >/dev/null || { echo "cpu_per_order: perf is not installed" >&2; exit 1; }
[[ -x $AGORA ]] || { echo "missing $AGORA: run 'make build' first" >&2; exit 1; }
TMP=$(mktemp -d /tmp/agora-cpu-XXXXXX)
SPID=
cleanup() {
  [[ -n $SPID ]] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

thread_ticks() { # "name ticks switches" per thread of the server (utime + stime; context
  local t # switches, voluntary + not)
  for t in /proc/"$SPID"/task/*; do
    # comm may hold spaces: the fields are counted after its closing parenthesis
    { sed -E 's/^[0-9]+ \((.*)\) (.*)$/\1\t\2/' "$t/stat" &&
      awk '/^(non)?voluntary_ctxt_switches/ { n += $2 } END { print n }' "$t/status"; } 2>/dev/null |
      paste - - | awk -F'\t' '{ split($2, a, " "); gsub(/ /, "_", $1); print $1, a[12] + a[13], $3 }'
  done
}

one_run() {
  rm -rf "$TMP/data" && mkdir -p "$TMP/data"
  python3 "$ROOT/bench/lib/seed_catalog.py" "$AGORA" --data "$TMP/data"
  # shellcheck disable=SC2086
  "$AGORA" run --data "$TMP/data" --listen 127.0.0.1:0 --no-seed --no-gateway ${AGORA_ARGS:-} \
    2>"$TMP/server.err" >/dev/null &
  SPID=$!
  local port=
  for _ in $(seq 200); do
    port=$(grep -o 'serving http://127.0.0.1:[0-9]*' "$TMP/server.err" | grep -o '[0-9]*$' || true)
    [[ -n $port ]] && break
    sleep 0.05
  done
  [[ -n $port ]] || { echo "agora did not start: $(tail -n 5 "$TMP/server.err")" >&2; exit 1; }
  local loop=(--concurrency "$CLIENTS")
  [[ -n $RATE ]] && loop=(--rate "$RATE")
  local common=(--target "http://127.0.0.1:$port" "${loop[@]}" --customers "$CUSTOMERS"
    --wait "$WAIT" --poll-ms "$POLL_MS" --quiet)
  "$LOAD" load "${common[@]}" --orders "$WARMUP" >/dev/null
  local rec=()
  local cg
  read -r -a cg <<<"${PERF_CG:--g}" # e.g. PERF_CG="--call-graph dwarf,16384 -F 499"
  [[ -n ${PERF_DATA:-} ]] && rec=(perf record "${cg[@]}" -o "$PERF_DATA" -p "$SPID")
  perf stat -x, -e task-clock,instructions,context-switches -p "$SPID" -o "$TMP/stat" &
  local ppid=$!
  local rpid=
  if [[ ${#rec[@]} -gt 0 ]]; then "${rec[@]}" 2>/dev/null >/dev/null & rpid=$!; fi
  sleep 0.3
  thread_ticks >"$TMP/threads0"
  "$LOAD" load "${common[@]}" --orders "$ORDERS" >"$TMP/load.json"
  thread_ticks >"$TMP/threads1"
  kill -INT "$ppid"
  wait "$ppid" || true
  if [[ -n $rpid ]]; then kill -INT "$rpid"; wait "$rpid" || true; fi
  kill "$SPID"
  wait "$SPID" 2>/dev/null || true
  SPID=
  python3 - "$TMP/stat" "$TMP/load.json" "$TMP/threads0" "$TMP/threads1" "${THREADS:-}" "${RATE:-}" <<'PY'
import json, os, sys
stat = {}
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 3 and f[0] and not f[0].startswith("<"):
        stat[f[2]] = float(f[0])
load = json.load(open(sys.argv[2]))
n = max(load["confirmed"], 1)
ms = stat.get("task-clock", 0.0)
ins = stat.get("instructions", 0.0)
cs = stat.get("context-switches", 0.0)
print(json.dumps({"confirmed": load["confirmed"], "compensated": load.get("compensated"),
                  "pending": load.get("pending"), "errors": load.get("errors"),
                  "rejected": load.get("rejected"),
                  "pollMode": load.get("pollMode"),
                  "confirmedPerSec": round(load.get("confirmedPerSec", 0)), "cpu_ms": round(ms),
                  "cpu_ms_per_order": round(ms / n, 3),
                  "minstr_per_order": round(ins / n / 1e6, 2),  # 0: no hardware counters
                  "cs_per_order": round(cs / n, 2),
                  "loop": ("open %s/s" % sys.argv[6]) if sys.argv[6] else "closed"}))
if sys.argv[5]:
    hz = os.sysconf("SC_CLK_TCK")
    def ticks(path):
        out = {}
        for line in open(path):
            f = line.split()
            if len(f) != 3:
                continue  # a thread that ended between the two reads
            t, c = out.get(f[0], (0, 0))
            out[f[0]] = (t + int(f[1]), c + int(f[2]))
        return out
    t0, t1 = ticks(sys.argv[3]), ticks(sys.argv[4])
    ms = {k: round((v[0] - t0.get(k, (0, 0))[0]) * 1000.0 / hz / n, 3) for k, v in t1.items()}
    sw = {k: round((v[1] - t0.get(k, (0, 0))[1]) / n, 2) for k, v in t1.items()}
    names = sorted((k for k in ms if ms[k] > 0 or sw[k] > 0.01), key=lambda k: -ms[k])
    print(json.dumps({"threads_ms_per_order": {k: ms[k] for k in names},
                      "threads_cs_per_order": {k: sw[k] for k in names}}))
PY
}

for _ in $(seq "$RUNS"); do one_run; done
