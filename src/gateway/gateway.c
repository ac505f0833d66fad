/*
 * Gateway lifecycle: configuration snapshots, per-loop state, start, reload,
 * stop, signals.
 *
 * Snapshots. gw->conf is the current snapshot (one reference). Worker loops do
 * not touch the shared reference count per request: each loop keeps its own
 * `struct lconf` per snapshot it has used, holding one shared reference and a
 * loop-local count of requests in flight. A request compares the gateway's
 * generation (an atomic) with its loop's; on change the loop takes the new
 * snapshot under conf_lock. An old lconf is dropped (and its shared reference
 * released) when its last request ends, so a reload never cuts a request off.
 *
 * Loops. The HTTP server owns the worker loops; the gateway attaches a
 * `struct gw_loop` to a loop the first time a request runs on it: mesh
 * connection pools, a verified-token cache (tokcache.c), a few recycled proxy
 * request states (ag__gw_loop_pctx_get/put) and a uv_async used at stop. Stop
 * drains the server, then wakes every gw_loop, which closes its pools once its
 * requests have finished, so the worker loops can end.
 */
#include <string.h>
#include <strings.h>

#include "gateway/internal.h"

#define TOKEN_CACHE 256
#define PCTX_SPARE  64

struct lconf {
    struct lconf *next;   /* loop's list */
    struct gw_conf *conf; /* holds a shared reference */
    uint32_t inflight;    /* requests using it on this loop */
};

struct gw_loop {
    struct ag_gateway *gw;
    uv_loop_t *loop;             /* borrowed (the server's) */
    struct lconf *cur;           /* snapshot for new requests */
    struct lconf *all;           /* every lconf alive */
    uint64_t gen;                /* generation of cur */
    struct ag_mesh_pools *pools; /* upstream pools on this loop */
    uv_async_t stop;             /* woken at stop */
    uint32_t inflight;           /* requests in flight on this loop */
    bool stopping;               /* stop seen: close when idle */
    bool closed;                 /* pools closed */
    struct gw_tokcache *tokens;  /* verified tokens (tokcache.c) */
    void *spare[PCTX_SPARE];     /* recycled proxy request states (ag__gw_loop_pctx_get) */
    size_t nspare;               /* in spare */
};

/* ---- per-loop state ---- */

static void loop_free(uv_handle_t *h)
{
    struct gw_loop *l = h->data;
    for (struct lconf *c = l->all, *n; c; c = n) {
        n = c->next;
        ag__gw_conf_unref(c->conf);
        ag_free(c);
    }
    ag__gw_tokcache_free(l->tokens);
    for (size_t i = 0; i < l->nspare; i++) ag_free(l->spare[i]);
    ag_free(l);
}

static void loop_close(struct gw_loop *l)
{
    if (l->closed) return;
    l->closed = true;
    ag_mesh_pools_close(l->pools);
    uv_close((uv_handle_t *)&l->stop, loop_free);
}

static void on_stop(uv_async_t *a)
{
    struct gw_loop *l = a->data;
    l->stopping = true;
    if (!l->inflight) loop_close(l);
}

void ag__gw_loop_stop(struct gw_loop *l)
{
    uv_async_send(&l->stop);
}

struct gw_loop *ag__gw_loop_get(struct ag_gateway *gw, struct ag_http_req *req)
{
    uv_loop_t *loop = ag_http_req_loop(req);
    size_t n = atomic_load(&gw->nloops);
    for (size_t i = 0; i < n; i++)
        if (gw->loops[i]->loop == loop) return gw->loops[i]->stopping ? NULL : gw->loops[i];
    struct gw_loop *l = ag_calloc(1, sizeof *l);
    if (!l) return NULL;
    if (ag__gw_tokcache_new(TOKEN_CACHE, &l->tokens) || ag_mesh_pools_new(loop, &l->pools)) {
        ag__gw_tokcache_free(l->tokens);
        ag_free(l);
        return NULL;
    }
    l->gw = gw;
    l->loop = loop;
    uv_async_init(loop, &l->stop, on_stop);
    l->stop.data = l;
    pthread_mutex_lock(&gw->loops_lock);
    bool ok = !atomic_load(&gw->stopping) && atomic_load(&gw->nloops) < AG_ARRAY_SIZE(gw->loops);
    if (ok) { /* publish the entry before the count that makes it visible */
        size_t k = atomic_load(&gw->nloops);
        gw->loops[k] = l;
        atomic_store(&gw->nloops, k + 1);
    }
    pthread_mutex_unlock(&gw->loops_lock);
    if (!ok) {
        loop_close(l);
        return NULL;
    }
    return l;
}

