#!/usr/bin/env bash
# End-to-end order benchmark: `agora run` (release build, fsync on — the default) on
# a fresh data directory, `agora load` with N concurrent keep-alive clients for
# DURATION seconds (default 10), N in CLIENTS (default "16 64"), once per path in
# PATHS (default "direct gateway"):
#   direct   `agora run --no-gateway`: the services themselves, no authentication
#   gateway  `agora run` as users call it: every request through the gateway (JWT
#            check, per-route rate limits, routing to the services' Unix socket),
#            with an admin token from `agora token --data DIR` (one user: the
#            gateway's per-user rate limits apply to the whole load) and
#            AGORA_MAX_CONNS_PER_PEER raised, since the load is one peer
# While it runs, /admin/projections is sampled every 100 ms for the projection lag.
# One JSON line per path and N on stdout ("params":{"clients":N,"path":...}),
# appended to bench/results/e2e.jsonl, and a table of them on stderr at the end:
#   ops_per_s       orders confirmed per second (POST → confirmed, whole pipeline)
#   p50_us, p99_us  POST /api/v1/orders → 202
#   confirm_p99_us  POST → confirmed as seen by the client: with WAIT (default 10) its
#                   polls are blocking reads (Prefer: wait + If-None-Match, issue 11)
#                   answered when the order changes; "poll_mode" says whether the
#                   server applied them ("wait") or the resolution is POLL_MS
#                   ("interval"; WAIT=0 forces it)
#   projection_lag_p99_ms  p99 over samples of the largest lagSeconds of any projection
# Targets (reported, not asserted): ≥ 5,000 orders/s, p99 POST ≤ 10 ms, lag p99 ≤ 50 ms.
#
#   AGORA_BIN  the agora binary (default build/release/agora)
#   CLIENTS, PATHS, DURATION, CUSTOMERS (default 256), POLL_MS (default 100), WAIT,
#   WORKERS (default: cores)
#   STORE=postgresql  the event store on a throwaway PostgreSQL (tests/lib/pgtmp.sh,
#              fsync and synchronous_commit on, like the log's fsync; a schema per
#              run); "impl":"agora-pg" in the JSON. READMODELS=postgresql puts the
#              read models there too ("impl":"agora-pg-rm"). Default: the log.
#   SHARDS=N   the log spread over N shards (shards:file:DATA/shard0,...: the shard
#              router, README "Sharding"); "impl":"agora-shardsN" in the JSON. Default 1
#              (the plain log). Not combined with STORE=postgresql.
#   SAGA_MODE=choreography  PlaceOrder choreographed over the local: bus (agora run
#              --saga-mode choreography) instead of orchestrated by the saga engine;
#              "saga_mode":"choreography" in the JSON's params. Default orchestration.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
AGORA=${AGORA_BIN:-$ROOT/build/release/agora}
CLIENTS=${CLIENTS:-16 64}
PATHS=${PATHS:-direct gateway}
DURATION=${DURATION:-10}
SAGA_MODE=${SAGA_MODE:-orchestration}
CUSTOMERS=${CUSTOMERS:-256}
POLL_MS=${POLL_MS:-100}
WAIT=${WAIT:-10}
OUT=$ROOT/bench/results/e2e.jsonl
[[ -x $AGORA ]] || { echo "missing $AGORA: run 'make build' first" >&2; exit 1; }
mkdir -p "$ROOT/bench/results"
TMP=$(mktemp -d /tmp/agora-bench-e2e-XXXXXX)
SPID= SAMPLER=
IMPL=agora
PGSTARTED=
SHARDS=${SHARDS:-1}
[[ $SHARDS -gt 1 ]] && IMPL=agora-shards$SHARDS
cleanup() {
  [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null
  [[ -n $SPID ]] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
  [[ -n $PGSTARTED ]] && pgtmp_stop
  rm -rf "$TMP"
}
trap cleanup EXIT
if [[ ${STORE:-} == postgresql ]]; then
  source "$ROOT/tests/lib/pgtmp.sh"
  PGTMP_CONF=$'fsync = on\nsynchronous_commit = on\nmax_connections = 300' pgtmp_start ||
    { echo "bench-e2e: STORE=postgresql but no PostgreSQL here" >&2; exit 1; }
  PGSTARTED=1
  IMPL=agora-pg
  [[ ${READMODELS:-} == postgresql ]] && IMPL=agora-pg-rm
fi
# store_args DATA RUN: where `agora store` and `agora run` find the store of one run
store_args() {
  if [[ -n $PGSTARTED ]]; then
    echo "--store"
    echo "$AGORA_TEST_PG_URI&schema=e2e_$2&pool_size=16"
  elif [[ $SHARDS -gt 1 ]]; then
    local uri="shards:" k
    for ((k = 0; k < SHARDS; k++)); do
      [[ $k -gt 0 ]] && uri+=","
      uri+="file:$1/shard$k"
    done
    echo "--store"
    echo "$uri"
  else
    echo "--data"
    echo "$1"
  fi
}

# A catalog with stock that no run exhausts (there is no HTTP call that adds stock;
# the platform then runs with --no-seed). 20 products spread the reservations over
# 20 stock streams, as a real catalog would.
seed_catalog() { # data dir, run name
  python3 "$ROOT/bench/lib/seed_catalog.py" "$AGORA" $(store_args "$1" "$2")
}

start_server() { # data dir, path, run name
  local args=(run --data "$1" --listen 127.0.0.1:0 --no-seed)
  if [[ -n $PGSTARTED || $SHARDS -gt 1 ]]; then
    mapfile -t sa < <(store_args "$1" "$3")
    args+=("${sa[@]}")
    [[ ${READMODELS:-} == postgresql ]] && args+=(--readmodels "$AGORA_TEST_PG_URI")
  fi
  [[ $2 == direct ]] && args+=(--no-gateway)
  [[ -n ${WORKERS:-} ]] && args+=(--workers "$WORKERS")
  # the gateway caps connections per client address; the load is one address
  AGORA_MAX_CONNS_PER_PEER=100000 AGORA_SAGA_MODE=$SAGA_MODE "$AGORA" "${args[@]}" 2>"$TMP/server.err" >/dev/null &
  SPID=$!
  PORT=
  for _ in $(seq 200); do
    PORT=$(grep -o 'serving http://127.0.0.1:[0-9]*' "$TMP/server.err" | grep -o '[0-9]*$' || true)
    [[ -n $PORT ]] && return 0
    sleep 0.05
  done
  echo "agora did not start: $(tail -n 5 "$TMP/server.err")" >&2
  exit 1
}

# Largest lagSeconds over the projections, one sample per line, every 100 ms.
sample_lag() { # port out [auth header]
  while :; do
    curl -sf ${3:+-H "$3"} "http://127.0.0.1:$1/admin/projections" |
      python3 -c 'import json,sys; print(max(p["lagSeconds"] for p in json.load(sys.stdin)["items"]))' \
        >>"$2" 2>/dev/null || true
    sleep 0.1
  done
}

LINES=()
for P in $PATHS; do
for N in $CLIENTS; do
  DATA=$TMP/data-$P-$N
  mkdir -p "$DATA"
  if [[ -n $PGSTARTED && ${READMODELS:-} == postgresql ]]; then # fresh read models per run
    psql "$AGORA_TEST_PG_URI" -qAtc "SELECT string_agg(format('DROP SCHEMA %I CASCADE', nspname), ';')
      FROM pg_namespace WHERE nspname LIKE 'rm\_%'" | psql "$AGORA_TEST_PG_URI" -q >/dev/null 2>&1 || true
  fi
  seed_catalog "$DATA" "${P}_$N"
  start_server "$DATA" "$P" "${P}_$N"
  AUTH=() HDR=
  if [[ $P == gateway ]]; then
    TOKEN=$("$AGORA" token --data "$DATA" --sub bench --role admin)
    AUTH=(--token "$TOKEN")
    HDR="Authorization: Bearer $TOKEN"
  fi
  : >"$TMP/lag"
  sample_lag "$PORT" "$TMP/lag" "$HDR" &
  SAMPLER=$!
  "$AGORA" load --target "http://127.0.0.1:$PORT" --concurrency "$N" --duration "$DURATION" \
    --customers "$CUSTOMERS" --poll-ms "$POLL_MS" --wait "$WAIT" "${AUTH[@]}" --quiet >"$TMP/load.json"
  kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null || true
  SAMPLER=
  kill -TERM "$SPID"; wait "$SPID" || true
  SPID=
  line=$(python3 - "$TMP/load.json" "$TMP/lag" "$N" "$DURATION" "$P" "$IMPL" "$SAGA_MODE" <<'PY'
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
lags = sorted(float(x) for x in open(sys.argv[2]) if x.strip())
p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))] * 1000 if lags else None
params = {"clients": int(sys.argv[3]), "path": sys.argv[5]}
if sys.argv[7] == "choreography":
    params["saga_mode"] = "choreography"
