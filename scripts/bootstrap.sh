#!/usr/bin/env bash
# Installs the Debian packages agora needs to build, test and benchmark — only the
# ones missing. Idempotent; runs as root or through sudo. Every dependency agora
# takes is listed here and in the README's dependency table.
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake ninja-build pkg-config clang clang-format clang-tidy
  libclang-rt-14-dev
  # libraries (ARCHITECTURE.md §3)
  libuv1-dev libhttp-parser-dev libjansson-dev libxxhash-dev libsqlite3-dev libzstd-dev
  libpq-dev libjwt-dev libssl-dev libcyaml-dev libnats-dev libhiredis-dev
  # tests
  libcriterion-dev curl sqlite3 postgresql nats-server prometheus redis-server iproute2
  # benchmarks: peers measured in the same run
  wrk nginx-light haproxy valgrind
  # npm-based tools (redocly, jose) run on node
  nodejs npm
  # the operator console's browser tests (tests/integration/console.sh, playwright-core)
  chromium
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

# nodejs/npm may come from outside Debian on a developer machine; accept any working one.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  tmp=()
  for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi

if ((${#missing[@]} == 0)); then
  echo "bootstrap: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "bootstrap: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "bootstrap: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
