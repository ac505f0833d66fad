/*
 * The saga engine (see include/agora/saga.h for the model).
 *
 * Workers take saga ids from a queue and drive one saga at a time: rebuild its
 * state from its stream, run the next step, record the outcome with the exact
 * expected version, and so on until a terminal event. A saga id is in the queue or
 * being run at most once (the `active` set), so one saga never runs on two threads.
 * Recording with the exact expected version also guards against another process
 * driving the same saga: the loser stops and leaves it to the winner.
 *
 * A failed step is compensated too, not only the steps before it. Its outcome is
 * uncertain: a process killed after the action took effect but before
 * StepSucceeded was recorded re-runs the action on resume, and if that re-run
 * fails (a transient error, an injected fault) the effect of the first run is
 * still there. Compensations are idempotent and do nothing when their action had
 * no effect, so compensating the failed step is always safe. A compensation of
 * the failed step that answers AG_EEXISTS says the action did take effect and
 * cannot be undone (a pivot such as ConfirmOrder): the step is then recorded as
 * succeeded and the saga goes forward again (forward recovery), which is only
 * allowed before any other compensation has run.
 *
 * Compensation never stops half-way. The state keeps a bit set `todo` of the
 * steps whose compensation is still to run (the failed step and every step
 * before it) and a set `failed` of those whose compensation failed after its
 * attempts. The highest step in `todo` runs next; its outcome,
 * CompensationSucceeded or CompensationFailed, takes it out of `todo`. So a
 * compensation that keeps failing is recorded and the ones before it still run
 * (release the stock, cancel the order): a saga never strands stock or money
 * behind one broken participant. Only when `todo` is empty does the saga end,
 * SagaCompensated, or SagaFailed naming every failed compensation. Both sets are
 * rebuilt from the log, so a crash mid-compensation resumes with the next one.
 *
 * ag_saga_retry re-opens a failed saga: SagaRetried puts the failed
 * compensations back into `todo` (with any an older engine never ran) and a
 * worker runs them with their original idempotency keys, ending in
 * SagaCompensated or SagaFailed again.
 *
 * A step or compensation that fails because the store cannot write
 * (AG_EUNAVAILABLE: a full disk, an I/O error) did not fail for a business
 * reason: the saga is interrupted, not compensated, and retried with backoff
 * (capped at 3.2 s) for as long as the outage lasts, then resumes where it was.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agora/saga.h"

#define SAGA_STREAM_MAX 128
#define SAGA_STEPS_MAX  64 /* steps per definition: the compensation sets are uint64_t */

struct qitem {
    struct qitem *next;
    char *start;     /* SagaStarted data to record first (owned), or NULL */
    uint64_t due_ms; /* delayed list: when to queue it again */
    unsigned tries;  /* interrupted runs so far */
    char id[SAGA_STREAM_MAX];
};

