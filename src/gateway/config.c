/*
 * Compiling the gateway configuration: YAML text -> an immutable snapshot.
 *
 * Two passes. libcyaml loads the text against the schema (schema.c), refusing
 * syntax errors, unknown keys and wrong types with its own line-numbered
 * messages. Then each section is compiled: DestinationRules into mesh clusters,
 * VirtualService http routes (in order, first match wins) into gw_route, jwt
 * issuers into key sets, limits into keyed GCRA limiters. Errors found here are
 * reported as "file:line: path: reason" using the line index of yamlpos.c.
 *
 * A snapshot is reference-counted: the gateway holds one reference for the
 * current configuration, each worker loop one for the snapshot its new
 * requests use, the health checker one for the clusters it checks.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/internal.h"

struct cctx {
    const struct gw_compile_env *env;
    struct ag__yamlpos *pos;
    struct ag_err *err;
    struct gw_conf *conf;
    const struct y_root *root;
};

static int cerr(struct cctx *x, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int cerr(struct cctx *x, const char *path, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    unsigned line = ag__yamlpos_line(x->pos, path);
    return ag_err_set(x->err, AG_ECONFIG, "%s:%u: %s: %s",
                      x->env->source ? x->env->source : "config", line, path, msg);
}

/* ---- scalars ---- */

int ag__gw_duration(const char *s, uint64_t *ns)
{
    if (!s || !*s) return AG_EINVAL;
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0) return AG_EINVAL;
    double mul;
    if (!strcmp(end, "ns"))
        mul = 1;
    else if (!strcmp(end, "us"))
        mul = 1e3;
    else if (!strcmp(end, "ms"))
        mul = 1e6;
    else if (!strcmp(end, "s"))
        mul = 1e9;
    else if (!strcmp(end, "m"))
        mul = 60e9;
    else if (!strcmp(end, "h"))
        mul = 3600e9;
    else
        return AG_EINVAL;
    double r = v * mul;
    if (r > 1e19) return AG_EINVAL;
    *ns = (uint64_t)r;
    return 0;
}

/* Duration field: absent leaves *ns unchanged. */
static int dur(struct cctx *x, const char *path, const char *s, uint64_t *ns)
{
    if (!s) return 0;
    if (ag__gw_duration(s, ns))
        return cerr(x, path, "'%s' is not a duration (e.g. 250ms, 2s, 5m)", s);
    return 0;
}

static int dur_ms(struct cctx *x, const char *path, const char *s, uint32_t *ms)
{
    uint64_t ns = (uint64_t)*ms * 1000000;
    int rc = dur(x, path, s, &ns);
    if (!rc) *ms = (uint32_t)AG_MIN(ns / 1000000, UINT32_MAX);
    return rc;
}

/* ---- DestinationRule -> cluster ---- */

static void labels_into(const struct y_labels *l, const char **out, size_t *n, char store[4][80])
{
    *n = 0;
    if (!l) return;
    const char *keys[] = {"version", "zone", "track", "app"};
    const char *vals[] = {l->version, l->zone, l->track, l->app};
    for (size_t i = 0; i < 4; i++) {
        if (!vals[i]) continue;
        snprintf(store[*n], 80, "%s=%s", keys[i], vals[i]);
        out[*n] = store[*n];
        (*n)++;
    }
}

static int compile_pool(struct cctx *x, const char *base, const struct y_pool *p,
                        struct ag_http_upstream_config *o)
{
    char path[160];
    if (!p) return 0;
    if (p->tcp) {
        o->max_connections = p->tcp->maxConnections;
        snprintf(path, sizeof path, "%s.connectionPool.tcp.connectTimeout", base);
        if (dur_ms(x, path, p->tcp->connectTimeout, &o->connect_timeout_ms)) return AG_ECONFIG;
    }
    if (p->http) {
        o->max_pending = p->http->http1MaxPendingRequests;
        o->max_requests_per_conn = p->http->maxRequestsPerConnection;
        snprintf(path, sizeof path, "%s.connectionPool.http.idleTimeout", base);
        if (dur_ms(x, path, p->http->idleTimeout, &o->idle_timeout_ms)) return AG_ECONFIG;
    }
    return 0;
}

static int compile_lb(struct cctx *x, const char *base, const struct y_lb *lb,
                      struct ag_mesh_cluster_config *c)
{
    char path[160];
    if (!lb) return 0;
    if (lb->consistentHash) {
        c->lb = AG_MESH_LB_HASH;
        return 0;
    }
    if (!lb->simple) return 0;
    static const struct {
        const char *n;
        enum ag_mesh_lb v;
    } names[] = {{"ROUND_ROBIN", AG_MESH_LB_ROUND_ROBIN},
                 {"LEAST_REQUEST", AG_MESH_LB_LEAST_REQUEST},
                 {"LEAST_CONN", AG_MESH_LB_LEAST_REQUEST},
                 {"RANDOM", AG_MESH_LB_RANDOM}};
    for (size_t i = 0; i < AG_ARRAY_SIZE(names); i++)
        if (!strcmp(lb->simple, names[i].n)) return c->lb = names[i].v, 0;
    snprintf(path, sizeof path, "%s.loadBalancer.simple", base);
    return cerr(x, path, "unknown load balancer '%s' (ROUND_ROBIN, LEAST_REQUEST, RANDOM)",
                lb->simple);
}