print(json.dumps({"bench": "e2e.orders", "impl": sys.argv[6], "params": params,
                  "ops_per_s": round(s["confirmedPerSec"]), "p50_us": s["postP50Us"], "p99_us": s["postP99Us"],
                  "confirm_p99_us": s["finalP99Us"], "confirm_p50_us": s["finalP50Us"],
                  "projection_lag_p99_ms": round(p99, 1) if p99 is not None else None,
                  "placed_per_s": round(s["ordersPerSec"]), "placed": s["placed"], "confirmed": s["confirmed"],
                  "cancelled": s["compensated"], "pending": s["pending"], "errors": s["errors"],
                  "poll_mode": s.get("pollMode", "interval"),
                  "duration_s": int(sys.argv[4]), "fsync": True}, separators=(",", ":")))
PY
)
  echo "$line"
  echo "$line" >>"$OUT"
  LINES+=("$line")
done
done

printf '%s\n' "${LINES[@]}" >"$TMP/lines"
python3 - "$TMP/lines" >&2 <<'PY'
import json, sys
print("| path | clients | saga | confirmed/s | POST→202 p50 / p99 | POST→confirmed p50 / p99 (polls) | projection lag p99 | errors |")
print("|---|---|---|---|---|---|---|---|")
ms = lambda us: "-" if us is None else f"{us / 1000:.1f} ms"
for l in open(sys.argv[1]):
    r = json.loads(l)
    p = r["params"]
    lag = r["projection_lag_p99_ms"]
    lag = "-" if lag is None else f"{lag:.0f} ms"
    print(f"| {p['path']} | {p['clients']} | {p.get('saga_mode', 'orchestration')} | {r['ops_per_s']:,} | {ms(r['p50_us'])} / {ms(r['p99_us'])} "
          f"| {ms(r['confirm_p50_us'])} / {ms(r['confirm_p99_us'])} ({r.get('poll_mode', 'interval')}) | {lag} | {r['errors']} |")
PY