struct ag_saga_engine {
    struct ag_store *store;
    const struct ag_saga_def *defs;
    size_t ndefs;
    pthread_t *threads;
    unsigned nthreads;
    pthread_mutex_t lock;
    pthread_cond_t work;   /* workers wait here for the queue (one woken per item) */
    pthread_cond_t starts; /* ag_saga_wait_starts waits here */
    pthread_cond_t tick;   /* the retry thread's timed sleep; stop wakes it */
    struct qitem *head, *tail;
    struct qitem *delayed; /* interrupted sagas waiting to be retried */
    struct qitem *rerun;   /* ids asked to run again while they were active */
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

enum saga_end { SAGA_END_NONE, SAGA_END_COMPLETED, SAGA_END_COMPENSATED, SAGA_END_FAILED };

/* The saga as its events say. */
struct saga_state {
    const struct ag_saga_def *def;
    json_t *data;      /* from SagaStarted (owned) */
    int64_t version;   /* stream version */
    size_t next;       /* next step to run forward; while compensating, the failed step */
    bool compensating; /* a step failed: running compensations */
    bool comp_ran;     /* a compensation outcome was recorded since StepFailed */
    uint64_t todo;     /* bit i: step i's compensation is still to run */
    uint64_t failed;   /* bit i: step i's compensation failed (after its attempts) */
    json_t *errors;    /* step name -> last compensation error (owned) */
    unsigned retries;  /* SagaRetried events so far */
    bool terminal;
    enum saga_end end; /* the terminal event, when terminal */
    char reason[512];  /* the failure being compensated */
};

static inline uint64_t step_bit(size_t i)
{
    return i < SAGA_STEPS_MAX ? 1ull << i : 0;
}

/* Bits 0..i. */
static inline uint64_t steps_upto(size_t i)
{
    return i + 1 >= SAGA_STEPS_MAX ? ~0ull : (1ull << (i + 1)) - 1;
}

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

static int enqueue_item(struct ag_saga_engine *e, const char *id, char *start)
{
    struct qitem *q = ag_calloc(1, sizeof *q);
    if (!q) {
        ag_free(start);
        return AG_ENOMEM;
    }
    snprintf(q->id, sizeof q->id, "%s", id);
    q->start = start;
    pthread_mutex_lock(&e->lock);
    if (!active_add(e, id_hash(id))) { /* already queued or running: it was started */
        pthread_mutex_unlock(&e->lock);
        ag_free(q->start);
        ag_free(q);
        return 0;
    }
    if (start) e->starts_pending++;
    if (e->tail)
        e->tail->next = q;
    else
        e->head = q;
    e->tail = q;
    e->stats.queued++;
    pthread_cond_signal(&e->work);
    pthread_mutex_unlock(&e->lock);
    return 0;
}

static void enqueue(struct ag_saga_engine *e, const char *id)
{
    enqueue_item(e, id, NULL);
}

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

/* Remove `id` from the rerun list (lock held); true when it was there. */
static bool take_rerun(struct ag_saga_engine *e, const char *id)
{
    for (struct qitem **pp = &e->rerun; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->id, id) != 0) continue;
        struct qitem *r = *pp;
        *pp = r->next;
        ag_free(r);
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

/* ---- state from events ---- */

static const struct ag_saga_def *find_def(const struct ag_saga_engine *e, const char *type)
{
    for (size_t i = 0; i < e->ndefs; i++)
        if (strcmp(e->defs[i].type, type) == 0) return &e->defs[i];
    return NULL;
}

/* A compensation outcome for step `d.step`: out of `todo`, into or out of `failed`. */
static void comp_outcome(struct saga_state *s, json_t *d, const char *error)
{
    json_int_t i = json_integer_value(json_object_get(d, "step"));
    const char *name = json_string_value(json_object_get(d, "name"));
    uint64_t bit = i >= 0 ? step_bit((size_t)i) : 0;
    s->todo &= ~bit;
    s->comp_ran = true;
    if (error) {
        s->failed |= bit;
        if (name && s->errors) json_object_set_new(s->errors, name, json_string(error));
    } else {
        s->failed &= ~bit;
        if (name && s->errors) json_object_del(s->errors, name);
    }
}

static void ended(struct saga_state *s, enum saga_end end, const char *reason)
{
    s->terminal = true;
    s->end = end;
    if (reason) snprintf(s->reason, sizeof s->reason, "%s", reason);
}

static void evolve(const struct ag_saga_engine *e, struct saga_state *s, const char *type,
                   json_t *d)
{
    const char *reason = json_string_value(json_object_get(d, "reason"));
    const char *error = json_string_value(json_object_get(d, "error"));
    if (strcmp(type, "SagaStarted") == 0) {
        s->def = find_def(e, json_string_value(json_object_get(d, "type")) ?: "");
        json_decref(s->data);
        s->data = json_incref(json_object_get(d, "data"));
    } else if (strcmp(type, "StepSucceeded") == 0) {
        if (s->compensating) { /* forward recovery of the failed step (see the top) */
            s->compensating = false;
            s->todo = s->failed = 0;
        }
        s->next++;
    } else if (strcmp(type, "StepFailed") == 0) {
        s->compensating = true;
        s->comp_ran = false;
        s->todo = steps_upto(s->next); /* the failed step itself first (see the top) */
        s->failed = 0;
        snprintf(s->reason, sizeof s->reason, "%s", error ? error : "step failed");
    } else if (strcmp(type, "CompensationSucceeded") == 0) {
        comp_outcome(s, d, NULL);
    } else if (strcmp(type, "CompensationFailed") == 0) {
        comp_outcome(s, d, error ? error : "compensation failed");
    } else if (strcmp(type, "SagaRetried") == 0) {
        s->terminal = false;
        s->end = SAGA_END_NONE;
        s->compensating = true;
        s->comp_ran = true; /* no forward recovery once compensations ran */
        s->todo |= s->failed;
        s->failed = 0;
        s->retries++;
    } else if (strcmp(type, "SagaCompleted") == 0) {
        ended(s, SAGA_END_COMPLETED, reason);
    } else if (strcmp(type, "SagaCompensated") == 0) {
        ended(s, SAGA_END_COMPENSATED, reason);
    } else if (strcmp(type, "SagaFailed") == 0) {
        ended(s, SAGA_END_FAILED, reason);
    }
}

static void state_free(struct saga_state *s)
{
    json_decref(s->data);
    json_decref(s->errors);
    s->data = s->errors = NULL;
}

static int load(struct ag_saga_engine *e, const char *stream, struct saga_state *s,
                struct ag_err *err)
{
    memset(s, 0, sizeof *s);
    s->version = -1;
    s->errors = json_object();
    for (;;) {
        struct ag_event_page p;
        int rc = ag_store_read_stream(e->store, stream, strlen(stream), s->version + 1,
                                      AG_READ_FORWARD, 256, &p, err);
        if (rc) return rc;
        for (size_t i = 0; i < p.count; i++) {
            char type[64];
            snprintf(type, sizeof type, "%.*s", (int)p.events[i].type_len, p.events[i].type);
            json_t *d = json_loadb(p.events[i].data, p.events[i].data_len, 0, NULL);
            evolve(e, s, type, d);
            json_decref(d);
            s->version = p.events[i].version;
        }
        bool end = p.end || p.count == 0;
        ag_event_page_free(&p);
        if (end) break;
    }
    if (s->version < 0) return ag_err_set(err, AG_ENOTFOUND, "no saga %s", stream + 5);
    if (!s->def) return ag_err_set(err, AG_ENOTFOUND, "%s: no known saga type", stream);
    return 0;
}

/* Append one event at the exact expected version and apply it to the state. Takes
 * `data`. */
static int record(struct ag_saga_engine *e, const char *stream, struct saga_state *s,
                  const char *type, json_t *data, struct ag_err *err)
{
    char *text = json_dumps(data, JSON_COMPACT);
    if (!text) {
        json_decref(data);
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    struct ag_event_data ev = {
        .type = type, .type_len = strlen(type), .data = text, .data_len = strlen(text)};
    int rc = ag_store_append(e->store, stream, strlen(stream), s->version, &ev, 1, NULL, err);
    free(text);
    if (!rc) {
        s->version++;
        evolve(e, s, type, data);
    }
    json_decref(data);
    return rc;
}

/* ---- running steps ---- */

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

struct step_call {
    const struct ag_saga_def *def;
    const struct ag_saga_step *step;
    const json_t *data;
    const char *key;
    const char *reason;
    bool compensation;
};

static int injected(const struct ag_saga_step *st, bool comp, struct ag_err *err)
{
    if (!comp && st->fault.latency_ms) sleep_ms(st->fault.latency_ms);
    double rate = comp ? st->fault.comp_error_rate : st->fault.error_rate;
    if (rate > 0 && ag_rng_double(ag_rng_system()) < rate)
        return ag_err_set(err, AG_EUPSTREAM, "injected fault in %s%s",
                          comp ? "compensation of " : "", st->name);
    return 0;
}

static int step_op(void *arg, struct ag_resil_ctx *ctx)
{
    struct step_call *c = arg;
    int rc = injected(c->step, c->compensation, ctx->err);
    if (rc) return rc;
    ag_saga_fn fn = c->compensation ? c->step->compensate : c->step->action;
    return fn(c->def->ud, c->data, c->key, c->reason, ctx->err);
}

static int run_action(const struct saga_state *s, size_t i, const char *key, struct ag_err *err)
{
    struct step_call c = {s->def, &s->def->steps[i], s->data, key, NULL, false};
    struct ag_resil_ctx ctx = {.err = err};
    const struct ag_pipeline *policy = c.step->policy ? c.step->policy : s->def->policy;
    if (!policy) return step_op(&c, &ctx);
    return ag_pipeline_run(policy, step_op, &c, &ctx);
}

static int run_compensation(const struct saga_state *s, size_t i, const char *key,
                            struct ag_err *err)
{
    const struct ag_saga_step *st = &s->def->steps[i];
    if (!st->compensate) return 0;
    struct step_call c = {s->def, st, s->data, key, s->reason, true};
    unsigned attempts = s->def->comp_attempts ? s->def->comp_attempts : 5;
    uint64_t backoff = s->def->comp_backoff_ns ? s->def->comp_backoff_ns : 50000000ull;
    int rc = 0;
    for (unsigned a = 0; a < attempts; a++) {
        struct ag_resil_ctx ctx = {.attempt = a + 1, .err = err};
        ag_err_clear(err);
        if ((rc = step_op(&c, &ctx)) == 0 || rc == AG_EEXISTS) return rc; /* EEXISTS: see the top */
        if (a + 1 < attempts) sleep_ms((uint32_t)(backoff / 1000000ull) << (a < 4 ? a : 4));
    }
    return rc;
}

static json_t *step_json(size_t i, const char *name, const char *error)
{
    json_t *j = json_pack("{s:I, s:s}", "step", (json_int_t)i, "name", name);
    if (j && error) json_object_set_new(j, "error", json_string(error));
    return j;
}

static int run_forward(struct ag_saga_engine *e, const char *id, struct saga_state *s,
                       struct ag_err *err)
{
    char stream[SAGA_STREAM_MAX + 8], key[SAGA_STREAM_MAX + 64];
    snprintf(stream, sizeof stream, "saga-%s", id);
    while (s->next < s->def->nsteps) {
        const struct ag_saga_step *st = &s->def->steps[s->next];
        snprintf(key, sizeof key, "%s:%s", id, st->name);
        struct ag_err serr;
        ag_err_clear(&serr);
        int rc = run_action(s, s->next, key, &serr);
        if (rc == AG_EUNAVAILABLE) return ag_err_set(err, rc, "%s", ag_err_msg(&serr, rc));
        if (rc == 0) {
            if ((rc = record(e, stream, s, "StepSucceeded", step_json(s->next, st->name, NULL),
                             err)))
                return rc;
            continue;
        }
        const char *why = ag_err_msg(&serr, rc);
        AG_INFO("saga.step_failed", AG_LS("saga", id), AG_LS("step", st->name),
                AG_LS("error", why));
        /* StepFailed starts the compensation, of this step too (see the top) */
        return record(e, stream, s, "StepFailed", step_json(s->next, st->name, why), err);
    }
    return record(e, stream, s, "SagaCompleted", json_object(), err);
}

/* The failed step's compensation found its effect in place for good: record the
 * step as succeeded and go forward (only before any other compensation ran). */
static int recover_forward(struct ag_saga_engine *e, const char *id, const char *stream,
                           struct saga_state *s, const char *why, struct ag_err *err)
{
    const struct ag_saga_step *st = &s->def->steps[s->next];
    AG_WARN("saga.step_recovered", AG_LS("saga", id), AG_LS("step", st->name),
            AG_LS("detail", why));
    json_t *j = step_json(s->next, st->name, NULL);
    if (j) json_object_set_new(j, "recovered", json_true());
    return record(e, stream, s, "StepSucceeded", j, err);
}

/* Every failed compensation, highest step first: [{step, name, error}]. */
static json_t *failed_list(const struct saga_state *s)
{
    json_t *a = json_array();
    for (size_t i = s->def->nsteps; i-- > 0;) {
        if (!(s->failed & step_bit(i))) continue;
        const char *name = s->def->steps[i].name;
        const char *why = json_string_value(json_object_get(s->errors, name));
        json_array_append_new(a, step_json(i, name, why ? why : "compensation failed"));
    }
    return a;
}

/* The terminal event once no compensation is left to run. */
static int finish_backward(struct ag_saga_engine *e, const char *stream, struct saga_state *s,
                           struct ag_err *err)
{
    if (!s->failed)
        return record(e, stream, s, "SagaCompensated", json_pack("{s:s}", "reason", s->reason),
                      err);
    json_t *list = failed_list(s);
    const char *first = json_string_value(json_object_get(json_array_get(list, 0), "error"));
    json_t *d = json_pack("{s:s, s:s, s:o}", "reason", s->reason, "error",
                          first ? first : "compensation failed", "failedCompensations", list);
    return record(e, stream, s, "SagaFailed", d, err);
}

static size_t highest_bit(uint64_t m)
{
    return (size_t)(63 - __builtin_clzll(m));
}

/* Run the compensations in `todo`, highest step first, recording each outcome; a
 * failed one does not stop the others (see the top). */
static int run_backward(struct ag_saga_engine *e, const char *id, struct saga_state *s,
                        struct ag_err *err)
{
    char stream[SAGA_STREAM_MAX + 8], key[SAGA_STREAM_MAX + 64];
    snprintf(stream, sizeof stream, "saga-%s", id);
    while (s->todo) {
        size_t i = highest_bit(s->todo);
        if (i >= s->def->nsteps) { /* a log from a longer definition: nothing to undo */
            s->todo &= ~step_bit(i);
            continue;
        }
        const struct ag_saga_step *st = &s->def->steps[i];
        snprintf(key, sizeof key, "%s:%s:compensate", id, st->name);
        struct ag_err cerr;
        ag_err_clear(&cerr);
        int rc = run_compensation(s, i, key, &cerr);
        if (rc == AG_EEXISTS && i == s->next && !s->comp_ran)
            return recover_forward(e, id, stream, s, ag_err_msg(&cerr, rc), err);
        if (rc == AG_EUNAVAILABLE) return ag_err_set(err, rc, "%s", ag_err_msg(&cerr, rc));
        json_t *j = step_json(i, st->name, rc ? ag_err_msg(&cerr, rc) : NULL);
        if (j && i == s->next) json_object_set_new(j, "failedStep", json_true());
        if (rc)
            AG_ERROR("saga.compensation_failed", AG_LS("saga", id), AG_LS("step", st->name),
                     AG_LS("error", ag_err_msg(&cerr, rc)));
        rc = record(e, stream, s, rc ? "CompensationFailed" : "CompensationSucceeded", j, err);
        if (rc) return rc;
    }
    return finish_backward(e, stream, s, err);
}

static void count(struct ag_saga_engine *e, uint64_t *field)
{
    pthread_mutex_lock(&e->lock);
    (*field)++;
    pthread_mutex_unlock(&e->lock);
}

/* Returns 0 when the saga reached a terminal state (or cannot run at all). */
static int run_saga(struct ag_saga_engine *e, const char *id)
{
    char stream[SAGA_STREAM_MAX + 8];
    snprintf(stream, sizeof stream, "saga-%s", id);
    struct saga_state s;
    struct ag_err err;
    ag_err_clear(&err);
    int rc = load(e, stream, &s, &err);
    bool was_terminal = s.terminal;
    /* Forward until completed or a step fails, backward until compensated/failed or
     * the failed step is recovered forward (see the top), which goes forward again. */
    while (!rc && !s.terminal)
        rc = s.compensating ? run_backward(e, id, &s, &err) : run_forward(e, id, &s, &err);
    if (!rc && !was_terminal)
        count(e, s.end == SAGA_END_COMPLETED     ? &e->stats.completed
                 : s.end == SAGA_END_COMPENSATED ? &e->stats.compensated
                                                 : &e->stats.failed);
    if (rc && rc != AG_ECLOSED)
        AG_WARN("saga.interrupted", AG_LS("saga", id), AG_LS("error", ag_err_msg(&err, rc)));
    state_free(&s);
    return rc == AG_ENOTFOUND || rc == AG_ECONFLICT ? 0 : rc;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* An interrupted saga (I/O error, out of memory) is retried with a growing delay;
 * during a store outage at least every 3.2 s, so it resumes soon after. */
static void delay(struct ag_saga_engine *e, struct qitem *q, int rc)
{
    q->tries++;
    unsigned shift = q->tries < 8 ? q->tries : 8;
    if (rc == AG_EUNAVAILABLE && shift > 5) shift = 5;
    q->due_ms = now_ms() + (100ull << shift);
    pthread_mutex_lock(&e->lock);
    q->next = e->delayed;
    e->delayed = q;
    pthread_mutex_unlock(&e->lock);
}

static void *retry_main(void *arg)
{
    struct ag_saga_engine *e = arg;
    pthread_mutex_lock(&e->lock);
    while (!e->stopping) {
        struct timespec ts;
        ag_deadline_mono_in_ms(&ts, 100);
        pthread_cond_timedwait(&e->tick, &e->lock, &ts);
        uint64_t now = now_ms();
        for (struct qitem **pp = &e->delayed; *pp;) {
            struct qitem *q = *pp;
            if (q->due_ms > now) {
                pp = &q->next;
                continue;
            }
            *pp = q->next;
            q->next = NULL;
            if (e->tail)
                e->tail->next = q;
            else
                e->head = q;
            e->tail = q;
            e->stats.queued++;
            pthread_cond_signal(&e->work);
        }
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

/* Record SagaStarted for an async start; wake whoever waits for starts. */
static int record_start(struct ag_saga_engine *e, struct qitem *q)
{
    char stream[SAGA_STREAM_MAX + 8];
    snprintf(stream, sizeof stream, "saga-%s", q->id);
    struct ag_event_data ev = {
        .type = "SagaStarted", .type_len = 11, .data = q->start, .data_len = strlen(q->start)};
    struct ag_err err;
    ag_err_clear(&err);
    int rc =
        ag_store_append(e->store, stream, strlen(stream), AG_STORE_NO_STREAM, &ev, 1, NULL, &err);
    if (rc == AG_ECONFLICT) rc = 0; /* started before */
    ag_free(q->start);
    q->start = NULL;
    pthread_mutex_lock(&e->lock);
    e->starts_pending--;
    if (rc)
        e->starts_failed++, e->starts_failed_rc = rc;
    else
        e->stats.started++;
    pthread_cond_broadcast(&e->starts);
    pthread_mutex_unlock(&e->lock);
    if (rc) AG_ERROR("saga.start_failed", AG_LS("saga", q->id), AG_LS("error", err.msg));
    return rc;
}

static void *worker(void *arg)
{
    struct ag_saga_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->lock);
        while (!e->head && !e->stopping) pthread_cond_wait(&e->work, &e->lock);
        if (e->stopping) {
            pthread_mutex_unlock(&e->lock);
            return NULL;
        }
        struct qitem *q = e->head;
        e->head = q->next;
        if (!e->head) e->tail = NULL;
        e->stats.queued--;
        pthread_mutex_unlock(&e->lock);
        if (q->start && record_start(e, q)) {
            pthread_mutex_lock(&e->lock);
            active_del(e, id_hash(q->id));
            pthread_mutex_unlock(&e->lock);
            ag_free(q);
            continue;
        }
        int rc = run_saga(e, q->id);
        if (rc && (q->tries < 20 || rc == AG_EUNAVAILABLE)) { /* an outage may last */
            delay(e, q, rc);                                  /* stays in the active set */
            continue;
        }
        pthread_mutex_lock(&e->lock);
        if (take_rerun(e, q->id)) { /* asked to run again while it ran: queue it again */
            q->tries = 0;
            push_locked(e, q);
        } else {
            active_del(e, id_hash(q->id));
            ag_free(q);
        }
        pthread_mutex_unlock(&e->lock);
    }
}

/* ---- start / stop / resume ---- */

struct names {
    char **v;
    size_t n, cap;
};

static int collect_saga(void *ud, const char *name, size_t len, int64_t version)
{
    AG_UNUSED(version);
    struct names *ns = ud;
    if (len < 6 || memcmp(name, "saga-", 5) != 0 || len >= SAGA_STREAM_MAX) return 0;
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? ns->cap * 2 : 64;
        char **v = ag_realloc(ns->v, cap * sizeof *v);
        if (!v) return AG_ENOMEM;
        ns->v = v, ns->cap = cap;
    }
    if (!(ns->v[ns->n] = ag_strndup(name + 5, len - 5))) return AG_ENOMEM;
    ns->n++;
    return 0;
}

static bool is_terminal(struct ag_store *s, const char *id)
{
    char stream[SAGA_STREAM_MAX + 8];
    snprintf(stream, sizeof stream, "saga-%s", id);
    struct ag_event_page p;
    if (ag_store_read_stream(s, stream, strlen(stream), -1, AG_READ_BACKWARD, 1, &p, NULL))
        return true;
    bool t = false;
    if (p.count) {
        const struct ag_event *ev = &p.events[0];
        t = (ev->type_len == 13 && memcmp(ev->type, "SagaCompleted", 13) == 0) ||
            (ev->type_len == 15 && memcmp(ev->type, "SagaCompensated", 15) == 0) ||
            (ev->type_len == 10 && memcmp(ev->type, "SagaFailed", 10) == 0);
    }
    ag_event_page_free(&p);
    return t;
}

static void resume_unfinished(struct ag_saga_engine *e)
{
    struct names ns = {0};
    ag_store_list_streams(e->store, collect_saga, &ns);
    for (size_t i = 0; i < ns.n; i++) {
        if (!is_terminal(e->store, ns.v[i])) {
            enqueue(e, ns.v[i]);
            e->stats.resumed++;
        }
        ag_free(ns.v[i]);
    }
    ag_free(ns.v);
    if (e->stats.resumed) AG_INFO("saga.resumed", AG_LU("sagas", e->stats.resumed));
}

int ag_saga_engine_start(struct ag_store *s, const struct ag_saga_def *defs, size_t n,
                         unsigned threads, struct ag_saga_engine **out, struct ag_err *err)
{
    for (size_t i = 0; i < n; i++)
        if (defs[i].nsteps > SAGA_STEPS_MAX)
            return ag_err_set(err, AG_EINVAL, "saga %s: %zu steps, at most %d", defs[i].type,
                              defs[i].nsteps, SAGA_STEPS_MAX);
    struct ag_saga_engine *e = ag_calloc(1, sizeof *e);
    if (!threads) threads = 4;
    if (!e || !(e->threads = ag_calloc(threads, sizeof *e->threads))) {
        ag_free(e);
        return ag_err_set(err, AG_ENOMEM, "out of memory");
    }
    e->store = s;
    e->defs = defs;
    e->ndefs = n;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->work, NULL);
    ag_cond_init_mono(&e->starts); /* timed waits: monotonic, immune to clock jumps */
    ag_cond_init_mono(&e->tick);
    resume_unfinished(e);
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&e->threads[i], NULL, worker, e) != 0) break;
        e->nthreads++;
    }
    e->retry_started = pthread_create(&e->retry_thread, NULL, retry_main, e) == 0;
    if (!e->nthreads || !e->retry_started) {
        ag_saga_engine_stop(e);
        return ag_err_set(err, AG_ENOMEM, "cannot start saga workers");
    }
    *out = e;
    return 0;
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
    for (struct qitem *q = e->head, *n; q; q = n) {
        n = q->next;
        ag_free(q->start);
        ag_free(q);
    }
    for (struct qitem *q = e->delayed, *n; q; q = n) {
        n = q->next;
        ag_free(q);
    }
    for (struct qitem *q = e->rerun, *n; q; q = n) {
        n = q->next;
        ag_free(q);
    }
    ag_free(e->active);
    ag_free(e->threads);
    pthread_cond_destroy(&e->work);
    pthread_cond_destroy(&e->starts);
    pthread_cond_destroy(&e->tick);
    pthread_mutex_destroy(&e->lock);
    ag_free(e);
}