static int compile_outlier(struct cctx *x, const char *base, const struct y_tp *tp,
                           struct ag_mesh_cluster_config *c)
{
    char path[160];
    c->outlier.panic_threshold_pct = 50;
    const struct y_outlier *o = tp ? tp->outlierDetection : NULL;
    if (o) {
        c->outlier.consecutive_5xx = o->consecutive5xxErrors;
        c->outlier.consecutive_gateway = o->consecutiveGatewayErrors;
        c->outlier.max_ejection_pct = o->maxEjectionPercent;
        if (o->minHealthPercent < 0 || o->minHealthPercent > 100) {
            snprintf(path, sizeof path, "%s.outlierDetection.minHealthPercent", base);
            return cerr(x, path, "must be 0..100");
        }
        if (o->minHealthPercent) c->outlier.panic_threshold_pct = (uint32_t)o->minHealthPercent;
        snprintf(path, sizeof path, "%s.outlierDetection.interval", base);
        if (dur(x, path, o->interval, &c->outlier.interval_ns)) return AG_ECONFIG;
        snprintf(path, sizeof path, "%s.outlierDetection.baseEjectionTime", base);
        if (dur(x, path, o->baseEjectionTime, &c->outlier.base_ejection_ns)) return AG_ECONFIG;
        snprintf(path, sizeof path, "%s.outlierDetection.maxEjectionTime", base);
        if (dur(x, path, o->maxEjectionTime, &c->outlier.max_ejection_ns)) return AG_ECONFIG;
    }
    const struct y_hc *h = tp ? tp->healthCheck : NULL;
    if (h) {
        snprintf(path, sizeof path, "%s.healthCheck.path", base);
        if (!h->path || h->path[0] != '/')
            return cerr(x, path, "a health check needs a path starting with /");
        c->health.path = h->path;
        c->health.healthy_threshold = h->healthyThreshold;
        c->health.unhealthy_threshold = h->unhealthyThreshold;
        snprintf(path, sizeof path, "%s.healthCheck.interval", base);
        if (dur(x, path, h->interval, &c->health.interval_ns)) return AG_ECONFIG;
        snprintf(path, sizeof path, "%s.healthCheck.timeout", base);
        if (dur(x, path, h->timeout, &c->health.timeout_ns)) return AG_ECONFIG;
    }
    return 0;
}

/* trafficPolicy.tls: a client TLS context for the cluster's pools, owned by the
 * configuration (freed after its clusters). Files are loaded here, so a bad one
 * refuses the configuration with its path. */
static int compile_upstream_tls(struct cctx *x, const char *base, const struct y_upstls *t,
                                struct ag_http_upstream_config *pool)
{
    char path[160];
    snprintf(path, sizeof path, "%s.tls", base);
    const char *mode = t->mode ? t->mode : "SIMPLE";
    if (!strcmp(mode, "DISABLE")) return 0;
    bool mutual = !strcmp(mode, "MUTUAL");
    if (!mutual && strcmp(mode, "SIMPLE"))
        return cerr(x, path, "mode must be DISABLE, SIMPLE or MUTUAL, not '%s'", mode);
    if (mutual && (!t->clientCertificate || !t->privateKey))
        return cerr(x, path, "MUTUAL needs clientCertificate and privateKey");
    struct ag_tls_client_config tc = {.ca_file = t->caCertificates,
                                      .cert_file = mutual ? t->clientCertificate : NULL,
                                      .key_file = mutual ? t->privateKey : NULL,
                                      .server_name = t->sni,
                                      .insecure = t->insecureSkipVerify};
    struct gw_conf *conf = x->conf;
    struct ag_tls_client **v = ag_realloc(conf->tls_clients, (conf->ntls_clients + 1) * sizeof *v);
    if (!v) return AG_ENOMEM;
    conf->tls_clients = v;
    struct ag_err e;
    if (ag_tls_client_new(&tc, &pool->tls, &e)) return cerr(x, path, "%s", e.msg);
    v[conf->ntls_clients++] = pool->tls;
    return 0;
}

static int compile_policies(struct cctx *x, const char *base, const struct y_tp *tp,
                            struct ag_mesh_cluster_config *c)
{
    char path[160];
    if (!tp) return 0;
    if (tp->circuitBreaker) {
        c->cb_failures = tp->circuitBreaker->consecutiveErrors;
        snprintf(path, sizeof path, "%s.circuitBreaker.openTime", base);
        if (dur(x, path, tp->circuitBreaker->openTime, &c->cb_open_ns)) return AG_ECONFIG;
    }
    if (tp->retryBudget) {
        c->retry_budget_ratio = tp->retryBudget->ratio;
        c->retry_budget_min = tp->retryBudget->minRetriesPerSecond;
    }
    if (compile_pool(x, base, tp->connectionPool, &c->pool)) return AG_ECONFIG;
    if (tp->tls && compile_upstream_tls(x, base, tp->tls, &c->pool)) return AG_ECONFIG;
    return compile_lb(x, base, tp->loadBalancer, c);
}

/* `discovery: {registry, context}` instead of endpoints: a dynamic cluster the
 * registry's resolver keeps at the live members serving the context ("*": any
 * member). One registry per configuration. */
static int compile_discovery(struct cctx *x, const char *base, const struct y_dr *d,
                             struct ag_mesh_cluster_config *c)
{
    char path[160];
    const struct y_discovery *y = d->discovery;
    snprintf(path, sizeof path, "%s.discovery", base);
    if (d->endpoints_count) return cerr(x, path, "give endpoints or discovery, not both");
    if (d->subsets_count)
        return cerr(x, path, "discovered endpoints have no labels: subsets need endpoints");
    snprintf(path, sizeof path, "%s.discovery.registry", base);
    if (!y->registry || strncmp(y->registry, "postgresql://", 13) != 0)
        return cerr(x, path, "the registry is a postgresql:// URI (the read models' database)");
    if (x->conf->registry && strcmp(x->conf->registry, y->registry) != 0)
        return cerr(x, path, "one registry per gateway: every discovery names the same URI");
    snprintf(path, sizeof path, "%s.discovery.context", base);
    bool ok = y->context && *y->context && strlen(y->context) < 32;
    for (const char *p = y->context; ok && *p; p++)
        ok = (*p >= 'a' && *p <= 'z') || (*p == '*' && p == y->context && !p[1]);
    if (!ok)
        return cerr(x, path,
                    "a context name (customers, catalog, ordering, inventory, payments, "
                    "shipping, sagas) or \"*\" (any member)");
    if (!x->conf->registry && !(x->conf->registry = ag_strdup(y->registry))) return AG_ENOMEM;
    c->dynamic = true;
    c->nendpoints = 0;
    return 0;
}

