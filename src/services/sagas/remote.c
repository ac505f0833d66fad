/*
 * The PlaceOrder orchestrator calling participants it does not serve (issue 14):
 * a step owned by a context this instance does not serve is an HTTP call to an
 * instance that does, through the mesh (ag_mesh_call_start: retries, per-try
 * timeouts, the cluster's breaker and retry budget, a route deadline, outlier
 * detection), the endpoints kept by the registry's resolver (ag_disc_watch).
 *
 * The call. POST /internal/v1/steps with {context, step, key, data, compensate,
 * reason}, signed as the gateway signs identities (x-user-sig under
 * the mesh key) for the principal "service:<member>" with role `service`; the
 * participant runs the same synchronous step (placeorder.c) and answers 200, or
 * its AG_E* code in the body ({"code", "detail"}). The step is keyed by the order
 * (reservation-, payment-, shipment-<orderId>), so a retried or re-run call finds
 * its effect and answers the same: never applied twice.
 *
 * Durability. StepSucceeded is recorded by the engine after the answer, so only
 * after the participant's effect committed. No answer at all (no instance, all
 * refused, the deadline passed, the breaker open) is AG_EUNAVAILABLE: the engine
 * neither fails nor compensates the step but runs the saga again later (growing
 * delay, at most 3.2 s), when the resolver may know a new instance.
 *
 * Threads. The mesh's pools belong to one loop: a thread of our own runs it.
 * Callers queue a request (mutex) and wake it (uv_async); the completion runs on
 * that thread: it signals a waiting worker (svc_remote_step) or finishes the
 * engine's asynchronous call (svc_remote_step_async).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agora/discovery.h"
#include "agora/mesh.h"
#include "services/internal.h"

/* Under the step policy's 5 s attempt timeout (src/resil/pipeline.c reports a
 * failure after it as AG_ETIMEDOUT, a step failure): "no answer" must come back
 * as AG_EUNAVAILABLE before that. */
#define ROUTE_TIMEOUT_MS   4000
#define PER_TRY_TIMEOUT_MS 1500

struct rcluster {
    char context[16];
    struct ag_mesh_cluster *c;
};

struct rreq {
    struct svc_remote *r;
    struct rcluster *rc;
    char path[128];
    char *body; /* owned (json_dumps) */
    char sig[AG_USER_SIG_MAX];
    struct ag_http_header hdr[4];
    struct ag_mesh_call call;
    /* completion: a waiting worker, or the engine's async call */
    pthread_mutex_t *wlock;
    pthread_cond_t *wcond;
    bool done;
    int rc_out;
    struct ag_err err;
    struct ag_saga_call *scall;
    struct rreq *next;
};

struct svc_remote {
    struct ag_platform *p;
    struct rcluster cl[SVC_SAGA_STEPS];
    size_t ncl;
    char sub[96]; /* service:<member> */
    uv_loop_t loop;
    uv_async_t wake;
    uv_thread_t thread;
    struct ag_mesh_pools *pools;
    pthread_mutex_t qlock;
    struct rreq *queue;
    bool stopping;
};

/* ---- answers ---- */

static int answer_rc(const struct ag_mesh_result *res, const char *ctx, struct ag_err *err)
{
    if (res->rc)
        return ag_err_set(err, AG_EUNAVAILABLE, "no %s instance answered: %s", ctx,
                          ag_strerror(res->rc));
    const struct ag_http_client_resp *resp = res->resp;
    if (resp->status == 200) return 0;
    json_t *b = json_loadb(resp->body ? resp->body : "", resp->body_len, 0, NULL);
    json_int_t code = json_integer_value(json_object_get(b, "code"));
    const char *detail = json_string_value(json_object_get(b, "detail"));
    int rc;
    if (code < 0 && code > -2000 && code != AG_EUNAVAILABLE)
        rc = ag_err_set(err, (int)code, "%s: %s", ctx, detail ? detail : ag_strerror((int)code));
    else
        rc = ag_err_set(err, AG_EUNAVAILABLE, "%s answered %d: %s", ctx, resp->status,
                        detail ? detail : "no decision");
    json_decref(b);
    return rc;
}

static void req_free(struct rreq *q)
{
    free(q->body);
    ag_free(q);
}

static void on_result(const struct ag_mesh_result *res, void *ud)
{
    struct rreq *q = ud;
    int rc = answer_rc(res, q->rc->context, &q->err);
    if (q->scall) {
        ag_saga_call_done(q->scall, rc, &q->err, false);
        req_free(q);
        return;
    }
    pthread_mutex_lock(q->wlock);
    q->rc_out = rc;
    q->done = true;
    pthread_cond_signal(q->wcond);
    pthread_mutex_unlock(q->wlock);
}

