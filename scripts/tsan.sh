#!/usr/bin/env bash
# ThreadSanitizer run of the concurrent modules' unit tests (make tsan).
# Criterion cannot start under TSan on this platform (Snaipe/Criterion#274), so the
# tests are compiled against a minimal Criterion stand-in
# (tests/unit/resil/tsan-shim) and run in one process. Usage: scripts/tsan.sh [MODULE...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${AG_TSAN_BUILD:-$root/build/tsan-shim}
mods=("$@")
((${#mods[@]})) || mods=(resil store es saga)
cmake -S "$root" -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
  -DAG_TSAN=ON -DAG_TESTS=OFF -DCMAKE_C_FLAGS="-O1 -g" >/dev/null
shim=$root/tests/unit/resil/tsan-shim
cp "$shim/shim_main.c.in" "$out/shim_main.c"
# -j2 by default: the machine is shared (AG_TSAN_JOBS to change it)
ninja -C "$out" -j"${AG_TSAN_JOBS:-2}" agora_base agora_store agora_resil agora_readmodel agora_obs \
  agora_bus agora_es agora_saga >/dev/null
for m in "${mods[@]}"; do
  libs=()
  for dep in saga es bus readmodel resil store obs base; do # the module's own and what it needs
    [ -f "$out/libagora_$dep.a" ] && libs+=("$out/libagora_$dep.a")
  done
  # every C file of the folder, as CMake builds test_<module> (fixtures included)
  mapfile -t srcs < <(find "$root/tests/unit/$m" -name '*.c' | sort)
  clang -std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=thread -I"$shim" -I"$root/include" -I"$root/src" \
    -I"$root/tests" "${srcs[@]}" "$out/shim_main.c" -Wl,--start-group "${libs[@]}" -Wl,--end-group \
    $(pkg-config --cflags --libs libuv libxxhash jansson sqlite3 libzstd libpq libnats) -lpthread -lm \
    -o "$out/test_${m}_tsan"
  echo "tsan: $m"
  AG_SOURCE_DIR=${AG_SOURCE_DIR:-$root} TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1} "$out/test_${m}_tsan"
done