static int compile_endpoints(struct cctx *x, const char *base, const struct y_dr *d,
                             struct ag_mesh_cluster_config *c, char (*hosts)[AG_HTTP_HOST_MAX],
                             char (*labels)[4][80])
{
    char path[160];
    if (d->discovery) return compile_discovery(x, base, d, c);
    if (!d->endpoints_count || d->endpoints_count > AG_MESH_MAX_ENDPOINTS) {
        snprintf(path, sizeof path, "%s.endpoints", base);
        return cerr(x, path, "a destination needs 1..%d endpoints", AG_MESH_MAX_ENDPOINTS);
    }
    for (unsigned i = 0; i < d->endpoints_count; i++) {
        snprintf(path, sizeof path, "%s.endpoints[%u].address", base, i);
        struct ag_err e;
        const char *a = d->endpoints[i].address;
        if (a && strncmp(a, "unix:", 5) == 0) { /* a Unix-domain socket: unix:/abs/path */
            if (a[5] != '/' || strlen(a) >= AG_HTTP_HOST_MAX)
                return cerr(x, path, "'%s' is not unix:/absolute/path (at most %d bytes)", a,
                            AG_HTTP_HOST_MAX - 6);
            snprintf(hosts[i], AG_HTTP_HOST_MAX, "%s", a);
            c->endpoints[i].port = 0;
        } else if (!a || ag_hostport_parse(a, AG_HOSTPORT_NUMERIC, hosts[i], AG_HTTP_HOST_MAX,
                                           &c->endpoints[i].port, &e)) {
            return cerr(x, path, "not a numeric HOST:PORT or unix:/path: %s",
                        a ? e.msg : "missing");
        }
        c->endpoints[i].host = hosts[i];
        labels_into(d->endpoints[i].labels, c->endpoints[i].labels, &c->endpoints[i].nlabels,
                    labels[i]);
    }
    c->nendpoints = d->endpoints_count;
    return 0;
}

static int compile_cluster(struct cctx *x, unsigned i)
{
    const struct y_dr *d = &x->root->destinationRules[i];
    char base[64], path[160];
    snprintf(base, sizeof base, "destinationRules[%u]", i);
    snprintf(path, sizeof path, "%s.host", base);
    if (!d->host || !*d->host) return cerr(x, path, "a DestinationRule needs a host");
    for (size_t k = 0; k < i; k++)
        if (!strcmp(x->conf->cluster_hosts[k], d->host))
            return cerr(x, path, "host '%s' defined twice", d->host);
    struct ag_mesh_cluster_config *c = ag_calloc(1, sizeof *c);
    char(*hosts)[AG_HTTP_HOST_MAX] = ag_calloc(AG_MESH_MAX_ENDPOINTS, AG_HTTP_HOST_MAX);
    char(*labels)[4][80] = ag_calloc(AG_MESH_MAX_ENDPOINTS + AG_MESH_MAX_SUBSETS, sizeof *labels);
    int rc = AG_ENOMEM;
    if (!c || !hosts || !labels) goto out_free;
    c->name = d->host;
    c->clock = x->env->clock;
    c->rng = x->env->rng;
    char tp[96];
    snprintf(tp, sizeof tp, "%s.trafficPolicy", base);
    if ((rc = compile_endpoints(x, base, d, c, hosts, labels)) ||
        (rc = compile_policies(x, tp, d->trafficPolicy, c)) ||
        (rc = compile_outlier(x, tp, d->trafficPolicy, c)))
        goto out_free;
    if (d->subsets_count > AG_MESH_MAX_SUBSETS) {
        rc = cerr(x, base, "too many subsets (max %d)", AG_MESH_MAX_SUBSETS);
        goto out_free;
    }
    for (unsigned s = 0; s < d->subsets_count; s++) {
        c->subsets[s].name = d->subsets[s].name;
        labels_into(d->subsets[s].labels, c->subsets[s].labels, &c->subsets[s].nlabels,
                    labels[AG_MESH_MAX_ENDPOINTS + s]);
    }
    c->nsubsets = d->subsets_count;
    struct ag_err e;
    if ((rc = ag_mesh_cluster_new(c, &x->conf->clusters[i], &e)) != 0) {
        rc = cerr(x, base, "%s", e.msg);
    } else {
        x->conf->nclusters = i + 1;
        const struct y_lb *lb = d->trafficPolicy ? d->trafficPolicy->loadBalancer : NULL;
        const char *hh = lb && lb->consistentHash ? lb->consistentHash->httpHeaderName : NULL;
        if (!(x->conf->cluster_hosts[i] = ag_strdup(d->host))) rc = AG_ENOMEM;
        if (hh && !(x->conf->cluster_hash_hdr[i] = ag_strdup(hh))) rc = AG_ENOMEM;
        if (d->discovery && !(x->conf->cluster_ctx[i] = ag_strdup(d->discovery->context)))
            rc = AG_ENOMEM;
    }
out_free:
    ag_free(labels);
    ag_free(hosts);
    ag_free(c);
    return rc;
}

/* ---- VirtualService http route ---- */

static int strmatch(struct cctx *x, const char *path, const struct y_strmatch *m,
                    struct gw_strmatch *o, bool uri)
{
    o->kind = GW_M_ANY;
    if (!m) return 0;
    int set = !!m->exact + !!m->prefix + !!m->regex + !!m->pattern;
    if (set != 1 || (m->pattern && !uri))
        return cerr(x, path, "give exactly one of exact, prefix, regex%s", uri ? ", pattern" : "");
    const char *v = m->exact     ? m->exact
                    : m->prefix  ? m->prefix
                    : m->pattern ? m->pattern
                                 : m->regex;
    o->kind = m->exact     ? GW_M_EXACT
              : m->prefix  ? GW_M_PREFIX
              : m->pattern ? GW_M_PATTERN
                           : GW_M_REGEX;
    if (uri && o->kind != GW_M_REGEX && v[0] != '/')
        return cerr(x, path, "'%s' must start with /", v);
    if (!(o->value = ag_strdup(v))) return AG_ENOMEM;
    if (o->kind == GW_M_REGEX) {
        char *anchored = ag_calloc(1, strlen(v) + 5); /* "^(" v ")$" NUL */
        if (!anchored) return AG_ENOMEM;
        sprintf(anchored, "^(%s)$", v);
        int r = regcomp(&o->re, anchored, REG_EXTENDED | REG_NOSUB);
        ag_free(anchored);
        if (r) {
            o->kind = GW_M_ANY;
            return cerr(x, path, "bad regular expression '%s'", v);
        }
    }
    return 0;
}

