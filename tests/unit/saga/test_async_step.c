/* Asynchronous saga actions (ag_saga_step.action_async): one worker keeps many
 * sagas inside a step at once; a participant that commits its effect and the
 * step's record in one multi-stream append; a failed async attempt re-run
 * synchronously; a store without async multi-stream appends (the engine records
 * the step itself); and the breaker that sees the async calls.
 *
 * The participant here keeps the calls it gets (`held`) and finishes them from
 * the test thread, so the test decides when a participant "answers". */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agora/saga.h"
#include "agora/store_log.h"

static char adir[64];
static struct ag_store *astore;
static const struct ag_store_ops *real_ops;
static struct ag_store_ops no_multi_ops; /* the log's, without append_multi_async */
static struct ag_fake_clock aclock;

enum { MAXCALLS = 1024 };
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t more = PTHREAD_COND_INITIALIZER;
static struct ag_saga_call *held[MAXCALLS];
static char held_keys[MAXCALLS][96];
static int nheld;
static int sync_runs, async_runs;
static int async_fail = 0; /* the async attempt answers AG_EUPSTREAM */
static bool commit_effect; /* the participant appends effect-<saga> with the record */
static bool inline_on;     /* the engine's inline_moves */

static int sync_act(void *ud, const json_t *d, const char *key, const char *reason,
                    struct ag_err *err)
{
    AG_UNUSED(ud), AG_UNUSED(d), AG_UNUSED(key), AG_UNUSED(reason), AG_UNUSED(err);
    pthread_mutex_lock(&mu);
    sync_runs++;
    pthread_mutex_unlock(&mu);
    return 0;
}

static void async_act(void *ud, const json_t *d, const char *key, const char *reason,
                      struct ag_saga_call *call)
{
    AG_UNUSED(ud), AG_UNUSED(d), AG_UNUSED(reason);
    pthread_mutex_lock(&mu);
    async_runs++;
    if (nheld == MAXCALLS) abort(); /* the test asked for too many */
    snprintf(held_keys[nheld], sizeof held_keys[nheld], "%s", key);
    held[nheld++] = call;
    pthread_cond_broadcast(&more);
    pthread_mutex_unlock(&mu);
}

static const struct ag_saga_step asteps[] = {
    {"Reserve", sync_act, NULL, {0}, NULL, async_act},
    {"Charge", sync_act, NULL, {0}, NULL, async_act},
};
static const struct ag_saga_def adef = {.type = "Async", .steps = asteps, .nsteps = 2};

static void asetup(void)
{
    strcpy(adir, "/tmp/agora-sagaa-XXXXXX");
    cr_assert_not_null(mkdtemp(adir));
    struct ag_store_options o = {.no_sync = true};
    cr_assert_eq(ag_store_log_open(adir, &o, &astore, NULL), 0);
    real_ops = astore->ops;
    ag_fake_clock_init(&aclock, 1800000000000000000ull);
    nheld = sync_runs = async_runs = async_fail = 0;
    commit_effect = false;
    inline_on = false;
}

static void ateardown(void)
{
    astore->ops = real_ops;
    ag_store_close(astore);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", adir);
    cr_assert_eq(system(cmd), 0);
}

static struct ag_saga_engine *one_worker(const struct ag_saga_def *d)
{
    struct ag_saga_engine_config cfg = {.store = astore,
                                        .defs = d,
                                        .ndefs = 1,
                                        .threads = 1,
                                        .clock = &aclock.clock,
                                        .inline_moves = inline_on};
    struct ag_saga_engine *e;
    cr_assert_eq(ag_saga_engine_start(&cfg, &e, NULL), 0);
    return e;
}

/* Wait until `n` calls are held (a 10 s cap: a lost call fails the test). */
static void wait_held(int n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&mu);
    while (nheld < n && pthread_cond_timedwait(&more, &mu, &ts) == 0) {
    }
    int got = nheld;
    pthread_mutex_unlock(&mu);
    cr_assert_eq(got, n, "%d of %d calls started", got, n);
}

struct effect {
    struct ag_event_data ev[1];
    struct ag_append_part parts[2];
    struct ag_append_multi_req req;
    struct ag_saga_call *call;
    char stream[128];
};

static void effect_done(void *ud, int status, const struct ag_append_result *res,
                        const struct ag_err *err)
{
    AG_UNUSED(res);
    struct effect *x = ud;
    ag_saga_call_done(x->call, status, err, status == 0);
    free(x);
}

/* Answer held call `i`: fail, succeed, or commit effect-<saga> together with the
 * step's record. */
