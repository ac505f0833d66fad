/*
 * Starting, reloading and stopping a gateway, and the signal loop of the CLI.
 *
 * Routing into the gateway. The HTTP router matches literal segments and
 * "{param}" segments, with no catch-all; the gateway registers, for every method
 * it proxies, the patterns "/", "/{p0}", "/{p0}/{p1}", ... up to eight segments
 * (the router's parameter limit) to one handler, and literal routes for its own
 * endpoints (/admin/..., /bff/..., /metrics, /health/...), which win over
 * parameters. Route selection proper happens in the handler against the
 * current snapshot (match.c), so a reload changes routing without touching the
 * router.
 *
 * HTTPS. With certificates (options or gateway.tls) the server speaks TLS
 * (src/http/tls.c) and answers carry HSTS; a reload (SIGHUP) re-reads the same
 * certificate files, so renewed certificates apply to new handshakes while open
 * connections go on. An optional second, plain listener answers every request
 * with 308 to the same path over https.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/internal.h"

#define CATCH_ALL_DEPTH 8

/* Compile the options' configuration (or `yaml`) for `gw` (its metrics and JWKS
 * cache), or for no gateway (NULL: a check, a token). */
static int compile_opts(const struct ag_gateway_options *o, const char *yaml, struct ag_gateway *gw,
                        struct gw_conf **out, struct ag_err *err)
{
    char *text = NULL;
    size_t len;
    const char *src = o->config_path && !yaml ? o->config_path : "config";
    if (yaml) {
        len = strlen(yaml);
    } else if (o->config_path) {
        int rc = ag_file_read(o->config_path, &text, &len);
        if (rc)
            return ag_err_set(err, rc == AG_ENOMEM ? rc : AG_ECONFIG, "%s: cannot read: %s",
                              o->config_path, ag_strerror(rc));
        yaml = text;
    } else if (o->config_yaml) {
        yaml = o->config_yaml;
        len = strlen(yaml);
    } else {
        return ag_err_set(err, AG_ECONFIG, "no configuration given");
    }
    struct gw_compile_env env = {o->clock ? o->clock : ag_clock_system(), NULL,
                                 gw ? gw->metrics : NULL, src, gw ? gw->jwks : NULL};
    int rc = ag__gw_conf_compile(yaml, len, &env, out, err);
    ag_free(text);
    return rc;
}

int ag_gateway_config_check(const struct ag_gateway_options *opts, struct ag_err *err)
{
    struct gw_conf *c;
    int rc = compile_opts(opts, NULL, NULL, &c, err);
    if (!rc) ag__gw_conf_unref(c);
    return rc;
}

int ag_gateway_token(const struct ag_gateway_options *opts,
                     const struct ag_gateway_token_request *req, char **token, struct ag_err *err)
{
    if (!req || !req->sub || !*req->sub)
        return ag_err_set(err, AG_EINVAL, "a token needs a subject");
    struct gw_conf *c;
    int rc = compile_opts(opts, NULL, NULL, &c, err);
    if (rc) return rc;
    const struct ag_clock *clk = opts->clock ? opts->clock : ag_clock_system();
    rc = ag__gw_jwt_mint(&c->jwt, req, ag_clock_now(clk) / 1000000000ull, token, err);
    ag__gw_conf_unref(c);
    return rc;
}

int ag_gateway_verify_token(const struct ag_gateway_options *opts, const char *token, char sub[128],
                            char roles[1100], struct ag_err *err)
{
    struct gw_conf *c;
    int rc = compile_opts(opts, NULL, NULL, &c, err);
    if (rc) return rc;
    const struct ag_clock *clk = opts->clock ? opts->clock : ag_clock_system();
    struct gw_principal p;
    enum gw_jwt_fail f =
        ag__gw_jwt_verify(&c->jwt, token, strlen(token), ag_clock_now(clk) / 1000000000ull, &p);
    ag__gw_conf_unref(c);
    if (f != GW_JWT_OK)
        return ag_err_set(err, AG_EINVAL, "invalid token: %s", ag__gw_jwt_fail_name(f));
    snprintf(sub, 128, "%s", p.sub);
    snprintf(roles, 1100, "%s", p.roles_csv);
    return 0;
}

