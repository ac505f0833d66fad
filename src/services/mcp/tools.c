/*
 * agora's MCP tools: the seeds' AIAgentService (search_orders,
 * get_order_status) and the rest of an agent's shopping trip (list_products,
 * get_inventory, place_order, cancel_order).
 *
 * A tool is a route of the HTTP API called in-process: it builds a job exactly as
 * the HTTP layer would (the route's access check, the id shape check, the {id}
 * parameter, the query parameters, the JSON body, the Idempotency-Key) and runs
 * the route's own handler with the caller's principal (svc_job_run). So the
 * ownership rules are the handlers' and cannot drift: a customer's agent lists
 * only its own orders, and another customer's order is "not found" to it.
 *
 * Results. A 2xx answer is the tool's structuredContent (shaped to the tool's
 * outputSchema) plus the same JSON as a text block. Anything else is a result with
 * isError: true and the problem (status, title, detail, each invalid field and
 * its JSON pointer) as text: the model reads it and can correct its call.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/mcp/mcp.h"

/* ---- schemas ---- */

#define MONEY                                                                                      \
    "{\"type\":\"object\",\"properties\":{\"amount\":{\"type\":\"integer\",\"description\":"       \
    "\"minor units (cents)\"},\"currency\":{\"type\":\"string\"}},\"required\":[\"amount\","       \
    "\"currency\"]}"
#define STATUS_ENUM "[\"draft\",\"pending\",\"confirmed\",\"shipped\",\"delivered\",\"cancelled\"]"
#define ORDER_ITEM                                                                                 \
    "{\"type\":\"object\",\"properties\":{\"productId\":{\"type\":\"string\"},\"quantity\":"       \
    "{\"type\":\"integer\"},\"unitPrice\":" MONEY ",\"subtotal\":" MONEY "},\"required\":"         \
    "[\"productId\",\"quantity\"]}"
#define ORDER                                                                                      \
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"customerId\":"            \
    "{\"type\":\"string\"},\"status\":{\"type\":\"string\",\"enum\":" STATUS_ENUM "},"             \
    "\"items\":{\"type\":\"array\",\"items\":" ORDER_ITEM "},\"subtotal\":" MONEY                  \
    ",\"discount\":" MONEY ",\"total\":" MONEY ",\"sagaId\":{\"type\":\"string\"},"                \
    "\"cancellationReason\":{\"type\":\"string\"},\"trackingNumber\":{\"type\":\"string\"},"       \
    "\"createdAt\":{\"type\":\"string\"},\"updatedAt\":{\"type\":\"string\"}},"                    \
    "\"required\":[\"id\",\"customerId\",\"status\",\"items\",\"total\"]}"
#define CURSOR                                                                                     \
    "{\"type\":[\"string\",\"null\"],\"description\":\"pass as cursor for the next page\"}"
#define LIMIT                                                                                      \
    "{\"type\":\"integer\",\"minimum\":1,\"maximum\":100,\"description\":\"page size, default "    \
    "20\"}"
#define UUID "{\"type\":\"string\",\"description\":\"a UUID\"}"

static const char search_in[] =
    "{\"type\":\"object\",\"properties\":{\"customerId\":" UUID ",\"status\":{\"type\":"
    "\"string\",\"enum\":" STATUS_ENUM "},\"limit\":" LIMIT ",\"cursor\":{\"type\":\"string\","
    "\"description\":\"nextCursor of the previous page\"}},\"additionalProperties\":false}";
static const char search_out[] = "{\"type\":\"object\",\"properties\":{\"items\":{\"type\":"
                                 "\"array\",\"items\":" ORDER "},\"nextCursor\":" CURSOR
                                 "},\"required\":[\"items\",\"nextCursor\"]}";
static const char order_id_in[] = "{\"type\":\"object\",\"properties\":{\"orderId\":" UUID
                                  "},\"required\":[\"orderId\"],\"additionalProperties\":false}";
