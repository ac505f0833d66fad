/*
 * JWKS over HTTP: keys per issuer from a URL (`jwksUri`), cached, refreshed on a
 * schedule (`jwksRefresh`, default 5 minutes).
 *
 * The last good document of each URL is kept in the gateway's cache (struct
 * gw_jwks_cache, one per gateway: two gateways in a process never see each
 * other's keys). Compiling a configuration takes the keys from the cache (fetching
 * once when the cache has nothing yet), so a reload never waits on the network
 * once the fetcher runs; a compile without a gateway (`agora gateway --check`,
 * `agora token`) fetches without caching. The
 * fetcher thread fetches each URL when due; when the document changed it reloads the
 * gateway's configuration, which picks the new keys up. When a fetch fails, the
 * cache and the running configuration keep the last good keys (Envoy answers 401
 * there; agora keeps serving) and the failure is logged.
 *
 * Fetches are plain HTTP to a numeric address (no DNS, no TLS in the gateway); an
 * identity provider behind TLS is reached through a local sidecar or a file.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "gateway/internal.h"

#define JWKS_MAX      32
#define JWKS_RETRY_NS 5000000000ull /* after a failed fetch */

struct cached {
    char *uri; /* NULL: a free slot (slots fill from the front) */
    char *doc; /* the last good document */
};

struct gw_jwks_cache {
    pthread_mutex_t lock; /* the fetcher thread and reloads share the cache */
    struct cached e[JWKS_MAX];
};

struct gw_jwks_cache *ag__gw_jwks_cache_new(void)
{
    struct gw_jwks_cache *c = ag_calloc(1, sizeof *c);
    if (c) pthread_mutex_init(&c->lock, NULL);
    return c;
}

void ag__gw_jwks_cache_free(struct gw_jwks_cache *c)
{
    if (!c) return;
    for (int i = 0; i < JWKS_MAX; i++) ag_free(c->e[i].uri), ag_free(c->e[i].doc);
    pthread_mutex_destroy(&c->lock);
    ag_free(c);
}

char *ag__gw_jwks_cached(struct gw_jwks_cache *c, const char *uri)
{
    char *out = NULL;
    if (!c) return NULL;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < JWKS_MAX && c->e[i].uri; i++)
        if (strcmp(c->e[i].uri, uri) == 0 && c->e[i].doc) out = ag_strdup(c->e[i].doc);
    pthread_mutex_unlock(&c->lock);
    return out;
}

/* 1 when the document is new or changed, 0 when the same, AG_ENOMEM / AG_ETOOBIG. */
static int cache_put(struct gw_jwks_cache *c, const char *uri, const char *doc)
{
    int rc = AG_ETOOBIG;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < JWKS_MAX; i++) {
        struct cached *e = &c->e[i];
        if (e->uri && strcmp(e->uri, uri) != 0) continue;
        if (e->doc && strcmp(e->doc, doc) == 0) {
            rc = 0;
            break;
        }
        char *d = ag_strdup(doc), *u = e->uri ? e->uri : ag_strdup(uri);
        if (!d || !u) {
            ag_free(d);
            if (u != e->uri) ag_free(u);
            rc = AG_ENOMEM;
            break;
        }
        ag_free(e->doc);
        *e = (struct cached){u, d};
        rc = 1;
        break;
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* ---- one blocking GET on a private loop ---- */

struct fetch {
    int rc;
    int status;
    char *body;
    bool done;
};

static void on_response(int rc, const struct ag_http_client_resp *resp, void *ud)
{
    struct fetch *f = ud;
    f->rc = rc;
    f->done = true;
    if (rc) return;
    f->status = resp->status;
    f->body = ag_strndup(resp->body, resp->body_len);
    if (!f->body) f->rc = AG_ENOMEM;
}

/* http://HOST[:PORT]/path with a numeric host; the port defaults to 80. */
static int parse_uri(const char *uri, char host[64], uint16_t *port, const char **path)
{
    const char *p = uri + 7, *slash = strchr(p, '/');
    char hp[128];
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n >= sizeof hp) return AG_EINVAL;
    memcpy(hp, p, n);
    hp[n] = 0;
    *port = 80;
    *path = slash ? slash : "/";
    return ag_hostport_parse(hp, AG_HOSTPORT_NUMERIC | AG_HOSTPORT_OPT_PORT, host, 64, port, NULL);
}

