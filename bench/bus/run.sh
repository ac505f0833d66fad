#!/usr/bin/env bash
# bench/bus/run.sh — the outbox relay onto NATS JetStream (`make bench-bus`).
#
# Starts a throwaway `nats-server -js` (loopback, a free port, a scratch store
# directory), runs bench_bus against it — a bare libnats async publisher and the
# relay on the same work, then store→consumer latency — appends the JSON lines to
# bench/results/bus.jsonl and always stops the broker and removes the scratch data.
#
# Environment: BUILD_DIR (default build/release), EVENTS (default 20000),
# E2E_EVENTS (default 2000), ROUNDS (default 3: raw and relay alternate), TMPDIR.
# EVENTS=0 runs the store→consumer latency only (its stages on a second line).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build/release}
bin=$build/bench_bus
results=$root/bench/results/bus.jsonl
[[ -x $bin ]] || { echo "bench-bus: $bin not built (make build)" >&2; exit 1; }
command -v nats-server >/dev/null || { echo "bench-bus: nats-server missing (scripts/bootstrap.sh)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/agora-bench-bus.XXXXXX")
npid=
cleanup() {
    # nats-server exits 1 on SIGTERM: its status is not the benchmark's (under
    # set -e a failing `wait` here made every run exit 1)
    if [[ -n $npid ]]; then kill "$npid" 2>/dev/null; wait "$npid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
nats-server -js -a 127.0.0.1 -p "$port" -sd "$work/js" -l "$work/nats.log" &
npid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
"$bin" "nats://127.0.0.1:$port" "${EVENTS:-20000}" "${E2E_EVENTS:-2000}" "${ROUNDS:-3}" | tee -a "$results"