static const char status_out[] =
    "{\"type\":\"object\",\"properties\":{\"orderId\":{\"type\":\"string\"},\"customerId\":"
    "{\"type\":\"string\"},\"status\":{\"type\":\"string\",\"enum\":" STATUS_ENUM
    "},\"total\":" MONEY ",\"items\":{\"type\":\"array\",\"items\":" ORDER_ITEM
    "},\"sagaId\":{\"type\":"
    "\"string\"},\"cancellationReason\":{\"type\":\"string\"},\"trackingNumber\":{\"type\":"
    "\"string\"},\"updatedAt\":{\"type\":\"string\"}},\"required\":[\"orderId\",\"customerId\","
    "\"status\",\"total\",\"items\"]}";
static const char products_in[] = "{\"type\":\"object\",\"properties\":{\"limit\":" LIMIT
                                  ",\"cursor\":{\"type\":\"string\"}},\"additionalProperties\":"
                                  "false}";
static const char products_out[] =
    "{\"type\":\"object\",\"properties\":{\"items\":{\"type\":\"array\",\"items\":{\"type\":"
    "\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"sku\":{\"type\":\"string\"},"
    "\"name\":{\"type\":\"string\"},\"price\":" MONEY ",\"active\":{\"type\":\"boolean\"}},"
    "\"required\":[\"id\",\"sku\",\"name\",\"price\",\"active\"]}},\"nextCursor\":" CURSOR
    "},\"required\":[\"items\",\"nextCursor\"]}";
static const char inventory_in[] = "{\"type\":\"object\",\"properties\":{\"productId\":" UUID
                                   "},\"required\":[\"productId\"],\"additionalProperties\":"
                                   "false}";
static const char inventory_out[] =
    "{\"type\":\"object\",\"properties\":{\"productId\":{\"type\":\"string\"},\"onHand\":"
    "{\"type\":\"integer\"},\"reserved\":{\"type\":\"integer\"},\"available\":{\"type\":"
    "\"integer\"}},\"required\":[\"productId\",\"onHand\",\"reserved\",\"available\"]}";
static const char place_in[] =
    "{\"type\":\"object\",\"properties\":{\"customerId\":{\"type\":\"string\",\"description\":"
    "\"the customer ordering; a customer's token may omit it (its own customer)\"},\"items\":"
    "{\"type\":\"array\",\"minItems\":1,\"maxItems\":100,\"items\":{\"type\":\"object\","
    "\"properties\":{\"productId\":" UUID ",\"quantity\":{\"type\":\"integer\",\"minimum\":1,"
    "\"maximum\":10000}},\"required\":[\"productId\",\"quantity\"]}},\"shippingAddress\":{"
    "\"type\":\"object\",\"properties\":{\"street\":{\"type\":\"string\"},\"city\":{\"type\":"
    "\"string\"},\"state\":{\"type\":\"string\"},\"zipCode\":{\"type\":\"string\"},\"country\":"
    "{\"type\":\"string\",\"description\":\"ISO 3166-1 alpha-2\"}},\"required\":[\"street\","
    "\"city\",\"state\",\"zipCode\",\"country\"]},\"idempotencyKey\":{\"type\":\"string\","
    "\"description\":\"repeat a call with the same key to retry it safely: it places the "
    "order once\"}},\"required\":[\"items\",\"shippingAddress\"]}";
static const char place_out[] =
    "{\"type\":\"object\",\"properties\":{\"orderId\":{\"type\":\"string\"},\"sagaId\":{"
    "\"type\":\"string\"},\"status\":{\"type\":\"string\",\"enum\":[\"pending\"]}},\"required\":"
    "[\"orderId\",\"sagaId\",\"status\"]}";
static const char cancel_in[] = "{\"type\":\"object\",\"properties\":{\"orderId\":" UUID
                                ",\"reason\":{\"type\":\"string\"}},\"required\":[\"orderId\"],"
                                "\"additionalProperties\":false}";
static const char cancel_out[] = "{\"type\":\"object\",\"properties\":{\"orderId\":{\"type\":"
                                 "\"string\"},\"status\":{\"type\":\"string\",\"enum\":["
                                 "\"cancelled\"]}},\"required\":[\"orderId\",\"status\"]}";

/* ---- running a route's handler ---- */

