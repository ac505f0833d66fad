/*
 * `agora cluster`: the gateway's configuration, written to DIR/gateway.yaml at every
 * start. The same shape as deploy/serve/gateway.yaml (README "Running
 * distributed"): one upstream cluster per context (destinationRules host = the
 * context's name) kept at the instances that serve it, `ops` at them all; the
 * routes are that file's; the JWT issuer is `agora run`'s (agora-dev, audience
 * agora, HS256 with DIR/jwt-secret), so `agora token --data DIR` mints tokens it
 * accepts. Where each cluster's endpoints come from and how the gateway talks to
 * them is one function, upstream_yaml: the service-discovery registry
 * (`discovery:`), and mTLS with the gateway's certificate unless the cluster runs
 * with --insecure-plaintext.
 */
#include <limits.h>
#include <string.h>

#include "agora/platform.h"
#include "cli/cli.h"
#include "cli/cluster.h"

static const char head_yaml[] = "# written by `agora cluster up` at every start: edits are lost\n"
                                "gateway:\n"
                                "  listen: \"%s\"\n"
                                "  maxBodyBytes: 1048576\n";

static const char policy_yaml[] =
    "    trafficPolicy:\n"
    "      connectionPool:\n"
    "        tcp: {maxConnections: 128, connectTimeout: 1s}\n"
    "        http: {http1MaxPendingRequests: 4096}\n"
    "      loadBalancer: {simple: LEAST_REQUEST}\n"
    "      outlierDetection: {consecutiveGatewayErrors: 2, interval: 2s, baseEjectionTime: 5s, "
    "maxEjectionPercent: 50}\n"
    "      healthCheck: {path: /health/ready, interval: 1s, timeout: 500ms, healthyThreshold: 1, "
    "unhealthyThreshold: 1}\n";

/* One route of deploy/serve/gateway.yaml's virtualServices. Every route is rate
 * limited (5000/s, burst 10000) and takes no Idempotency-Key at the gateway (the
 * services dedupe); a route is retried twice, on connect failures only (15 s a
 * try) unless `idempotent`, then also on resets and gateway errors (5 s a try). */
struct gw_route {
    const char *name;
    const char *match;   /* a line per `match:` entry, its uri; "method: ..." the one before's */
    const char *host;    /* the destination cluster */
    const char *timeout; /* the whole request's */
    const char *auth;    /* the `auth:` value; NULL: public */
    bool idempotent;     /* retried on resets and gateway errors too */
    bool per_ip;         /* rate limited per client address (public), else per user */
};

#define AUTH_ADMIN "{required: true, roles: [admin]}"
#define AUTH_USER  "{required: true}"
#define GET_HEAD   "method: {regex: \"GET|HEAD\"}\n"
/* a context's collection: its reads (GET, HEAD; retried), then every other method */
#define READS(ctx, prefix)                                                                         \
    {                                                                                              \
        ctx "-reads", "{prefix: " prefix "}\n" GET_HEAD, ctx, "15s", AUTH_USER, true, false        \
    }
#define WRITES(ctx, prefix)                                                                        \
    {                                                                                              \
        ctx "-writes", "{prefix: " prefix "}\n", ctx, "15s", AUTH_USER, false, false               \
    }

/* in order: the first that matches a request takes it */
static const struct gw_route routes[] = {
    {"sagas-admin", "{prefix: /admin/sagas}\n", "sagas", "10s", AUTH_ADMIN, true, false},
    {"ops",
     "{prefix: /admin/projections}\n"
     "{prefix: /admin/audit}\n"
     "{prefix: /admin/saga-breakers}\n"
     "{prefix: /admin/bus}\n"
     "{prefix: /admin/stats}\n"
     "{prefix: /admin/log}\n"
     "{prefix: /admin/streams}\n"
     "{prefix: /admin/traces}\n"
     "{pattern: \"/admin/orders/{id}/trace\"}\n"
     "{prefix: /admin/dlq}\n",
     "ops", "60s", AUTH_ADMIN, true, false},
    {"restock", "{pattern: \"/api/v1/inventory/{id}/restock\"}\n", "inventory", "15s", AUTH_ADMIN,
     false, false},
    {"dispatch", "{pattern: \"/api/v1/shipments/{id}/dispatch\"}\n", "shipping", "15s", AUTH_ADMIN,
     false, false},
    {"deliver", "{pattern: \"/api/v1/shipments/{id}/deliver\"}\n", "shipping", "15s",
     "{required: true, roles: [admin, carrier]}", false, false},
    {"tier", "{pattern: \"/api/v1/customers/{id}/tier\"}\n", "customers", "15s", AUTH_ADMIN, false,
     false},
    {"catalog-admin",
     "{pattern: \"/api/v1/products/{id}/price\"}\n"
     "{pattern: \"/api/v1/products/{id}/discontinue\"}\n"
     "{exact: /api/v1/products}\n"
     "method: {regex: \"POST\"}\n"
     "{prefix: /api/v1/promotions}\n",
     "catalog", "15s", AUTH_ADMIN, false, false},
    {"catalog-public", "{prefix: /api/v1/products}\n" GET_HEAD, "catalog", "10s", NULL, true, true},
    {"inventory-public", "{prefix: /api/v1/inventory/}\n" GET_HEAD, "inventory", "10s", NULL, true,
     true},
    READS("customers", "/api/v1/customers"),
    WRITES("customers", "/api/v1/customers"),
    READS("ordering", "/api/v1/orders"),
    WRITES("ordering", "/api/v1/orders"),
    READS("payments", "/api/v1/accounts"),
    WRITES("payments", "/api/v1/accounts"),
    READS("shipping", "/api/v1/shipments"),
    WRITES("shipping", "/api/v1/shipments"),
    READS("sagas", "/api/v1/sagas"),
    WRITES("sagas", "/api/v1/sagas"),
};

