/*
 * The saga engine: a queue of saga ids, the worker threads that drive them
 * (run.c), the recorder loop, the retry thread, and the public API of
 * include/agora/saga.h.
 *
 * Sagas are state machines, not threads. A worker takes a saga from the FIFO,
 * loads its state from the log (the first time in a run), runs its next action
 * or compensation (a synchronous call into a participant), encodes the event that
 * records the outcome and submits it with ag_store_append_async — then takes the
 * next saga: it never waits for a saga event to be durable. The append completes
 * on the recorder thread (a libuv loop bound to the store), which folds the event
 * into the saga's state and puts the saga back at the head of the queue for its
 * next move, or lets it go after its terminal event. So a step's outcome is
 * durable before the next step starts (what makes every crash point resumable,
 * as before), while a few workers keep many sagas in flight: `running` counts the
 * sagas taken from the queue and not yet let go (in a step or in an append). A
 * store without async appends is written synchronously by the worker instead.
 *
 * Asynchronous actions and compensations (ag_saga_step.action_async,
 * compensate_async) go further: the worker only starts the participant call
 * (start_async) and takes the next saga; the
 * participant finishes it with ag_saga_call_done from its completion thread,
 * usually having committed StepSucceeded (ag_saga_call_record) in the same
 * multi-stream append as its own events, so the engine folds the event in and
 * requeues the saga without an append of its own. A failed attempt records
 * nothing and marks the saga for one synchronous move (force_sync), which runs the
 * action through its policy (a compensation with its attempts, and AG_EEXISTS's
 * forward recovery) and records the outcome as above.
 *
 * A saga id is queued, running or waiting to be run again at most once
 * (the `active` set of id hashes), so one saga never runs on two threads; a
 * retry recorded while its saga is active goes on the `rerun` list and the
 * worker queues the id again when it lets it go. Recording with the exact
 * expected version (log.c) also guards against another process driving the same
 * saga: the loser stops and leaves it to the winner.
 *
 * Inline moves (cfg.inline_moves). When the record of a move completes on the
 * recorder thread and the next move cannot block — an asynchronous call to start,
 * or only the terminal event to record — the recorder runs it right there
 * (go_on) instead of queueing the saga for a worker: a saga whose steps are all
 * asynchronous goes from SagaStarted to SagaCompleted without a worker, one
 * thread hop (store writer -> recorder) per step instead of two. Synchronous
 * steps, retries and compensation backoffs still go to the workers.
 *
 * Starts. ag_saga_start records SagaStarted and queues the id; ag_saga_start_async
 * submits the encoded SagaStarted right away (asynchronously, no worker involved;
 * with a synchronous store a worker records it first), and its completion queues
 * the saga to run (`starts_pending` counts the starts not yet durable, for
 * ag_saga_wait_starts).
 *
 * Interruptions. A run that ends in an error (the store cannot write, out of
 * memory) moves the id to the `delayed` list with a due time on the injected
 * clock's monotonic time, 100 ms doubling per try (at most 3.2 s during a store
 * outage, which is retried for as long as it lasts; other errors give up after
 * 20 tries). The retry thread wakes every 100 ms (a timed wait on a monotonic
 * condition, which stop cuts short) and queues the ids that are due.
 *
 * Idle. `running` counts workers inside a saga; ag_saga_engine_wait_idle waits on
 * `idle` until nothing is queued or running and no delayed id is due, so tests
 * need neither sleeps nor polls.
 *
 * Resume. At start every saga whose last event is not terminal is queued.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "agora/obs.h"
#include "internal.h"

struct ag_saga_engine;
struct qitem;

/* An asynchronous action in flight (inside its saga's qitem). */
struct ag_saga_call {
    struct qitem *q;
    uint64_t t0;                /* when it started (engine clock, monotonic) */
    struct ag_cb *cb;           /* the step's breaker, or NULL */
    struct ag_cb_permit permit; /* ... its admission */
    struct ag_append_part part; /* the success record, for ag_saga_call_record */
    bool has_record;
    bool back;   /* a compensation */
    size_t step; /* the step whose action or compensation runs */
};

struct qitem {
    struct qitem *next;
    struct ag_saga_engine *e;
    struct saga_start start; /* SagaStarted to record first (owned), or nulls */
    uint64_t due_ns;         /* delayed list: when to queue it again (monotonic) */
    unsigned tries;          /* interrupted runs so far */
    struct saga_state *st;   /* the saga's state while it is in flight (owned), or NULL */
    struct saga_rec rec;     /* the event being recorded (its data owned) */
    struct ag_event_data ev; /* ... encoded (into st->buf, or borrowing `start`) */
    struct ag_append_req req;
    char stream[SAGA_STREAM_MAX + 8]; /* saga-<id>, for the start */
    char id[SAGA_STREAM_MAX];
    struct ag_saga_call call;       /* an asynchronous action in flight */
    bool force_sync;                /* the next move runs the step synchronously */
    char key[SAGA_STREAM_MAX + 80]; /* the action's idempotency key */
    struct ag_span span;            /* the move in flight (inactive: tracing off, or no trace) */
};

