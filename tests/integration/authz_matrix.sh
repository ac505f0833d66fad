#!/usr/bin/env bash
# Integration: the authorization matrix. Every operation of docs/openapi.yaml, called
# as anonymous, with a forged token, as its owner (alice), as another customer (bob)
# and as an admin, must answer what its x-agora-access says (ARCHITECTURE.md §8):
# public → 2xx for all; owner → 401 / alice 2xx / bob 404 on alice's ids and lists
# without alice's items / admin 2xx; admin → 401 / 403 / 403 / 2xx; a forged token →
# 401 everywhere. A refused write changes nothing (balance, order statuses, tier,
# stock), and every answer matches docs/openapi.yaml (api_validate.js).
# The walk itself is tests/integration/authz_matrix.js; this starts agora for it.
#
# Env: AGORA_BIN, AG_SOURCE_DIR, AG_BUILD_DIR (from CTest).
# shellcheck source=tests/integration/authz_lib.bash
source "$(dirname "${BASH_SOURCE[0]}")/authz_lib.bash"

authz_node_tools
authz_start
mkdir -p "$TMP/ex"
rc=0
node "$SRC/tests/integration/authz_matrix.js" "$SRC/docs/openapi.yaml" "$BASE" "$DATA" "$BIN" "$TMP/ex" || rc=$?
if ! node "$SRC/tests/integration/api_validate.js" "$SRC/docs/openapi.yaml" "$TMP/ex" >"$TMP/validate.log"; then
    tail -40 "$TMP/validate.log"
    rc=1
else
    echo "ok - $(tail -1 "$TMP/validate.log")"
fi
authz_stop
[ "$rc" = 0 ] || fail "the authorization matrix has failures (see 'not ok' above)"
echo "ok - authorization matrix"