/* ---- health-checker hand-over ---- */

static void conf_retain(void *ctx)
{
    ag__gw_conf_ref(ctx);
}
static void conf_release(void *ctx)
{
    ag__gw_conf_unref(ctx);
}

/* Discovery: the registry's resolver (started with the first configuration that
 * has a `discovery:`) watches this configuration's discovered clusters. */
static int discover(struct ag_gateway *gw, struct gw_conf *c, struct ag_err *err)
{
    if (!c->registry) return 0;
    if (gw->disc && strcmp(gw->disc_registry, c->registry) != 0)
        return ag_err_set(err, AG_ECONFIG, "the discovery registry cannot change on a reload");
    if (!gw->disc) {
        struct ag_disc_config dc = {.registry = c->registry};
        int rc = ag_disc_start(&dc, &gw->disc, err);
        if (rc) return rc;
        snprintf(gw->disc_registry, sizeof gw->disc_registry, "%s", c->registry);
    }
    c->disc = gw->disc; /* before watching: the unref of a refused one unwatches */
    for (size_t i = 0; i < c->nclusters; i++)
        if (c->cluster_ctx[i] && ag_disc_watch(gw->disc, c->cluster_ctx[i], c->clusters[i]))
            return ag_err_set(err, AG_ENOMEM, "out of memory");
    return 0;
}

static void check_clusters(struct ag_gateway *gw, struct gw_conf *c)
{
    ag_mesh_health_set(gw->checker, c->clusters, c->nclusters, conf_retain, conf_release, c);
}

static int ready_check(void *ud, struct ag_buf *detail)
{
    struct ag_gateway *gw = ud;
    if (atomic_load(&gw->stopping)) return ag_buf_puts(detail, "stopping"), AG_ECLOSED;
    return 0;
}

/* ---- router ---- */

static int register_catch_all(struct ag_gateway *gw)
{
    static const char *const methods[] = {"GET",   "HEAD",   "POST",   "PUT",
                                          "PATCH", "DELETE", "OPTIONS"};
    char pat[CATCH_ALL_DEPTH * 6 + 2];
    for (size_t m = 0; m < AG_ARRAY_SIZE(methods); m++) {
        int rc = ag_http_route(gw->router, methods[m], "/", ag__gw_proxy, gw);
        size_t o = 0;
        for (int d = 0; !rc && d < CATCH_ALL_DEPTH; d++) {
            o += (size_t)snprintf(pat + o, sizeof pat - o, "/{p%d}", d);
            rc = ag_http_route(gw->router, methods[m], pat, ag__gw_proxy, gw);
        }
        if (rc) return rc;
    }
    return 0;
}