static void answer(int i)
{
    pthread_mutex_lock(&mu);
    struct ag_saga_call *c = held[i];
    char key[96];
    snprintf(key, sizeof key, "%s", held_keys[i]);
    pthread_mutex_unlock(&mu);
    if (async_fail) {
        struct ag_err err;
        ag_saga_call_done(c, ag_err_set(&err, AG_EUPSTREAM, "participant down"), &err, false);
        return;
    }
    const struct ag_append_part *rec = commit_effect ? ag_saga_call_record(c) : NULL;
    if (!rec) {
        ag_saga_call_done(c, 0, NULL, false);
        return;
    }
    struct effect *x = calloc(1, sizeof *x);
    snprintf(x->stream, sizeof x->stream, "effect-%.*s", (int)strcspn(key, ":"), key);
    x->ev[0] = (struct ag_event_data){.type = "Done", .type_len = 4, .data = "{}", .data_len = 2};
    x->parts[0] = (struct ag_append_part){x->stream, strlen(x->stream), AG_STORE_ANY, x->ev, 1};
    x->parts[1] = *rec;
    x->call = c;
    x->req =
        (struct ag_append_multi_req){.parts = x->parts, .nparts = 2, .cb = effect_done, .ud = x};
    cr_assert_eq(ag_store_append_multi_async(ag_saga_call_loop(c), &x->req), 0);
}

static const char *types_of(const char *stream)
{
    static char out[512];
    out[0] = 0;
    struct ag_event_page p;
    if (ag_store_read_stream(astore, stream, strlen(stream), 0, AG_READ_FORWARD, 100, &p, NULL))
        return out;
    for (size_t i = 0; i < p.count; i++)
        snprintf(out + strlen(out), sizeof out - strlen(out), "%.*s ", (int)p.events[i].type_len,
                 p.events[i].type);
    ag_event_page_free(&p);
    return out;
}

static void start_n(struct ag_saga_engine *e, int n)
{
    json_t *d = json_object();
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "s%d", i);
        cr_assert_eq(ag_saga_start_async(e, "Async", id, d, NULL, NULL), 0);
    }
    json_decref(d);
    cr_assert_eq(ag_saga_wait_starts(e, 10000), 0);
}

TestSuite(saga_async, .init = asetup, .fini = ateardown);

/* 300 sagas are inside their first step at the same time on ONE worker: it
 * starts each call and takes the next saga. */
Test(saga_async, one_worker_keeps_hundreds_of_sagas_inside_a_step)
{
    enum { N = 300 };
    struct ag_saga_engine *e = one_worker(&adef);
    start_n(e, N);
    wait_held(N);
    for (int i = 0; i < N; i++) answer(i); /* their first steps answer: the second start */
    wait_held(2 * N);
    for (int i = N; i < 2 * N; i++) answer(i);
    cr_assert_eq(ag_saga_engine_wait_idle(e, 10000), 0);
    struct ag_saga_engine_stats st;
    ag_saga_engine_stats(e, &st);
    ag_saga_engine_stop(e);
    cr_assert_eq(st.completed, N);
    cr_assert_eq(sync_runs, 0);
    cr_assert_str_eq(types_of("saga-s7"), "SagaStarted StepSucceeded StepSucceeded SagaCompleted ");
}

/* The effect and StepSucceeded are one unit: adjacent in $all, both or neither. */
static void the_effect_and_the_step_record_commit_together(void)
{
    commit_effect = true;
    struct ag_saga_engine *e = one_worker(&adef);
    start_n(e, 1);
    wait_held(1);
    answer(0);
    wait_held(2);
    answer(1);
    cr_assert_eq(ag_saga_engine_wait_idle(e, 10000), 0);
    ag_saga_engine_stop(e);
    cr_assert_str_eq(types_of("saga-s0"), "SagaStarted StepSucceeded StepSucceeded SagaCompleted ");
    cr_assert_str_eq(types_of("effect-s0"), "Done Done ");
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_all(astore, 0, AG_READ_FORWARD, 10, &p, NULL), 0);
    cr_assert_eq(p.count, 6);
    const char *want[] = {"saga-s0", "effect-s0", "saga-s0", "effect-s0", "saga-s0", "saga-s0"};
    for (size_t i = 0; i < p.count; i++)
        cr_assert(p.events[i].stream_len == strlen(want[i]) &&
                      memcmp(p.events[i].stream, want[i], p.events[i].stream_len) == 0,
                  "event %zu is on %.*s", i, (int)p.events[i].stream_len, p.events[i].stream);
    ag_event_page_free(&p);
}
Test(saga_async, the_effect_and_the_step_record_commit_together)
{
    the_effect_and_the_step_record_commit_together();
}
Test(saga_async, the_effect_and_the_step_record_commit_together_inline)
{
    inline_on = true;
    the_effect_and_the_step_record_commit_together();
}

/* A failed async attempt is not recorded as such: the action runs again
 * synchronously (through the policy), and that outcome is what counts. */
