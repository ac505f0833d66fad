/*
 * The Model Context Protocol's JSON-RPC 2.0 core, transport-free: one message
 * in, at most one reply out. POST /mcp and `agora mcp` (stdio) share it.
 *
 * Methods: initialize (version negotiation: the client's version when this
 * server speaks it, else the latest, 2025-11-25), ping, tools/list, tools/call,
 * and server/discover of 2026-07-28 (sessionless capability discovery: the
 * versions, capabilities, serverInfo and instructions, without a handshake).
 * Notifications (no id) are accepted and never answered; a client's responses
 * are ignored. JSON-RPC batches were removed from MCP in 2025-06-18: an array
 * is an Invalid Request.
 *
 * Errors. Malformed JSON → -32700 (id null); not a request object, a bad
 * `jsonrpc`, id or method → -32600; an unknown method → -32601; params that are
 * not an object, a tools/call without a name or naming no tool → -32602. A tool
 * that fails (a refused, invalid or impossible call) is not a JSON-RPC error but
 * a result with isError: true (tools.c), so the model can read why.
 */
#include <stdio.h>
#include <string.h>

#include "agora/base.h"
#include "services/mcp/mcp.h"

static const char *const versions[] = {"2025-11-25", "2025-06-18"};

static const char instructions[] =
    "agora is an event-sourced commerce platform. Use list_products and get_inventory to "
    "browse the catalog, place_order to order (it answers at once with status pending; the "
    "PlaceOrder saga then reserves stock, charges the customer's wallet and arranges "
    "shipping), get_order_status to follow an order, search_orders to find orders and "
    "cancel_order to cancel one. A customer's token sees and acts only on its own orders. "
    "Money is {amount, currency} with amount in minor units (cents).";

bool mcp_version_ok(const char *v)
{
    for (size_t i = 0; v && i < AG_ARRAY_SIZE(versions); i++)
        if (strcmp(v, versions[i]) == 0) return true;
    return false;
}

json_t *mcp_error(json_t *id, int code, const char *message)
{
    return json_pack("{s:s, s:O?, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id, "error", "code", code,
                     "message", message);
}

static json_t *result(json_t *id, json_t *res)
{
    return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", res);
}

static json_t *server_info(void)
{
    return json_pack("{s:s, s:s, s:s}", "name", "agora", "title", "agora commerce", "version",
                     AG_VERSION);
}

static json_t *capabilities(void)
{
    return json_pack("{s:{s:b}}", "tools", "listChanged", 0);
}

static json_t *initialize(struct mcp_caller *c, json_t *id, json_t *params, struct mcp_outcome *oc)
{
    AG_UNUSED(c);
    const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
    if (!asked) return mcp_error(id, MCP_INVALID_PARAMS, "initialize needs params.protocolVersion");
    const char *v = mcp_version_ok(asked) ? asked : MCP_PROTOCOL_LATEST;
    oc->initialized = true;
    snprintf(oc->version, sizeof oc->version, "%s", v);
    return result(id, json_pack("{s:s, s:o, s:o, s:s}", "protocolVersion", v, "capabilities",
                                capabilities(), "serverInfo", server_info(), "instructions",
                                instructions));
}

static json_t *discover(json_t *id)
{
    json_t *vs = json_array();
    for (size_t i = 0; i < AG_ARRAY_SIZE(versions); i++)
        json_array_append_new(vs, json_string(versions[i]));
    return result(id, json_pack("{s:o, s:o, s:o, s:s}", "supportedVersions", vs, "capabilities",
                                capabilities(), "serverInfo", server_info(), "instructions",
                                instructions));
}

