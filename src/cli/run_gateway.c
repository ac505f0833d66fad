/*
 * The gateway `agora run` puts in front of the services: the catalog and stock
 * levels are public, everything else needs a JWT (the services then let a
 * customer touch only its own resources), restock, dispatch, tier changes and
 * the platform's admin endpoints need the admin role, every route is rate
 * limited. The gateway strips client-sent identity headers and passes the
 * verified x-user-id / x-user-roles to the services on their Unix socket. The development JWT
 * secret is AGORA_JWT_SECRET when set, else a random secret kept in the data
 * directory (`<data>/jwt-secret`, created on first use, mode 0600), so `agora
 * token --data DIR` mints tokens the running instance accepts and no secret is
 * built into the binary.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agora/base.h"
#include "cli/cli.h"

static int read_secret(const char *path, char out[65])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t n = read(fd, out, 64);
    close(fd);
    if (n < 32) return -EINVAL;
    out[n] = 0;
    for (ssize_t i = 0; i < n; i++)
        if (out[i] == '\n' || out[i] == '\r') out[i] = 0;
    return strlen(out) >= 32 ? 0 : -EINVAL;
}

/* Written under a temporary name and linked into place (never replacing one that a
 * concurrent start made first), so a crash cannot leave a short, unusable secret. */
static int create_secret(const char *path, char out[65])
{
    uint8_t raw[32];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) return -EIO;
    for (size_t i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", raw[i]);
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -errno;
    int rc = write(fd, out, 64) == 64 && fsync(fd) == 0 ? 0 : -EIO;
    close(fd);
    if (!rc && link(tmp, path) != 0) rc = -errno;
    unlink(tmp);
    return rc;
}