int ag_saga_start(struct ag_saga_engine *e, const char *type, const char *saga_id,
                  const json_t *data, struct ag_err *err)
{
    if (!find_def(e, type)) return ag_err_set(err, AG_EINVAL, "unknown saga type '%s'", type);
    if (strlen(saga_id) + 6 > SAGA_STREAM_MAX)
        return ag_err_set(err, AG_EINVAL, "saga id too long");
    char stream[SAGA_STREAM_MAX + 8];
    snprintf(stream, sizeof stream, "saga-%s", saga_id);
    json_t *d = json_pack("{s:s, s:O}", "type", type, "data", data);
    char *text = d ? json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    if (!text) return ag_err_set(err, AG_ENOMEM, "out of memory");
    struct ag_event_data ev = {
        .type = "SagaStarted", .type_len = 11, .data = text, .data_len = strlen(text)};
    int rc =
        ag_store_append(e->store, stream, strlen(stream), AG_STORE_NO_STREAM, &ev, 1, NULL, err);
    free(text);
    if (rc == AG_ECONFLICT) rc = 0, ag_err_clear(err); /* already started: make sure it runs */
    if (rc) return rc;
    count(e, &e->stats.started);
    enqueue(e, saga_id);
    return 0;
}

static char *start_text(const char *type, const json_t *data)
{
    json_t *d = json_pack("{s:s, s:O}", "type", type, "data", data);
    char *text = d ? json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    char *own = text ? ag_strdup(text) : NULL;
    free(text);
    return own;
}

