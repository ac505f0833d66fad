#!/usr/bin/env bash
# Run the resil unit tests under ThreadSanitizer without Criterion (which cannot
# start under TSan here: Snaipe/Criterion#274). Builds agora_resil + agora_base
# with -fsanitize=thread in build/resil-tsan-shim, compiles the test files against
# the shim in tsan-shim/, runs them all in one process. Usage: run_tsan.sh [filter]
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
out=${AG_TSAN_BUILD:-$root/build/resil-tsan-shim}
cmake -S "$root" -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
  -DAG_TSAN=ON -DAG_TESTS=OFF -DCMAKE_C_FLAGS="-O1 -g" >/dev/null
ninja -C "$out" agora_resil agora_base >/dev/null
shim=$root/tests/unit/resil/tsan-shim
cp "$shim/shim_main.c.in" "$out/shim_main.c"
clang -std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=thread -I"$shim" -I"$root/include" -I"$root/src" -I"$root/tests" \
  "$root"/tests/unit/resil/test_*.c "$out/shim_main.c" "$out/libagora_resil.a" "$out/libagora_base.a" \
  $(pkg-config --cflags --libs libuv libxxhash) -lpthread -lm -o "$out/test_resil_tsan"
TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1} "$out/test_resil_tsan" "${1:-}"
