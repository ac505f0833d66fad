#!/usr/bin/env bash
# Crash test of the embedded log: kill -9 a writer at random moments, many times over
# the same data directory, and check after each kill that every acknowledged event
# survived exactly once, in order, with no partial batch, and that the store still
# takes appends. Rounds accumulate: what earlier rounds acknowledged must survive too.
#
#   ROUNDS (default 60)  kills to perform
#   THREADS (default 4)  writer threads
#   KEEP=1               keep the data directory on success
set -uo pipefail

BUILD=${AG_BUILD_DIR:-build/debug}
ROUNDS=${ROUNDS:-60}
THREADS=${THREADS:-4}
WRITER=$BUILD/crash_writer
CHECK=$BUILD/crash_check
for b in "$WRITER" "$CHECK"; do
  [[ -x $b ]] || { echo "store_crash: $b not built" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/agora-crash-XXXXXX)
DATA=$WORK/data
ACKED=$WORK/acked.log
ROUND=$WORK/round.log
: >"$ACKED"
trap '[[ -n ${WPID:-} ]] && kill -9 "$WPID" 2>/dev/null' EXIT

fail() {
  echo "store_crash: FAIL in round $1: $2 (data kept in $WORK)" >&2
  trap - EXIT
  exit 1
}

start=$(date +%s%N)
torn=0
for ((r = 1; r <= ROUNDS; r++)); do
  : >"$ROUND"
  "$WRITER" "$DATA" "$THREADS" >"$ROUND" 2>"$WORK/writer.err" &
  WPID=$!
  ms=$((20 + RANDOM % 281))
  sleep "$(printf '0.%03d' "$ms")"
  if ! kill -9 "$WPID" 2>/dev/null; then
    wait "$WPID"
    fail "$r" "the writer exited by itself (status $?): $(cat "$WORK/writer.err")"
  fi
  wait "$WPID" 2>/dev/null
  WPID=
  # A kill can land between a line's bytes and its newline only in theory (one
  # write(2) per line), but a partial last line would be unacknowledged anyway.
  if [[ -s $ROUND && -n $(tail -c1 "$ROUND") ]]; then head -n -1 "$ROUND" >>"$ACKED"
  else cat "$ROUND" >>"$ACKED"; fi
  if ! out=$("$CHECK" "$DATA" "$ACKED" 2>&1); then
    fail "$r" "$out"
  fi
  [[ $out == *"torn tail cut: yes"* ]] && torn=$((torn + 1))
  [[ -n ${VERBOSE:-} ]] && echo "round $r (${ms} ms): $out"
done
ms_total=$(( ($(date +%s%N) - start) / 1000000 ))
echo "store_crash: ok: $ROUNDS kills, $(wc -l <"$ACKED") acknowledged appends checked, $torn torn tails cut; last: ${out#crash_check: ok: }; $((ms_total / 1000)).$((ms_total % 1000 / 100))s"
[[ -n ${KEEP:-} ]] && echo "data kept in $WORK" || rm -rf "$WORK"
trap - EXIT