/* One call of a route: what the HTTP layer would have copied into the job. */
struct route_call {
    const struct svc_context *ctx;
    const char *method, *path;
    const char *param;    /* the {id} value, or NULL */
    const char *q[4];     /* query parameters in the route's order, NULL when absent */
    json_t *body;         /* borrowed, or NULL */
    const char *idem_key; /* or NULL */
    bool admit;           /* starts a saga: through admission control, as over HTTP */
};

static struct svc_env *env_of(struct mcp_caller *c, const struct svc_context *ctx)
{
    for (size_t i = 0; i < c->env->npeers; i++)
        if (c->env->peers[i].name && strcmp(c->env->peers[i].name, ctx->name) == 0)
            return &c->env->peers[i];
    return NULL;
}

static const struct svc_route *route_of(const struct route_call *rc)
{
    for (size_t i = 0; i < rc->ctx->nroutes; i++)
        if (strcmp(rc->ctx->routes[i].method, rc->method) == 0 &&
            strcmp(rc->ctx->routes[i].path, rc->path) == 0)
            return &rc->ctx->routes[i];
    return NULL;
}

/* Fill `j` as svc_job_start and access.c's dispatch would, and run the handler.
 * The caller releases the job with job_done. */
static void run_route(struct mcp_caller *c, const struct route_call *rc, struct svc_job *j)
{
    memset(j, 0, sizeof *j);
    const struct svc_route *r = route_of(rc);
    j->env = env_of(c, rc->ctx);
    j->who = c->who;
    if (!r || !j->env) {
        svc_problem(j, 500, NULL, "the route %s %s is not registered", rc->method, rc->path);
        return;
    }
    if (r->access != SVC_PUBLIC && !c->who.authenticated) {
        svc_problem(j, 401, NULL, "a bearer token is required");
        return;
    }
    if (r->access == SVC_ADMIN && !c->who.admin) {
        svc_problem(j, 403, NULL, "this operation needs the admin role");
        return;
    }
    if (rc->param && !svc_uuid_ok(rc->param)) {
        svc_problem(j, 404, "Not found", "no %s with id %.160s", r->noun ? r->noun : "resource",
                    rc->param);
        return;
    }
    j->fn = r->fn;
    if (rc->param) snprintf(j->param, sizeof j->param, "%s", rc->param);
    for (int i = 0; i < 4; i++) j->q[i] = rc->q[i] ? ag_strdup(rc->q[i]) : NULL;
    if (rc->idem_key) snprintf(j->idem_key, sizeof j->idem_key, "%s", rc->idem_key);
    memcpy(j->meta, c->meta, sizeof j->meta);
    j->body = json_incref(rc->body);
    if (rc->admit && svc_admission_attach(j)) {
        svc_problem(j, 500, NULL, "out of memory");
        return;
    }
    svc_job_run(j);
}

static void job_done(struct svc_job *j)
{
    json_decref(j->body);
    json_decref(j->resp);
    json_decref(j->errors);
    for (int i = 0; i < 4; i++) ag_free((void *)j->q[i]);
}

/* ---- results ---- */

static json_t *text_block(const char *text)
{
    return json_pack("[{s:s, s:s}]", "type", "text", "text", text);
}

static json_t *tool_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *tool_error(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return json_pack("{s:o, s:b}", "content", text_block(msg), "isError", 1);
}

/* The problem a job answered as an isError result. */
static json_t *problem_result(const struct svc_job *j)
{
    struct ag_buf b;
    ag_buf_init(&b);
    ag_buf_printf(&b, "%d %s", j->status, j->title[0] ? j->title : ag_http_reason(j->status));
    if (j->detail[0]) ag_buf_printf(&b, ": %s", j->detail);
    size_t i;
    json_t *e;
    json_array_foreach(j->errors, i, e)
    {
        ag_buf_printf(&b, "%s %s: %s", i ? ";" : " —",
                      json_string_value(json_object_get(e, "pointer")) ?: "",
                      json_string_value(json_object_get(e, "detail")) ?: "");
    }
    json_t *r = tool_error("%s", b.data ? b.data : "error");
    ag_buf_free(&b);
    return r;
}

/* The answer of a job: `shape` (may be NULL) turns its JSON into the tool's
 * structured result (a new reference). */