static int compile_headers(struct cctx *x, const char *base, const struct y_match *m,
                           struct gw_match *o)
{
    char path[400];
    if (!m->headers_count) return 0;
    if (!(o->headers = ag_calloc(m->headers_count, sizeof *o->headers))) return AG_ENOMEM;
    for (unsigned h = 0; h < m->headers_count; h++) {
        o->nheaders = h + 1; /* counted before it compiles: a failure frees it too */
        const struct y_hdrmatch *y = &m->headers[h];
        snprintf(path, sizeof path, "%s.headers[%u]", base, h);
        if (!y->name) return cerr(x, path, "a header match needs a name");
        struct y_strmatch sm = {y->exact, y->prefix, y->regex, NULL};
        struct gw_strmatch *g = &o->headers[h];
        if (y->present && !y->exact && !y->prefix && !y->regex)
            g->kind = GW_M_PRESENT;
        else if (strmatch(x, path, &sm, g, false))
            return AG_ECONFIG;
        g->hvalue = g->value;
        if (!(g->value = ag_strdup(y->name))) return AG_ENOMEM;
    }
    return 0;
}

static int compile_matches(struct cctx *x, const char *base, const struct y_http *h,
                           struct gw_route *r)
{
    char path[320];
    if (!h->match_count) return 0;
    if (!(r->matches = ag_calloc(h->match_count, sizeof *r->matches))) return AG_ENOMEM;
    for (unsigned i = 0; i < h->match_count; i++) {
        r->nmatches = i + 1; /* counted before it compiles: a failure frees it too */
        snprintf(path, sizeof path, "%s.match[%u].uri", base, i);
        if (strmatch(x, path, h->match[i].uri, &r->matches[i].uri, true)) return AG_ECONFIG;
        snprintf(path, sizeof path, "%s.match[%u].method", base, i);
        if (strmatch(x, path, h->match[i].method, &r->matches[i].method, false)) return AG_ECONFIG;
        snprintf(path, sizeof path, "%s.match[%u]", base, i);
        if (compile_headers(x, path, &h->match[i], &r->matches[i])) return AG_ECONFIG;
    }
    return 0;
}

static int find_cluster(const struct gw_conf *c, const char *host)
{
    for (size_t i = 0; i < c->nclusters; i++)
        if (!strcmp(c->cluster_hosts[i], host)) return (int)i;
    return -1;
}

static int compile_dests(struct cctx *x, const char *base, const struct y_http *h,
                         struct gw_route *r)
{
    char path[320];
    snprintf(path, sizeof path, "%s.route", base);
    if (!h->route_count) return cerr(x, path, "a route needs at least one destination");
    if (!(r->dests = ag_calloc(h->route_count, sizeof *r->dests))) return AG_ENOMEM;
    for (unsigned i = 0; i < h->route_count; i++, r->ndests++) {
        const struct y_rdest *y = &h->route[i];
        snprintf(path, sizeof path, "%s.route[%u].destination.host", base, i);
        if (!y->destination || !y->destination->host)
            return cerr(x, path, "missing destination host");
        int ci = find_cluster(x->conf, y->destination->host);
        if (ci < 0) return cerr(x, path, "no DestinationRule for host '%s'", y->destination->host);
        r->dests[i].cluster = x->conf->clusters[ci];
        r->dests[i].subset = -1;
        if (y->destination->subset) {
            snprintf(path, sizeof path, "%s.route[%u].destination.subset", base, i);
            r->dests[i].subset =
                ag_mesh_cluster_subset(r->dests[i].cluster, y->destination->subset);
            if (r->dests[i].subset < 0)
                return cerr(x, path, "host '%s' has no subset '%s'", y->destination->host,
                            y->destination->subset);
        }
        snprintf(path, sizeof path, "%s.route[%u].weight", base, i);
        if (y->weight < 0 || y->weight > 100) return cerr(x, path, "weight must be 0..100");
        r->dests[i].weight = h->route_count == 1 && y->weight == 0 ? 100 : (uint32_t)y->weight;
        r->total_weight += r->dests[i].weight;
    }
    snprintf(path, sizeof path, "%s.route", base);
    if (r->total_weight != 100)
        return cerr(x, path, "weights add up to %u, not 100", r->total_weight);
    return 0;
}

static int compile_retries_fault(struct cctx *x, const char *base, const struct y_http *h,
                                 struct gw_route *r)
{
    char path[320];
    r->timeout_ms = 15000;
    snprintf(path, sizeof path, "%s.timeout", base);
    if (dur_ms(x, path, h->timeout, &r->timeout_ms)) return AG_ECONFIG;
    r->retry.retry_on =
        AG_MESH_RETRY_CONNECT_FAILURE | AG_MESH_RETRY_RESET | AG_MESH_RETRY_GATEWAY_ERROR;
    if (h->retries) {
        r->retry.attempts = h->retries->attempts;
        snprintf(path, sizeof path, "%s.retries.perTryTimeout", base);
        if (dur_ms(x, path, h->retries->perTryTimeout, &r->retry.per_try_timeout_ms))
            return AG_ECONFIG;
        snprintf(path, sizeof path, "%s.retries.backoff", base);
        if (dur_ms(x, path, h->retries->backoff, &r->retry.backoff_ms)) return AG_ECONFIG;
        struct ag_err e;
        snprintf(path, sizeof path, "%s.retries.retryOn", base);
        if (h->retries->retryOn &&
            ag_mesh_retry_on_parse(h->retries->retryOn, &r->retry.retry_on, &e))
            return cerr(x, path, "%s", e.msg);
    }
    const struct y_fault *f = h->fault;
    if (f && f->delay) {
        r->delay_pct = f->delay->percentage ? f->delay->percentage->value : 100;
        snprintf(path, sizeof path, "%s.fault.delay.fixedDelay", base);
        if (!f->delay->fixedDelay || dur_ms(x, path, f->delay->fixedDelay, &r->delay_ms))
            return cerr(x, path, "a delay fault needs a fixedDelay duration");
    }
    if (f && f->abort) {
        r->abort_pct = f->abort->percentage ? f->abort->percentage->value : 100;
        r->abort_status = f->abort->httpStatus;
        snprintf(path, sizeof path, "%s.fault.abort.httpStatus", base);
        if (r->abort_status < 200 || r->abort_status > 599)
            return cerr(x, path, "httpStatus must be 200..599");
    }
    if (r->delay_pct < 0 || r->delay_pct > 100 || r->abort_pct < 0 || r->abort_pct > 100)
        return cerr(x, base, "fault percentages must be 0..100");
    return 0;
}