static json_t *tools_call(struct mcp_caller *c, json_t *id, json_t *params)
{
    const char *name = json_string_value(json_object_get(params, "name"));
    json_t *args = json_object_get(params, "arguments");
    if (!name) return mcp_error(id, MCP_INVALID_PARAMS, "tools/call needs params.name");
    if (args && !json_is_object(args) && !json_is_null(args))
        return mcp_error(id, MCP_INVALID_PARAMS, "params.arguments must be an object");
    json_t *empty = json_object();
    json_t *res = mcp_tool_call(c, name, json_is_object(args) ? args : empty);
    json_decref(empty);
    if (!res) {
        char msg[160];
        snprintf(msg, sizeof msg, "Unknown tool: %.100s", name);
        return mcp_error(id, MCP_INVALID_PARAMS, msg);
    }
    return result(id, res);
}

static bool id_ok(json_t *id)
{
    return json_is_string(id) || json_is_integer(id);
}

json_t *mcp_handle(struct mcp_caller *c, json_t *msg, struct mcp_outcome *oc)
{
    memset(oc, 0, sizeof *oc);
    if (!json_is_object(msg)) return mcp_error(NULL, MCP_INVALID_REQUEST, "Invalid Request");
    json_t *id = json_object_get(msg, "id");
    json_t *method = json_object_get(msg, "method");
    json_t *params = json_object_get(msg, "params");
    bool has_id = id != NULL;
    if (!id_ok(id)) id = NULL;
    if (!json_is_string(json_object_get(msg, "jsonrpc")) ||
        strcmp(json_string_value(json_object_get(msg, "jsonrpc")), "2.0") != 0)
        return mcp_error(id, MCP_INVALID_REQUEST, "Invalid Request: jsonrpc must be \"2.0\"");
    if (!method && has_id && (json_object_get(msg, "result") || json_object_get(msg, "error")))
        return NULL; /* a response to a request of ours: none are sent, nothing to do */
    if (!json_is_string(method))
        return mcp_error(id, MCP_INVALID_REQUEST, "Invalid Request: method must be a string");
    if (has_id && !id)
        return mcp_error(NULL, MCP_INVALID_REQUEST,
                         "Invalid Request: id must be a string or an integer");
    const char *m = json_string_value(method);
    snprintf(oc->method, sizeof oc->method, "%s", m);
    if (!has_id) return NULL; /* a notification: initialized, cancelled, progress... */
    if (params && !json_is_object(params))
        return mcp_error(id, MCP_INVALID_PARAMS, "params must be an object");
    if (strcmp(m, "initialize") == 0) return initialize(c, id, params, oc);
    if (strcmp(m, "ping") == 0) return result(id, json_object());
    if (strcmp(m, "server/discover") == 0) return discover(id);
    if (strcmp(m, "tools/list") == 0)
        return result(id, json_pack("{s:o}", "tools", mcp_tools_list()));
    if (strcmp(m, "tools/call") == 0) return tools_call(c, id, params);
    char msg_[160];
    snprintf(msg_, sizeof msg_, "Method not found: %.100s", m);
    return mcp_error(id, MCP_METHOD_NOT_FOUND, msg_);
}

json_t *mcp_handle_text(struct mcp_caller *c, const char *text, size_t len, struct mcp_outcome *oc)
{
    memset(oc, 0, sizeof *oc);
    json_error_t je;
    json_t *msg = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!msg) return mcp_error(NULL, MCP_PARSE_ERROR, "Parse error");
    json_t *reply = mcp_handle(c, msg, oc);
    json_decref(msg);
    return reply;
}

void mcp_caller_meta(struct mcp_caller *c)
{
    json_t *m = json_pack("{s:{s:s, s:[s]}, s:s}", "actor", "sub",
                          c->who.authenticated ? c->who.sub : "anonymous", "roles",
                          c->who.admin ? "admin" : "customer", "via", "mcp");
    char *s = m ? json_dumps(m, JSON_COMPACT) : NULL;
    snprintf(c->meta, sizeof c->meta, "%s", s && strlen(s) < sizeof c->meta ? s : "{}");
    free(s);
    json_decref(m);
}