int ag_cli_jwt_secret(const char *data_dir, bool create, char out[65], struct ag_err *err)
{
    const char *env = getenv("AGORA_JWT_SECRET");
    if (env && *env) {
        if (strlen(env) < 32 || strlen(env) > 64 || strchr(env, '"') || strchr(env, '\\'))
            return ag_err_set(err, AG_EINVAL,
                              "AGORA_JWT_SECRET must be 32 to 64 characters without quotes");
        snprintf(out, 65, "%s", env);
        return 0;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/jwt-secret", data_dir);
    int rc = read_secret(path, out);
    if (rc == -ENOENT && create) {
        if (mkdir(data_dir, 0755) != 0 && errno != EEXIST)
            return ag_err_set(err, AG_EIO, "%s: %s", data_dir, strerror(errno));
        rc = create_secret(path, out);
        if (rc == -EEXIST) rc = read_secret(path, out); /* another process made it first */
    }
    if (rc == -ENOENT)
        return ag_err_set(
            err, AG_ENOTFOUND,
            "%s does not exist: start 'agora run --data %s' once, or set AGORA_JWT_SECRET", path,
            data_dir);
    if (rc) return ag_err_set(err, AG_EIO, "%s: %s", path, strerror(-rc));
    return 0;
}

int ag_cli_jwt_yaml(struct ag_buf *b, const char *secret)
{
    return ag_buf_printf(b,
                         "jwt:\n"
                         "  clockSkew: 30s\n"
                         "  issuers:\n"
                         "    - issuer: agora-dev\n"
                         "      audiences: [agora]\n"
                         "      keys:\n"
                         "        - {kid: dev, alg: HS256, secret: \"%s\"}\n",
                         secret);
}

static const char run_head_yaml[] = "gateway:\n"
                                    "  listen: %s\n"
                                    "  maxBodyBytes: 1048576\n"
                                    "  maxConnectionsPerPeer: %ld\n";

/* after the jwt section */
static const char template_yaml[] =
    "destinationRules:\n"
    "  - host: platform\n"
    "    endpoints:\n"
    "      - {address: \"%s\"}\n"
    "    trafficPolicy:\n"
    "      connectionPool:\n"
    "        tcp: {maxConnections: 256, connectTimeout: 1s}\n"
    "        http: {http1MaxPendingRequests: 4096}\n"
    "      healthCheck: {path: /health/live, interval: 5s, timeout: 1s}\n"
    "      circuitBreaker: {consecutiveErrors: 50, openTime: 5s}\n"
    "virtualServices:\n"
    "  - name: agora\n"
    "    http:\n"
    "      - name: ops\n"
    "        match:\n"
    "          - uri: {prefix: /admin/projections}\n"
    "          - uri: {prefix: /admin/sagas}\n"
    "          - uri: {prefix: /admin/audit}\n"
    "          - uri: {prefix: /admin/saga-breakers}\n"
    "          - uri: {prefix: /admin/bus}\n"
    "          - uri: {prefix: /admin/stats}\n"
    "          - uri: {prefix: /admin/log}\n"
    "          - uri: {prefix: /admin/streams}\n"
    "          - uri: {prefix: /admin/traces}\n"
    "          - uri: {pattern: \"/admin/orders/{id}/trace\"}\n"
    "        route: [{destination: {host: platform}}]\n"
    "        timeout: 10s\n"
    "        auth: {required: true, roles: [admin]}\n"
    "        idempotency: false\n"
    "      - name: dlq-admin\n"
    "        match:\n"
    "          - uri: {prefix: /admin/dlq}\n"
    "        route: [{destination: {host: platform}}]\n"
    "        timeout: 60s\n"
    "        auth: {required: true, roles: [admin]}\n"
    "        idempotency: false\n"
    "      - name: store-admin\n"
    "        match:\n"
    "          - uri: {prefix: /admin/store}\n"
    "        route: [{destination: {host: platform}}]\n"
    "        timeout: 600s\n"
    "        auth: {required: true, roles: [admin]}\n"
    "        idempotency: false\n"
    "      - name: admin-writes\n"
    "        match:\n"
    "          - uri: {pattern: \"/api/v1/inventory/{id}/restock\"}\n"
    "          - uri: {pattern: \"/api/v1/shipments/{id}/dispatch\"}\n"
    "          - uri: {pattern: \"/api/v1/customers/{id}/tier\"}\n"
    "          - uri: {pattern: \"/api/v1/products/{id}/price\"}\n"
    "          - uri: {pattern: \"/api/v1/products/{id}/discontinue\"}\n"
    "          - uri: {exact: /api/v1/products}\n"
    "            method: {regex: \"POST\"}\n"
    "          - uri: {prefix: /api/v1/promotions}\n"
    "        route: [{destination: {host: platform}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true, roles: [admin]}\n"
    "        idempotency: false\n"
    "      - name: carrier-writes\n"
    "        match:\n"
    "          - uri: {pattern: \"/api/v1/shipments/{id}/deliver\"}\n"
    "        route: [{destination: {host: platform}}]\n"
    "        timeout: 15s\n"
    "        auth: {required: true, roles: [admin, carrier]}\n"
    "        idempotency: false\n"
    "      - name: mcp\n"
    "        match:\n"
    "          - uri: {exact: /mcp}\n"
    "        route: [{destination: {host: platform}}]\n"
    "        timeout: 30s\n"
    "        auth: {required: true}\n"
    "        rateLimit: {requests: 2000, per: 1s, burst: 4000, key: user}\n"
    "        idempotency: false\n"
    "      - name: public-reads\n"
    "        match:\n"
    "          - uri: {prefix: /api/v1/products}\n"
    "            method: {regex: \"GET|HEAD\"}\n"
    "          - uri: {prefix: /api/v1/inventory/}\n"
    "            method: {regex: \"GET|HEAD\"}\n"
    "        route: [{destination: {host: platform}}]\n"
    "        timeout: 10s\n"
    "        retries: {attempts: 2, perTryTimeout: 5s, retryOn: \"connect-failure,reset\"}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: ip}\n"
    "      - name: reads\n"
    "        match:\n"
    "          - uri: {prefix: /api/v1/}\n"
    "            method: {regex: \"GET|HEAD\"}\n"
    "        route: [{destination: {host: platform}}]\n"
    "        timeout: 10s\n"
    "        retries: {attempts: 2, perTryTimeout: 5s, retryOn: \"connect-failure,reset\"}\n"
    "        auth: {required: true}\n"
    "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: user}\n"
    "      - name: writes\n"
    "        match:\n"
    "          - uri: {prefix: /api/v1/}\n"
    "        route: [{destination: {host: platform}}]\n"
    "        timeout: 15s\n"
    "        retries: {attempts: 1, perTryTimeout: 15s, retryOn: connect-failure}\n"
    "        auth: {required: true}\n"
    "        rateLimit: {requests: 2000, per: 1s, burst: 4000, key: user}\n"
    "        idempotency: false\n"
    "bff:\n"
    "  customers: {host: platform, path: \"/api/v1/customers/me\", timeout: 300ms}\n"
    "  catalog: {host: platform, path: \"/api/v1/products?limit={limit}\", timeout: 300ms}\n"
    "  ordering: {host: platform, path: \"/api/v1/orders?limit={limit}\", timeout: 300ms}\n";

int ag_cli_tls_arg(int argc, char **argv, int *i, struct ag_cli_tls *t, const char *cmd)
{
    const char *a = argv[*i];
    bool cert = strcmp(a, "--tls-cert") == 0, key = strcmp(a, "--tls-key") == 0;
    bool redir = strcmp(a, "--http-redirect") == 0;
    if (!cert && !key && !redir) return 0;
    if (*i + 1 >= argc) return ag_cli_usage_error("%s: %s needs a value", cmd, a), -1;
    const char *v = argv[++*i];
    if (redir) {
        t->redirect = v;
        return 1;
    }
    size_t *n = cert ? &t->ncert : &t->nkey;
    if (*n >= AG_CLI_TLS_MAX)
        return ag_cli_usage_error("%s: at most %d certificates", cmd, AG_CLI_TLS_MAX), -1;
    if (cert)
        t->certs[(*n)++].cert_file = v;
    else
        t->certs[(*n)++].key_file = v;
    return 1;
}

int ag_cli_tls_check(const struct ag_cli_tls *t, const char *cmd)
{
    if (t->ncert != t->nkey)
        return ag_cli_usage_error("%s: every --tls-cert needs a --tls-key (and the other way)",
                                  cmd),
               -1;
    if (t->redirect && !t->ncert)
        return ag_cli_usage_error("%s: --http-redirect needs --tls-cert and --tls-key", cmd), -1;
    return 0;
}

/* AGORA_HTTP_CACHE=DURATION (e.g. 5s): the catalog's anonymous GETs are cached at
 * the gateway for that long and answered with Cache-Control: public, max-age (a
 * route of their own before public-reads). Off by default: a price change is then
 * seen at once through the gateway, as the services' caches are invalidated. */
static char *with_catalog_cache(struct ag_buf *b)
{
    const char *age = getenv("AGORA_HTTP_CACHE");
    char *yaml = ag_buf_steal(b, NULL);
    const char *at = yaml && age && *age ? strstr(yaml, "      - name: public-reads\n") : NULL;
    if (!at || strspn(age, "0123456789.smh") != strlen(age)) return yaml;
    struct ag_buf o;
    ag_buf_init(&o);
    ag_buf_append(&o, yaml, (size_t)(at - yaml));
    ag_buf_printf(
        &o,
        "      - name: catalog\n"
        "        match:\n"
        "          - uri: {prefix: /api/v1/products}\n"
        "            method: {regex: \"GET|HEAD\"}\n"
        "        route: [{destination: {host: platform}}]\n"
        "        timeout: 10s\n"
        "        retries: {attempts: 2, perTryTimeout: 5s, retryOn: \"connect-failure,reset\"}\n"
        "        rateLimit: {requests: 5000, per: 1s, burst: 10000, key: ip}\n"
        "        cache: {maxAge: %s}\n",
        age);
    int rc = ag_buf_puts(&o, at);
    ag_free(yaml);
    if (rc) {
        ag_buf_free(&o);
        return NULL;
    }
    return ag_buf_steal(&o, NULL);
}

char *ag_cli_run_gateway_yaml(const char *listen, const char *secret, const char *upstream)
{
    struct ag_buf b;
    ag_buf_init(&b);
    /* open connections per client address: 256, or AGORA_MAX_CONNS_PER_PEER (a load
     * generator or a proxy in front is one peer with many connections) */
    const char *env = getenv("AGORA_MAX_CONNS_PER_PEER");
    long per_peer = env ? strtol(env, NULL, 10) : 256;
    if (per_peer < 1 || per_peer > 1000000) per_peer = 256;
    int rc = ag_buf_printf(&b, run_head_yaml, listen, per_peer);
    if (!rc) rc = ag_cli_jwt_yaml(&b, secret);
    if (!rc) rc = ag_buf_printf(&b, template_yaml, upstream);
    if (rc) {
        ag_buf_free(&b);
        return NULL;
    }
    return with_catalog_cache(&b);
}