static int dup_list(char **src, unsigned n, char ***dst, size_t *dn)
{
    if (!n) return 0;
    if (!(*dst = ag_calloc(n, sizeof **dst))) return AG_ENOMEM;
    for (unsigned i = 0; i < n; i++, (*dn)++)
        if (!((*dst)[i] = ag_strdup(src[i]))) return AG_ENOMEM;
    return 0;
}

static int compile_limit(struct cctx *x, const char *base, const struct y_rl *y, struct gw_route *r)
{
    char path[320];
    r->key_kind = GW_KEY_USER_OR_IP;
    if (!y) return 0;
    snprintf(path, sizeof path, "%s.rateLimit.requests", base);
    if (!y->requests) return cerr(x, path, "a rate limit needs requests > 0");
    uint64_t per = 1000000000ull;
    snprintf(path, sizeof path, "%s.rateLimit.per", base);
    if (dur(x, path, y->per, &per) || !per) return cerr(x, path, "per must be a positive duration");
    const char *k = y->key ? y->key : "user";
    if (!strcmp(k, "user"))
        r->key_kind = GW_KEY_USER_OR_IP;
    else if (!strcmp(k, "ip"))
        r->key_kind = GW_KEY_IP;
    else if (!strcmp(k, "apiKey"))
        r->key_kind = GW_KEY_API_KEY, k = "header:x-api-key";
    else if (strncmp(k, "header:", 7) != 0 || !k[7]) {
        snprintf(path, sizeof path, "%s.rateLimit.key", base);
        return cerr(x, path, "key must be user, ip, apiKey or header:NAME");
    } else
        r->key_kind = GW_KEY_HEADER;
    if (!strncmp(k, "header:", 7) && !(r->key_header = ag_strdup(k + 7))) return AG_ENOMEM;
    r->rate = (struct ag_rate){y->requests, per, y->burst ? y->burst : 1};
    struct ag_ratelimit_config rc = {
        .algo = AG_RL_GCRA, .rate = r->rate, .max_keys = y->maxKeys, .clock = x->env->clock};
    struct ag_err e;
    if (ag_ratelimit_new(&rc, &r->limiter, &e)) return cerr(x, base, "rateLimit: %s", e.msg);
    return 0;
}

static int route_metrics(struct cctx *x, struct gw_route *r)
{
    if (!x->env->metrics) return 0;
    static const char *const lbl[] = {"route", "code"};
    struct ag_obs_family *f, *h;
    static const struct ag_obs_family_spec
        requests = {AG_OBS_COUNTER, "agora_gateway_requests_total",
                    "Requests answered by the gateway, by route and status class", 2, lbl},
        duration = {AG_OBS_HISTOGRAM, "agora_gateway_request_duration_seconds",
                    "Time from request to answer, by route", 1, lbl};
    if (ag_obs_family_define(x->env->metrics, &requests, &f) ||
        ag_obs_family_define(x->env->metrics, &duration, &h))
        return AG_ENOMEM;
    static const char *const classes[] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int i = 0; i < 6; i++) {
        const char *v[] = {r->name, classes[i]};
        if (ag_obs_series_get(f, v, &r->m_req[i])) return AG_ENOMEM;
    }
    const char *v[] = {r->name};
    static const struct ag_obs_family_spec limited = {
        AG_OBS_COUNTER, "agora_gateway_ratelimited_total",
        "Requests the gateway refused with 429 because the route's rate limit was exceeded, "
        "by route",
        1, lbl};
    struct ag_obs_family *l;
    if (ag_obs_family_define(x->env->metrics, &limited, &l) ||
        ag_obs_series_get(l, v, &r->m_limited))
        return AG_ENOMEM;
    return ag_obs_series_get(h, v, &r->m_dur);
}

static int compile_route(struct cctx *x, unsigned vi, unsigned hi)
{
    const struct y_vs *vs = &x->root->virtualServices[vi];
    const struct y_http *h = &vs->http[hi];
    struct gw_route *r = &x->conf->routes[x->conf->nroutes++];
    char base[96], name[160];
    snprintf(base, sizeof base, "virtualServices[%u].http[%u]", vi, hi);
    snprintf(name, sizeof name, "%s.%s", vs->name ? vs->name : "vs", h->name ? h->name : "");
    if (!h->name) snprintf(name, sizeof name, "%s.%u", vs->name ? vs->name : "vs", hi);
    if (!(r->name = ag_strdup(name))) return AG_ENOMEM;
    r->idempotency = h->idempotency ? *h->idempotency : true;
    r->max_body = h->maxBodyBytes;
    int rc;
    if (h->cache) { /* HTTP caching of the route's anonymous GETs (proxy.c) */
        uint32_t ms = 0;
        char path[128];
        snprintf(path, sizeof path, "%s.cache.maxAge", base);
        if (dur_ms(x, path, h->cache->maxAge, &ms)) return AG_ECONFIG;
        if (!h->cache->maxAge || ms < 1000)
            return cerr(x, path, "must be a duration of at least 1s");
        r->cache_max_age_s = ms / 1000;
    }
    if ((rc = compile_matches(x, base, h, r)) || (rc = compile_dests(x, base, h, r)) ||
        (rc = compile_retries_fault(x, base, h, r)) ||
        (rc = compile_limit(x, base, h->rateLimit, r)))
        return rc;
    if (h->rewrite && h->rewrite->uri) {
        if (h->rewrite->uri[0] != '/') return cerr(x, base, "rewrite.uri must start with /");
        if (!(r->rewrite = ag_strdup(h->rewrite->uri))) return AG_ENOMEM;
    }
    if (h->auth) {
        r->auth_required = h->auth->required || h->auth->roles_count || h->auth->scopes_count;
        if (dup_list(h->auth->roles, h->auth->roles_count, &r->roles, &r->nroles) ||
            dup_list(h->auth->scopes, h->auth->scopes_count, &r->scopes, &r->nscopes))
            return AG_ENOMEM;
        if (r->auth_required && !x->conf->jwt.nissuers)
            return cerr(x, base, "auth needs a jwt section with issuers");
    }
    return route_metrics(x, r);
}

