#!/usr/bin/env bash
# The relay onto a 3-node JetStream cluster on loopback (streams with 3 replicas):
# orders are placed while the AGORA stream's leader is SIGKILLed; after the
# re-election the relay goes on publishing, and an outside consumer (the npm
# JetStream client, bus_consumer.js, on a surviving node) receives every
# integration event of the log exactly once as a valid CloudEvent.
set -uo pipefail

AGORA=${AGORA_BIN:-build/debug/agora}
SRC=${AG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
command -v nats-server >/dev/null || { echo "bus_cluster: nats-server is not installed (scripts/bootstrap.sh)" >&2; exit 1; }
[[ -d $SRC/node_modules/@nats-io/jetstream ]] || { echo "bus_cluster: npm ci first" >&2; exit 1; }

WORK=$(mktemp -d /tmp/agora-bus-cluster-XXXXXX)
SPID= LPID=
declare -A NPID
cleanup() {
  [[ -n $LPID ]] && kill -9 "$LPID" 2>/dev/null
  [[ -n $SPID ]] && kill -9 "$SPID" 2>/dev/null
  for n in "${!NPID[@]}"; do kill -9 "${NPID[$n]}" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT
fail() {
  echo "bus_cluster: FAIL: $* (work dir kept: $WORK)" >&2
  cleanup
  trap - EXIT
  exit 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
declare -A PORT CPORT
for n in n1 n2 n3; do PORT[$n]=$(free_port); CPORT[$n]=$(free_port); done
ROUTES=nats://127.0.0.1:${CPORT[n1]},nats://127.0.0.1:${CPORT[n2]},nats://127.0.0.1:${CPORT[n3]}
for n in n1 n2 n3; do
  nats-server -js -n "$n" -a 127.0.0.1 -p "${PORT[$n]}" -sd "$WORK/$n" --cluster_name agora \
    --cluster "nats://127.0.0.1:${CPORT[$n]}" --routes "$ROUTES" -l "$WORK/$n.log" &
  NPID[$n]=$!
done
for n in n1 n2 n3; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$n]}") 2>/dev/null && break
    sleep 0.1
  done
done
BUS="nats://127.0.0.1:${PORT[n1]},127.0.0.1:${PORT[n2]},127.0.0.1:${PORT[n3]}?replicas=3"

"$AGORA" run --data "$WORK/data" --listen 127.0.0.1:0 --no-gateway --workers 2 --bus "$BUS" \
  2>"$WORK/agora.log" >/dev/null &
SPID=$!
for _ in $(seq 400); do
  APORT=$(grep -o 'serving http://127.0.0.1:[0-9]*' "$WORK/agora.log" 2>/dev/null | grep -o '[0-9]*$')
  [[ -n $APORT ]] && break
  kill -0 "$SPID" 2>/dev/null || fail "agora died at start: $(tail -n 5 "$WORK/agora.log")"
  sleep 0.05
done
BASE=http://127.0.0.1:$APORT
for _ in $(seq 300); do # the cluster elects its meta leader, then agora makes its R3 streams
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$BASE/health/ready") == 200 ]] && break
  sleep 0.1
done
[[ $(curl -s -o /dev/null -w '%{http_code}' "$BASE/health/ready") == 200 ]] ||
  fail "not ready on the cluster: $(curl -s "$BASE/health/ready")"

leader() {
  (cd "$SRC" && node -e "
    const { connect } = require('@nats-io/transport-node');
    const { jetstreamManager } = require('@nats-io/jetstream');
    (async () => {
      const nc = await connect({ servers: process.argv[1] });
      const si = await (await jetstreamManager(nc)).streams.info('AGORA');
      console.log(si.cluster.leader, si.cluster.replicas.length + 1);
      await nc.close();
    })().catch((e) => { console.error(e.message); process.exit(1); });" "$1")
}

"$AGORA" load --target "$BASE" --orders 80 --concurrency 4 --customers 3 --quiet >"$WORK/load.json" 2>"$WORK/load.err" &
LPID=$!
sleep 1
read -r L R < <(leader "nats://127.0.0.1:${PORT[n1]}") || fail "cannot find the AGORA stream's leader"
[[ $R == 3 ]] || fail "AGORA has $R replicas, not 3"
kill -9 "${NPID[$L]}"
wait "${NPID[$L]}" 2>/dev/null
unset "NPID[$L]"
wait "$LPID" || fail "the load failed: $(tail -n 3 "$WORK/load.err")"
LPID=
for _ in $(seq 600); do
  lag=$(curl -sf "$BASE/admin/bus" | python3 -c 'import json,sys; r=json.load(sys.stdin)["relay"]; print(r["lagEvents"] if r["status"] == "running" else -1)')
  [[ $lag == 0 ]] && break
  sleep 0.1
done
[[ $lag == 0 ]] || fail "the relay did not catch up after the leader died: $(curl -s "$BASE/admin/bus")"

"$AGORA" store all --data "$WORK/data" --limit 100000000 2>/dev/null >"$WORK/events.jsonl" || fail "cannot read the log"
python3 "$SRC/tests/integration/expected_events.py" "$WORK/events.jsonl" >"$WORK/expected.txt" ||
  fail "cannot list the expected events"
for n in "${!NPID[@]}"; do SURVIVOR=nats://127.0.0.1:${PORT[$n]}; done
out=$(cd "$SRC" && node tests/integration/bus_consumer.js "$SURVIVOR" docs/events.md "$WORK/expected.txt" 2>&1) ||
  fail "the outside consumer after the leader ($L) died: $out"
kill -TERM "$SPID"
wait "$SPID"
status=$?
SPID=
((status == 0)) || fail "agora exited with $status on SIGTERM: $(tail -n 20 "$WORK/agora.log")"
grep -q -e 'AddressSanitizer' -e 'runtime error:' -e 'LeakSanitizer' "$WORK/agora.log" &&
  fail "sanitizer report: $(grep -m5 -e 'Sanitizer' -e 'runtime error:' "$WORK/agora.log")"
echo "bus_cluster: ok: stream leader $L killed under load; $(wc -l <"$WORK/expected.txt") integration events; ${out##*$'\n'}"
cleanup
rm -rf "$WORK"
trap - EXIT
