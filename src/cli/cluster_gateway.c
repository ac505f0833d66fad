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
#include "cli/cluster.h"

static const char head_yaml[] = "# written by `agora cluster up` at every start: edits are lost\n"
                                "gateway:\n"
                                "  listen: \"%s\"\n"
                                "  maxBodyBytes: 1048576\n"
                                "jwt:\n"
                                "  clockSkew: 30s\n"
                                "  issuers:\n"
                                "    - issuer: agora-dev\n"
                                "      audiences: [agora]\n"
                                "      keys:\n"
                                "        - {kid: dev, alg: HS256, secret: \"%s\"}\n"
                                "destinationRules:\n";

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

/* deploy/serve/gateway.yaml's routes */
static const char routes_yaml[] =
    "virtualServices:\n"
    "  - name: agora\n"
    "    http:\n"
    "      - name: sagas-admin\n"
    "        match:\n"
    "          - uri: {prefix: /admin/sagas}\n"
    "        route: [{destination: {host: sagas}}]\n"
    "        timeout: 10s\n"
    "        auth: {required: true, roles: [admin]}\n"
    "        retries: {attempts: 2, perTryTimeout: 5s, retryOn: "
    "\"connect-failure,reset,gateway-error\"}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: ops\n"
    "        match:\n"
    "          - uri: {prefix: /admin/projections}\n"
    "          - uri: {prefix: /admin/audit}\n"
    "          - uri: {prefix: /admin/saga-breakers}\n"
    "          - uri: {prefix: /admin/bus}\n"
    "          - uri: {prefix: /admin/stats}\n"
    "          - uri: {prefix: /admin/log}\n"
    "          - uri: {prefix: /admin/streams}\n"
    "          - uri: {prefix: /admin/traces}\n"
    "          - uri: {pattern: \"/admin/orders/{id}/trace\"}\n"
    "          - uri: {prefix: /admin/dlq}\n"
    "        route: [{destination: {host: ops}}]\n"
    "        timeout: 60s\n"
    "        auth: {required: true, roles: [admin]}\n"
    "        retries: {attempts: 2, perTryTimeout: 5s, retryOn: "
    "\"connect-failure,reset,gateway-error\"}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: restock\n"
    "        match:\n"
    "          - uri: {pattern: \"/api/v1/inventory/{id}/restock\"}\n"
    "        route: [{destination: {host: inventory}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true, roles: [admin]}\n"
    "        retries: {attempts: 2, perTryTimeout: 15s, retryOn: connect-failure}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: dispatch\n"
    "        match:\n"
    "          - uri: {pattern: \"/api/v1/shipments/{id}/dispatch\"}\n"
    "        route: [{destination: {host: shipping}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true, roles: [admin]}\n"
    "        retries: {attempts: 2, perTryTimeout: 15s, retryOn: connect-failure}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: deliver\n"
    "        match:\n"
    "          - uri: {pattern: \"/api/v1/shipments/{id}/deliver\"}\n"
    "        route: [{destination: {host: shipping}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true, roles: [admin, carrier]}\n"
    "        retries: {attempts: 2, perTryTimeout: 15s, retryOn: connect-failure}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: tier\n"
    "        match:\n"
    "          - uri: {pattern: \"/api/v1/customers/{id}/tier\"}\n"
    "        route: [{destination: {host: customers}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true, roles: [admin]}\n"
    "        retries: {attempts: 2, perTryTimeout: 15s, retryOn: connect-failure}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: catalog-admin\n"
    "        match:\n"
    "          - uri: {pattern: \"/api/v1/products/{id}/price\"}\n"
    "          - uri: {pattern: \"/api/v1/products/{id}/discontinue\"}\n"
    "          - uri: {exact: /api/v1/products}\n"
    "            method: {regex: \"POST\"}\n"
    "          - uri: {prefix: /api/v1/promotions}\n"
    "        route: [{destination: {host: catalog}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true, roles: [admin]}\n"
    "        retries: {attempts: 2, perTryTimeout: 15s, retryOn: connect-failure}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: catalog-public\n"
    "        match:\n"
    "          - uri: {prefix: /api/v1/products}\n"
    "            method: {regex: \"GET|HEAD\"}\n"
    "        route: [{destination: {host: catalog}}]\n"
    "        timeout: 10s\n"
    "        retries: {attempts: 2, perTryTimeout: 5s, retryOn: "
    "\"connect-failure,reset,gateway-error\"}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: ip}\n"
    "        idempotency: false\n"
    "      - name: inventory-public\n"
    "        match:\n"
    "          - uri: {prefix: /api/v1/inventory/}\n"
    "            method: {regex: \"GET|HEAD\"}\n"
    "        route: [{destination: {host: inventory}}]\n"
    "        timeout: 10s\n"
    "        retries: {attempts: 2, perTryTimeout: 5s, retryOn: "
    "\"connect-failure,reset,gateway-error\"}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: ip}\n"
    "        idempotency: false\n"
    "      - name: customers-reads\n"
    "        match:\n"
    "          - uri: {prefix: /api/v1/customers}\n"
    "            method: {regex: \"GET|HEAD\"}\n"
    "        route: [{destination: {host: customers}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true}\n"
    "        retries: {attempts: 2, perTryTimeout: 5s, retryOn: "
    "\"connect-failure,reset,gateway-error\"}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: customers-writes\n"
    "        match:\n"
    "          - uri: {prefix: /api/v1/customers}\n"
    "        route: [{destination: {host: customers}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true}\n"
    "        retries: {attempts: 2, perTryTimeout: 15s, retryOn: connect-failure}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: ordering-reads\n"
    "        match:\n"
    "          - uri: {prefix: /api/v1/orders}\n"
    "            method: {regex: \"GET|HEAD\"}\n"
    "        route: [{destination: {host: ordering}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true}\n"
    "        retries: {attempts: 2, perTryTimeout: 5s, retryOn: "
    "\"connect-failure,reset,gateway-error\"}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: ordering-writes\n"
    "        match:\n"
    "          - uri: {prefix: /api/v1/orders}\n"
    "        route: [{destination: {host: ordering}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true}\n"
    "        retries: {attempts: 2, perTryTimeout: 15s, retryOn: connect-failure}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: payments-reads\n"
    "        match:\n"
    "          - uri: {prefix: /api/v1/accounts}\n"
    "            method: {regex: \"GET|HEAD\"}\n"
    "        route: [{destination: {host: payments}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true}\n"
    "        retries: {attempts: 2, perTryTimeout: 5s, retryOn: "
    "\"connect-failure,reset,gateway-error\"}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: payments-writes\n"
    "        match:\n"
    "          - uri: {prefix: /api/v1/accounts}\n"
    "        route: [{destination: {host: payments}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true}\n"
    "        retries: {attempts: 2, perTryTimeout: 15s, retryOn: connect-failure}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: shipping-reads\n"
    "        match:\n"
    "          - uri: {prefix: /api/v1/shipments}\n"
    "            method: {regex: \"GET|HEAD\"}\n"
    "        route: [{destination: {host: shipping}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true}\n"
    "        retries: {attempts: 2, perTryTimeout: 5s, retryOn: "
    "\"connect-failure,reset,gateway-error\"}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: shipping-writes\n"
    "        match:\n"
    "          - uri: {prefix: /api/v1/shipments}\n"
    "        route: [{destination: {host: shipping}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true}\n"
    "        retries: {attempts: 2, perTryTimeout: 15s, retryOn: connect-failure}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: sagas-reads\n"
    "        match:\n"
    "          - uri: {prefix: /api/v1/sagas}\n"
    "            method: {regex: \"GET|HEAD\"}\n"
    "        route: [{destination: {host: sagas}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true}\n"
    "        retries: {attempts: 2, perTryTimeout: 5s, retryOn: "
    "\"connect-failure,reset,gateway-error\"}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n"
    "      - name: sagas-writes\n"
    "        match:\n"
    "          - uri: {prefix: /api/v1/sagas}\n"
    "        route: [{destination: {host: sagas}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true}\n"
    "        retries: {attempts: 2, perTryTimeout: 15s, retryOn: connect-failure}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "        idempotency: false\n";

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
    int rc = ag_buf_printf(&b, head_yaml, c->listen, c->jwt);
    for (const char *const *n = ag_platform_context_names(); *n && !rc; n++) {
        rc = ag_buf_printf(&b, "  - host: %s\n", *n);
        if (!rc) rc = upstream_yaml(c, *n, &b);
    }
    if (!rc) rc = ag_buf_puts(&b, "  - host: ops\n");
    if (!rc) rc = upstream_yaml(c, "*", &b);
    if (!rc) rc = ag_buf_puts(&b, routes_yaml);
    if (rc) {
        ag_buf_free(&b);
        return NULL;
    }
    return ag_buf_steal(&b, NULL);
}
