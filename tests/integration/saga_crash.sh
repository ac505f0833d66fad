#!/usr/bin/env bash
# Crash recovery of the PlaceOrder saga: `agora load` places orders while the server
# is SIGKILLed at a random moment (20-800 ms into the load), ROUNDS times over the
# same data directory, some rounds with injected step failures and latency so that
# kills land in the middle of compensations too. Then the server runs until every
# saga is terminal and saga_check.py checks, from the event log and the read models:
# every saga terminal, every order confirmed or cancelled, money conserved, stock
# conserved, no double charge, no confirmed-and-refunded order, one reservation per
# (product, order) at most. No compensation fault is injected, so a Failed saga is
# reported as a violation (it would leave money or stock held).
#
#   ROUNDS (default 24)   kill/restart rounds
#   KEEP=1                keep the work directory on success
#   VERBOSE=1             print each round
#   AGORA_STORE=URI       the event store (default: the log in the data directory),
#                         e.g. postgresql://... (saga_crash_pg.sh); the read models stay
#                         SQLite files in the data directory, which saga_check.py reads
#   CHAOS=CMD             run CMD (a shell command) in every even round while the load
#                         runs, before the kill (saga_crash_pg.sh: restart PostgreSQL)
set -uo pipefail

AGORA=${AGORA_BIN:-build/debug/agora}
SRC=${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
CHECK=$SRC/tests/integration/saga_check.py
ROUNDS=${ROUNDS:-24}
[[ -x $AGORA ]] || { echo "saga_crash: $AGORA not built" >&2; exit 1; }
command -v python3 >/dev/null || { echo "saga_crash: python3 needed" >&2; exit 1; }
# The server is killed on purpose: only a report from a clean run counts. Leaks are
# checked at the final graceful stop.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}

WORK=$(mktemp -d /tmp/agora-saga-crash-XXXXXX)
DATA=$WORK/data
# where the `agora store` commands find the store: the same as `agora run` (AGORA_STORE)
if [[ -n ${AGORA_STORE:-} ]]; then STORE_ARGS=(--store "$AGORA_STORE"); else STORE_ARGS=(--data "$DATA"); fi
SPID= LPID=
cleanup() {
  [[ -n $LPID ]] && kill -9 "$LPID" 2>/dev/null
  [[ -n $SPID ]] && kill -9 "$SPID" 2>/dev/null
}
trap cleanup EXIT
fail() {
  echo "saga_crash: FAIL: $* (work dir kept: $WORK)" >&2
  cleanup
  trap - EXIT
  exit 1
}
say() { [[ -n ${VERBOSE:-} ]] && echo "$@"; return 0; }

# A catalog with ample stock for most products and one scarce product, so orders
# both confirm and compensate for stock. Appended before the first start (the
# platform then runs with --no-seed): there is no HTTP call that adds stock.
seed_catalog() {
  local i id price stock
  local prices=(8999 2999 24999 999 4999 19999 1499 12) stocks=(100000 100000 100000 100000 100000 100000 100000 12)
  for i in 0 1 2 3 4 5 6 7; do
    id=$(python3 -c 'import uuid; print(uuid.uuid4())')
    price=${prices[$i]} stock=${stocks[$i]}
    "$AGORA" store append "product-$id" "${STORE_ARGS[@]}" --type ProductAdded --expected-version no-stream \
      --payload "{\"productId\":\"$id\",\"sku\":\"CR-0$i\",\"name\":\"Crash item $i\",\"price\":{\"amount\":$price,\"currency\":\"USD\"}}" \
      >/dev/null || fail "cannot append the catalog"
    "$AGORA" store append "stock-$id" "${STORE_ARGS[@]}" --type StockAdded --expected-version no-stream \
      --payload "{\"productId\":\"$id\",\"quantity\":$stock}" >/dev/null || fail "cannot append stock"
  done
}

# start_server LOG [ENV...]: start on an ephemeral port (never a guessed one: the
# server binds with SO_REUSEPORT, so a port in use by another agora would be shared).
start_server() {
  local log=$1
  shift
  env "$@" "$AGORA" run --data "$DATA" --listen 127.0.0.1:0 --no-seed --no-gateway --workers 2 2>"$log" >/dev/null &
  SPID=$!
  PORT=
  for _ in $(seq 400); do
    PORT=$(grep -o 'serving http://127.0.0.1:[0-9]*' "$log" 2>/dev/null | grep -o '[0-9]*$')
    [[ -n $PORT ]] && return 0
    kill -0 "$SPID" 2>/dev/null || fail "the server died at start: $(tail -n 5 "$log")"
    sleep 0.05
  done
  fail "the server did not start within 20 s: $(tail -n 5 "$log")"
}

# Fault injection per round: none, payment failures, shipment failures with latency
# in the reservation (so kills land mid-saga), confirmation failures. A step is
# retried 3 times, so a rate r fails the step with r^3: 0.6 compensates ~22% of
# sagas after the payment was taken (refunds under kills are the point).
FAULTS=(
  ""
  "AGORA_FAULT_PROCESSPAYMENT=0.5"
  "AGORA_FAULT_ARRANGESHIPMENT=0.6 AGORA_FAULT_RESERVEINVENTORY=0,15"
  "AGORA_FAULT_CONFIRMORDER=0.6 AGORA_FAULT_PROCESSPAYMENT=0,10"
)

start=$(date +%s%N)
mkdir -p "$DATA"
seed_catalog
for ((r = 1; r <= ROUNDS; r++)); do
  faults=${FAULTS[$((r % ${#FAULTS[@]}))]}
  # shellcheck disable=SC2086
  start_server "$WORK/server.$r.log" $faults
  "$AGORA" load --target "http://127.0.0.1:$PORT" --concurrency 8 --duration 30 --customers 3 \
    --poor-ratio 0.34 --quiet >"$WORK/load.$r.json" 2>"$WORK/load.$r.err" &
  LPID=$!
  ms=$((20 + RANDOM % 781))
  sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
  if [[ -n ${CHAOS:-} ]] && ((r % 2 == 0)); then
    bash -c "$CHAOS" || fail "round $r: CHAOS failed"
    say "round $r: chaos: $CHAOS"
  fi
  kill -0 "$SPID" 2>/dev/null || fail "round $r: the server died by itself: $(tail -n 5 "$WORK/server.$r.log")"
  kill -9 "$SPID"
  wait "$SPID" 2>/dev/null
  SPID=
  kill -9 "$LPID" 2>/dev/null
  wait "$LPID" 2>/dev/null
  LPID=
  grep -q -e 'AddressSanitizer' -e 'runtime error:' "$WORK/server.$r.log" &&
    fail "round $r: sanitizer report: $(grep -m3 -e 'AddressSanitizer' -e 'runtime error:' "$WORK/server.$r.log")"
  say "round $r: killed after ${ms} ms (faults: ${faults:-none})"
done

# Recovery: no faults, let every saga finish, with every projection caught up.
start_server "$WORK/server.final.log"
BASE="http://127.0.0.1:$PORT"
settled=0
for _ in $(seq 600); do
  running=$(curl -sf "$BASE/admin/sagas?status=running&limit=1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))' 2>/dev/null)
  lag=$(curl -sf "$BASE/admin/projections" | python3 -c 'import json,sys; print(sum(p["lagEvents"] for p in json.load(sys.stdin)["items"]))' 2>/dev/null)
  if [[ $running == 0 && $lag == 0 ]]; then
    settled=$((settled + 1))
    ((settled >= 3)) && break # stable: resumed sagas may still append after a quiet poll
  else
    settled=0
  fi
  sleep 0.1
done
((settled >= 3)) || fail "sagas still running 60 s after the last restart (running=$running, lag=$lag)"
# A short load on the recovered server: it must still take and finish orders.
"$AGORA" load --target "$BASE" --orders 20 --concurrency 4 --customers 2 --quiet >"$WORK/load.final.json" 2>&1 ||
  fail "load after recovery failed: $(cat "$WORK/load.final.json")"
python3 - "$WORK/load.final.json" <<'PY' || fail "orders after recovery did not finish: $(cat "$WORK/load.final.json")"
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
sys.exit(0 if s["placed"] == 20 and s["pending"] == 0 and s["errors"] == 0 else 1)
PY
for _ in $(seq 100); do # the load saw final states; let the projections catch up
  lag=$(curl -sf "$BASE/admin/projections" | python3 -c 'import json,sys; print(sum(p["lagEvents"] for p in json.load(sys.stdin)["items"]))' 2>/dev/null)
  [[ $lag == 0 ]] && break
  sleep 0.1
done
kill -TERM "$SPID"
wait "$SPID"
status=$?
SPID=
((status == 0)) || fail "the server exited with $status on SIGTERM: $(tail -n 20 "$WORK/server.final.log")"
grep -q -e 'AddressSanitizer' -e 'runtime error:' -e 'LeakSanitizer' "$WORK/server.final.log" &&
  fail "sanitizer report: $(grep -m5 -e 'Sanitizer' -e 'runtime error:' "$WORK/server.final.log")"

"$AGORA" store all "${STORE_ARGS[@]}" --limit 100000000 >"$WORK/events.jsonl" || fail "cannot read the log"
out=$(python3 "$CHECK" "$WORK/events.jsonl" "$DATA/readmodels" 2>&1) || fail "invariants broken:
$out"
ms_total=$((($(date +%s%N) - start) / 1000000))
echo "saga_crash: ok: $ROUNDS kills; ${out#saga_check: ok: }; $((ms_total / 1000)).$((ms_total % 1000 / 100))s"
[[ -n ${KEEP:-} ]] && echo "work dir kept: $WORK" || rm -rf "$WORK"
trap - EXIT