static json_t *job_result(struct svc_job *j, json_t *(*shape)(json_t *resp))
{
    if (j->problem || j->status >= 400 || !j->resp) return problem_result(j);
    json_t *s = shape ? shape(j->resp) : json_incref(j->resp);
    char *text = json_dumps(s, JSON_COMPACT);
    json_t *r = json_pack("{s:o, s:o, s:b}", "content", text_block(text ? text : "{}"),
                          "structuredContent", s, "isError", 0);
    free(text);
    return r;
}

/* ---- the tools ---- */

/* A string argument; *bad set when present but not a string. */
static const char *arg_str(json_t *args, const char *name, bool *bad)
{
    json_t *v = json_object_get(args, name);
    if (v && !json_is_string(v) && !json_is_null(v)) *bad = true;
    return json_string_value(v);
}

static json_t *search_orders(struct mcp_caller *c, json_t *args)
{
    bool bad = false;
    json_t *lim = json_object_get(args, "limit");
    char limit[24] = "";
    if (lim && !json_is_integer(lim)) return tool_error("limit must be an integer from 1 to 100");
    if (lim) snprintf(limit, sizeof limit, "%lld", (long long)json_integer_value(lim));
    struct route_call rc = {&svc_ordering_context,
                            "GET",
                            "/api/v1/orders",
                            NULL,
                            {arg_str(args, "customerId", &bad), arg_str(args, "status", &bad),
                             lim ? limit : NULL, arg_str(args, "cursor", &bad)},
                            NULL,
                            NULL};
    if (bad) return tool_error("customerId, status and cursor must be strings");
    struct svc_job j;
    run_route(c, &rc, &j);
    json_t *r = job_result(&j, NULL);
    job_done(&j);
    return r;
}

static json_t *status_shape(json_t *o)
{
    json_t *s =
        json_pack("{s:O, s:O, s:O, s:O, s:O}", "orderId", json_object_get(o, "id"), "customerId",
                  json_object_get(o, "customerId"), "status", json_object_get(o, "status"), "total",
                  json_object_get(o, "total"), "items", json_object_get(o, "items"));
    static const char *const opt[] = {"sagaId", "cancellationReason", "trackingNumber",
                                      "updatedAt"};
    for (size_t i = 0; s && i < AG_ARRAY_SIZE(opt); i++)
        if (json_object_get(o, opt[i])) json_object_set(s, opt[i], json_object_get(o, opt[i]));
    return s ? s : json_object();
}

/* A tool on one resource named by a required id argument. */
static json_t *by_id(struct mcp_caller *c, json_t *args, const char *arg,
                     const struct route_call *tmpl, json_t *(*shape)(json_t *))
{
    const char *id = json_string_value(json_object_get(args, arg));
    if (!id) return tool_error("%s is required and must be a string", arg);
    struct route_call rc = *tmpl;
    rc.param = id;
    struct svc_job j;
    run_route(c, &rc, &j);
    json_t *r = job_result(&j, shape);
    job_done(&j);
    return r;
}

static json_t *get_order_status(struct mcp_caller *c, json_t *args)
{
    static const struct route_call t = {&svc_ordering_context, "GET", "/api/v1/orders/{id}"};
    return by_id(c, args, "orderId", &t, status_shape);
}

static json_t *get_inventory(struct mcp_caller *c, json_t *args)
{
    static const struct route_call t = {&svc_inventory_context, "GET",
                                        "/api/v1/inventory/{productId}"};
    return by_id(c, args, "productId", &t, NULL);
}

static json_t *list_products(struct mcp_caller *c, json_t *args)
{
    bool bad = false;
    json_t *lim = json_object_get(args, "limit");
    char limit[24] = "";
    if (lim && !json_is_integer(lim)) return tool_error("limit must be an integer from 1 to 100");
    if (lim) snprintf(limit, sizeof limit, "%lld", (long long)json_integer_value(lim));
    struct route_call rc = {&svc_catalog_context,
                            "GET",
                            "/api/v1/products",
                            NULL,
                            {lim ? limit : NULL, arg_str(args, "cursor", &bad)},
                            NULL,
                            NULL};
    if (bad) return tool_error("cursor must be a string");
    struct svc_job j;
    run_route(c, &rc, &j);
    json_t *r = job_result(&j, NULL);
    job_done(&j);
    return r;
}

