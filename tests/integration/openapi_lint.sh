#!/usr/bin/env bash
# Integration: lint docs/openapi.yaml with @redocly/cli (npm, pinned in package.json and
# package-lock.json; rules in redocly.yaml). The node tools are installed into
# $AG_SOURCE_DIR/node_modules (git-ignored) with `npm ci` when missing or stale.
set -euo pipefail
SRC="${AG_SOURCE_DIR:?AG_SOURCE_DIR not set}"
cd "$SRC"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# npm ci when node_modules is missing or older than package-lock.json; serialised
# with the other tests that need it (api_tour.sh) by a lock in the build dir.
node_tools() {
    command -v node >/dev/null && command -v npm >/dev/null ||
        fail "node and npm are needed (scripts/bootstrap.sh installs them)"
    (
        flock 9
        if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] ||
            [ ! -x node_modules/.bin/redocly ]; then
            echo "# npm ci --no-audit --no-fund (node $(node --version), npm $(npm --version 2>/dev/null))"
            npm ci --no-audit --no-fund >"$TMP/npm.log" 2>&1 || { cat "$TMP/npm.log"; fail "npm ci failed"; }
        fi
    ) 9>"${AG_BUILD_DIR:-$TMP}/.npm-ci.lock"
}

node_tools
# no telemetry or update check (both wait on the network)
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
if ! node_modules/.bin/redocly lint docs/openapi.yaml --format=stylish >"$TMP/lint" 2>&1; then
    cat "$TMP/lint"
    fail "redocly lint found errors in docs/openapi.yaml"
fi
cat "$TMP/lint"
echo "ok - docs/openapi.yaml lints clean (@redocly/cli $(node_modules/.bin/redocly --version 2>/dev/null))"
