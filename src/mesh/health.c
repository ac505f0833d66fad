/*
 * Active health checks: one thread with its own libuv loop.
 *
 * A 50 ms tick walks the current set of clusters; every endpoint whose check is
 * due and not already running gets GET <path> with the check timeout, through
 * this loop's own pools. A 2xx answer is a success; anything else (status,
 * connect failure, timeout) a failure; ag_mesh_cluster_health_result applies the
 * thresholds.
 *
 * Sets. ag_mesh_health_set hands over a new set of clusters from any thread: the
 * set is queued under a mutex and the loop is woken (uv_async). A set is
 * reference-counted on the loop: one for being current plus one per check in
 * flight, so a replaced set (and the configuration holding its clusters, via
 * release) lives until its last check has answered.
 */
#include <string.h>

#include "mesh/internal.h"

#define TICK_MS 50

struct hset {
    struct ag_mesh_cluster **clusters; /* owned array, borrowed clusters */
    size_t n;
    void (*release)(void *ctx); /* called when the set is dropped */
    void *ctx;
    int refs; /* loop thread only */
};

struct hcheck {
    struct hset *set; /* holds a reference */
    struct ag_mesh_cluster *c;
    size_t idx; /* endpoint */
};

struct ag_mesh_health {
    uv_loop_t loop;              /* the checker's loop */
    uv_thread_t thread;          /* runs it */
    uv_async_t wake;             /* new set or stop */
    uv_timer_t tick;             /* periodic walk */
    struct ag_mesh_pools *pools; /* this loop's pools */
    pthread_mutex_t lock;        /* guards pending, stop */
    struct hset *pending;        /* set handed over, not yet taken */
    bool has_pending;            /* pending is meaningful (may be NULL = empty set) */
    bool stop;                   /* stop requested */
    struct hset *cur;            /* the set being checked */
};

static void set_unref(struct hset *s)
{
    if (!s || --s->refs) return;
    if (s->release) s->release(s->ctx);
    ag_free(s->clusters);
    ag_free(s);
}

static void on_check(const struct ag_mesh_result *res, void *ud)
{
    struct hcheck *hc = ud;
    bool ok = res->rc == 0 && res->resp->status >= 200 && res->resp->status < 300;
    if (res->rc != AG_ECANCELED) ag_mesh_cluster_health_result(hc->c, hc->idx, ok);
    hc->c->eps[hc->idx].hc_inflight = false;
    set_unref(hc->set);
    ag_free(hc);
}

static void on_raw(int rc, const struct ag_http_client_resp *resp, void *ud)
{
    struct ag_mesh_result res = {rc, rc ? NULL : resp, 1, (int)((struct hcheck *)ud)->idx};
    on_check(&res, ud);
}

/* Check endpoint idx: its pool is looked up directly, not through the balancer
 * (a down endpoint must still be checked). */
static void start_check(struct ag_mesh_health *h, struct ag_mesh_cluster *c, size_t idx)
{
    struct ag_http_upstream *u = ag__mesh_pools_get(h->pools, c, idx);
    struct hcheck *hc = u ? ag_calloc(1, sizeof *hc) : NULL;
    if (!hc) return;
    *hc = (struct hcheck){h->cur, c, idx};
    struct ag_http_client_req req = {.method = "GET",
                                     .path = c->cfg.health.path,
                                     .timeout_ms = (uint32_t)(c->cfg.health.timeout_ns / 1000000)};
    c->eps[idx].hc_inflight = true;
    h->cur->refs++;
    if (ag_http_upstream_request(u, &req, on_raw, hc) != 0) on_raw(AG_ECONNECT, NULL, hc);
}

static void tick_cb(uv_timer_t *t)
{
    struct ag_mesh_health *h = t->data;
    if (!h->cur) return;
    for (size_t k = 0; k < h->cur->n; k++) {
        struct ag_mesh_cluster *c = h->cur->clusters[k];
        if (!c->cfg.health.path) continue;
        uint64_t now = ag_clock_mono(c->clock);
        uint64_t live = ag__mesh_live(c);
        for (size_t i = 0; i < c->neps; i++) {
            struct ag__mesh_ep *e = &c->eps[i];
            if (!(live & (1ull << i))) continue; /* removed (discovery) */
            if (e->hc_inflight || e->hc_next_ns > now) continue;
            e->hc_next_ns = now + c->cfg.health.interval_ns;
            start_check(h, c, i);
        }
    }
}