static int build_router(struct ag_gateway *gw)
{
    int rc = ag_http_router_new(&gw->router);
    if (!rc) rc = ag_obs_health_new(&gw->health);
    if (!rc) rc = ag_obs_health_add(gw->health, AG_OBS_READY, "gateway", ready_check, gw);
    for (size_t i = 0; !rc && i < gw->opts.nready_checks; i++) {
        const struct ag_gateway_ready_check *c = &gw->opts.ready_checks[i];
        rc = ag_obs_health_add(gw->health, AG_OBS_READY, c->name, c->fn, c->ud);
    }
    struct ag_http_observe ob = {.metrics = gw->metrics,
                                 .health = gw->health,
                                 .request_id = true,
                                 .trace = true,
                                 .span_server = "gateway",
                                 .access_log = gw->conf->access_log,
                                 .ops_routes = true,
                                 .metrics_guard = ag__gw_require_admin,
                                 .metrics_guard_ud = gw};
    static const char *const reason[] = {"reason"};
    static const struct ag_obs_family_spec denied = {AG_OBS_COUNTER, "agora_authz_denied_total",
                                                     "Requests refused by authorization, by reason",
                                                     1, reason};
    if (!rc) rc = ag_obs_family_define(gw->metrics, &denied, &gw->denied);
    if (!rc) rc = ag_http_router_observe(gw->router, &ob);
    if (!rc && gw->metrics)
        rc = ag_obs_registry_collector(gw->metrics, ag__gw_breakers_collect, gw);
    if (!rc) rc = ag__gw_cluster_metrics_start(gw);
    if (!rc) rc = ag_http_route(gw->router, "GET", "/admin/upstreams", ag__gw_admin_upstreams, gw);
    if (!rc)
        rc = ag_http_route(gw->router, "GET", "/admin/circuit-breakers", ag__gw_admin_breakers, gw);
    if (!rc) rc = ag_http_route(gw->router, "GET", "/admin/config", ag__gw_admin_config, gw);
    if (!rc) rc = ag_http_route(gw->router, "GET", "/admin/cluster", ag__gw_admin_cluster, gw);
    if (!rc) rc = ag_http_route(gw->router, "GET", "/bff/{client}/home", ag__gw_bff, gw);
    if (!rc) rc = ag_http_route(gw->router, "GET", "/console", ag__gw_console_index, gw);
    if (!rc) rc = ag_http_route(gw->router, "GET", "/console/{file}", ag__gw_console_file, gw);
    if (!rc)
        rc =
            ag_http_route(gw->router, "POST", "/admin/console/session", ag__gw_console_session, gw);
    if (!rc) rc = register_catch_all(gw);
    return rc;
}

/* ---- start / stop ---- */

static int gw_alloc(const struct ag_gateway_options *o, struct ag_gateway **out)
{
    struct ag_gateway *gw = ag_calloc(1, sizeof *gw);
    if (!gw) return AG_ENOMEM;
    gw->opts = *o;
    gw->clock = o->clock ? o->clock : ag_clock_system();
    pthread_mutex_init(&gw->conf_lock, NULL);
    pthread_mutex_init(&gw->loops_lock, NULL);
    if ((o->config_path && !(gw->config_path = ag_strdup(o->config_path))) ||
        (o->config_yaml && !(gw->config_yaml = ag_strdup(o->config_yaml)))) {
        ag_free(gw->config_path);
        ag_free(gw);
        return AG_ENOMEM;
    }
    gw->opts.config_path = gw->config_path;
    gw->opts.config_yaml = gw->config_yaml;
    if (!(gw->jwks = ag__gw_jwks_cache_new()))
        return ag_free(gw->config_path), ag_free(gw->config_yaml), ag_free(gw), AG_ENOMEM;
    gw->metrics = o->metrics;
    if (!gw->metrics) {
        if (ag_obs_registry_new(&gw->metrics))
            return ag__gw_jwks_cache_free(gw->jwks), ag_free(gw->config_path),
                   ag_free(gw->config_yaml), ag_free(gw), AG_ENOMEM;
        gw->own_metrics = true;
    }
    *out = gw;
    return 0;
}

static void gw_free(struct ag_gateway *gw)
{
    if (gw->metrics) ag_obs_registry_collector_remove(gw->metrics, ag__gw_breakers_collect, gw);
    ag__gw_cluster_metrics_stop(gw);
    if (gw->checker) ag_mesh_health_stop(gw->checker);
    if (gw->server) ag_http_server_free(gw->server);
    if (gw->redirect) ag_http_server_free(gw->redirect);
    if (gw->redirect_router) ag_http_router_free(gw->redirect_router);
    ag_tls_server_free(gw->tls); /* after the servers: their connections hold sessions */
    if (gw->router) ag_http_router_free(gw->router);
    if (gw->health) ag_obs_health_free(gw->health);
    if (gw->conf) ag__gw_conf_unref(gw->conf);
    ag_disc_stop(gw->disc); /* after the last configuration unwatched its clusters */
    if (gw->idem) ag__gw_idem_free(gw->idem);
    ag_lru_free(gw->resp_cache);
    ag__gw_jwks_cache_free(gw->jwks); /* the fetcher has stopped */
    if (gw->own_metrics) ag_obs_registry_free(gw->metrics);
    pthread_mutex_destroy(&gw->conf_lock);
    pthread_mutex_destroy(&gw->loops_lock);
    ag_free(gw->config_path);
    ag_free(gw->config_yaml);
    ag_free(gw);
}

