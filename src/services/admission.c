/*
 * Admission control of the commands that start a PlaceOrder saga (issue 11):
 * POST /api/v1/orders and POST /api/v1/orders/{id}/place, and the
 * agora_order_confirm_seconds histogram it feeds on.
 *
 * Why. Accepting an order costs little (one append); confirming it costs a
 * saga. When POSTs arrive faster than sagas confirm, every accepted order
 * joins a backlog and the confirm latency grows without bound (measured: a
 * ~12 s tail at 64 clients). So the orders in flight — accepted and not yet
 * confirmed or cancelled, as this process saw them — are bounded: over the
 * bound a command is answered 503 (problem+json, Retry-After: 1, X-Agora-Error:
 * service so the gateway's breaker does not count it), on the loop thread, before
 * any parsing beyond the body, any read or any append: a refused command leaves
 * nothing behind (no order, no saga, no reservation, no idempotency record).
 *
 * A short queue first. Over the limit a command waits up to --admission-queue
 * (1 s by default) for a slot before the 503: it is parked without a thread on
 * the waiter registry (wait.c, key ADM_KEY, within its bound of parked requests)
 * and every slot freed wakes the oldest parked command, whose handler tries
 * again (svc_admission_check). A burst is absorbed instead of refused, and a few
 * closed-loop clients (each waiting out Retry-After: 1 after a 503) cannot
 * starve a server that frees hundreds of slots a second; only a sustained excess
 * gets 503s. The queue wait is part of POST→202, not of the confirm latency.
 *
 * The bound is adaptive: AIMD on the confirm latency, under a ceiling
 * (--max-sagas-in-flight, 256 by default: ~900 confirmed/s on 2 cores times
 * ~280 ms in flight, Little's law) aiming at a p90 confirm latency under the
 * target (--admission-target, 500 ms by default: the quiet machine confirms in
 * less at the ceiling, so the limit is cut only when the host is slower than
 * that, e.g. shared; a lower limit costs CPU per order, since the store, the
 * saga engine and the projections batch less). Time is cut in windows of the target's
 * length; at the end of a window in which more than a tenth of the confirmed
 * orders took longer than the target (its p90 over the target), the limit is
 * multiplied by 0.9 (not below ADM_MIN_LIMIT); otherwise, if the window used at
 * least half the limit, it grows by samples/limit (one per limit's worth of
 * confirmations, TCP's congestion avoidance). AIMD rather than a gradient
 * limiter (Netflix's Gradient2, Vegas): those estimate a no-load latency to
 * compare with, and ours is dominated by batched fsyncs and projection pages
 * whose latency floor moves with load; a threshold on a high percentile is
 * what the operator asks for anyway, and the decision per window (not per
 * sample) keeps one slow fsync from collapsing the limit. A target of 0 turns
 * adaptation off: the ceiling is then a static limit.
 *
 * Bookkeeping. svc_admission_enter takes a slot (reserved); the handler turns
 * it into a tracked order once the order is accepted (svc_admission_placed),
 * else the route's finish gives it back. The orders projection calls
 * svc_admission_done when it applies OrderConfirmed or OrderCancelled: the
 * order's time since it was accepted is observed in agora_order_confirm_seconds
 * {outcome} (what a client polling the read model sees, projection lag
 * included) and its slot is freed. Tracked orders sit in a hash (by id) and a
 * FIFO (by admission); one that never ends in ADM_STALE_S (a stuck saga) is
 * dropped from the head and counted in agora_admission_expired_total, so a lost
 * confirmation cannot leak a slot forever. Orders accepted before a restart are
 * not tracked by the new process. One mutex; a few hundred operations a second.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "services/internal.h"

#define ADM_BUCKETS   4096
#define ADM_STALE_S   60
#define ADM_MIN_LIMIT 8
#define ADM_CUT       0.9
#define ADM_KEY       "@admission" /* parked commands' waiter key (not an order id) */

struct adm_order {
    struct adm_order *hnext;       /* hash bucket chain */
    struct adm_order *prev, *next; /* FIFO by admission */
    uint64_t t0;                   /* when it was accepted, monotonic ns */
    uint64_t h;
    char id[AG_DOM_ID_MAX];
};

struct svc_admission {
    pthread_mutex_t lock;
    struct adm_order *buckets[ADM_BUCKETS];
    struct adm_order *head, *tail;
    uint32_t tracked, reserved;
    uint32_t max;                /* the ceiling (configured) */
    double limit;                /* the current limit, ADM_MIN_LIMIT..max */
    uint64_t target_ns;          /* confirm latency target; 0 = static limit */
    uint64_t queue_ns;           /* how long a command may wait for a slot; 0 = refuse at once */
    struct svc_waiters *waiters; /* where waiting commands park */
    uint64_t win_start;          /* the AIMD window */
    uint64_t win_samples, win_slow;
    uint32_t win_peak; /* the most orders in flight during the window */
    struct ag_obs_series *rejected, *expired, *limit_g, *inflight_g, *confirm[2];
};

