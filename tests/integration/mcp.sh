#!/usr/bin/env bash
# Integration: AI agents over the Model Context Protocol (ARCHITECTURE §9), with the
# official TypeScript SDK client under node's test runner (tests/integration/mcp/):
#   1. POST /mcp through `agora run`'s gateway (streamable HTTP): tools, schemas,
#      ownership (a customer's agent cannot see or cancel another's orders), bearer,
#      Origin, Mcp-Session-Id, malformed JSON-RPC;
#   2. the conformance scenarios of @modelcontextprotocol/conformance that apply to a
#      tools-only server (initialize, ping, tools/list, DNS-rebinding protection);
#   3. then, agora run stopped, `agora mcp --data DIR` over stdio on the same data:
#      the local operator, and a customer's --token.
# Env: AGORA_BIN, AG_SOURCE_DIR, AG_BUILD_DIR (from CTest).
# shellcheck source=tests/integration/authz_lib.bash
source "$(dirname "${BASH_SOURCE[0]}")/authz_lib.bash"

authz_node_tools
[ -d "$SRC/node_modules/@modelcontextprotocol/sdk" ] || fail "@modelcontextprotocol/sdk is not installed (npm ci)"
authz_start
export BASE DATA AGORA_BIN="$BIN" STATE="$TMP/state.json"
node --test --test-reporter=tap "$SRC/tests/integration/mcp/mcp_http.test.mjs" || fail "MCP over HTTP"
[ -x "$SRC/node_modules/.bin/conformance" ] || fail "@modelcontextprotocol/conformance is not installed (npm ci)"
TOKEN=$(token conformance admin) SRC="$SRC" node "$SRC/tests/integration/mcp/conformance.mjs" || fail "MCP conformance scenarios"
authz_stop
node --test --test-reporter=tap "$SRC/tests/integration/mcp/mcp_stdio.test.mjs" || fail "MCP over stdio"
echo "ok - MCP over streamable HTTP and stdio"