struct ag_mesh_pools *ag__gw_loop_pools(struct gw_loop *l)
{
    return l->pools;
}

struct gw_conf *ag__gw_loop_acquire(struct gw_loop *l, void **token)
{
    uint64_t g = atomic_load_explicit(&l->gw->generation, memory_order_acquire);
    if (!l->cur || g != l->gen) {
        struct lconf *c = ag_calloc(1, sizeof *c);
        if (c) {
            pthread_mutex_lock(&l->gw->conf_lock);
            c->conf = l->gw->conf;
            ag__gw_conf_ref(c->conf);
            l->gen = c->conf->generation;
            pthread_mutex_unlock(&l->gw->conf_lock);
            c->next = l->all;
            l->all = c;
            struct lconf *old = l->cur;
            l->cur = c;
            if (old && !old->inflight)
                ag__gw_loop_release(l, old); /* frees it: not current any more */
        }
    }
    if (!l->cur) return NULL; /* out of memory on the loop's first request */
    l->cur->inflight++;       /* (a failed refresh keeps the previous snapshot) */
    l->inflight++;
    *token = l->cur;
    return l->cur->conf;
}

void ag__gw_loop_release(struct gw_loop *l, void *token)
{
    struct lconf *c = token;
    if (c->inflight) c->inflight--, l->inflight--;
    if (!c->inflight && c != l->cur) {
        struct lconf **pp = &l->all;
        while (*pp && *pp != c) pp = &(*pp)->next;
        if (*pp) *pp = c->next;
        ag__gw_conf_unref(c->conf);
        ag_free(c);
    }
    if (l->stopping && !l->inflight) loop_close(l);
}

/* ---- recycled request states ---- */

void *ag__gw_loop_pctx_get(struct gw_loop *l, size_t size)
{
    return l->nspare ? l->spare[--l->nspare] : ag_malloc(size);
}

void ag__gw_loop_pctx_put(struct gw_loop *l, void *p)
{
    if (l->nspare < PCTX_SPARE && !l->closed)
        l->spare[l->nspare++] = p;
    else
        ag_free(p);
}

int ag__gw_authenticate(struct ag_gateway *gw, struct gw_loop *l, const struct gw_conf *conf,
                        struct ag_http_req *req, struct gw_principal *p, bool *has)
{
    *has = false;
    const char *auth = ag_http_req_header(req, "authorization");
    if (!auth || !conf->jwt.nissuers) return 0;
    if (strncasecmp(auth, "Bearer ", 7) != 0) return 0;
    const char *tok = auth + 7;
    size_t len = strlen(tok);
    uint64_t now = ag_clock_now(gw->clock) / 1000000000ull;
    /* the cache is per snapshot generation: a reload may change keys */
    if (l->gen == conf->generation && ag__gw_tokcache_get(l->tokens, tok, len, l->gen, now, p))
        return *has = true, 0;
    enum gw_jwt_fail f = ag__gw_jwt_verify(&conf->jwt, tok, len, now, p);
    if (f == GW_JWT_OK) {
        /* served from the cache only while now < exp (tokcache.c) */
        if (l->gen == conf->generation) ag__gw_tokcache_put(l->tokens, tok, len, l->gen, p);
        return *has = true, 0;
    }
    ag_log_write(AG_LOG_INFO, "gateway: token refused",
                 (struct ag_log_field[]){
                     AG_LS("reason", ag__gw_jwt_fail_name(f)), AG_LS("path", ag_http_req_path(req)),
                     AG_LS("request_id", ag_http_req_id(req) ? ag_http_req_id(req) : "")},
                 3);
    const char *why = ag__gw_jwt_fail_public(f);
    char detail[200];
    snprintf(detail, sizeof detail, "invalid token%s%s", why ? ": " : "", why ? why : "");
    char www[260];
    snprintf(www, sizeof www, "Bearer error=\"invalid_token\"%s%s%s",
             why ? ", error_description=\"" : "", why ? why : "", why ? "\"" : "");
    ag_http_resp_header(req, "WWW-Authenticate", www);
    ag__gw_problem(req, 401, detail);
    return 1;
}
