#!/usr/bin/env bash
# What tracing costs (issue 18): the instructions `agora run` (release build) executes
# over a fixed load — `agora load --orders ORDERS --concurrency 4` through the
# gateway, blocking polls (Prefer: wait) so the number of reads does not depend on
# timing — with spans off (AGORA_TRACE_BUFFER=0), recorded in the ring only (the
# default), and recorded and exported over OTLP/HTTP JSON to a local receiver
# (tests/integration/otlp_receiver.py). Instructions, not time: repeatable on a busy
# machine. The whole process is counted (start, seeding, the load, the stop), so
# compare the modes with each other; RUNS repeats each mode (the load's random mix
# of confirmed and compensated orders moves a run by about 2%).
#
#   COUNTER=callgrind (default: valgrind --tool=callgrind, slow but works anywhere)
#   or COUNTER=perf (perf stat -e instructions: needs hardware counters), ORDERS
#   (default 200), RUNS (default 2), AGORA_BIN (default build/release/agora).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
AGORA=${AGORA_BIN:-$ROOT/build/release/agora}
ORDERS=${ORDERS:-200}
RUNS=${RUNS:-2}
COUNTER=${COUNTER:-callgrind}
[[ -x $AGORA ]] || { echo "missing $AGORA: run 'make build' first" >&2; exit 1; }
TMP=$(mktemp -d /tmp/agora-trace-overhead-XXXXXX)
RPID= SPID=
cleanup() {
  [[ -n $SPID ]] && kill "$SPID" 2>/dev/null
  [[ -n $RPID ]] && kill "$RPID" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
python3 "$ROOT/tests/integration/otlp_receiver.py" "$TMP/port" /dev/null &
RPID=$!
for _ in $(seq 100); do [[ -f $TMP/port ]] && break; sleep 0.05; done

# one MODE ENV...: prints the instructions of one run
one() {
  local d="$TMP/run" a="" t
  rm -rf "$d" && mkdir -p "$d"
  case $COUNTER in
  callgrind) env "$@" valgrind --tool=callgrind --callgrind-out-file="$d/cg" "$AGORA" run --data "$d/data" \
               --listen 127.0.0.1:0 --workers 1 >"$d/log" 2>&1 & ;;
  perf) env "$@" perf stat -x, -e instructions -o "$d/perf" -- "$AGORA" run --data "$d/data" \
          --listen 127.0.0.1:0 --workers 1 >"$d/log" 2>&1 & ;;
  *) echo "COUNTER is callgrind or perf" >&2; exit 2 ;;
  esac
  SPID=$!
  for _ in $(seq 1200); do
    a=$(grep -o 'serving http://127.0.0.1:[0-9]*' "$d/log" | sed 's/serving //') && [[ -n $a ]] && break
    sleep 0.1
  done
  for _ in $(seq 600); do [[ $(curl -s -o /dev/null -w '%{http_code}' "$a/health/ready") == 200 ]] && break; sleep 0.2; done
  t=$("$AGORA" token --data "$d/data" --sub load --role admin)
  "$AGORA" load --target "$a" --token "$t" --orders "$ORDERS" --concurrency 4 --customers 4 \
    --quiet >"$d/load" 2>&1
  kill -INT "$SPID"; wait "$SPID" 2>/dev/null || true
  SPID=
  if [[ $COUNTER == callgrind ]]; then grep -E '^(summary|totals):' "$d/cg" | head -1 | awk '{print $2}'
  else grep instructions "$d/perf" | cut -d, -f1; fi
}

declare -A total
for r in $(seq "$RUNS"); do
  for mode in off ring otlp; do
    case $mode in
    off) n=$(one AGORA_TRACE_BUFFER=0) ;;
    ring) n=$(one) ;;
    otlp) n=$(one AGORA_OTLP_ENDPOINT="http://127.0.0.1:$(cat "$TMP/port")") ;;
    esac
    echo "run $r $mode: $n instructions"
    total[$mode]=$(( ${total[$mode]:-0} + n ))
  done
done
for mode in ring otlp; do
  awk -v m=$mode -v a="${total[$mode]}" -v b="${total[off]}" -v o="$ORDERS" -v r="$RUNS" \
    'BEGIN { printf "%s vs off: %+.2f%% (%+.0f instructions per order)\n", m, (a - b) * 100 / b, (a - b) / (o * r) }'
done