static int http_get(const char *uri, char **body, struct ag_err *err)
{
    char host[64];
    uint16_t port;
    const char *path;
    if (strncmp(uri, "http://", 7) != 0 || parse_uri(uri, host, &port, &path))
        return ag_err_set(err, AG_EINVAL, "%s: not http://HOST:PORT/path", uri);
    uv_loop_t loop;
    if (uv_loop_init(&loop)) return ag_err_set(err, AG_ENOMEM, "uv_loop_init failed");
    struct ag_http_upstream_config cfg = {.host = host,
                                          .port = port,
                                          .max_connections = 1,
                                          .connect_timeout_ms = 2000,
                                          .max_response_bytes = 1 << 20};
    struct ag_http_upstream *up = NULL;
    struct fetch f = {0};
    int rc = ag_http_upstream_new(&loop, &cfg, &up);
    struct ag_http_client_req r = {.method = "GET", .path = path, .timeout_ms = 5000};
    if (!rc) rc = ag_http_upstream_request(up, &r, on_response, &f);
    while (!rc && !f.done) uv_run(&loop, UV_RUN_ONCE);
    if (up) ag_http_upstream_close(up);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (!rc) rc = f.rc;
    if (!rc && f.status != 200) rc = AG_EUPSTREAM;
    if (rc) {
        ag_free(f.body);
        if (f.status) return ag_err_set(err, rc, "GET %s: status %d", uri, f.status);
        return ag_err_set(err, rc, "GET %s: %s", uri, ag_strerror(rc));
    }
    *body = f.body;
    return 0;
}

/* GET `uri` and check that it is a JWKS with keys: 0 with the document in *doc. */
static int fetch_checked(const char *uri, char **doc, struct ag_err *err)
{
    int rc = http_get(uri, doc, err);
    if (rc) return rc;
    struct gw_issuer probe = {0}; /* parse it before it may replace the last good one */
    rc = ag__gw_jwks_add(&probe, *doc, uri, err);
    if (!rc && probe.nkeys == 0) rc = ag_err_set(err, AG_EINVAL, "%s: no keys", uri);
    for (size_t k = 0; k < probe.nkeys; k++) {
        ag_free(probe.keys[k].kid);
        ag_free(probe.keys[k].key);
        ag_free(probe.keys[k].sign_pem);
    }
    ag_free(probe.keys);
    if (rc) ag_free(*doc), *doc = NULL;
    return rc;
}

int ag__gw_jwks_refresh(struct gw_jwks_cache *c, const char *uri, struct ag_err *err)
{
    char *doc = NULL;
    int rc = fetch_checked(uri, &doc, err);
    if (!rc) rc = cache_put(c, uri, doc);
    ag_free(doc);
    return rc;
}

char *ag__gw_jwks_get(struct gw_jwks_cache *c, const char *uri)
{
    struct ag_err err;
    char *doc = ag__gw_jwks_cached(c, uri);
    if (doc) return doc;
    if (!c) return fetch_checked(uri, &doc, &err) ? NULL : doc;
    return ag__gw_jwks_refresh(c, uri, &err) >= 0 ? ag__gw_jwks_cached(c, uri) : NULL;
}

/* ---- the fetcher thread ---- */

struct due {
    char uri[512];
    uint64_t every_ns, next_ns;
};

static uint64_t now_ns(void)
{
    return ag_clock_mono(ag_clock_system());
}