/* A saga-starting job's admission (j->ext) from prepare to finish. */
enum adm_state { ADM_NONE, ADM_HELD, ADM_WAITING };
struct adm_job {
    enum adm_state state;
    uint64_t seq; /* ADM_KEY's change sequence before the last try */
};

static uint64_t now_ns(void)
{
    return ag_clock_mono(ag_clock_system());
}

static struct ag_obs_series *series(struct ag_obs_registry *r,
                                    const struct ag_obs_family_spec *spec, const char *value)
{
    struct ag_obs_family *f;
    struct ag_obs_series *s = NULL;
    const char *values[] = {value};
    if (r && ag_obs_family_define(r, spec, &f) == 0)
        ag_obs_series_get(f, spec->nlabels ? values : NULL, &s);
    return s;
}

static void define_metrics(struct svc_admission *a, struct ag_obs_registry *r)
{
    static const double bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                    1,     2.5,  5,     10,   30,  60};
    static const char *const outcome[] = {"outcome"};
    struct ag_obs_family_spec s = {AG_OBS_COUNTER, "agora_admission_rejected_total",
                                   "Commands that start a saga refused with 503: too many orders "
                                   "in flight"};
    a->rejected = series(r, &s, NULL);
    s.name = "agora_admission_expired_total";
    s.help = "Admitted orders forgotten after 60 s without a confirmation or cancellation";
    a->expired = series(r, &s, NULL);
    s = (struct ag_obs_family_spec){AG_OBS_GAUGE, "agora_admission_limit",
                                    "Orders allowed in flight (placed, not yet confirmed or "
                                    "cancelled) before new ones are refused"};
    a->limit_g = series(r, &s, NULL);
    s.name = "agora_admission_in_flight";
    s.help = "Orders admitted by this process and not yet confirmed or cancelled";
    a->inflight_g = series(r, &s, NULL);
    s = (struct ag_obs_family_spec){AG_OBS_HISTOGRAM,
                                    "agora_order_confirm_seconds",
                                    "Time from an order's acceptance (202) to its "
                                    "confirmation or cancellation in the orders read model",
                                    1,
                                    outcome,
                                    bounds,
                                    AG_ARRAY_SIZE(bounds)};
    a->confirm[0] = series(r, &s, "confirmed");
    a->confirm[1] = series(r, &s, "cancelled");
}

int svc_admission_new(const struct svc_admission_config *cfg, struct svc_admission **out)
{
    *out = NULL;
    struct svc_admission *a = ag_calloc(1, sizeof *a);
    if (!a) return AG_ENOMEM;
    pthread_mutex_init(&a->lock, NULL);
    a->max = cfg->max_in_flight ? cfg->max_in_flight : SVC_ADMISSION_DEFAULT;
    if (a->max < ADM_MIN_LIMIT && cfg->target_ms) a->max = ADM_MIN_LIMIT;
    a->limit = a->max;
    a->target_ns = cfg->target_ms * 1000000ull;
    a->queue_ns = cfg->waiters ? cfg->queue_ms * 1000000ull : 0;
    a->waiters = cfg->waiters;
    a->win_start = now_ns();
    define_metrics(a, cfg->metrics);
    if (a->limit_g) ag_obs_gauge_set(a->limit_g, a->limit);
    *out = a;
    return 0;
}

void svc_admission_free(struct svc_admission *a)
{
    if (!a) return;
    for (struct adm_order *o = a->head, *n; o; o = n) {
        n = o->next;
        ag_free(o);
    }
    pthread_mutex_destroy(&a->lock);
    ag_free(a);
}

/* ---- the tracked orders (lock held) ---- */

static struct adm_order **find(struct svc_admission *a, uint64_t h, const char *id)
{
    struct adm_order **p = &a->buckets[h % ADM_BUCKETS];
    while (*p && ((*p)->h != h || strcmp((*p)->id, id) != 0)) p = &(*p)->hnext;
    return p;
}

static void unlink_order(struct svc_admission *a, struct adm_order **at)
{
    struct adm_order *o = *at;
    *at = o->hnext;
    if (o->prev)
        o->prev->next = o->next;
    else
        a->head = o->next;
    if (o->next)
        o->next->prev = o->prev;
    else
        a->tail = o->prev;
    a->tracked--;
    ag_free(o);
}