static int compile_routes(struct cctx *x)
{
    size_t n = 0;
    for (unsigned v = 0; v < x->root->virtualServices_count; v++)
        n += x->root->virtualServices[v].http_count;
    if (!n) return 0;
    if (!(x->conf->routes = ag_calloc(n, sizeof *x->conf->routes))) return AG_ENOMEM;
    for (unsigned v = 0; v < x->root->virtualServices_count; v++)
        for (unsigned h = 0; h < x->root->virtualServices[v].http_count; h++) {
            int rc = compile_route(x, v, h);
            if (rc) return rc;
        }
    return 0;
}

/* ---- jwt ---- */

static int key_material(struct cctx *x, const char *path, const struct y_key *y, struct gw_key *k)
{
    bool hmac = k->alg <= GW_HS512;
    if (hmac) {
        const char *s = y->secretEnv && getenv(y->secretEnv) && *getenv(y->secretEnv)
                            ? getenv(y->secretEnv)
                            : y->secret;
        if (!s || strlen(s) < 32)
            return cerr(x, path,
                        "an HS key needs a secret of at least 32 bytes (secret or secretEnv)");
        if (!(k->key = (unsigned char *)ag_strdup(s))) return AG_ENOMEM;
        k->key_len = strlen(s);
        return 0;
    }
    if (y->publicKey) {
        if (!(k->key = (unsigned char *)ag_strdup(y->publicKey))) return AG_ENOMEM;
        k->key_len = strlen(y->publicKey);
    } else if (y->publicKeyFile) {
        if (ag_file_read(y->publicKeyFile, (char **)&k->key, &k->key_len))
            return cerr(x, path, "cannot read publicKeyFile '%s'", y->publicKeyFile);
    } else if (!y->privateKeyFile) {
        return cerr(x, path, "an %s key needs publicKey or publicKeyFile", ag__gw_alg_name(k->alg));
    }
    if (y->privateKeyFile && ag_file_read(y->privateKeyFile, &k->sign_pem, &k->sign_pem_len))
        return cerr(x, path, "cannot read privateKeyFile '%s'", y->privateKeyFile);
    return 0;
}

static int compile_issuer(struct cctx *x, unsigned i)
{
    const struct y_issuer *y = &x->root->jwt->issuers[i];
    struct gw_issuer *is = &x->conf->jwt.issuers[i];
    char path[160];
    snprintf(path, sizeof path, "jwt.issuers[%u].issuer", i);
    if (!y->issuer) return cerr(x, path, "an issuer needs its iss value");
    if (!(is->iss = ag_strdup(y->issuer))) return AG_ENOMEM;
    if (dup_list(y->audiences, y->audiences_count, &is->aud, &is->naud)) return AG_ENOMEM;
    if (y->keys_count && !(is->keys = ag_calloc(y->keys_count, sizeof *is->keys))) return AG_ENOMEM;
    for (unsigned k = 0; k < y->keys_count; k++) {
        const struct y_key *yk = &y->keys[k];
        struct gw_key *gk = &is->keys[is->nkeys++]; /* counted first: a failure frees it too */
        snprintf(path, sizeof path, "jwt.issuers[%u].keys[%u].alg", i, k);
        if (!yk->alg || ag__gw_alg_parse(yk->alg, &gk->alg))
            return cerr(x, path,
                        "alg must be one of HS256/384/512, RS256/384/512, ES256/384/512 (got '%s')",
                        yk->alg ? yk->alg : "");
        if (yk->kid && !(gk->kid = ag_strdup(yk->kid))) return AG_ENOMEM;
        snprintf(path, sizeof path, "jwt.issuers[%u].keys[%u]", i, k);
        int rc = key_material(x, path, yk, gk);
        if (rc) return rc;
    }
    if (y->jwksFile) {
        struct ag_err e;
        snprintf(path, sizeof path, "jwt.issuers[%u].jwksFile", i);
        if (ag__gw_jwks_load(is, y->jwksFile, &e)) return cerr(x, path, "%s", e.msg);
    }
    if (y->jwksUri) {
        snprintf(path, sizeof path, "jwt.issuers[%u].jwksUri", i);
        if (strncmp(y->jwksUri, "http://", 7) != 0)
            return cerr(x, path, "must be an http:// URL with a numeric host (got '%s')",
                        y->jwksUri);
        if (!(is->jwks_uri = ag_strdup(y->jwksUri))) return AG_ENOMEM;
        is->jwks_refresh_ns = 300000000000ull;
        snprintf(path, sizeof path, "jwt.issuers[%u].jwksRefresh", i);
        if (dur(x, path, y->jwksRefresh, &is->jwks_refresh_ns)) return AG_ECONFIG;
        char *doc = ag__gw_jwks_get(x->env->jwks, y->jwksUri);
        struct ag_err e;
        if (doc && ag__gw_jwks_add(is, doc, y->jwksUri, &e)) {
            ag_free(doc);
            return cerr(x, path, "%s", e.msg);
        }
        if (!doc) /* not reachable yet: tokens of this issuer get 401 until it is */
            AG_WARN("gateway.jwks_unavailable", AG_LS("uri", y->jwksUri),
                    AG_LS("detail", "no keys yet; the fetcher keeps trying"));
        ag_free(doc);
    }
    snprintf(path, sizeof path, "jwt.issuers[%u]", i);
    if (!is->nkeys && !is->jwks_uri) return cerr(x, path, "issuer '%s' has no keys", is->iss);
    return 0;
}

static int compile_jwt(struct cctx *x)
{
    const struct y_jwt *y = x->root->jwt;
    struct gw_jwt *j = &x->conf->jwt;
    j->skew_s = 30;
    j->max_lifetime_s = 24 * 3600;
    if (!y) return 0;
    uint64_t skew = j->skew_s * 1000000000ull;
    if (dur(x, "jwt.clockSkew", y->clockSkew, &skew)) return AG_ECONFIG;
    j->skew_s = skew / 1000000000ull;
    uint64_t life = j->max_lifetime_s * 1000000000ull;
    if (dur(x, "jwt.maxTokenLifetime", y->maxTokenLifetime, &life)) return AG_ECONFIG;
    j->max_lifetime_s = life / 1000000000ull;
    if (life && !j->max_lifetime_s)
        return cerr(x, "jwt.maxTokenLifetime", "must be at least 1s (or 0s for no limit)");
    if (!(j->roles_claim = ag_strdup(y->rolesClaim ? y->rolesClaim : "roles"))) return AG_ENOMEM;
    if (!y->issuers_count) return 0;
    if (!(j->issuers = ag_calloc(y->issuers_count, sizeof *j->issuers))) return AG_ENOMEM;
    for (unsigned i = 0; i < y->issuers_count; i++, j->nissuers++) {
        int rc = compile_issuer(x, i);
        if (rc) {
            j->nissuers++;
            return rc;
        }
    }
    return 0;
}

