#!/usr/bin/env bash
# `agora store scavenge`, online and killed: agora run serves with 4 MiB segments and
# a 1 s Idempotency-Key TTL while `agora load` places orders (each with a key, so
# each leaves an idempotency- stream). Then, while a second load keeps writing,
# `agora store scavenge` asks the running server to scavenge: it must drop expired
# records, reclaim bytes, and every other stream must still be there (versions not
# lower) with the load seeing no error. Then ROUNDS times, the server stopped and
# more expired records made, a scavenge is SIGKILLed at a random moment: `agora
# store verify` must pass and $all without the idempotency streams must be the same,
# byte for byte (same positions, ids, data), as before the scavenge started.
#
#   ROUNDS (default 4)  kill -9 rounds
#   KEEP=1              keep the work directory on success
set -uo pipefail

AGORA=${AGORA_BIN:-build/debug/agora}
ROUNDS=${ROUNDS:-4}
[[ -x $AGORA ]] || { echo "store_scavenge: $AGORA not built" >&2; exit 1; }
command -v python3 >/dev/null || { echo "store_scavenge: python3 needed" >&2; exit 1; }
export AGORA_STORE_SEGMENT_BYTES=4194368 AGORA_IDEMPOTENCY_TTL=1s

WORK=$(mktemp -d /tmp/agora-scavenge-XXXXXX)
DATA=$WORK/data
SPID= LPID= CPID=
cleanup() {
  for p in $LPID $CPID $SPID; do kill -9 "$p" 2>/dev/null; done
  return 0
}
trap cleanup EXIT
fail() {
  echo "store_scavenge: FAIL: $* (work dir kept: $WORK)" >&2
  cleanup
  trap - EXIT
  exit 1
}

start_server() {
  : >"$WORK/server.log" # here, not in the background job: the loop below must not read the last run's port
  "$AGORA" run --data "$DATA" --listen 127.0.0.1:0 --workers 2 2>"$WORK/server.log" >/dev/null &
  SPID=$!
  PORT=
  for _ in $(seq 400); do
    PORT=$(grep -o 'serving http://127.0.0.1:[0-9]*' "$WORK/server.log" 2>/dev/null | grep -o '[0-9]*$')
    [[ -n $PORT ]] && break
    kill -0 "$SPID" 2>/dev/null || fail "the server exited: $(tail -3 "$WORK/server.log")"
    sleep 0.05
  done
  [[ -n $PORT ]] || fail "the server did not start"
  TOK=$("$AGORA" token --data "$DATA" --sub agora-load --role admin) || fail "no token"
}
stop_server() {
  kill -INT "$SPID"
  wait "$SPID" || fail "the server did not stop cleanly: $(tail -3 "$WORK/server.log")"
  SPID=
}
# load SECONDS OUT
load() {
  "$AGORA" load --target "http://127.0.0.1:$PORT" --token "$TOK" --rate 200 --duration "$1" \
    --quiet >"$2" 2>&1
}
load_ok() {
  python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); sys.exit(0 if d["errors"]==0 and d["transportErrors"]==0 and d["placed"]>0 else 1)' "$1" \
    || fail "the load saw errors: $(tail -c 400 "$1")"
}
streams_but_idem() { "$AGORA" store streams --data "$DATA" | grep -v '"stream":"idempotency-'; }
all_but_idem() { "$AGORA" store all --data "$DATA" | grep -v '"stream":"idempotency-'; }
verify() {
  local out
  out=$("$AGORA" store verify --data "$DATA" 2>&1) || fail "verify: $out"
  [[ $out == *'"ok":true'* ]] || fail "verify: $out"
}

# 1. history, then records old enough to expire
start_server
segments() { "$AGORA" store stats --data "$DATA" | grep -o '"segments":[0-9]*' | grep -o '[0-9]*$'; }
for ((i = 0; i < 10; i++)); do # until a segment is sealed, however slow the machine
  load 3 "$WORK/load1.json" || fail "load 1: $(tail -c 300 "$WORK/load1.json")"
  load_ok "$WORK/load1.json"
  [[ $(segments) -ge 2 ]] && break
done
[[ $(segments) -ge 2 ]] || fail "30 s of load did not fill a 4 MiB segment"
sleep 1.2 # the TTL is real time here: let the records age past it
streams_but_idem >"$WORK/streams.before"

# 2. online: scavenge through the running server while a load writes
load 3 "$WORK/load2.json" &
LPID=$!
sleep 0.5
report=$("$AGORA" store scavenge --data "$DATA" 2>"$WORK/scavenge.err") ||
  fail "scavenge: $report $(cat "$WORK/scavenge.err")"
wait "$LPID" || fail "load 2: $(tail -c 300 "$WORK/load2.json")"
LPID=
load_ok "$WORK/load2.json"
python3 - "$report" <<'PY' || fail "scavenge report: $report"
import json, sys
r = json.loads(sys.argv[1])
assert r["rewritten"] >= 1 and r["eventsDropped"] > 0 and r["bytesReclaimed"] > 0, r
PY
streams_but_idem >"$WORK/streams.after"
python3 - "$WORK/streams.before" "$WORK/streams.after" <<'PY' || fail "a kept stream went missing"
import json, sys
now = {}
for line in open(sys.argv[2]):
    d = json.loads(line); now[d["stream"]] = d["version"]
for line in open(sys.argv[1]):
    d = json.loads(line)
    assert now.get(d["stream"], -1) >= d["version"], d
PY
grep -q '"msg":"store.scavenged"' "$WORK/server.log" || fail "no scavenge report in the server log"
stop_server
verify

# 3. kill -9 at a random moment of a scavenge: nothing kept is lost
killed=0
for ((r = 1; r <= ROUNDS; r++)); do
  start_server
  load 2 "$WORK/load3.json" || fail "load 3: $(tail -c 300 "$WORK/load3.json")"
  stop_server
  sleep 1.1 # let this round's records expire
  all_but_idem >"$WORK/all.before"
  "$AGORA" store scavenge --data "$DATA" >/dev/null 2>"$WORK/kill.err" &
  CPID=$!
  sleep "$(printf '0.%03d' $((RANDOM % 120)))"
  kill -9 "$CPID" 2>/dev/null && killed=$((killed + 1))
  wait "$CPID" 2>/dev/null
  CPID=
  verify
  all_but_idem >"$WORK/all.after"
  cmp -s "$WORK/all.before" "$WORK/all.after" || fail "round $r: \$all changed beyond the deleted records"
done
# and a last, complete one finds its way through whatever the kills left
"$AGORA" store scavenge --data "$DATA" >/dev/null 2>&1 || fail "the scavenge after the kills failed"
verify
all_but_idem >"$WORK/all.after"
cmp -s "$WORK/all.before" "$WORK/all.after" || fail "the final scavenge changed \$all"
left=$(find "$DATA" -name '*.scavenge' | wc -l)
[[ $left -eq 0 ]] || fail "$left .scavenge files left behind"

echo "store_scavenge: ok: online scavenge $report; $ROUNDS kill rounds ($killed killed mid-run)"
[[ -n ${KEEP:-} ]] && echo "work dir kept: $WORK" || rm -rf "$WORK"
trap - EXIT