static int listen_addr(const struct ag_gateway *gw, char host[64], uint16_t *port,
                       struct ag_err *err)
{
    const char *s = gw->opts.listen       ? gw->opts.listen
                    : gw->conf->listen[0] ? gw->conf->listen
                                          : "127.0.0.1:8080";
    struct ag_err e;
    if (ag_hostport_parse(s, AG_HOSTPORT_PORT0, host, 64, port, &e))
        return ag_err_set(err, AG_EINVAL, "listen address: %s", e.msg);
    return 0;
}

/* ---- HTTPS ---- */

/* The certificates from the options, else from gateway.tls; none = plain HTTP. */
static int start_tls(struct ag_gateway *gw, struct ag_err *err)
{
    struct ag_tls_cert pairs[AG_ARRAY_SIZE(gw->conf->tls)];
    struct ag_tls_server_config tc = {gw->opts.tls_certs, gw->opts.ntls_certs};
    if (!tc.ncerts) {
        for (size_t i = 0; i < gw->conf->ntls; i++)
            pairs[i] = (struct ag_tls_cert){gw->conf->tls[i].cert, gw->conf->tls[i].key};
        tc = (struct ag_tls_server_config){pairs, gw->conf->ntls};
    }
    if (!tc.ncerts) return 0;
    return ag_tls_server_new(&tc, &gw->tls, err);
}

/* Plain HTTP on the redirect address: every request gets 308 to the same path
 * over https on the gateway's port, at the host the client asked for. */
static int redirect_handler(struct ag_http_req *req, void *ud)
{
    struct ag_gateway *gw = ud;
    const char *h = ag_http_req_header(req, "host");
    char host[256] = "127.0.0.1";
    if (h && *h && strlen(h) < sizeof host &&
        strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLM"
                  "NOPQRSTUVWXYZ0123456789.-:[]") == strlen(h)) {
        snprintf(host, sizeof host, "%s", h);
        char *colon = strrchr(host, ':'); /* drop the plain port (not inside [v6]) */
        if (colon && !strchr(colon, ']')) *colon = 0;
    }
    const char *q = ag_http_req_query(req);
    struct ag_buf loc;
    ag_buf_init(&loc);
    if (gw->redirect_to == 443)
        ag_buf_printf(&loc, "https://%s%s%s%s", host, ag_http_req_path(req), *q ? "?" : "", q);
    else
        ag_buf_printf(&loc, "https://%s:%u%s%s%s", host, gw->redirect_to, ag_http_req_path(req),
                      *q ? "?" : "", q);
    int rc = loc.data ? ag_http_resp_header(req, "Location", loc.data) : AG_ENOMEM;
    ag_buf_free(&loc);
    return ag_http_respond(req, rc ? 500 : 308, "text/plain", "", 0);
}