static void a_failed_async_attempt_runs_the_action_synchronously(void)
{
    async_fail = 1;
    struct ag_saga_engine *e = one_worker(&adef);
    start_n(e, 1);
    wait_held(1);
    answer(0);
    wait_held(2); /* the synchronous Reserve succeeded; Charge starts async */
    answer(1);
    cr_assert_eq(ag_saga_engine_wait_idle(e, 10000), 0);
    ag_saga_engine_stop(e);
    cr_assert_eq(sync_runs, 2);
    cr_assert_str_eq(types_of("saga-s0"), "SagaStarted StepSucceeded StepSucceeded SagaCompleted ");
}
Test(saga_async, a_failed_async_attempt_runs_the_action_synchronously)
{
    a_failed_async_attempt_runs_the_action_synchronously();
}
Test(saga_async, a_failed_async_attempt_runs_the_action_synchronously_inline)
{
    inline_on = true;
    a_failed_async_attempt_runs_the_action_synchronously();
}

/* A store without async multi-stream appends: no record part to carry, the engine
 * records the step itself. */
Test(saga_async, without_multi_stream_appends_the_engine_records_the_step)
{
    commit_effect = true;
    no_multi_ops = *real_ops;
    no_multi_ops.append_multi_async = NULL;
    astore->ops = &no_multi_ops;
    struct ag_saga_engine *e = one_worker(&adef);
    start_n(e, 1);
    wait_held(1);
    answer(0);
    wait_held(2);
    answer(1);
    cr_assert_eq(ag_saga_engine_wait_idle(e, 10000), 0);
    ag_saga_engine_stop(e);
    cr_assert_str_eq(types_of("saga-s0"), "SagaStarted StepSucceeded StepSucceeded SagaCompleted ");
    cr_assert_str_eq(types_of("effect-s0"), "", "the participant did not append");
}

/* The step's breaker admits and records the async calls; once open, the engine
 * goes the synchronous way, where the policy rejects. */
static void an_open_breaker_sends_the_step_the_synchronous_way(void)
{
    struct ag_cb *cb;
    struct ag_cb_config cc = {.name = "Reserve", .failure_threshold = 1, .clock = &aclock.clock};
    cr_assert_eq(ag_cb_new(&cc, &cb, NULL), 0);
    struct ag_pipeline pol = {.name = "Reserve", .breaker = cb};
    struct ag_saga_step st[] = {{"Reserve", sync_act, NULL, {0}, &pol, async_act}};
    struct ag_saga_def d = {.type = "Async", .steps = st, .nsteps = 1};
    struct ag_saga_engine *e = one_worker(&d);
    start_n(e, 1);
    wait_held(1);
    answer(0);
    cr_assert_eq(ag_saga_engine_wait_idle(e, 10000), 0);
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED);
    cr_assert_eq(ag_cb_transition(cb, AG_CB_FORCED_OPEN), 0);
    json_t *dj = json_object();
    cr_assert_eq(ag_saga_start(e, "Async", "s1", dj, NULL, NULL), 0);
    json_decref(dj);
    cr_assert_eq(ag_saga_engine_wait_idle(e, 10000), 0);
    ag_saga_engine_stop(e);
    cr_assert_eq(async_runs, 1, "no async call while the breaker is open");
    cr_assert_str_eq(types_of("saga-s1"),
                     "SagaStarted StepFailed CompensationSucceeded SagaCompensated ");
    ag_cb_free(cb);
}
Test(saga_async, an_open_breaker_sends_the_step_the_synchronous_way)
{
    an_open_breaker_sends_the_step_the_synchronous_way();
}
Test(saga_async, an_open_breaker_sends_the_step_the_synchronous_way_inline)
{
    inline_on = true;
    an_open_breaker_sends_the_step_the_synchronous_way();
}

static int sync_no(void *ud, const json_t *d, const char *key, const char *reason,
                   struct ag_err *err)
{
    AG_UNUSED(ud), AG_UNUSED(d), AG_UNUSED(key), AG_UNUSED(reason);
    return ag_err_set(err, AG_EDOMAIN, "no stock");
}

/* Compensations go the same way: each one's effect commits with its
 * CompensationSucceeded, the failed step's own marked failedStep. */