static uint32_t expire(struct svc_admission *a, uint64_t now)
{
    uint32_t n = 0;
    while (a->head && now - a->head->t0 > (uint64_t)ADM_STALE_S * 1000000000ull) {
        unlink_order(a, find(a, a->head->h, a->head->id));
        if (a->expired) ag_obs_counter_inc(a->expired);
        n++;
    }
    return n;
}

static void publish(struct svc_admission *a)
{
    if (a->inflight_g) ag_obs_gauge_set(a->inflight_g, a->tracked + a->reserved);
    if (a->limit_g) ag_obs_gauge_set(a->limit_g, (uint32_t)a->limit);
}

/* The AIMD step at the end of a window (see the top). */
static void adapt(struct svc_admission *a, uint64_t now)
{
    if (!a->target_ns || now - a->win_start < a->target_ns) return;
    if (a->win_samples && a->win_slow * 10 > a->win_samples) {
        a->limit *= ADM_CUT;
        if (a->limit < ADM_MIN_LIMIT) a->limit = ADM_MIN_LIMIT;
    } else if (a->win_peak * 2 >= (uint32_t)a->limit) {
        a->limit += (double)a->win_samples / a->limit;
        if (a->limit > a->max) a->limit = a->max;
    }
    a->win_start = now;
    a->win_samples = a->win_slow = 0;
    a->win_peak = a->tracked + a->reserved;
}

/* ---- the API ---- */

bool svc_admission_enter(struct svc_admission *a)
{
    if (!a) return true;
    uint64_t now = now_ns();
    pthread_mutex_lock(&a->lock);
    uint32_t freed = expire(a, now);
    adapt(a, now);
    uint32_t n = a->tracked + a->reserved;
    bool ok = n < (uint32_t)a->limit;
    if (ok) {
        a->reserved++;
        if (n + 1 > a->win_peak) a->win_peak = n + 1;
        publish(a);
    }
    pthread_mutex_unlock(&a->lock);
    svc_waiters_wake(a->waiters, ADM_KEY, freed);
    return ok;
}

void svc_admission_leave(struct svc_admission *a)
{
    if (!a) return;
    pthread_mutex_lock(&a->lock);
    if (a->reserved) a->reserved--;
    publish(a);
    pthread_mutex_unlock(&a->lock);
    svc_waiters_wake(a->waiters, ADM_KEY, 1); /* a waiting command may take it */
}

void svc_admission_track(struct svc_admission *a, const char *id)
{
    uint64_t t0 = now_ns();
    if (!a) return;
    uint64_t h = ag_xxh3(id, strlen(id));
    pthread_mutex_lock(&a->lock);
    if (a->reserved) a->reserved--;
    struct adm_order **at = find(a, h, id);
    struct adm_order *o = *at || strlen(id) >= AG_DOM_ID_MAX ? NULL : ag_calloc(1, sizeof *o);
    if (o) { /* not tracked yet (a replayed id is) */
        o->h = h;
        o->t0 = t0;
        memcpy(o->id, id, strlen(id) + 1);
        *at = o;
        o->prev = a->tail;
        if (a->tail)
            a->tail->next = o;
        else
            a->head = o;
        a->tail = o;
        a->tracked++;
    }
    publish(a);
    pthread_mutex_unlock(&a->lock);
}

void svc_admission_done(struct svc_admission *a, const char *id, bool confirmed)
{
    if (!a) return;
    uint64_t h = ag_xxh3(id, strlen(id)), now = now_ns();
    pthread_mutex_lock(&a->lock);
    struct adm_order **at = find(a, h, id);
    bool freed = *at != NULL;
    if (*at) {
        uint64_t took = now > (*at)->t0 ? now - (*at)->t0 : 0;
        unlink_order(a, at);
        struct ag_obs_series *s = a->confirm[confirmed ? 0 : 1];
        if (s) ag_obs_histogram_observe(s, (double)took / 1e9);
        a->win_samples++;
        if (took > a->target_ns) a->win_slow++;
        adapt(a, now);
        publish(a);
    }
    pthread_mutex_unlock(&a->lock);
    if (freed) svc_waiters_wake(a->waiters, ADM_KEY, 1);
}

uint32_t svc_admission_limit(struct svc_admission *a)
{
    if (!a) return 0;
    pthread_mutex_lock(&a->lock);
    uint32_t n = (uint32_t)a->limit;
    pthread_mutex_unlock(&a->lock);
    return n;
}

/* ---- the routes' hooks ---- */