struct ag_saga_engine {
    struct saga_env env;
    pthread_t *threads;
    unsigned nthreads;
    pthread_mutex_t lock;
    pthread_cond_t work;   /* workers wait here for the queue (one woken per item) */
    pthread_cond_t starts; /* ag_saga_wait_starts waits here */
    pthread_cond_t tick;   /* the retry thread's timed sleep; stop wakes it */
    pthread_cond_t idle;   /* ag_saga_engine_wait_idle waits here */
    struct qitem *head, *tail;
    struct qitem *delayed;  /* interrupted sagas waiting to be retried */
    struct qitem *rerun;    /* ids asked to run again while they were active */
    unsigned running;       /* sagas taken from the queue and not let go: in a step or an append */
    pthread_cond_t drained; /* stop waits here for the appends in flight */
    /* the recorder: a libuv loop where async appends complete */
    uv_loop_t loop;
    uv_async_t loop_stop;
    struct ag_store_loop *sloop; /* NULL: appends are synchronous, on the worker */
    pthread_t loop_thread;
    bool loop_started;
    bool inline_moves; /* cfg.inline_moves: short moves run on the recorder thread */
    /* agora_saga_step_duration_seconds per definition: 2 * nsteps series (actions,
     * then compensations), or NULL */
    struct ag_obs_series ***step_series;
    pthread_t retry_thread;
    bool retry_started;
    bool stopping;
    uint64_t starts_pending; /* async starts not yet durable */
    uint64_t starts_failed;  /* async starts that could not be recorded */
    int starts_failed_rc;    /* why the last one could not (AG_EUNAVAILABLE: retry later) */
    /* ids queued or running: a small open-addressing set of hashes */
    uint64_t *active;
    size_t active_cap, active_n;
    struct ag_saga_engine_stats stats;
};

/* ---- active set (lock held) ---- */

static bool active_add(struct ag_saga_engine *e, uint64_t h)
{
    if ((e->active_n + 1) * 2 > e->active_cap) {
        size_t cap = e->active_cap ? e->active_cap * 2 : 1024;
        uint64_t *a = ag_calloc(cap, sizeof *a);
        if (!a) return false;
        for (size_t i = 0; i < e->active_cap; i++) {
            if (!e->active[i]) continue;
            size_t j = e->active[i] & (cap - 1);
            while (a[j]) j = (j + 1) & (cap - 1);
            a[j] = e->active[i];
        }
        ag_free(e->active);
        e->active = a;
        e->active_cap = cap;
    }
    size_t j = h & (e->active_cap - 1);
    while (e->active[j]) {
        if (e->active[j] == h) return false;
        j = (j + 1) & (e->active_cap - 1);
    }
    e->active[j] = h;
    e->active_n++;
    return true;
}

static void active_del(struct ag_saga_engine *e, uint64_t h)
{
    size_t mask = e->active_cap - 1, j = h & mask;
    while (e->active[j] && e->active[j] != h) j = (j + 1) & mask;
    if (!e->active[j]) return;
    e->active[j] = 0;
    e->active_n--;
    for (size_t k = (j + 1) & mask; e->active[k]; k = (k + 1) & mask) { /* re-place the run */
        uint64_t v = e->active[k];
        e->active[k] = 0;
        size_t m = v & mask;
        while (e->active[m]) m = (m + 1) & mask;
        e->active[m] = v;
    }
}

static uint64_t id_hash(const char *id)
{
    uint64_t h = ag_xxh3(id, strlen(id));
    return h ? h : 1;
}

/* ---- the queue ---- */

/* Queue `q` (lock held, its id already in the active set). */
static void push_locked(struct ag_saga_engine *e, struct qitem *q)
{
    q->next = NULL;
    if (e->tail)
        e->tail->next = q;
    else
        e->head = q;
    e->tail = q;
    e->stats.queued++;
    pthread_cond_signal(&e->work);
}

/* Forget the in-memory state: the next move loads it from the log again. */
static void drop_state(struct qitem *q)
{
    json_decref(q->rec.data);
    q->rec.data = NULL;
    if (!q->st) return;
    saga_state_free(q->st);
    ag_free(q->st);
    q->st = NULL;
}

static void item_free(struct qitem *q)
{
    saga_start_free(&q->start);
    drop_state(q);
    ag_free(q);
}

static void submit_start(struct ag_saga_engine *e, struct qitem *q);

/* Queue `id` unless it is active already; takes `start` (may be all nulls). With
 * a start and async appends, submit the start instead: its completion queues it. */
static int enqueue_item(struct ag_saga_engine *e, const char *id, struct saga_start start)
{
    struct qitem *q = ag_calloc(1, sizeof *q);
    if (!q) {
        saga_start_free(&start);
        return AG_ENOMEM;
    }
    snprintf(q->id, sizeof q->id, "%s", id);
    q->e = e;
    q->start = start;
    pthread_mutex_lock(&e->lock);
    if (!active_add(e, id_hash(id))) { /* already queued or running: it was started */
        pthread_mutex_unlock(&e->lock);
        item_free(q);
        return 0;
    }
    if (q->start.data) e->starts_pending++;
    if (q->start.data && e->sloop) { /* recorded without a worker; runs once durable */
        e->running++;
        pthread_mutex_unlock(&e->lock);
        submit_start(e, q);
        return 0;
    }
    push_locked(e, q);
    pthread_mutex_unlock(&e->lock);
    return 0;
}

static void enqueue(struct ag_saga_engine *e, const char *id)
{
    enqueue_item(e, id, (struct saga_start){0});
}

/* Remove `id` from the rerun list (lock held); true when it was there. */
static bool take_rerun(struct ag_saga_engine *e, const char *id)
{
    for (struct qitem **pp = &e->rerun; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->id, id) != 0) continue;
        struct qitem *r = *pp;
        *pp = r->next;
        item_free(r);
        return true;
    }
    return false;
}

