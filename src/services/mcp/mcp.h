/* Private declarations of the mcp context (src/services/mcp): the JSON-RPC core
 * (rpc.c), the tools (tools.c) and the transports (api.c: POST /mcp, and the
 * in-process entry `agora mcp` uses over stdio). */
#ifndef AGORA_SERVICES_MCP_H
#define AGORA_SERVICES_MCP_H

#include <jansson.h>
#include <stdbool.h>

#include "services/internal.h"

#define MCP_PROTOCOL_LATEST "2025-11-25"

/* Who calls, and through what: every tool runs a route's handler as `who`. */
struct mcp_caller {
    struct svc_env *env;      /* the mcp context's (peers: every context) */
    struct svc_principal who; /* the verified principal (or the local operator) */
    char meta[512];           /* event metadata JSON for the commands it runs */
};

/* What a message was, for the transport (sessions, status codes). */
struct mcp_outcome {
    char method[40];  /* the request's or notification's method, "" when none */
    bool initialized; /* an initialize request that succeeded */
    char version[16]; /* the protocol version it negotiated */
};

/* True when `v` is a protocol version this server speaks. */
bool mcp_version_ok(const char *v);
/* Handle one parsed JSON-RPC message (borrowed). Returns the reply (a new
 * reference), or NULL when none is due (a notification, a client's response). */
json_t *mcp_handle(struct mcp_caller *c, json_t *msg, struct mcp_outcome *oc /* OUT */);
/* A JSON-RPC error reply {jsonrpc, id, error{code, message}}; `id` borrowed (NULL: null). */
json_t *mcp_error(json_t *id, int code, const char *message);
/* Handle one message's text: a parse error is answered with -32700. */
json_t *mcp_handle_text(struct mcp_caller *c, const char *text, size_t len,
                        struct mcp_outcome *oc /* OUT */);
/* Fill c->meta for principal c->who (the actor of the events its tools append). */
void mcp_caller_meta(struct mcp_caller *c);

/* The tools: their definitions (a new array), and one call's result (a new
 * CallToolResult object), or NULL when `name` is no tool. */
json_t *mcp_tools_list(void);
json_t *mcp_tool_call(struct mcp_caller *c, const char *name, json_t *args /* borrowed */);

#define MCP_PARSE_ERROR      -32700
#define MCP_INVALID_REQUEST  -32600
#define MCP_METHOD_NOT_FOUND -32601
#define MCP_INVALID_PARAMS   -32602
#define MCP_INTERNAL_ERROR   -32603

#endif
