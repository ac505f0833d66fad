#!/usr/bin/env bash
# Resilience benchmarks (make bench-resil). Uses build/release (make bench builds
# it first; override with AG_BUILD_DIR). For each case: ns/op from a timed run,
# instructions/op from callgrind (difference between two iteration counts, so
# start-up cost cancels out). Prints one JSON line per case and appends it to
# bench/results/resil.jsonl.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${AG_BUILD_DIR:-$root/build/release}/bench_resil
out=$root/bench/results/resil.jsonl
mkdir -p "$root/bench/results"
[[ -x $bin ]] || { echo "missing $bin: run 'make build' first" >&2; exit 1; }

ns_per_op() { "$bin" "$@" | awk '/^ns_per_op/ {print $2}'; }

instr() { # total instructions of one run
  local f; f=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file="$f" "$bin" "$@" >/dev/null 2>&1
  callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}'
  rm -f "$f"
}

instr_per_op() { # what threads; (I(2n) - I(n)) / n per thread-op
  local n=200000 a b
  a=$(instr "$1" "$2" $n); b=$(instr "$1" "$2" $((2 * n)))
  awk -v a="$a" -v b="$b" -v n=$n -v t="$2" 'BEGIN {printf "%.1f", (b - a) / (n * t)}'
}

emit() { # bench params what threads iters
  local ns ins line
  ns=$(ns_per_op "$3" "$4" "$5")
  if command -v valgrind >/dev/null; then ins=$(instr_per_op "$3" "$4"); else ins=null; fi
  line=$(printf '{"bench":"%s","impl":"agora","params":%s,"ns_per_op":%s,"instructions_per_op":%s,"ts":"%s"}' \
    "$1" "$2" "$ns" "$ins" "$(date -u +%Y-%m-%dT%H:%M:%SZ)")
  echo "$line"
  echo "$line" >>"$out"
}

emit resil.breaker '{"rules":"consecutive+count_window","threads":1}' breaker 1 20000000
emit resil.gcra '{"threads":1}' gcra 1 20000000
emit resil.gcra '{"threads":2}' gcra 2 10000000
emit resil.pipeline '{"policies":"fallback,bulkhead,breaker,retry+budget,timeout","threads":1}' pipeline 1 5000000