/* Make sure `id` runs again after now: queue it, or, when it is queued or running
 * (it may have loaded its state before the caller's event), have the worker queue
 * it once more when it is done. */
static int enqueue_again(struct ag_saga_engine *e, const char *id)
{
    struct qitem *q = ag_calloc(1, sizeof *q);
    if (!q) return AG_ENOMEM;
    snprintf(q->id, sizeof q->id, "%s", id);
    q->e = e;
    pthread_mutex_lock(&e->lock);
    if (active_add(e, id_hash(id))) {
        push_locked(e, q);
    } else {
        q->next = e->rerun;
        e->rerun = q;
    }
    pthread_mutex_unlock(&e->lock);
    return 0;
}

/* Whether some saga can run now (lock held). */
static bool busy_locked(struct ag_saga_engine *e)
{
    if (e->head || e->running) return true;
    if (!e->delayed) return false;
    uint64_t now = ag_clock_mono(e->env.clock);
    for (struct qitem *q = e->delayed; q; q = q->next)
        if (q->due_ns <= now) return true;
    return false;
}

/* ---- workers ---- */

/* An interrupted saga (I/O error, out of memory) is retried with a growing delay;
 * during a store outage at least every 3.2 s, so it resumes soon after (lock
 * held). */
static void delay_locked(struct ag_saga_engine *e, struct qitem *q, int rc)
{
    q->tries++;
    unsigned shift = q->tries < 8 ? q->tries : 8;
    if (rc == AG_EUNAVAILABLE && shift > 5) shift = 5;
    q->due_ns = ag_clock_mono(e->env.clock) + (100000000ull << shift);
    q->next = e->delayed;
    e->delayed = q;
}

