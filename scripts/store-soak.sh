#!/usr/bin/env bash
# Long kill -9 soak of the embedded log: the crash test of tests/integration/store_crash.sh
# with more rounds (ROUNDS, default 1000). Not run by `make test`.
#
#   scripts/store-soak.sh                   uses build/debug (make debug first)
#   ROUNDS=5000 AG_BUILD_DIR=build/release scripts/store-soak.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export AG_BUILD_DIR=${AG_BUILD_DIR:-$here/build/debug}
export ROUNDS=${ROUNDS:-1000}
exec bash "$here/tests/integration/store_crash.sh"