static void wake_cb(uv_async_t *a)
{
    struct ag_mesh_health *h = a->data;
    pthread_mutex_lock(&h->lock);
    bool stop = h->stop, has = h->has_pending;
    struct hset *s = h->pending;
    h->pending = NULL;
    h->has_pending = false;
    pthread_mutex_unlock(&h->lock);
    if (has) {
        set_unref(h->cur);
        h->cur = s;
    }
    if (!stop) return;
    set_unref(h->cur);
    h->cur = NULL;
    ag_mesh_pools_close(h->pools);
    uv_close((uv_handle_t *)&h->tick, NULL);
    uv_close((uv_handle_t *)&h->wake, NULL);
}

static void thread_main(void *arg)
{
    struct ag_mesh_health *h = arg;
    uv_run(&h->loop, UV_RUN_DEFAULT);
}

int ag_mesh_health_start(struct ag_mesh_health **out, struct ag_err *err)
{
    struct ag_mesh_health *h = ag_calloc(1, sizeof *h);
    if (!h) return ag_err_set(err, AG_ENOMEM, "out of memory");
    if (uv_loop_init(&h->loop)) {
        ag_free(h);
        return ag_err_set(err, AG_EIO, "uv_loop_init failed");
    }
    if (ag_mesh_pools_new(&h->loop, &h->pools)) {
        uv_loop_close(&h->loop);
        ag_free(h);
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&h->lock, NULL);
    uv_async_init(&h->loop, &h->wake, wake_cb);
    h->wake.data = h;
    uv_timer_init(&h->loop, &h->tick);
    h->tick.data = h;
    uv_timer_start(&h->tick, tick_cb, TICK_MS, TICK_MS);
    if (uv_thread_create(&h->thread, thread_main, h)) {
        ag_err_set(err, AG_EIO, "cannot start the health-check thread");
        h->stop = true;
        wake_cb(&h->wake);
        uv_run(&h->loop, UV_RUN_DEFAULT);
        uv_loop_close(&h->loop);
        pthread_mutex_destroy(&h->lock);
        ag_free(h);
        return AG_EIO;
    }
    *out = h;
    return 0;
}

void ag_mesh_health_set(struct ag_mesh_health *h, struct ag_mesh_cluster *const *clusters, size_t n,
                        void (*retain)(void *ctx), void (*release)(void *ctx), void *ctx)
{
    struct hset *s = ag_calloc(1, sizeof *s);
    if (!s) return;
    s->clusters = ag_calloc(n ? n : 1, sizeof *s->clusters);
    if (!s->clusters) {
        ag_free(s);
        return;
    }
    memcpy(s->clusters, clusters, n * sizeof *clusters);
    s->n = n;
    s->release = release;
    s->ctx = ctx;
    s->refs = 1;
    if (retain) retain(ctx);
    pthread_mutex_lock(&h->lock);
    struct hset *old = h->has_pending ? h->pending : NULL;
    h->pending = s;
    h->has_pending = true;
    pthread_mutex_unlock(&h->lock);
    if (old) { /* never reached the loop: no check holds it */
        if (old->release) old->release(old->ctx);
        ag_free(old->clusters);
        ag_free(old);
    }
    uv_async_send(&h->wake);
}

void ag_mesh_health_stop(struct ag_mesh_health *h)
{
    if (!h) return;
    pthread_mutex_lock(&h->lock);
    h->stop = true;
    pthread_mutex_unlock(&h->lock);
    uv_async_send(&h->wake);
    uv_thread_join(&h->thread);
    uv_loop_close(&h->loop);
    pthread_mutex_destroy(&h->lock);
    ag_free(h);
}