int ag_saga_start_async(struct ag_saga_engine *e, const char *type, const char *saga_id,
                        const json_t *data, struct ag_err *err)
{
    if (!find_def(e, type)) return ag_err_set(err, AG_EINVAL, "unknown saga type '%s'", type);
    if (strlen(saga_id) + 6 > SAGA_STREAM_MAX)
        return ag_err_set(err, AG_EINVAL, "saga id too long");
    char *text = start_text(type, data);
    if (!text) return ag_err_set(err, AG_ENOMEM, "out of memory");
    return enqueue_item(e, saga_id, text);
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

static const char *end_name(const struct saga_state *s)
{
    switch (s->end) {
    case SAGA_END_COMPLETED:
        return "completed";
    case SAGA_END_COMPENSATED:
        return "compensated";
    case SAGA_END_FAILED:
        return "failed";
    default:
        return "running";
    }
}

int ag_saga_retry(struct ag_saga_engine *e, const char *saga_id, struct ag_err *err)
{
    if (strlen(saga_id) + 6 > SAGA_STREAM_MAX)
        return ag_err_set(err, AG_ENOTFOUND, "no saga %s", saga_id);
    char stream[SAGA_STREAM_MAX + 8];
    snprintf(stream, sizeof stream, "saga-%s", saga_id);
    struct saga_state s;
    int rc = load(e, stream, &s, err);
    if (!rc && s.end != SAGA_END_FAILED)
        rc = ag_err_set(err, AG_EREJECTED, "saga %s is %s: only a failed saga can be retried",
                        saga_id, end_name(&s));
    json_t *d = rc ? NULL
                   : json_pack("{s:i, s:o}", "attempt", (int)s.retries + 1, "failedCompensations",
                               failed_list(&s));
    if (!rc && !d) rc = ag_err_set(err, AG_ENOMEM, "out of memory");
    if (!rc) rc = record(e, stream, &s, "SagaRetried", d, err);
    if (rc == AG_ECONFLICT) /* another retry (or a worker) wrote first */
        ag_err_set(err, AG_ECONFLICT, "saga %s changed while being retried", saga_id);
    state_free(&s);
    if (rc) return rc;
    AG_INFO("saga.retried", AG_LS("saga", saga_id), AG_LU("attempt", s.retries));
    if ((rc = enqueue_again(e, saga_id)))
        return ag_err_set(err, rc, "saga %s: retry recorded, resumes on the next start", saga_id);
    return 0;
}