static void compensations_commit_with_their_records(void)
{
    commit_effect = true;
    static const struct ag_saga_step st[] = {
        {"Reserve", sync_act, sync_act, {0}, NULL, async_act, async_act},
        {"Charge", sync_no, sync_act, {0}, NULL, NULL, async_act},
    };
    struct ag_saga_def d = {.type = "Async", .steps = st, .nsteps = 2};
    struct ag_saga_engine *e = one_worker(&d);
    start_n(e, 1);
    wait_held(1); /* Reserve */
    answer(0);
    wait_held(2); /* Charge failed synchronously: its compensation */
    cr_assert_str_eq(held_keys[1], "s0:Charge:compensate");
    answer(1);
    wait_held(3);
    cr_assert_str_eq(held_keys[2], "s0:Reserve:compensate");
    answer(2);
    cr_assert_eq(ag_saga_engine_wait_idle(e, 10000), 0);
    ag_saga_engine_stop(e);
    cr_assert_str_eq(types_of("saga-s0"), "SagaStarted StepSucceeded StepFailed "
                                          "CompensationSucceeded CompensationSucceeded "
                                          "SagaCompensated ");
    cr_assert_str_eq(types_of("effect-s0"), "Done Done Done ");
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_stream(astore, "saga-s0", 7, 3, AG_READ_FORWARD, 2, &p, NULL), 0);
    json_t *j0 = json_loadb(p.events[0].data, p.events[0].data_len, 0, NULL);
    json_t *j1 = json_loadb(p.events[1].data, p.events[1].data_len, 0, NULL);
    cr_assert(json_is_true(json_object_get(j0, "failedStep")));
    cr_assert_str_eq(json_string_value(json_object_get(j0, "name")), "Charge");
    cr_assert_null(json_object_get(j1, "failedStep"));
    json_decref(j0), json_decref(j1);
    ag_event_page_free(&p);
}
Test(saga_async, compensations_commit_with_their_records)
{
    compensations_commit_with_their_records();
}
Test(saga_async, compensations_commit_with_their_records_inline)
{
    inline_on = true;
    compensations_commit_with_their_records();
}

/* ---- inline moves: the recorder thread runs the moves that cannot block ---- */

static pthread_mutex_t block_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t block_cv = PTHREAD_COND_INITIALIZER;
static bool blocked, released;

/* A synchronous step that holds its worker until the test releases it. */
static int block_act(void *ud, const json_t *d, const char *key, const char *reason,
                     struct ag_err *err)
{
    AG_UNUSED(ud), AG_UNUSED(d), AG_UNUSED(key), AG_UNUSED(reason), AG_UNUSED(err);
    pthread_mutex_lock(&block_mu);
    blocked = true;
    pthread_cond_broadcast(&block_cv);
    while (!released) pthread_cond_wait(&block_cv, &block_mu);
    pthread_mutex_unlock(&block_mu);
    return 0;
}

static uint64_t completed(struct ag_saga_engine *e)
{
    struct ag_saga_engine_stats st;
    ag_saga_engine_stats(e, &st);
    return st.completed;
}

/* With the only worker held inside a synchronous step, sagas whose steps are all
 * asynchronous still go from SagaStarted to SagaCompleted: every move after a
 * durable record runs on the recorder thread, none waits for the worker. */
Test(saga_async, inline_moves_need_no_worker)
{
    enum { N = 50 };
    static const struct ag_saga_step bsteps[] = {{"Hold", block_act}};
    struct ag_saga_def defs[2] = {adef, {.type = "Block", .steps = bsteps, .nsteps = 1}};
    struct ag_saga_engine_config cfg = {.store = astore,
                                        .defs = defs,
                                        .ndefs = 2,
                                        .threads = 1,
                                        .clock = &aclock.clock,
                                        .inline_moves = true};
    struct ag_saga_engine *e;
    cr_assert_eq(ag_saga_engine_start(&cfg, &e, NULL), 0);
    json_t *d = json_object();
    cr_assert_eq(ag_saga_start(e, "Block", "b0", d, NULL, NULL), 0); /* queued for the worker */
    json_decref(d);
    pthread_mutex_lock(&block_mu);
    while (!blocked) pthread_cond_wait(&block_cv, &block_mu);
    pthread_mutex_unlock(&block_mu);
    start_n(e, N);
    wait_held(N);
    for (int i = 0; i < N; i++) answer(i);
    wait_held(2 * N);
    for (int i = N; i < 2 * N; i++) answer(i);
    for (int t = 0; t < 10000 && completed(e) < N; t++) { /* at most 10 s */
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    cr_assert_eq(completed(e), N, "completed while the worker was held");
    pthread_mutex_lock(&block_mu);
    released = true;
    pthread_cond_broadcast(&block_cv);
    pthread_mutex_unlock(&block_mu);
    cr_assert_eq(ag_saga_engine_wait_idle(e, 10000), 0);
    cr_assert_eq(completed(e), N + 1);
    ag_saga_engine_stop(e);
    cr_assert_eq(sync_runs, 0);
    cr_assert_str_eq(types_of("saga-s3"), "SagaStarted StepSucceeded StepSucceeded SagaCompleted ");
    cr_assert_str_eq(types_of("saga-b0"), "SagaStarted StepSucceeded SagaCompleted ");
}