/* The URIs the current configuration names, keeping the schedule of known ones. */
static size_t collect(struct ag_gateway *gw, struct due *d, size_t n)
{
    struct due out[JWKS_MAX];
    size_t m = 0;
    pthread_mutex_lock(&gw->conf_lock);
    const struct gw_jwt *j = &gw->conf->jwt;
    for (size_t i = 0; i < j->nissuers && m < JWKS_MAX; i++) {
        const struct gw_issuer *is = &j->issuers[i];
        if (!is->jwks_uri) continue;
        struct due x = {.every_ns = is->jwks_refresh_ns, .next_ns = now_ns() + is->jwks_refresh_ns};
        snprintf(x.uri, sizeof x.uri, "%s", is->jwks_uri);
        for (size_t k = 0; k < n; k++)
            if (strcmp(d[k].uri, x.uri) == 0) x.next_ns = d[k].next_ns;
        out[m++] = x;
    }
    pthread_mutex_unlock(&gw->conf_lock);
    memcpy(d, out, m * sizeof *d);
    return m;
}

static bool fetch_due(struct ag_gateway *gw, struct due *d)
{
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag__gw_jwks_refresh(gw->jwks, d->uri, &err);
    d->next_ns = now_ns() + (rc < 0 && d->every_ns > JWKS_RETRY_NS ? JWKS_RETRY_NS : d->every_ns);
    if (rc < 0)
        AG_WARN("gateway.jwks_refresh_failed", AG_LS("uri", d->uri), AG_LS("error", err.msg),
                AG_LS("detail", "keeping the last good keys"));
    return rc == 1;
}

static void *fetcher(void *arg)
{
    struct ag_gateway *gw = arg;
    struct due d[JWKS_MAX];
    size_t n = collect(gw, d, 0);
    pthread_mutex_lock(&gw->jwks_lock);
    while (!gw->jwks_stop) {
        pthread_mutex_unlock(&gw->jwks_lock);
        bool changed = false;
        for (size_t i = 0; i < n; i++)
            if (now_ns() >= d[i].next_ns) changed |= fetch_due(gw, &d[i]);
        if (changed) {
            struct ag_err err;
            ag_err_clear(&err);
            if (ag_gateway_reload(gw, NULL, &err) == 0)
                AG_INFO("gateway.jwks_keys_updated",
                        AG_LU("generation", ag_gateway_generation(gw)));
            n = collect(gw, d, n);
        }
        pthread_mutex_lock(&gw->jwks_lock);
        struct timespec ts;
        ag_deadline_mono_in_ms(&ts, 250);
        if (!gw->jwks_stop) pthread_cond_timedwait(&gw->jwks_cond, &gw->jwks_lock, &ts);
        if (!changed) n = collect(gw, d, n); /* a SIGHUP reload may have changed the URIs */
    }
    pthread_mutex_unlock(&gw->jwks_lock);
    return NULL;
}

int ag__gw_jwks_start(struct ag_gateway *gw)
{
    pthread_mutex_init(&gw->jwks_lock, NULL);
    ag_cond_init_mono(&gw->jwks_cond); /* the refresh tick is a duration */
    gw->jwks_started = pthread_create(&gw->jwks_thread, NULL, fetcher, gw) == 0;
    return gw->jwks_started ? 0 : AG_ENOMEM;
}

void ag__gw_jwks_stop(struct ag_gateway *gw)
{
    if (!gw->jwks_started) return;
    pthread_mutex_lock(&gw->jwks_lock);
    gw->jwks_stop = true;
    pthread_cond_signal(&gw->jwks_cond);
    pthread_mutex_unlock(&gw->jwks_lock);
    pthread_join(gw->jwks_thread, NULL);
    pthread_cond_destroy(&gw->jwks_cond);
    pthread_mutex_destroy(&gw->jwks_lock);
    gw->jwks_started = false;
}
