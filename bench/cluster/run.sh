#!/usr/bin/env bash
# `make bench-cluster` (issue 14 "Measured"): orders through the gateway, the same
# closed-loop load (`agora load --concurrency 32 --duration 20` with an admin token,
# 16 funded customers, every product restocked first so orders confirm rather than
# run out of stock) against three shapes, one after the other in one run:
#   run        `agora run`: one process, the embedded event log, its gateway in
#              front (the default shape)
#   cluster-1  `agora cluster up --instances 1`: every context alone in its own
#              `agora serve` process (7), PostgreSQL (store + read models), a 3-node
#              NATS JetStream cluster, `agora gateway` in front
#   cluster-2  the same with 2 instances per context (14)
# For each: orders confirmed/s, POST-to-202 p99 and POST-to-confirmed p99 (the
# load's own figures), one JSON line on stdout appended to bench/results/cluster.jsonl,
# then a table with the ratios to `run`. All shapes share the machine with the load
# generator: on 2 cores the cluster shapes mostly measure how 20 processes share them.
# DURATION (20), CONCURRENCY (32) override; AG_BENCH_BUILD (build/release) the binary.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD="${AG_BENCH_BUILD:-$ROOT/build/release}"
BIN=$BUILD/agora
SRC=$ROOT
DURATION="${DURATION:-20}"
CONCURRENCY="${CONCURRENCY:-32}"
OUT="${BENCH_OUT:-$ROOT/bench/results/cluster.jsonl}"
[ -x "$BIN" ] || { echo "missing $BIN: make build" >&2; exit 1; }
command -v nats-server >/dev/null || { echo "bench-cluster: nats-server is not installed" >&2; exit 1; }
command -v initdb >/dev/null || [ -x /usr/lib/postgresql/15/bin/initdb ] || { echo "bench-cluster: no PostgreSQL" >&2; exit 1; }
source "$ROOT/tests/integration/run_lib.bash"
source "$ROOT/tests/integration/cluster_lib.bash"
mkdir -p "$ROOT/bench/results"
TMP=$(mktemp -d /tmp/agora-bcl-XXXXXX) # short: PostgreSQL's socket path
chmod 755 "$TMP"
SPID="" SUP="" D=""
cleanup() {
    [ -n "$SPID" ] && kill -9 "$SPID" 2>/dev/null
    if [ -n "$SUP" ]; then for p in $(member_pids) $SUP; do kill -9 "$p" 2>/dev/null; done; fi
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "bench-cluster: $*" >&2; exit 1; }
STAMP=$(date -u +%Y-%m-%dT%H%MZ)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)

# measure SHAPE: restock, then the load through $G with $ADMIN; appends the JSON line
measure() {
    local shape=$1
    restock_all
    LOADAVG=$(cut -d' ' -f1 /proc/loadavg) # the machine's, as this shape's load starts
    "$BIN" load --target "$G" --token "$ADMIN" --concurrency "$CONCURRENCY" --duration "$DURATION" \
        --customers 16 --order-timeout 60 --quiet >"$TMP/$shape.json" 2>"$TMP/$shape.err" ||
        fail "$shape: the load failed: $(tail -3 "$TMP/$shape.err")"
    python3 - "$TMP/$shape.json" "$shape" "$STAMP" "$COMMIT" "$LOADAVG" "$(nproc)" "$CONCURRENCY" <<'PY' | tee -a "$OUT"
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(json.dumps({"bench": "cluster", "shape": sys.argv[2], "at": sys.argv[3], "commit": sys.argv[4],
                  "loadavg1": float(sys.argv[5]), "cores": int(sys.argv[6]),
                  "concurrency": int(sys.argv[7]), "durationS": round(s["durationS"], 1),
                  "placed": s["placed"], "confirmed": s["confirmed"], "compensated": s["compensated"],
                  "pending": s["pending"], "errors": s["errors"], "rejected": s.get("rejected", 0),
                  "confirmedPerSec": round(s["confirmedPerSec"], 1),
                  "postP99Us": s["postP99Us"], "finalP99Us": s["finalP99Us"]}))
PY
}

# ---- agora run ----
D=$TMP/run
agora_start "$D" ready
G=$BASE
ADMIN=$(cl_token ops admin)
measure run
agora_stop

# ---- agora cluster up, 1 and 2 instances per context ----
for n in 1 2; do
    D=$TMP/cluster-$n
    cluster_start "$(free_port)" "$TMP/supervisor-$n.log" --instances "$n"
    ADMIN=$(cl_token ops admin)
    measure "cluster-$n"
    kill -INT "$SUP"
    wait "$SUP" || fail "cluster-$n: the supervisor exited $? on SIGINT"
    SUP=""
done

python3 - "$OUT" "$STAMP" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = {r["shape"]: r for r in rows if r.get("bench") == "cluster" and r.get("at") == sys.argv[2]}
base = rows["run"]
print(f"\nbench-cluster {sys.argv[2]} on {base['cores']} cores (load avg: the machine's as each load started)")
print(f"{'shape':<10} {'confirmed/s':>12} {'x run':>6} {'POST p99 ms':>12} {'confirm p99 ms':>15} {'placed':>7} {'pending':>8} {'rejected':>9} {'load avg':>9}")
for k in ("run", "cluster-1", "cluster-2"):
    r = rows[k]
    print(f"{k:<10} {r['confirmedPerSec']:>12.1f} {r['confirmedPerSec'] / max(base['confirmedPerSec'], 1e-9):>6.2f}"
          f" {r['postP99Us'] / 1000:>12.1f} {r['finalP99Us'] / 1000:>15.1f} {r['placed']:>7}"
          f" {r['pending']:>8} {r['rejected']:>9} {r['loadavg1']:>9.1f}")
c1, c2 = rows["cluster-1"], rows["cluster-2"]
print(f"cluster-2 / cluster-1: {c2['confirmedPerSec'] / max(c1['confirmedPerSec'], 1e-9):.2f}x confirmed/s")
PY