/* ---- gateway, bff ---- */

/* gateway.tls: certificate/key paths (loaded when the server starts, so a bad
 * file is reported there with its path), HSTS max-age, the redirect listener. */
static int compile_tls(struct cctx *x, const struct y_tls *t)
{
    struct gw_conf *c = x->conf;
    if (t->certificates_count > AG_ARRAY_SIZE(c->tls))
        return cerr(x, "gateway.tls.certificates", "at most %zu certificates",
                    AG_ARRAY_SIZE(c->tls));
    for (unsigned i = 0; i < t->certificates_count; i++) {
        const struct y_cert *y = &t->certificates[i];
        if (!y->cert || !y->key)
            return cerr(x, "gateway.tls.certificates", "every entry needs cert and key");
        if (strlen(y->cert) >= sizeof c->tls[0].cert || strlen(y->key) >= sizeof c->tls[0].key)
            return cerr(x, "gateway.tls.certificates", "path too long");
        snprintf(c->tls[i].cert, sizeof c->tls[i].cert, "%s", y->cert);
        snprintf(c->tls[i].key, sizeof c->tls[i].key, "%s", y->key);
    }
    c->ntls = t->certificates_count;
    c->hsts_max_age = t->hstsMaxAge;
    if (t->httpRedirect) {
        char host[64];
        uint16_t port;
        struct ag_err e;
        if (ag_hostport_parse(t->httpRedirect, AG_HOSTPORT_NUMERIC | AG_HOSTPORT_PORT0, host,
                              sizeof host, &port, &e))
            return cerr(x, "gateway.tls.httpRedirect", "not a numeric HOST:PORT: %s", e.msg);
        snprintf(c->http_redirect, sizeof c->http_redirect, "%s", t->httpRedirect);
    }
    return 0;
}

static int compile_gateway(struct cctx *x)
{
    struct gw_conf *c = x->conf;
    const struct y_gw *g = x->root->gateway;
    c->idem_ttl_ns = 24ull * 3600 * 1000000000ull;
    c->idem_max = 100000;
    c->max_body = 1024 * 1024;
    if (!g) return 0;
    if (g->listen) {
        char host[64];
        uint16_t port;
        struct ag_err e;
        if (ag_hostport_parse(g->listen, AG_HOSTPORT_NUMERIC | AG_HOSTPORT_PORT0, host, sizeof host,
                              &port, &e))
            return cerr(x, "gateway.listen", "not a numeric HOST:PORT: %s", e.msg);
        snprintf(c->listen, sizeof c->listen, "%s", g->listen);
    }
    if (g->tls && compile_tls(x, g->tls)) return AG_ECONFIG;
    c->workers = (int)AG_MIN(g->workers, 256u);
    if (g->maxBodyBytes) c->max_body = g->maxBodyBytes;
    if (g->idempotencyMaxEntries) c->idem_max = g->idempotencyMaxEntries;
    c->access_log = g->accessLog;
    c->resp_cache_bytes = g->responseCacheBytes;
    c->max_per_peer = g->maxConnectionsPerPeer;
    if (dur_ms(x, "gateway.firstByteTimeout", g->firstByteTimeout, &c->first_byte_ms))
        return AG_ECONFIG;
    if (g->firstByteTimeout && c->first_byte_ms == 0)
        return cerr(x, "gateway.firstByteTimeout", "must be a positive duration");
    return dur(x, "gateway.idempotencyTtl", g->idempotencyTtl, &c->idem_ttl_ns);
}

static int compile_bffcall(struct cctx *x, const char *name, const struct y_bffcall *y,
                           struct gw_bffcall *o, const char *def_path)
{
    char path[96];
    if (!y) return 0;
    snprintf(path, sizeof path, "bff.%s.host", name);
    int ci = y->host ? find_cluster(x->conf, y->host) : -1;
    if (ci < 0) return cerr(x, path, "no DestinationRule for host '%s'", y->host ? y->host : "");
    o->cluster = x->conf->clusters[ci];
    o->timeout_ms = 500;
    snprintf(path, sizeof path, "bff.%s.timeout", name);
    if (dur_ms(x, path, y->timeout, &o->timeout_ms)) return AG_ECONFIG;
    snprintf(path, sizeof path, "bff.%s.path", name);
    if (y->path && y->path[0] != '/') return cerr(x, path, "must start with /");
    return (o->path = ag_strdup(y->path ? y->path : def_path)) ? 0 : AG_ENOMEM;
}

static int compile_bff(struct cctx *x)
{
    const struct y_bff *b = x->root->bff;
    if (!b) return 0;
    int rc =
        compile_bffcall(x, "customers", b->customers, &x->conf->bff[0], "/api/v1/customers/{user}");
    if (!rc)
        rc = compile_bffcall(x, "catalog", b->catalog, &x->conf->bff[1],
                             "/api/v1/products?limit={limit}");
    if (!rc)
        rc = compile_bffcall(x, "ordering", b->ordering, &x->conf->bff[2],
                             "/api/v1/orders?customerId={user}&limit={limit}");
    return rc;
}

/* ---- load ---- */

struct cylog {
    struct ag_buf buf; /* collected error lines */
};

