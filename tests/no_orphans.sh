#!/usr/bin/env bash
# No child outlives its test. CTest runs every test of this build with
# AG_TEST_SCOPE=<build dir> and AG_TEST_NAME=<test> in its environment, so every
# process a test starts (agora, gw_upstream, http_test_server, python, node...)
# inherits both. This script is a CTest fixture around all of them:
#
#   no_orphans.sh start BUILD_DIR   (FIXTURES_SETUP) notes when this run began
#   no_orphans.sh check BUILD_DIR   (FIXTURES_CLEANUP, after every test of the run,
#                                    also under ctest -j) fails if a process of
#                                    this scope started since then is still alive
#
# A process is looked up by its environment (/proc/PID/environ, readable for our
# own processes), so one that was re-parented to init, or whose parent was a
# `$(...)` subshell, is found as well; the start time (/proc/PID/stat, field 22)
# limits the check to this run, and the scope to this build directory (other
# worktrees on the machine are not ours). A test's cleanup may still be waiting
# for a SIGTERMed child to exit, so the check allows a short grace period. Leftover
# processes are reported with their test and command line, then killed by pid.
set -u
mode=${1:?start|check}
scope=${2:?build directory}
mark="$scope/Testing/no_orphans.since"

# start time (clock ticks since boot) of pid $1, or nothing
started() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) } # fields after "(comm) "; comm may contain spaces
    read -r -a f <<<"$s"
    [ "${f[0]}" != Z ] || return 1 # a zombie is not running
    echo "${f[19]}"                # field 22 of the full line
}

if [ "$mode" = start ]; then
    mkdir -p "$scope/Testing"
    started $$ >"$mark"
    exit 0
fi

since=$(cat "$mark" 2>/dev/null || echo 0)

# pids of live processes of this scope started in this run (this script excluded:
# it does not carry AG_TEST_SCOPE)
leftovers() {
    local f pid t
    for f in $(grep -lzxF "AG_TEST_SCOPE=$scope" /proc/[0-9]*/environ 2>/dev/null); do
        pid=${f#/proc/}
        pid=${pid%/environ}
        t=$(started "$pid") || continue
        [ "$t" -ge "$since" ] && echo "$pid"
    done
}

left=""
end=$((SECONDS + 10)) # cleanups may still be waiting on a SIGTERMed child
while :; do
    left=$(leftovers)
    [ -z "$left" ] || [ "$SECONDS" -ge "$end" ] && break
    sleep 0.2
done
if [ -z "$left" ]; then
    echo "ok - no process started by this test run outlived its test"
    exit 0
fi
echo "FAIL: processes outlived their tests:" >&2
for pid in $left; do
    test=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | sed -n 's/^AG_TEST_NAME=//p')
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)
    echo "  pid $pid from ${test:-?}: $cmd" >&2
done
for pid in $left; do kill -9 "$pid" 2>/dev/null; done
exit 1
