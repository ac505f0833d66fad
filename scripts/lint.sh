#!/usr/bin/env bash
# `make lint`: clang-format (check only) on every tracked .c/.h, then clang-tidy
# with .clang-tidy on every source file under src/, using the release build's
# compile database. Exits non-zero when either finds an error (clang-tidy: the
# checks in WarningsAsErrors, e.g. a function over 8 parameters); warnings are
# printed, never hidden. LINT_JOBS sets clang-tidy's parallelism (default 2).
set -uo pipefail
cd "$(dirname "$0")/.."
JOBS=${LINT_JOBS:-2}
fail=0

cmake --preset release >/dev/null || exit 1
[ -f build/release/compile_commands.json ] || { echo "lint: no compile database" >&2; exit 1; }

echo "lint: clang-format"
git ls-files -z '*.c' '*.h' | xargs -0 clang-format --dry-run --Werror || fail=1

echo "lint: clang-tidy (-j$JOBS)"
start=$(date +%s)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# one clang-tidy per file, JOBS at a time; each exits non-zero on an error
git ls-files -z 'src/*.c' |
    xargs -0 -P "$JOBS" -n 1 clang-tidy -p build/release --quiet >"$out" 2>&1 || fail=1
grep -E '(warning|error): ' "$out" | sort -u
errors=$(grep -cE ' error: ' "$out" || true)
warnings=$(grep -cE ' warning: ' "$out" || true)
echo "lint: clang-tidy: $errors errors, $warnings warnings in $(($(date +%s) - start))s"
if grep -qE ' error: ' "$out"; then
    grep -E -A3 ' error: ' "$out" >&2
    fail=1
fi
[ "$fail" = 0 ] && echo "lint: ok" || echo "lint: FAILED" >&2
exit "$fail"