/* Draft creation (POST /api/v1/orders with "draft": true) starts no saga. */
static bool starts_saga(const struct svc_job *j, struct ag_http_req *req)
{
    if (strcmp(ag_http_req_path(req), "/api/v1/orders") != 0) return true; /* .../place */
    return !json_is_true(json_object_get(j->body, "draft"));
}

static void refuse_detail(struct svc_admission *a, char *out, size_t n)
{
    snprintf(out, n,
             "at most %u orders may be in flight (placed, not yet confirmed or cancelled); "
             "nothing was done: retry after Retry-After seconds",
             svc_admission_limit(a));
}

int svc_admission_prepare(struct svc_job *j, struct ag_http_req *req)
{
    size_t blen = 0;
    ag_http_req_body(req, &blen);
    if (blen) { /* what svc_job_start does for a route without prepare */
        struct ag_err err;
        ag_err_clear(&err);
        if (ag_http_req_json(req, &j->body, &err)) {
            ag_http_respond_problem(req, 400, NULL, "Malformed JSON", err.msg, NULL);
            return 1;
        }
    }
    struct svc_admission *a = j->env->admission;
    if (!a || !starts_saga(j, req)) return 0;
    struct adm_job *st = ag_calloc(1, sizeof *st);
    if (!st) { /* negative: svc_job_start answers it (500) */
        json_decref(j->body);
        j->body = NULL;
        return AG_ENOMEM;
    }
    st->seq = svc_waiters_seq(a->waiters, ADM_KEY); /* before the try: no lost wake-up */
    if (svc_admission_enter(a)) {
        st->state = ADM_HELD;
    } else if (a->queue_ns) {
        st->state = ADM_WAITING; /* the handler tries again, then it parks (below) */
    } else {
        ag_free(st);
        json_decref(j->body);
        j->body = NULL;
        if (a->rejected) ag_obs_counter_inc(a->rejected);
        char detail[200];
        refuse_detail(a, detail, sizeof detail);
        ag_http_resp_header(req, "Retry-After", "1");
        ag_http_resp_header(req, "X-Agora-Error", "service");
        ag_http_respond_problem(req, 503, NULL, "Too many orders in flight", detail, NULL);
        return 1;
    }
    j->ext = st;
    return 0;
}

bool svc_admission_check(struct svc_job *j)
{
    struct adm_job *st = j->ext;
    if (!st || st->state != ADM_WAITING) return false;
    struct svc_admission *a = j->env->admission;
    st->seq = svc_waiters_seq(a->waiters, ADM_KEY);
    if (svc_admission_enter(a)) {
        st->state = ADM_HELD;
        return false;
    }
    char detail[200];
    refuse_detail(a, detail, sizeof detail);
    svc_problem(j, 503, "Too many orders in flight", "%s", detail);
    return true;
}

int svc_admission_park(struct svc_job *j, struct ag_http_req *req)
{
    struct adm_job *st = j->ext;
    if (!st || st->state != ADM_WAITING || j->status != 503) return 0;
    struct svc_admission *a = j->env->admission;
    uint64_t deadline = ag_http_req_start_ns(req) + a->queue_ns;
    if (now_ns() < deadline && svc_wait_park(a->waiters, j, req, ADM_KEY, &st->seq, deadline) == 0)
        return 1; /* woken when a slot is freed: the handler tries again */
    return 0;     /* waited long enough: the 503 */
}

/* A caller without an HTTP request (the MCP tools): the job takes a slot now, or
 * is marked waiting so that its handler's svc_admission_check tries once more and
 * answers 503 — no parking (the caller holds no request to park). */
int svc_admission_attach(struct svc_job *j)
{
    struct svc_admission *a = j->env->admission;
    if (!a) return 0;
    struct adm_job *st = ag_calloc(1, sizeof *st);
    if (!st) return AG_ENOMEM;
    st->seq = svc_waiters_seq(a->waiters, ADM_KEY);
    st->state = svc_admission_enter(a) ? ADM_HELD : ADM_WAITING;
    j->ext = st;
    return 0;
}

void svc_admission_placed(struct svc_job *j, const char *order_id)
{
    struct adm_job *st = j->ext;
    if (!st || st->state != ADM_HELD) return;
    st->state = ADM_NONE;
    svc_admission_track(j->env->admission, order_id);
}

void svc_admission_finish(struct svc_job *j, struct ag_http_req *req)
{
    AG_UNUSED(req);
    struct adm_job *st = j->ext;
    struct svc_admission *a = j->env->admission;
    if (st && st->state == ADM_HELD) svc_admission_leave(a);
    if (st && st->state == ADM_WAITING && j->status == 503 && a->rejected)
        ag_obs_counter_inc(a->rejected); /* refused after its wait */
    ag_free(st);
    j->ext = NULL;
}