static void *retry_main(void *arg)
{
    struct ag_saga_engine *e = arg;
    ag_thread_name("ag-saga-retry");
    pthread_mutex_lock(&e->lock);
    while (!e->stopping) {
        struct timespec ts;
        ag_deadline_mono_in_ms(&ts, 100);
        pthread_cond_timedwait(&e->tick, &e->lock, &ts);
        uint64_t now = ag_clock_mono(e->env.clock);
        for (struct qitem **pp = &e->delayed; *pp;) {
            struct qitem *q = *pp;
            if (q->due_ns > now) {
                pp = &q->next;
                continue;
            }
            *pp = q->next;
            push_locked(e, q);
        }
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

static struct qitem *take_locked(struct ag_saga_engine *e)
{
    struct qitem *q = e->head;
    e->head = q->next;
    if (!e->head) e->tail = NULL;
    e->stats.queued--;
    e->running++;
    return q;
}

/* Let go of a running saga (lock held); stop waits for the last one. */
static void let_go_locked(struct ag_saga_engine *e)
{
    e->running--;
    if (!e->running) pthread_cond_broadcast(&e->drained);
}

static size_t next_compensation(const struct saga_state *s);

/* ---- spans: one per move (a step's action or compensation, or the end) ---- */

/* Begin q's move span, a child of the saga's trace, and make it the worker's
 * current span (the participants' appends below become its children). */
static void span_begin(struct qitem *q)
{
    const struct saga_state *s = q->st;
    q->span.kind = 0;
    if (!ag_span_enabled() || !s->has_trace) return;
    size_t i = s->compensating ? next_compensation(s) : s->next;
    const char *step = i < s->def->nsteps ? s->def->steps[i].name : "end";
    char name[AG_SPAN_NAME_MAX];
    snprintf(name, sizeof name, "saga %s%s", step, s->compensating ? " compensate" : "");
    ag_span_begin(&q->span, name, AG_SPAN_INTERNAL, &s->trace);
    ag_span_attr_str(&q->span, "saga.id", s->id);
    ag_span_attr_str(&q->span, "saga.type", s->def->type);
    ag_span_attr_str(&q->span, "saga.step", step);
    ag_span_attr_int(&q->span, "saga.attempt", (int64_t)q->tries + 1);
    ag_span_set_current(&q->span.ctx);
}

/* End q's move span with its outcome (the event recorded, or why none was). */
static void span_end(struct qitem *q, const char *outcome, bool failed)
{
    ag_span_set_current(NULL);
    if (!q->span.kind) return;
    ag_span_attr_str(&q->span, "saga.outcome", outcome);
    q->span.status = failed ? AG_SPAN_ERROR : AG_SPAN_OK;
    ag_span_end(&q->span);
    q->span.kind = 0;
}

static bool failed_outcome(const char *type)
{
    return strstr(type, "Failed") != NULL;
}

/* Done with `q` after a run that returned `rc` (or could not start: `dropped`). */
static void finish(struct ag_saga_engine *e, struct qitem *q, int rc, bool dropped,
                   enum saga_end end)
{
    drop_state(q);
    pthread_mutex_lock(&e->lock);
    if (end == SAGA_END_COMPLETED) e->stats.completed++;
    if (end == SAGA_END_COMPENSATED) e->stats.compensated++;
    if (end == SAGA_END_FAILED) e->stats.failed++;
    if (!dropped && rc && (q->tries < 20 || rc == AG_EUNAVAILABLE)) { /* an outage may last */
        delay_locked(e, q, rc);                                       /* stays active */
    } else if (!dropped && take_rerun(e, q->id)) { /* asked to run again while it ran */
        q->tries = 0;
        push_locked(e, q);
    } else {
        active_del(e, id_hash(q->id));
        item_free(q);
    }
    let_go_locked(e);
    if (!busy_locked(e)) pthread_cond_broadcast(&e->idle);
    pthread_mutex_unlock(&e->lock);
}

/* Put a saga whose move was recorded back for its next one: a started saga at
 * the tail, one that made progress at the head (finishing sagas comes before
 * starting more). */
static void requeue(struct ag_saga_engine *e, struct qitem *q, bool front)
{
    pthread_mutex_lock(&e->lock);
    if (front) {
        q->next = e->head;
        e->head = q;
        if (!e->tail) e->tail = q;
        e->stats.queued++;
        pthread_cond_signal(&e->work);
    } else {
        push_locked(e, q);
    }
    let_go_locked(e);
    pthread_mutex_unlock(&e->lock);
}

static void go_on(struct ag_saga_engine *e, struct qitem *q, bool front);

/* SagaStarted of an async start is durable (or not): wake whoever waits for
 * starts, and run the saga. */
static void start_recorded(struct ag_saga_engine *e, struct qitem *q, int rc, const char *why)
{
    saga_start_free(&q->start);
    if (rc == AG_ECONFLICT) rc = 0; /* started before */
    pthread_mutex_lock(&e->lock);
    e->starts_pending--;
    if (rc)
        e->starts_failed++, e->starts_failed_rc = rc;
    else
        e->stats.started++;
    pthread_cond_broadcast(&e->starts);
    pthread_mutex_unlock(&e->lock);
    if (rc) {
        AG_ERROR("saga.start_failed", AG_LS("saga", q->id), AG_LS("error", why));
        finish(e, q, AG_EIO, true, SAGA_END_NONE);
        return;
    }
    go_on(e, q, false);
}

/* The append of `q`'s event completed (on the recorder thread, or inline). */
static void recorded(void *ud, int status, const struct ag_append_result *res,
                     const struct ag_err *err)
{
    AG_UNUSED(res);
    struct qitem *q = ud;
    struct ag_saga_engine *e = q->e;
    const char *why = ag_err_msg(err, status);
    if (q->start.data) {
        start_recorded(e, q, status, why);
        return;
    }
    span_end(q, status ? ag_strerror(status) : q->ev.type,
             status || failed_outcome(q->ev.type ? q->ev.type : ""));
    if (status) { /* a conflict: another driver wrote first and goes on with it */
        if (status != AG_ECLOSED && status != AG_ECONFLICT)
            AG_WARN("saga.interrupted", AG_LS("saga", q->id), AG_LS("error", why));
        finish(e, q, status == AG_ECONFLICT ? 0 : status, false, SAGA_END_NONE);
        return;
    }
    saga_applied(&e->env, q->st, q->rec.kind, q->rec.data, &q->ev.id);
    json_decref(q->rec.data);
    q->rec.data = NULL;
    if (q->st->terminal)
        finish(e, q, 0, false, q->st->end);
    else
        go_on(e, q, true);
}

/* Append q->ev to `stream` at `expected`: asynchronously when the store can. */
static void submit(struct ag_saga_engine *e, struct qitem *q, const char *stream, int64_t expected)
{
    q->req = (struct ag_append_req){.stream = stream,
                                    .stream_len = strlen(stream),
                                    .expected_version = expected,
                                    .events = &q->ev,
                                    .count = 1,
                                    .cb = recorded,
                                    .ud = q};
    if (e->sloop && ag_store_append_async(e->sloop, &q->req) == 0) return;
    struct ag_err err;
    ag_err_clear(&err);
    int rc =
        ag_store_append(e->env.store, stream, q->req.stream_len, expected, &q->ev, 1, NULL, &err);
    recorded(q, rc, NULL, &err);
}

static void submit_start(struct ag_saga_engine *e, struct qitem *q)
{
    saga_stream_of(q->stream, q->id);
    saga_start_event(&e->env, &q->start, &q->ev);
    submit(e, q, q->stream, AG_STORE_NO_STREAM);
}

/* ---- asynchronous actions ---- */

/* The compensation a backward move runs next (the highest in `to_undo`), or
 * SIZE_MAX when there is none to run asynchronously. */
static size_t next_compensation(const struct saga_state *s)
{
    if (!s->to_undo) return SIZE_MAX;
    size_t i = (size_t)(63 - __builtin_clzll(s->to_undo));
    return i < s->def->nsteps ? i : SIZE_MAX;
}

/* Whether step `i`'s action (or compensation, `back`) may run asynchronously:
 * it has an async form, no injected fault, and a policy without limiter,
 * bulkhead or fallback whose breaker (`*cb`, or NULL) is closed. */
static bool async_ok(const struct saga_state *s, size_t i, bool back, struct ag_cb **cb)
{
    const struct ag_saga_step *st = &s->def->steps[i];
    *cb = NULL;
    if (back) /* compensations run without the policy (run.c) */
        return st->compensate_async && st->fault.comp_error_rate <= 0;
    const struct ag_pipeline *policy = st->policy ? st->policy : s->def->policy;
    if (!st->action_async || st->fault.error_rate > 0 || st->fault.latency_ms) return false;
    if (policy && (policy->limiter || policy->bulkhead || policy->fallback.on)) return false;
    *cb = policy ? policy->breaker : NULL;
    if (!*cb) return true;
    enum ag_cb_state cs = ag_cb_state(*cb);
    return cs == AG_CB_CLOSED || cs == AG_CB_DISABLED;
}

/* Start the saga's next action or compensation asynchronously when it can be
 * (see ag_saga_step.action_async); false: run the move synchronously. */
static bool start_async(struct ag_saga_engine *e, struct qitem *q)
{
    struct saga_state *s = q->st;
    if (q->force_sync) {
        q->force_sync = false;
        return false;
    }
    size_t i = s->compensating ? next_compensation(s) : s->next;
    if (!e->sloop || i >= s->def->nsteps) return false;
    const struct ag_saga_step *st = &s->def->steps[i];
    struct ag_saga_call *c = &q->call;
    *c = (struct ag_saga_call){.q = q, .back = s->compensating, .step = i};
    if (!async_ok(s, i, c->back, &c->cb)) return false;
    struct ag_err err;
    if (c->cb && ag_cb_allow(c->cb, &c->permit, NULL, &err)) return false;
    if (c->back)
        snprintf(q->key, sizeof q->key, "%s:%s:compensate", s->id, st->name);
    else
        snprintf(q->key, sizeof q->key, "%s:%s", s->id, st->name);
    c->t0 = ag_clock_mono(e->env.clock);
    if (c->back)
        st->compensate_async(s->def->ud, s->data, q->key, s->reason, c);
    else
        st->action_async(s->def->ud, s->data, q->key, NULL, c);
    return true;
}

/* What the saga's next move needs: an asynchronous participant call, only the
 * terminal event (no participant), or a synchronous step (a worker: it may
 * block in the participant, its retries or its compensation backoff). */
enum move_kind { MOVE_ASYNC, MOVE_END, MOVE_SYNC };

static enum move_kind move_kind(const struct ag_saga_engine *e, const struct qitem *q)
{
    const struct saga_state *s = q->st;
    if (q->force_sync || !e->sloop) return MOVE_SYNC;
    if (!s->compensating && s->next >= s->def->nsteps) return MOVE_END;
    if (s->compensating && !s->to_undo) return MOVE_END;
    size_t i = s->compensating ? next_compensation(s) : s->next;
    struct ag_cb *cb;
    return i < s->def->nsteps && async_ok(s, i, s->compensating, &cb) ? MOVE_ASYNC : MOVE_SYNC;
}

struct ag_store_loop *ag_saga_call_loop(struct ag_saga_call *call)
{
    return call->q->e->sloop;
}

/* The success of the call in flight, StepSucceeded or CompensationSucceeded (as
 * run.c records them), encoded into q->ev (0, or AG_ENOMEM). */
static int encode_success(struct ag_saga_engine *e, struct qitem *q)
{
    struct saga_state *s = q->st;
    size_t i = q->call.step;
    json_decref(q->rec.data);
    json_t *j = saga_step_json(i, s->def->steps[i].name, NULL);
    if (j && q->call.back && i == s->next) json_object_set_new(j, "failedStep", json_true());
    q->rec =
        (struct saga_rec){q->call.back ? SAGA_EV_COMP_SUCCEEDED : SAGA_EV_STEP_SUCCEEDED, j, i};
    if (!q->rec.data || saga_encode(&e->env, s, q->rec.kind, q->rec.data, &q->ev)) return AG_ENOMEM;
    return 0;
}

const struct ag_append_part *ag_saga_call_record(struct ag_saga_call *call)
{
    struct qitem *q = call->q;
    struct ag_saga_engine *e = q->e;
    if (!e->env.store->ops->append_multi_async || encode_success(e, q)) return NULL;
    call->part =
        (struct ag_append_part){q->st->stream, strlen(q->st->stream), q->st->version, &q->ev, 1};
    call->has_record = true;
    return &call->part;
}

static void recorded(void *ud, int status, const struct ag_append_result *res,
                     const struct ag_err *err);
static void submit(struct ag_saga_engine *e, struct qitem *q, const char *stream, int64_t expected);

void ag_saga_call_done(struct ag_saga_call *call, int rc, const struct ag_err *err, bool recorded_)
{
    struct qitem *q = call->q;
    struct ag_saga_engine *e = q->e;
    struct saga_state *s = q->st;
    if (call->cb) ag_cb_record(call->cb, &call->permit, rc);
    if (rc) { /* the policy's retries and the failure's record: synchronously */
        if (q->span.kind) ag_span_attr_str(&q->span, "error", ag_err_msg(err, rc));
        span_end(q, "attempt failed", true);
        AG_DEBUG("saga.async_step_failed", AG_LS("saga", q->id),
                 AG_LS("error", ag_err_msg(err, rc)));
        json_decref(q->rec.data);
        q->rec.data = NULL;
        q->force_sync = true;
        requeue(e, q, true);
        return;
    }
    if (e->env.step_seconds)
        e->env.step_seconds(e->env.step_ctx, s->def, call->step, call->back,
                            (double)(ag_clock_mono(e->env.clock) - call->t0) / 1e9);
    if (recorded_ && call->has_record) { /* durable with the effect */
        recorded(q, 0, NULL, NULL);
        return;
    }
    if (encode_success(e, q)) {
        span_end(q, ag_strerror(AG_ENOMEM), true);
        finish(e, q, AG_ENOMEM, false, SAGA_END_NONE);
        return;
    }
    if (q->span.kind) ag_span_set_current(&q->span.ctx); /* the record: a child of the move */
    submit(e, q, s->stream, s->version);
    ag_span_set_current(NULL);
}

/* Load q's state from the log the first time it moves in this run; false when
 * there is nothing to move (it had ended, or could not be loaded: let go). */
static bool load(struct ag_saga_engine *e, struct qitem *q)
{
    if (q->st) return true;
    struct ag_err err;
    ag_err_clear(&err);
    if (!(q->st = ag_malloc(sizeof *q->st))) {
        finish(e, q, AG_ENOMEM, false, SAGA_END_NONE);
        return false;
    }
    int rc = saga_load(&e->env, q->id, q->st, &err);
    if (!rc && !q->st->terminal) return true;
    if (rc && rc != AG_ECLOSED && rc != AG_ENOTFOUND)
        AG_WARN("saga.interrupted", AG_LS("saga", q->id), AG_LS("error", ag_err_msg(&err, rc)));
    finish(e, q, rc == AG_ENOTFOUND || rc == AG_ECONFLICT ? 0 : rc, false, SAGA_END_NONE);
    return false;
}

/* Run the next step synchronously (or the terminal event) and submit its record. */
static void move_sync(struct ag_saga_engine *e, struct qitem *q)
{
    struct ag_err err;
    ag_err_clear(&err);
    int rc = saga_next(&e->env, q->st, &q->rec, &err);
    if (!rc && saga_encode(&e->env, q->st, q->rec.kind, q->rec.data, &q->ev))
        rc = ag_err_set(&err, AG_ENOMEM, "out of memory");
    if (rc) {
        if (rc != AG_ECLOSED && rc != AG_ENOTFOUND)
            AG_WARN("saga.interrupted", AG_LS("saga", q->id), AG_LS("error", ag_err_msg(&err, rc)));
        span_end(q, ag_strerror(rc), true);
        finish(e, q, rc == AG_ENOTFOUND || rc == AG_ECONFLICT ? 0 : rc, false, SAGA_END_NONE);
        return;
    }
    submit(e, q, q->st->stream, q->st->version);
    ag_span_set_current(NULL); /* the recorder thread ends the span */
}

/* One move of saga `q` (on a worker): load it if needed, run its next step,
 * submit the record. */
static void move(struct ag_saga_engine *e, struct qitem *q)
{
    if (q->start.data) {
        submit_start(e, q);
        return;
    }
    if (!load(e, q)) return;
    span_begin(q);
    if (start_async(e, q)) { /* ag_saga_call_done goes on */
        ag_span_set_current(NULL);
        return;
    }
    move_sync(e, q);
}

/* Whether the move after a durable one may run right here, on the recorder
 * thread (see go_on). */
static bool inline_ok(struct ag_saga_engine *e)
{
    if (!e->inline_moves || !e->loop_started || !pthread_equal(pthread_self(), e->loop_thread))
        return false;
    pthread_mutex_lock(&e->lock);
    bool stopping = e->stopping;
    pthread_mutex_unlock(&e->lock);
    return !stopping;
}

/* The move of `q` that follows a durable one (its start or a step's record).
 * With inline moves (cfg.inline_moves) and on the recorder thread, a move that
 * cannot block — starting an asynchronous participant call, or recording the
 * terminal event — runs right here: no hand-off to a worker (a futex wake and two
 * context switches per step), the saga stays `running`. Anything else (a
 * synchronous step, a retry through the policy, a compensation's backoff) goes
 * back to the queue for a worker: at the head when the saga made progress, at
 * the tail when it just started. */
static void go_on(struct ag_saga_engine *e, struct qitem *q, bool front)
{
    if (!inline_ok(e)) {
        requeue(e, q, front);
        return;
    }
    if (!load(e, q)) return;
    enum move_kind k = move_kind(e, q);
    if (k == MOVE_SYNC) {
        requeue(e, q, front);
        return;
    }
    span_begin(q);
    if (k == MOVE_END) {
        move_sync(e, q);
        return;
    }
    if (start_async(e, q)) {
        ag_span_set_current(NULL);
        return;
    }
    ag_span_set_current(NULL); /* the breaker refused it since: a worker runs it */
    q->span.kind = 0;
    requeue(e, q, front);
}

static void *worker(void *arg)
{
    struct ag_saga_engine *e = arg;
    ag_thread_name("ag-saga-worker");
    for (;;) {
        pthread_mutex_lock(&e->lock);
        while (!e->head && !e->stopping) pthread_cond_wait(&e->work, &e->lock);
        if (e->stopping) {
            pthread_mutex_unlock(&e->lock);
            return NULL;
        }
        struct qitem *q = take_locked(e);
        pthread_mutex_unlock(&e->lock);
        move(e, q);
    }
}

/* ---- the recorder loop ---- */

static void loop_stop_cb(uv_async_t *a)
{
    struct ag_saga_engine *e = a->data;
    ag_store_loop_close(e->sloop);
    uv_close((uv_handle_t *)a, NULL);
}

static void *loop_main(void *arg)
{
    struct ag_saga_engine *e = arg;
    ag_thread_name("ag-saga-loop");
    uv_run(&e->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* Bind a loop to the store for async appends; without one (a store with no async
 * appends) the workers append synchronously. */
static void start_loop(struct ag_saga_engine *e)
{
    if (!e->env.store->ops->append_async || uv_loop_init(&e->loop) != 0) return;
    e->loop_stop.data = e;
    if (uv_async_init(&e->loop, &e->loop_stop, loop_stop_cb) == 0 &&
        ag_store_loop_init(e->env.store, &e->loop, &e->sloop) == 0 &&
        pthread_create(&e->loop_thread, NULL, loop_main, e) == 0) {
        e->loop_started = true;
        return;
    }
    if (e->sloop) ag_store_loop_close(e->sloop);
    e->sloop = NULL;
    uv_close((uv_handle_t *)&e->loop_stop, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uv_loop_close(&e->loop);
}

static void stop_loop(struct ag_saga_engine *e)
{
    if (!e->loop_started) return;
    uv_async_send(&e->loop_stop);
    pthread_join(e->loop_thread, NULL);
    uv_loop_close(&e->loop);
    e->sloop = NULL;
}

/* ---- start / stop ---- */

static void nanosleep_ns(void *ctx, uint64_t ns)
{
    AG_UNUSED(ctx);
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void resume_one(void *ud, const char *id)
{
    struct ag_saga_engine *e = ud;
    enqueue(e, id);
    e->stats.resumed++;
}

struct resume_count {
    struct ag_saga_engine *e;
    size_t n;
};

static void resume_counted(void *ud, const char *id)
{
    struct resume_count *c = ud;
    enqueue(c->e, id);
    c->n++;
}

size_t ag_saga_engine_resume(struct ag_saga_engine *e)
{
    struct resume_count c = {e, 0};
    saga_each_unfinished(&e->env, resume_counted, &c);
    pthread_mutex_lock(&e->lock);
    e->stats.resumed += c.n;
    pthread_mutex_unlock(&e->lock);
    AG_INFO("saga.resumed", AG_LU("sagas", (unsigned long long)c.n));
    return c.n;
}

static int check_defs(const struct ag_saga_engine_config *cfg, struct ag_err *err)
{
    for (size_t i = 0; i < cfg->ndefs; i++)
        if (cfg->defs[i].nsteps > SAGA_STEPS_MAX)
            return ag_err_set(err, AG_EINVAL, "saga %s: %zu steps, at most %d", cfg->defs[i].type,
                              cfg->defs[i].nsteps, SAGA_STEPS_MAX);
    return 0;
}

static void env_from(struct saga_env *env, const struct ag_saga_engine_config *cfg)
{
    *env = (struct saga_env){
        .store = cfg->store,
        .defs = cfg->defs,
        .ndefs = cfg->ndefs,
        .clock = cfg->clock ? cfg->clock : ag_clock_system(),
        .rng = cfg->rng ? cfg->rng : ag_rng_system(),
        .sleep = cfg->sleep ? cfg->sleep : nanosleep_ns,
        .sleep_ctx = cfg->sleep ? cfg->sleep_ctx : NULL,
    };
}

/* ---- agora_saga_step_duration_seconds{saga,step} ---- */

static void observe_step(void *ctx, const struct ag_saga_def *def, size_t step, bool back,
                         double seconds)
{
    struct ag_saga_engine *e = ctx;
    size_t d = (size_t)(def - e->env.defs);
    if (d >= e->env.ndefs || step >= def->nsteps || !e->step_series[d]) return;
    struct ag_obs_series *s = e->step_series[d][back ? def->nsteps + step : step];
    if (s) ag_obs_histogram_observe(s, seconds);
}

/* One series per action ("ReserveInventory") and compensation
 * ("ReserveInventory/compensate") of every definition, made once. */
static void define_metrics(struct ag_saga_engine *e, struct ag_obs_registry *r)
{
    static const char *const labels[] = {"saga", "step"};
    struct ag_obs_family_spec spec = {AG_OBS_HISTOGRAM, "agora_saga_step_duration_seconds",
                                      "Time a saga step's action or compensation took", 2, labels};
    struct ag_obs_family *f;
    if (!r || ag_obs_family_define(r, &spec, &f)) return;
    if (!(e->step_series = ag_calloc(e->env.ndefs, sizeof *e->step_series))) return;
    for (size_t d = 0; d < e->env.ndefs; d++) {
        const struct ag_saga_def *def = &e->env.defs[d];
        if (!(e->step_series[d] = ag_calloc(2 * def->nsteps + 1, sizeof **e->step_series)))
            continue;
        for (size_t i = 0; i < 2 * def->nsteps; i++) {
            char name[160];
            const char *step = def->steps[i % def->nsteps].name;
            snprintf(name, sizeof name, "%s%s", step, i < def->nsteps ? "" : "/compensate");
            const char *values[] = {def->type, name};
            ag_obs_series_get(f, values, &e->step_series[d][i]);
        }
    }
    e->env.step_seconds = observe_step;
    e->env.step_ctx = e;
}

static void free_metrics(struct ag_saga_engine *e)
{
    if (!e->step_series) return;
    for (size_t d = 0; d < e->env.ndefs; d++) ag_free(e->step_series[d]);
    ag_free(e->step_series);
}

static int start_threads(struct ag_saga_engine *e, unsigned threads)
{
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&e->threads[i], NULL, worker, e) != 0) break;
        e->nthreads++;
    }
    e->retry_started = pthread_create(&e->retry_thread, NULL, retry_main, e) == 0;
    return e->nthreads && e->retry_started ? 0 : AG_ENOMEM;
}

int ag_saga_engine_start(const struct ag_saga_engine_config *cfg, struct ag_saga_engine **out,
                         struct ag_err *err)
{
    int rc = check_defs(cfg, err);
    if (rc) return rc;
    unsigned threads = cfg->threads ? cfg->threads : 4;
    struct ag_saga_engine *e = ag_calloc(1, sizeof *e);
    if (!e || !(e->threads = ag_calloc(threads, sizeof *e->threads))) {
        ag_free(e);
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    env_from(&e->env, cfg);
    e->inline_moves = cfg->inline_moves;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->work, NULL);
    pthread_cond_init(&e->drained, NULL);
    ag_cond_init_mono(&e->starts); /* timed waits: monotonic, immune to clock jumps */
    ag_cond_init_mono(&e->tick);
    ag_cond_init_mono(&e->idle);
    if (!cfg->defer_resume) saga_each_unfinished(&e->env, resume_one, e);
    if (e->stats.resumed) AG_INFO("saga.resumed", AG_LU("sagas", e->stats.resumed));
    define_metrics(e, cfg->metrics);
    start_loop(e);
    if (start_threads(e, threads)) {
        ag_saga_engine_stop(e);
        return ag_err_set(err, AG_ENOMEM, "cannot start saga workers");
    }
    *out = e;
    return 0;
}

static void free_list(struct qitem *q)
{
    for (struct qitem *n; q; q = n) {
        n = q->next;
        item_free(q);
    }
}

void ag_saga_engine_stop(struct ag_saga_engine *e)
{
    if (!e) return;
    pthread_mutex_lock(&e->lock);
    e->stopping = true;
    pthread_cond_broadcast(&e->work);
    pthread_cond_broadcast(&e->starts);
    pthread_cond_broadcast(&e->tick);
    pthread_mutex_unlock(&e->lock);
    for (unsigned i = 0; i < e->nthreads; i++) pthread_join(e->threads[i], NULL);
    if (e->retry_started) pthread_join(e->retry_thread, NULL);
    pthread_mutex_lock(&e->lock); /* the appends in flight complete (and queue their saga) */
    while (e->running) pthread_cond_wait(&e->drained, &e->lock);
    pthread_mutex_unlock(&e->lock);
    stop_loop(e);
    free_metrics(e);
    free_list(e->head);
    free_list(e->delayed);
    free_list(e->rerun);
    ag_free(e->active);
    ag_free(e->threads);
    pthread_cond_destroy(&e->work);
    pthread_cond_destroy(&e->drained);
    pthread_cond_destroy(&e->starts);
    pthread_cond_destroy(&e->tick);
    pthread_cond_destroy(&e->idle);
    pthread_mutex_destroy(&e->lock);
    ag_free(e);
}

int ag_saga_engine_wait_idle(struct ag_saga_engine *e, int timeout_ms)
{
    struct timespec ts;
    ag_deadline_mono_in_ms(&ts, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&e->lock);
    while (!rc && busy_locked(e))
        if (pthread_cond_timedwait(&e->idle, &e->lock, &ts) == ETIMEDOUT) rc = AG_ETIMEDOUT;
    pthread_mutex_unlock(&e->lock);
    return rc;
}

/* ---- starting sagas ---- */

static int check_start(struct ag_saga_engine *e, const char *type, const char *saga_id,
                       struct ag_err *err)
{
    if (!saga_find_def(&e->env, type))
        return ag_err_set(err, AG_EINVAL, "unknown saga type '%s'", type);
    if (strlen(saga_id) > SAGA_ID_MAX) return ag_err_set(err, AG_EINVAL, "saga id too long");
    return 0;
}

int ag_saga_start(struct ag_saga_engine *e, const char *type, const char *saga_id,
                  const json_t *data, const struct ag_event *cause, struct ag_err *err)
{
    int rc = check_start(e, type, saga_id, err);
    if (rc) return rc;
    struct saga_start st;
    if (saga_start_encode(type, saga_id, data, cause, &st))
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    rc = saga_start_append(&e->env, saga_id, &st, err); /* 0 when started before */
    saga_start_free(&st);
    if (rc) return rc;
    pthread_mutex_lock(&e->lock);
    e->stats.started++;
    pthread_mutex_unlock(&e->lock);
    enqueue(e, saga_id);
    return 0;
}

int ag_saga_start_async(struct ag_saga_engine *e, const char *type, const char *saga_id,
                        const json_t *data, const struct ag_event *cause, struct ag_err *err)
{
    int rc = check_start(e, type, saga_id, err);
    if (rc) return rc;
    struct saga_start st;
    if (saga_start_encode(type, saga_id, data, cause, &st))
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    return enqueue_item(e, saga_id, st);
}

int ag_saga_wait_starts(struct ag_saga_engine *e, int timeout_ms)
{
    struct timespec ts;
    ag_deadline_mono_in_ms(&ts, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&e->lock);
    while (e->starts_pending && !rc)
        if (pthread_cond_timedwait(&e->starts, &e->lock, &ts) == ETIMEDOUT) rc = AG_ETIMEDOUT;
    if (!rc && e->starts_failed) {
        e->starts_failed = 0;
        rc = e->starts_failed_rc == AG_EUNAVAILABLE ? AG_EUNAVAILABLE : AG_EIO;
    }
    pthread_mutex_unlock(&e->lock);
    return rc;
}

void ag_saga_engine_stats(struct ag_saga_engine *e, struct ag_saga_engine_stats *out)
{
    pthread_mutex_lock(&e->lock);
    *out = e->stats;
    pthread_mutex_unlock(&e->lock);
}

/* ---- retrying a failed saga ---- */

int ag_saga_retry(struct ag_saga_engine *e, const char *saga_id, struct ag_err *err)
{
    if (strlen(saga_id) > SAGA_ID_MAX) return ag_err_set(err, AG_ENOTFOUND, "no saga %s", saga_id);
    unsigned attempt = 0;
    int rc = saga_reopen(&e->env, saga_id, &attempt, err);
    if (rc) return rc;
    AG_INFO("saga.retried", AG_LS("saga", saga_id), AG_LU("attempt", attempt));
    if ((rc = enqueue_again(e, saga_id)))
        return ag_err_set(err, rc, "saga %s: retry recorded, resumes on the next start", saga_id);
    return 0;
}