static void cyaml_log_cb(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
{
    struct cylog *l = ctx;
    if (level < CYAML_LOG_ERROR || l->buf.len > 1500) return;
    ag_buf_vprintf(&l->buf, fmt, args);
}

static void *cyaml_mem_cb(void *ctx, void *ptr, size_t size)
{
    AG_UNUSED(ctx);
    if (size == 0) {
        ag_free(ptr);
        return NULL;
    }
    return ag_realloc(ptr, size);
}

static const cyaml_config_t *cy_config(struct cylog *l, cyaml_config_t *c)
{
    *c = (cyaml_config_t){.log_fn = cyaml_log_cb,
                          .log_ctx = l,
                          .mem_fn = cyaml_mem_cb,
                          .log_level = CYAML_LOG_ERROR,
                          .flags = CYAML_CFG_DEFAULT};
    return c;
}

/* Turn cyaml's multi-line messages into one line for err. */
static void flatten(char *s)
{
    for (char *p = s; *p; p++)
        if (*p == '\n') *p = p[1] ? ';' : '\0';
}

static int load_yaml(const char *text, size_t len, const char *source, struct y_root **root,
                     struct ag_err *err)
{
    struct cylog l;
    ag_buf_init(&l.buf);
    cyaml_config_t cfg;
    cyaml_err_t e = cyaml_load_data((const uint8_t *)text, len, cy_config(&l, &cfg), &ag__gw_schema,
                                    (cyaml_data_t **)root, NULL);
    int rc = 0;
    if (e != CYAML_OK) {
        if (l.buf.data) flatten(l.buf.data);
        rc = ag_err_set(err, AG_ECONFIG, "%s: %s (%s)", source ? source : "config",
                        l.buf.data ? l.buf.data : "invalid YAML", cyaml_strerror(e));
    } else if (!*root) {
        rc = ag_err_set(err, AG_ECONFIG, "%s: empty configuration", source ? source : "config");
    }
    ag_buf_free(&l.buf);
    return rc;
}

static void free_yaml(struct y_root *root)
{
    struct cylog l;
    ag_buf_init(&l.buf);
    cyaml_config_t cfg;
    if (root) cyaml_free(cy_config(&l, &cfg), &ag__gw_schema, root, 0);
    ag_buf_free(&l.buf);
}

static int compile_all(struct cctx *x)
{
    struct gw_conf *c = x->conf;
    const struct y_root *r = x->root;
    int rc = compile_gateway(x);
    if (rc) return rc;
    if (r->destinationRules_count) {
        c->clusters = ag_calloc(r->destinationRules_count, sizeof *c->clusters);
        c->cluster_hosts = ag_calloc(r->destinationRules_count, sizeof *c->cluster_hosts);
        c->cluster_hash_hdr = ag_calloc(r->destinationRules_count, sizeof *c->cluster_hash_hdr);
        c->cluster_ctx = ag_calloc(r->destinationRules_count, sizeof *c->cluster_ctx);
        if (!c->clusters || !c->cluster_hosts || !c->cluster_hash_hdr || !c->cluster_ctx)
            return AG_ENOMEM;
    }
    for (unsigned i = 0; i < r->destinationRules_count; i++)
        if ((rc = compile_cluster(x, i)) != 0) return rc;
    if ((rc = compile_jwt(x)) || (rc = compile_routes(x)) || (rc = compile_bff(x))) return rc;
    return 0;
}

int ag__gw_conf_compile(const char *text, size_t len, const struct gw_compile_env *env,
                        struct gw_conf **out, struct ag_err *err)
{
    struct y_root *root = NULL;
    int rc = load_yaml(text, len, env->source, &root, err);
    if (rc) return rc;
    struct gw_conf *c = ag_calloc(1, sizeof *c);
    struct cctx x = {env, ag__yamlpos_new(text, len), err, c, root};
    if (!c)
        rc = AG_ENOMEM;
    else
        rc = compile_all(&x);
    if (rc == AG_ENOMEM) ag_err_set(err, AG_ENOMEM, "out of memory compiling the configuration");
    ag__yamlpos_free(x.pos);
    free_yaml(root);
    if (rc) {
        if (c) {
            atomic_store(&c->refs, 1);
            ag__gw_conf_unref(c);
        }
        return rc;
    }
    atomic_store(&c->refs, 1);
    *out = c;
    return 0;
}

void ag__gw_conf_ref(struct gw_conf *c)
{
    atomic_fetch_add(&c->refs, 1);
}

static void strmatch_free(struct gw_strmatch *m)
{
    if (m->kind == GW_M_REGEX) regfree(&m->re);
    ag_free(m->value);
    ag_free(m->hvalue);
}

static void route_free(struct gw_route *r)
{
    for (size_t i = 0; i < r->nmatches; i++) {
        strmatch_free(&r->matches[i].uri);
        strmatch_free(&r->matches[i].method);
        for (size_t h = 0; h < r->matches[i].nheaders; h++)
            strmatch_free(&r->matches[i].headers[h]);
        ag_free(r->matches[i].headers);
    }
    ag_free(r->matches);
    for (size_t i = 0; i < r->nroles; i++) ag_free(r->roles[i]);
    for (size_t i = 0; i < r->nscopes; i++) ag_free(r->scopes[i]);
    ag_free(r->roles);
    ag_free(r->scopes);
    if (r->limiter) ag_ratelimit_free(r->limiter);
    ag_free(r->key_header);
    ag_free(r->rewrite);
    ag_free(r->dests);
    ag_free(r->name);
}

void ag__gw_conf_unref(struct gw_conf *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1) return;
    for (size_t i = 0; i < c->nroutes; i++) route_free(&c->routes[i]);
    ag_free(c->routes);
    for (size_t i = 0; i < c->nclusters && c->disc; i++)
        if (c->cluster_ctx[i]) ag_disc_unwatch(c->disc, c->clusters[i]);
    for (size_t i = 0; i < c->nclusters; i++) {
        if (c->cluster_ctx) ag_free(c->cluster_ctx[i]);
        ag_mesh_cluster_free(c->clusters[i]);
        ag_free(c->cluster_hosts[i]);
        ag_free(c->cluster_hash_hdr[i]);
    }
    ag_free(c->clusters);
    for (size_t i = 0; i < c->ntls_clients; i++) ag_tls_client_free(c->tls_clients[i]);
    ag_free(c->tls_clients);
    ag_free(c->cluster_hosts);
    ag_free(c->cluster_hash_hdr);
    ag_free(c->cluster_ctx);
    ag_free(c->registry);
    for (int i = 0; i < 3; i++) ag_free(c->bff[i].path);
    ag__gw_jwt_free(&c->jwt);
    ag_free(c);
}
