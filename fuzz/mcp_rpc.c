/* Fuzzing the MCP JSON-RPC core (src/services/mcp/rpc.c and the tools' argument
 * handling): any line a client sends must get a well-formed JSON-RPC answer (an
 * object with jsonrpc "2.0" and exactly one of result or error) or none, never a
 * crash. No platform runs here: a tool that gets as far as its route answers the
 * "not registered" problem as an isError result, which is fine for the parser. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "services/mcp/mcp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct svc_env env = {.name = "mcp"};
    struct mcp_caller c = {.env = &env};
    snprintf(c.who.sub, sizeof c.who.sub, "fuzz");
    c.who.authenticated = c.who.admin = true;
    mcp_caller_meta(&c);
    struct mcp_outcome oc;
    json_t *r = mcp_handle_text(&c, (const char *)data, size, &oc);
    if (r) {
        const char *v = json_string_value(json_object_get(r, "jsonrpc"));
        bool res = json_object_get(r, "result") != NULL, err = json_object_get(r, "error") != NULL;
        if (!v || strcmp(v, "2.0") != 0 || res == err) abort();
        char *s = json_dumps(r, JSON_COMPACT);
        if (!s || strchr(s, '\n')) abort(); /* stdio frames are lines */
        free(s);
        json_decref(r);
    }
    return 0;
}
