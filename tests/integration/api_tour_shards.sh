#!/usr/bin/env bash
# Integration: the whole API tour (api_tour.sh, unchanged) on a 2-shard store
# (AGORA_STORE=shards:file:T/s0,file:T/s1, like api_tour_pg.sh does for PostgreSQL):
# every write of the tour goes through the shard router, saga steps over two shards
# as cross-shard units, and every projection reads both shards' $all. Then: both
# shards hold events, the streams of one order id sit on one shard, `agora store`
# reads through the router, verify/scavenge on the sharded URI are refused with the
# per-shard way, and `agora store add-shard` adds a third shard offline (the old
# 2-shard URI is refused afterwards, the 3-shard one reads every stream).
# Env: AGORA_BIN, AG_SOURCE_DIR, AG_BUILD_DIR (CTest).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BIN="${AGORA_BIN:?AGORA_BIN not set}"
T=$(mktemp -d /tmp/agora-tour-shards-XXXXXX)
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM
S2="shards:file:$T/s0,file:$T/s1"
AGORA_STORE=$S2 bash "$here/api_tour.sh" || exit 1
fail() { echo "FAIL: $*" >&2; exit 1; }
for k in 0 1; do
    n=$("$BIN" store stats --store "file:$T/s$k" | python3 -c 'import json,sys; print(json.load(sys.stdin)["events"])') ||
        fail "stats of shard $k"
    [ "$n" -gt 10 ] || fail "shard $k holds $n events"
    echo "ok - shard $k holds $n events"
done
"$BIN" store all --store "$S2" --limit 100000000 >"$T/all.jsonl" || fail "store all through the router"
python3 - "$T/all.jsonl" <<'PY' || exit 1
import json, sys, collections
shard_of = {}
per = collections.Counter()
for line in open(sys.argv[1]):
    e = json.loads(line)
    k = e["position"] >> 48
    per[k] += 1
    s = e["stream"]
    if s.startswith("_") or "-" not in s:
        continue
    key = s.split("-", 1)[1]
    if s.split("-", 1)[0] in ("order", "payment", "reservation", "shipment"):
        if shard_of.setdefault(key, k) != k:
            sys.exit(f"FAIL: streams of {key} on shards {shard_of[key]} and {k}")
orders = sum(1 for s in shard_of)
assert len(per) == 2, per
print(f"ok - $all through the router: {dict(per)} events per shard; {orders} ids, each on one shard")
PY
"$BIN" store verify --store "$S2" 2>"$T/err" && fail "verify on a sharded URI succeeded"
grep -q "shard by shard" "$T/err" || fail "verify: $(cat "$T/err")"
echo "ok - verify on the sharded URI is refused with the per-shard way"
"$BIN" store add-shard --store "$S2" --new "file:$T/s2" >"$T/add.json" || fail "add-shard"
grep -q '"added":true' "$T/add.json" || fail "add-shard said $(cat "$T/add.json")"
"$BIN" store stats --store "$S2" 2>"$T/err" && fail "the old 2-shard URI still opens"
grep -q "add-shard\|3-shard" "$T/err" || fail "old URI: $(cat "$T/err")"
"$BIN" store streams --store "$S2,file:$T/s2" >"$T/streams.jsonl" || fail "streams on 3 shards"
n=$(grep -c '"stream":"order-' "$T/streams.jsonl")
[ "$n" -ge 1 ] || fail "no order stream readable after add-shard"
echo "ok - add-shard: $(cat "$T/add.json"); the 3-shard store lists $n order streams"