static int route_yaml(const struct gw_route *r, struct ag_buf *b)
{
    int rc = ag_buf_printf(b, "      - name: %s\n        match:\n", r->name);
    for (const char *l = r->match, *nl; !rc && (nl = strchr(l, '\n')); l = nl + 1)
        rc = ag_buf_printf(
            b, strncmp(l, "method:", 7) ? "          - uri: %.*s\n" : "            %.*s\n",
            (int)(nl - l), l);
    if (rc) return rc;
    return ag_buf_printf(b,
                         "        route: [{destination: {host: %s}}]\n"
                         "        timeout: %s\n"
                         "%s%s%s"
                         "        retries: {attempts: 2, perTryTimeout: %s}\n"
                         "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: %s}\n"
                         "        idempotency: false\n",
                         r->host, r->timeout, r->auth ? "        auth: " : "",
                         r->auth ? r->auth : "", r->auth ? "\n" : "",
                         r->idempotent ? "5s, retryOn: \"connect-failure,reset,gateway-error\""
                                       : "15s, retryOn: connect-failure",
                         r->per_ip ? "ip" : "user");
}

/* Where the gateway finds the instances serving `context` ("*": `ops`, any
 * instance), and how it talks to them: the one place that says so. The
 * service-discovery registry (rm_registry.members in the cluster's PostgreSQL,
 * which every instance heartbeats into): an instance the autoscaler starts joins
 * when it registers, one it drains or that dies leaves when its row goes (a clean
 * stop deletes it; a dead one's heartbeat ages out in 5 s; health checks and
 * outlier detection judge it meanwhile). With mTLS the gateway presents its own
 * certificate and verifies the instance's against the cluster CA (and that it
 * names the endpoint's IP). */
static int upstream_yaml(const struct cl_cluster *c, const char *context, struct ag_buf *b)
{
    char pg[PATH_MAX];
    cl_pg_uri(c, pg, sizeof pg);
    int rc = ag_buf_printf(b, "    discovery: {registry: \"%s\", context: \"%s\"}\n", pg, context);
    if (!rc) rc = ag_buf_puts(b, policy_yaml);
    if (rc || !c->tls) return rc;
    char ca[PATH_MAX], pem[PATH_MAX], key[PATH_MAX];
    const struct cl_member *gw = NULL;
    for (size_t i = 0; i < c->n; i++)
        if (c->m[i].role == CL_GATEWAY) gw = &c->m[i];
    if (!gw || !cl_cert_path(c, NULL, "pem", ca, sizeof ca) ||
        !cl_cert_path(c, gw, "pem", pem, sizeof pem) ||
        !cl_cert_path(c, gw, "key", key, sizeof key))
        return AG_EINVAL;
    return ag_buf_printf(b,
                         "      tls: {mode: MUTUAL, caCertificates: \"%s\", clientCertificate: "
                         "\"%s\", privateKey: \"%s\"}\n",
                         ca, pem, key);
}

char *cl_gateway_yaml(const struct cl_cluster *c)
{
    struct ag_buf b;
    ag_buf_init(&b);
    int rc = ag_buf_printf(&b, head_yaml, c->listen);
    if (!rc) rc = ag_cli_jwt_yaml(&b, c->jwt);
    if (!rc) rc = ag_buf_puts(&b, "destinationRules:\n");
    for (const char *const *n = ag_platform_context_names(); *n && !rc; n++) {
        rc = ag_buf_printf(&b, "  - host: %s\n", *n);
        if (!rc) rc = upstream_yaml(c, *n, &b);
    }
    if (!rc) rc = ag_buf_puts(&b, "  - host: ops\n");
    if (!rc) rc = upstream_yaml(c, "*", &b);
    if (!rc) rc = ag_buf_puts(&b, "virtualServices:\n  - name: agora\n    http:\n");
    for (size_t i = 0; i < AG_ARRAY_SIZE(routes) && !rc; i++) rc = route_yaml(&routes[i], &b);
    if (rc) {
        ag_buf_free(&b);
        return NULL;
    }
    return ag_buf_steal(&b, NULL);
}