static int start_redirect(struct ag_gateway *gw, struct ag_err *err)
{
    const char *addr = gw->opts.http_redirect       ? gw->opts.http_redirect
                       : gw->conf->http_redirect[0] ? gw->conf->http_redirect
                                                    : NULL;
    if (!addr) return 0;
    if (!gw->tls) return ag_err_set(err, AG_ECONFIG, "an HTTP redirect needs TLS certificates");
    char host[64];
    uint16_t port;
    struct ag_err e;
    if (ag_hostport_parse(addr, AG_HOSTPORT_NUMERIC | AG_HOSTPORT_PORT0, host, sizeof host, &port,
                          &e))
        return ag_err_set(err, AG_EINVAL, "redirect address: %s", e.msg);
    gw->redirect_to = ag_http_server_port(gw->server);
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"};
    char pat[CATCH_ALL_DEPTH * 6 + 2];
    int rc = ag_http_router_new(&gw->redirect_router);
    for (size_t m = 0; !rc && m < AG_ARRAY_SIZE(methods); m++) {
        rc = ag_http_route(gw->redirect_router, methods[m], "/", redirect_handler, gw);
        size_t o = 0;
        for (int d = 0; !rc && d < CATCH_ALL_DEPTH; d++) {
            o += (size_t)snprintf(pat + o, sizeof pat - o, "/{p%d}", d);
            rc = ag_http_route(gw->redirect_router, methods[m], pat, redirect_handler, gw);
        }
    }
    struct ag_http_server_config sc = {.host = host, .port = port, .workers = 1};
    if (!rc) rc = ag_http_server_new(&sc, gw->redirect_router, &gw->redirect);
    if (rc) return ag_err_set(err, rc, "cannot set up the HTTP redirect");
    return ag_http_server_start(gw->redirect, err);
}

bool ag_gateway_https(const struct ag_gateway *gw)
{
    return gw->tls != NULL;
}

uint16_t ag_gateway_redirect_port(const struct ag_gateway *gw)
{
    return gw->redirect ? ag_http_server_port(gw->redirect) : 0;
}

static int start_server(struct ag_gateway *gw, struct ag_err *err)
{
    char host[64];
    uint16_t port = 0;
    int rc = listen_addr(gw, host, &port, err);
    if (rc) return rc;
    if ((rc = start_tls(gw, err))) return rc;
    struct ag_http_server_config sc = {.tls = gw->tls,
                                       .hsts_max_age = gw->conf->hsts_max_age,
                                       .host = host,
                                       .port = port,
                                       .workers =
                                           gw->opts.workers ? gw->opts.workers : gw->conf->workers,
                                       .max_body_bytes = gw->conf->max_body,
                                       .max_conns_per_peer = gw->conf->max_per_peer,
                                       .first_byte_timeout_ms = gw->conf->first_byte_ms};
    if ((rc = ag_http_server_new(&sc, gw->router, &gw->server)))
        return ag_err_set(err, rc, "cannot create the server");
    if ((rc = ag_http_server_start(gw->server, err))) return rc;
    return start_redirect(gw, err);
}

int ag_gateway_start(const struct ag_gateway_options *opts, struct ag_gateway **out,
                     struct ag_err *err)
{
    struct ag_gateway *gw;
    if (opts && opts->mesh_key && strlen(opts->mesh_key) < AG_MESH_KEY_MIN)
        return ag_err_set(err, AG_EINVAL,
                          "the mesh key (AGORA_MESH_KEY) needs %d characters at least",
                          AG_MESH_KEY_MIN);
    if (!opts || gw_alloc(opts, &gw))
        return ag_err_set(err, opts ? AG_ENOMEM : AG_EINVAL, "cannot start the gateway");
    int rc = compile_opts(&gw->opts, NULL, gw, &gw->conf, err);
    if (rc) goto out_free;
    gw->conf->generation = 1;
    atomic_store(&gw->generation, 1);
    struct ag_lru_config lc = {"gateway",
                               gw->conf->resp_cache_bytes ? gw->conf->resp_cache_bytes : 16u << 20,
                               0, gw->clock, gw->metrics};
    if ((rc = ag__gw_idem_new(gw->conf->idem_max, gw->conf->idem_ttl_ns, gw->clock, &gw->idem)) ||
        (rc = ag_lru_new(&lc, &gw->resp_cache)) || (rc = build_router(gw))) {
        ag_err_set(err, rc, "cannot set up the gateway: %s", ag_strerror(rc));
        goto out_free;
    }
    if ((rc = ag_mesh_health_start(&gw->checker, err))) goto out_free;
    if ((rc = discover(gw, gw->conf, err))) goto out_free;
    check_clusters(gw, gw->conf);
    if ((rc = start_server(gw, err))) goto out_free;
    if (ag__gw_jwks_start(gw))
        AG_WARN("gateway.jwks_fetcher_not_started", AG_LS("error", "out of memory"));
    *out = gw;
    return 0;
out_free:
    atomic_store(&gw->stopping, true);
    gw_free(gw);
    return rc;
}