/* ---- the loop thread ---- */

static void fail_req(struct rreq *q, int rc)
{
    struct ag_mesh_result res = {.rc = rc, .endpoint = -1};
    on_result(&res, q);
}

static void wake_cb(uv_async_t *a)
{
    struct svc_remote *r = a->data;
    pthread_mutex_lock(&r->qlock);
    struct rreq *q = r->queue;
    r->queue = NULL;
    bool stop = r->stopping;
    pthread_mutex_unlock(&r->qlock);
    while (q) {
        struct rreq *next = q->next;
        if (stop || ag_mesh_call_start(r->pools, &q->call, on_result, q)) fail_req(q, AG_ECANCELED);
        q = next;
    }
    if (!stop) return;
    ag_mesh_pools_close(r->pools);
    uv_close((uv_handle_t *)&r->wake, NULL);
}

static void thread_main(void *arg)
{
    struct svc_remote *r = arg;
    uv_run(&r->loop, UV_RUN_DEFAULT);
}

/* ---- requests ---- */

static struct rcluster *cluster_of(struct svc_remote *r, const char *ctx)
{
    for (size_t i = 0; i < r->ncl; i++)
        if (strcmp(r->cl[i].context, ctx) == 0) return &r->cl[i];
    return NULL;
}

static int req_fill(struct svc_remote *r, struct rreq *q, const struct svc_rstep *s,
                    struct ag_err *err)
{
    q->r = r;
    if (!(q->rc = cluster_of(r, s->context)))
        return ag_err_set(err, AG_EINVAL, "no cluster for %s", s->context);
    snprintf(q->path, sizeof q->path, "/internal/v1/steps");
    const char *key = s->key ? s->key : "";
    json_t *b = json_pack("{s:s, s:s, s:s, s:O, s:b}", "context", s->context, "step", s->step,
                          "key", key, "data", s->data, "compensate", s->compensate);
    if (b && s->reason) json_object_set_new(b, "reason", json_string(s->reason));
    q->body = b ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    if (!q->body) return ag_err_set(err, AG_ENOMEM, "out of memory");
    int64_t now = (int64_t)(ag_clock_now(ag_clock_system()) / 1000000000u);
    if (ag_http_user_sig(r->p->cfg.mesh_key, now, r->sub, "service", "POST", q->path, q->sig))
        return ag_err_set(err, AG_EINVAL, "cannot sign the call (no mesh key)");
    q->hdr[0] = (struct ag_http_header){"content-type", "application/json"};
    q->hdr[1] = (struct ag_http_header){"x-user-id", r->sub};
    q->hdr[2] = (struct ag_http_header){"x-user-roles", "service"};
    q->hdr[3] = (struct ag_http_header){"x-user-sig", q->sig};
    q->call = (struct ag_mesh_call){.cluster = q->rc->c,
                                    .subset = -1,
                                    .req = {.method = "POST",
                                            .path = q->path,
                                            .headers = q->hdr,
                                            .nheaders = 4,
                                            .body = q->body,
                                            .body_len = strlen(q->body),
                                            .timeout_ms = ROUTE_TIMEOUT_MS},
                                    .retry = {.attempts = 2,
                                              .per_try_timeout_ms = PER_TRY_TIMEOUT_MS,
                                              .retry_on = AG_MESH_RETRY_CONNECT_FAILURE |
                                                          AG_MESH_RETRY_RESET |
                                                          AG_MESH_RETRY_GATEWAY_ERROR,
                                              .backoff_ms = 25}};
    return 0;
}

static void submit(struct svc_remote *r, struct rreq *q)
{
    pthread_mutex_lock(&r->qlock);
    q->next = r->queue;
    r->queue = q;
    pthread_mutex_unlock(&r->qlock);
    uv_async_send(&r->wake);
}

int svc_remote_step(struct svc_remote *r, const struct svc_rstep *s, struct ag_err *err)
{
    struct rreq *q = ag_calloc(1, sizeof *q);
    if (!q) return ag_err_set(err, AG_ENOMEM, "out of memory");
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
    int rc = req_fill(r, q, s, err);
    if (rc) {
        req_free(q);
        return rc;
    }
    q->wlock = &lock;
    q->wcond = &cond;
    submit(r, q);
    pthread_mutex_lock(&lock);
    while (!q->done) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    rc = q->rc_out;
    if (rc && err) *err = q->err;
    req_free(q);
    pthread_cond_destroy(&cond);
    pthread_mutex_destroy(&lock);
    return rc;
}