static json_t *place_order(struct mcp_caller *c, json_t *args)
{
    bool bad = false;
    const char *key = arg_str(args, "idempotencyKey", &bad);
    if (bad || (key && (!*key || strlen(key) > 255)))
        return tool_error("idempotencyKey must be a string of 1 to 255 characters");
    json_t *body = json_deep_copy(args);
    json_object_del(body, "idempotencyKey");
    json_object_del(body, "draft"); /* the tool places orders; drafts are HTTP's (drafts.c) */
    struct route_call rc = {
        &svc_ordering_context, "POST", "/api/v1/orders", NULL, {NULL}, body, key, true};
    struct svc_job j;
    run_route(c, &rc, &j);
    if (j.ext) svc_admission_finish(&j, NULL); /* gives back the slot if no order took it */
    json_t *r = job_result(&j, NULL);
    job_done(&j);
    json_decref(body);
    return r;
}

static json_t *cancel_order(struct mcp_caller *c, json_t *args)
{
    bool bad = false;
    const char *reason = arg_str(args, "reason", &bad);
    if (bad) return tool_error("reason must be a string");
    json_t *body = reason ? json_pack("{s:s}", "reason", reason) : NULL;
    struct route_call t = {
        &svc_ordering_context, "POST", "/api/v1/orders/{id}/cancel", NULL, {NULL}, body};
    json_t *r = by_id(c, args, "orderId", &t, NULL);
    json_decref(body);
    return r;
}

/* ---- the table ---- */

struct tool {
    const char *name, *title, *description;
    const char *input, *output; /* JSON Schemas */
    bool read_only, destructive, idempotent;
    json_t *(*call)(struct mcp_caller *c, json_t *args);
};

static const struct tool tools[] = {
    {"search_orders", "Search orders",
     "List orders, newest id last, filtered by customer and status, a page at a time (limit, "
     "cursor). A customer sees only its own orders.",
     search_in, search_out, true, false, true, search_orders},
    {"get_order_status", "Get an order's status",
     "An order's status (pending, confirmed, shipped, delivered or cancelled), items, total, "
     "cancellation reason and tracking number.",
     order_id_in, status_out, true, false, true, get_order_status},
    {"list_products", "List products",
     "The catalog, a page at a time: id, sku, name, price and whether it can be ordered.",
     products_in, products_out, true, false, true, list_products},
    {"get_inventory", "Get stock of a product",
     "A product's stock: on hand, reserved by pending orders, and available.", inventory_in,
     inventory_out, true, false, true, get_inventory},
    {"place_order", "Place an order",
     "Order products for a customer (a customer's token: its own). Answers at once with the "
     "order id and status pending; the order is then confirmed or cancelled by the PlaceOrder "
     "saga (stock, payment from the customer's wallet, shipping): follow it with "
     "get_order_status. Charges money.",
     place_in, place_out, false, false, false, place_order},
    {"cancel_order", "Cancel an order",
     "Cancel an order that has not shipped: its stock is released and its payment refunded. "
     "Cannot be undone.",
     cancel_in, cancel_out, false, true, true, cancel_order},
};

json_t *mcp_tools_list(void)
{
    json_t *a = json_array();
    for (size_t i = 0; i < AG_ARRAY_SIZE(tools); i++) {
        const struct tool *t = &tools[i];
        json_t *d = json_pack("{s:s, s:s, s:s, s:o, s:o, s:{s:s, s:b, s:b, s:b, s:b}}", "name",
                              t->name, "title", t->title, "description", t->description,
                              "inputSchema", json_loads(t->input, 0, NULL), "outputSchema",
                              json_loads(t->output, 0, NULL), "annotations", "title", t->title,
                              "readOnlyHint", t->read_only, "destructiveHint", t->destructive,
                              "idempotentHint", t->idempotent, "openWorldHint", 0);
        if (d) json_array_append_new(a, d);
    }
    return a;
}

json_t *mcp_tool_call(struct mcp_caller *c, const char *name, json_t *args)
{
    for (size_t i = 0; i < AG_ARRAY_SIZE(tools); i++)
        if (strcmp(tools[i].name, name) == 0) return tools[i].call(c, args);
    return NULL;
}
