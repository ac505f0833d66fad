#!/usr/bin/env bash
# The outbox relay onto a real NATS JetStream broker (nats-server -js, started here
# on a free loopback port with a temporary store directory, killed at the end):
#   1. agora starts while the broker is down: /health/ready is 503 naming "bus";
#   2. the broker comes up: ready, the relay publishes the seeded catalog;
#   3. orders are placed while the broker is SIGKILLed and restarted (same store
#      directory): readiness drops to 503 during the outage, the relay resumes;
#   4. when the relay has caught up, an outside consumer written with the npm
#      JetStream client (bus_consumer.js) reads stream AGORA and checks that every
#      integration event of the log arrived exactly once as a valid CloudEvent
#      (docs/events.md's schemas), and nothing else did — StockReserved and
#      PaymentCaptured among them (published from StockHeld / AccountCharged).
set -uo pipefail

AGORA=${AGORA_BIN:-build/debug/agora}
SRC=${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
command -v nats-server >/dev/null || { echo "bus_nats: nats-server is not installed (scripts/bootstrap.sh)" >&2; exit 1; }
[[ -d $SRC/node_modules/@nats-io/jetstream ]] || { echo "bus_nats: npm ci first (node_modules/@nats-io/jetstream)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/agora-bus-nats-XXXXXX)
SPID= NPID= LPID=
cleanup() {
  [[ -n $LPID ]] && kill -9 "$LPID" 2>/dev/null
  [[ -n $SPID ]] && kill -9 "$SPID" 2>/dev/null
  [[ -n $NPID ]] && kill -9 "$NPID" 2>/dev/null
  wait 2>/dev/null
}
trap cleanup EXIT
fail() {
  echo "bus_nats: FAIL: $* (work dir kept: $WORK)" >&2
  cleanup
  trap - EXIT
  exit 1
}

NPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NATS=nats://127.0.0.1:$NPORT
start_nats() {
  nats-server -js -a 127.0.0.1 -p "$NPORT" -sd "$WORK/js" -l "$WORK/nats.$1.log" &
  NPID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NPORT") 2>/dev/null && return 0
    sleep 0.1
  done
  fail "nats-server did not start: $(tail -n 5 "$WORK/nats.$1.log")"
}
stop_nats() {
  kill -9 "$NPID"
  wait "$NPID" 2>/dev/null
  NPID=
}

ready() { curl -s -o "$WORK/ready.json" -w '%{http_code}' "$BASE/health/ready"; }
wait_ready() { # wait_ready CODE: until /health/ready answers CODE
  for _ in $(seq 200); do
    [[ $(ready) == "$1" ]] && return 0
    sleep 0.1
  done
  fail "/health/ready never answered $1: $(cat "$WORK/ready.json")"
}
relay() { curl -sf "$BASE/admin/bus" | python3 -c "import json,sys; r=json.load(sys.stdin)['relay']; print($1)"; }
NEX=0
record() { # record an exchange of GET /admin/bus for api_validate.js (the admin, no gateway)
  local id
  id=$(printf '%03d' $((NEX += 1)))
  mkdir -p "$WORK/ex"
  printf 'GET /admin/bus\nauthorization: bearer\n' >"$WORK/ex/$id.req"
  curl -s -D "$WORK/ex/$id.hdr" -o "$WORK/ex/$id.body" "$BASE/admin/bus"
}

# 1. agora first, the broker down
"$AGORA" run --data "$WORK/data" --listen 127.0.0.1:0 --no-gateway --workers 2 --bus "$NATS" \
  2>"$WORK/agora.log" >/dev/null &
SPID=$!
for _ in $(seq 400); do
  PORT=$(grep -o 'serving http://127.0.0.1:[0-9]*' "$WORK/agora.log" 2>/dev/null | grep -o '[0-9]*$')
  [[ -n $PORT ]] && break
  kill -0 "$SPID" 2>/dev/null || fail "agora died at start: $(tail -n 5 "$WORK/agora.log")"
  sleep 0.05
done
[[ -n $PORT ]] || fail "agora did not start"
BASE=http://127.0.0.1:$PORT
wait_ready 503
grep -q '"bus"' "$WORK/ready.json" || fail "readiness does not name the bus: $(cat "$WORK/ready.json")"
[[ $(relay 'r["status"]') == retrying ]] || fail "the relay is not retrying while the broker is down"
record

# 2. the broker comes up
start_nats 1
wait_ready 200

# 3. orders while the broker dies and comes back
"$AGORA" load --target "$BASE" --orders 60 --concurrency 4 --customers 3 --quiet >"$WORK/load.json" 2>"$WORK/load.err" &
LPID=$!
sleep 0.7
stop_nats
wait_ready 503
sleep 1
start_nats 2
wait "$LPID" || fail "the load failed: $(tail -n 3 "$WORK/load.err")"
LPID=
wait_ready 200
for _ in $(seq 300); do
  [[ $(relay 'r["lagEvents"] == 0 and r["status"] == "running"') == True ]] && break
  sleep 0.1
done
[[ $(relay 'r["lagEvents"]') == 0 ]] || fail "the relay did not catch up: $(curl -s "$BASE/admin/bus")"
failures=$(relay 'r["failures"]')
record
(cd "$SRC" && node tests/integration/api_validate.js docs/openapi.yaml "$WORK/ex") >"$WORK/validate.txt" 2>&1 ||
  fail "GET /admin/bus does not match docs/openapi.yaml: $(cat "$WORK/validate.txt")"
((failures > 0)) || fail "the relay never saw the broker down"

# 4. every integration event of the log, once, valid
"$AGORA" store all --data "$WORK/data" --limit 100000000 2>/dev/null >"$WORK/events.jsonl" ||
  fail "cannot read the log"
python3 "$SRC/tests/integration/expected_events.py" "$WORK/events.jsonl" >"$WORK/expected.txt" ||
  fail "cannot list the expected events"
n=$(wc -l <"$WORK/expected.txt")
for t in OrderPlaced StockReserved PaymentCaptured; do
  grep -q " $t\$" "$WORK/expected.txt" || fail "no $t among the log's integration events"
done
out=$(cd "$SRC" && node tests/integration/bus_consumer.js "$NATS" docs/events.md "$WORK/expected.txt" 2>&1) ||
  fail "the outside consumer: $out"

kill -TERM "$SPID"
wait "$SPID"
status=$?
SPID=
((status == 0)) || fail "agora exited with $status on SIGTERM: $(tail -n 20 "$WORK/agora.log")"
grep -q -e 'AddressSanitizer' -e 'runtime error:' -e 'LeakSanitizer' "$WORK/agora.log" &&
  fail "sanitizer report: $(grep -m5 -e 'Sanitizer' -e 'runtime error:' "$WORK/agora.log")"
stop_nats
echo "bus_nats: ok: $n integration events (relay retried $failures times across the outage); ${out##*$'\n'}"
rm -rf "$WORK"
trap - EXIT