void svc_remote_step_async(struct svc_remote *r, const struct svc_rstep *s,
                           struct ag_saga_call *call)
{
    struct ag_err err;
    ag_err_clear(&err);
    struct rreq *q = ag_calloc(1, sizeof *q);
    if (!q) {
        ag_saga_call_done(call, ag_err_set(&err, AG_ENOMEM, "out of memory"), &err, false);
        return;
    }
    int rc = req_fill(r, q, s, &err);
    if (rc) {
        req_free(q);
        ag_saga_call_done(call, rc, &err, false);
        return;
    }
    q->scall = call;
    submit(r, q);
}

/* ---- lifetime ---- */

/* With mTLS (agora serve --tls-*) the calls present this member's certificate and
 * verify the participant's against the cluster CA (cfg.mesh_tls). */
static int cluster_new(struct rcluster *rc, const char *ctx, struct ag_tls_client *tls,
                       struct ag_err *err)
{
    snprintf(rc->context, sizeof rc->context, "%s", ctx);
    char name[40];
    snprintf(name, sizeof name, "participant-%s", ctx);
    struct ag_mesh_cluster_config cc = {.name = name,
                                        .dynamic = true,
                                        .pool = {.max_connections = 64,
                                                 .max_pending = 4096,
                                                 .connect_timeout_ms = 1000,
                                                 .tls = tls},
                                        .lb = AG_MESH_LB_LEAST_REQUEST,
                                        .outlier = {.consecutive_gateway = 2,
                                                    .interval_ns = 2000000000ull,
                                                    .base_ejection_ns = 5000000000ull,
                                                    .max_ejection_pct = 50,
                                                    .panic_threshold_pct = 50},
                                        .cb_failures = 50,
                                        .cb_open_ns = 2000000000ull};
    return ag_mesh_cluster_new(&cc, &rc->c, err);
}

static int remote_init(struct svc_remote *r, struct ag_err *err)
{
    static const char *const ctxs[] = {"ordering", "inventory", "payments", "shipping"};
    for (size_t i = 0; i < AG_ARRAY_SIZE(ctxs); i++) {
        if (r->p->cfg.contexts & ag_platform_context_bit(ctxs[i])) continue;
        int rc = cluster_new(&r->cl[r->ncl], ctxs[i], r->p->cfg.mesh_tls, err);
        if (rc) return rc;
        r->ncl++;
    }
    if (uv_loop_init(&r->loop)) return ag_err_set(err, AG_EIO, "uv_loop_init failed");
    if (uv_async_init(&r->loop, &r->wake, wake_cb))
        return ag_err_set(err, AG_EIO, "uv_async_init failed");
    r->wake.data = r;
    if (ag_mesh_pools_new(&r->loop, &r->pools)) return ag_err_set(err, AG_ENOMEM, "out of memory");
    if (uv_thread_create(&r->thread, thread_main, r))
        return ag_err_set(err, AG_EIO, "cannot start the mesh caller thread");
    return 0;
}

int svc_remote_start(struct ag_platform *p, struct svc_remote **out, struct ag_err *err)
{
    if (!p->cfg.mesh_key)
        return ag_err_set(err, AG_EINVAL, "participants over the mesh need the mesh key");
    struct svc_remote *r = ag_calloc(1, sizeof *r);
    if (!r) return ag_err_set(err, AG_ENOMEM, "out of memory");
    r->p = p;
    pthread_mutex_init(&r->qlock, NULL);
    snprintf(r->sub, sizeof r->sub, "service:orchestrator-%ld", (long)getpid());
    int rc = remote_init(r, err);
    if (rc) {
        /* only a failed thread start leaves a loop to undo: keep it simple */
        for (size_t i = 0; i < r->ncl; i++) ag_mesh_cluster_free(r->cl[i].c);
        pthread_mutex_destroy(&r->qlock);
        ag_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int svc_remote_watch(struct svc_remote *r, struct ag_disc *d)
{
    for (size_t i = 0; i < r->ncl; i++) {
        int rc = ag_disc_watch(d, r->cl[i].context, r->cl[i].c);
        if (rc) return rc;
    }
    return 0;
}

void svc_remote_stop(struct svc_remote *r)
{
    if (!r) return;
    pthread_mutex_lock(&r->qlock);
    r->stopping = true;
    pthread_mutex_unlock(&r->qlock);
    uv_async_send(&r->wake);
    uv_thread_join(&r->thread);
    uv_loop_close(&r->loop);
    for (size_t i = 0; i < r->ncl; i++) ag_mesh_cluster_free(r->cl[i].c);
    pthread_mutex_destroy(&r->qlock);
    ag_free(r);
}