uint16_t ag_gateway_port(const struct ag_gateway *gw)
{
    return ag_http_server_port(gw->server);
}
uint64_t ag_gateway_generation(const struct ag_gateway *gw)
{
    return atomic_load(&gw->generation);
}

int ag_gateway_reload(struct ag_gateway *gw, const char *yaml, struct ag_err *err)
{
    struct gw_conf *c;
    int rc = compile_opts(&gw->opts, yaml, gw, &c, err);
    /* renewed certificates: the same files, read again; a bad one refuses the reload */
    if (!rc && gw->tls && (rc = ag_tls_server_reload(gw->tls, err))) ag__gw_conf_unref(c);
    if (!rc && (rc = discover(gw, c, err))) ag__gw_conf_unref(c);
    if (rc) {
        ag_log_write(AG_LOG_ERROR, "gateway: reload refused; the running configuration stays",
                     (struct ag_log_field[]){AG_LS("error", ag_err_msg(err, rc))}, 1);
        return rc;
    }
    pthread_mutex_lock(&gw->conf_lock);
    struct gw_conf *old = gw->conf;
    c->generation = old->generation + 1;
    gw->conf = c;
    atomic_store_explicit(&gw->generation, c->generation, memory_order_release);
    pthread_mutex_unlock(&gw->conf_lock);
    check_clusters(gw, c);
    ag__gw_conf_unref(old);
    ag_log_write(
        AG_LOG_INFO, "gateway: configuration reloaded",
        (struct ag_log_field[]){AG_LU("generation", c->generation), AG_LU("routes", c->nroutes)},
        2);
    return 0;
}

void ag_gateway_stop(struct ag_gateway *gw, uint32_t drain_ms)
{
    if (!gw) return;
    ag__gw_jwks_stop(gw);
    ag_http_server_drain(gw->server, drain_ms);
    if (gw->redirect) ag_http_server_drain(gw->redirect, 0);
    pthread_mutex_lock(&gw->loops_lock);
    atomic_store(&gw->stopping, true);
    size_t n = atomic_load(&gw->nloops);
    pthread_mutex_unlock(&gw->loops_lock);
    for (size_t i = 0; i < n; i++) ag__gw_loop_stop(gw->loops[i]);
    ag_http_server_wait(gw->server);
    if (gw->redirect) ag_http_server_wait(gw->redirect);
    gw_free(gw);
}

/* ---- signals ---- */

struct sigloop {
    struct ag_gateway *gw;
    uv_signal_t hup, intr, term;
};

static void on_signal(uv_signal_t *h, int signum)
{
    struct sigloop *s = h->data;
    if (signum == SIGHUP) {
        struct ag_err err;
        ag_err_clear(&err);
        if (ag_gateway_reload(s->gw, NULL, &err) != 0)
            fprintf(stderr, "agora gateway: reload refused: %s\n", err.msg);
        return;
    }
    uv_close((uv_handle_t *)&s->hup, NULL);
    uv_close((uv_handle_t *)&s->intr, NULL);
    uv_close((uv_handle_t *)&s->term, NULL);
}

int ag_gateway_run_until_signal(struct ag_gateway *gw)
{
    uv_loop_t loop;
    if (uv_loop_init(&loop)) return AG_EIO;
    struct sigloop s = {.gw = gw};
    uv_signal_init(&loop, &s.hup);
    uv_signal_init(&loop, &s.intr);
    uv_signal_init(&loop, &s.term);
    s.hup.data = s.intr.data = s.term.data = &s;
    uv_signal_start(&s.hup, on_signal, SIGHUP);
    uv_signal_start(&s.intr, on_signal, SIGINT);
    uv_signal_start(&s.term, on_signal, SIGTERM);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return 0;
}
