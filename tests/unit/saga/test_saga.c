/* The saga engine: forward run, reverse compensation (the seeds' test), failing
 * compensations (the others still run), resume of an unfinished saga (also
 * mid-compensation), retry of a failed saga, idempotency keys, the read model, the
 * metadata of saga events, injected faults, and an interrupted saga run again on
 * the engine's clock.
 *
 * Nothing here sleeps or polls: the engine runs on a fake clock, a sleep that only
 * records what it was asked, and a fixed RNG, and the tests wait for it with
 * ag_saga_engine_wait_idle. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/saga.h"
#include "agora/store_log.h"

static char dir[64];
static struct ag_store *store;

/* what the steps did, in order */
static pthread_mutex_t trace_lock = PTHREAD_MUTEX_INITIALIZER;
static char trace[1024];
static char keys[1024];
static int fail_step = -1;       /* the action that fails */
static int fail_comp = -1;       /* the compensation that fails... */
static int fail_comp_times = -1; /* ...this many more times (-1: always) */
static int exists_comp = -1;     /* the compensation that answers AG_EEXISTS */

static int unavailable_once = -1; /* the action that fails with AG_EUNAVAILABLE once */

/* The engine's clock, sleep and RNG. */
static struct ag_fake_clock fclock;
static char sleeps[256]; /* what the engine asked to sleep, in ms */
static uint64_t rng_value;
static uint64_t fixed_rng(void *ctx)
{
    AG_UNUSED(ctx);
    return rng_value;
}
static const struct ag_rng rng = {fixed_rng, NULL};

static void fake_sleep(void *ctx, uint64_t ns)
{
    AG_UNUSED(ctx);
    pthread_mutex_lock(&trace_lock);
    snprintf(sleeps + strlen(sleeps), sizeof sleeps - strlen(sleeps), "%llu ",
             (unsigned long long)(ns / 1000000));
    pthread_mutex_unlock(&trace_lock);
}

static void note(const char *what, const char *key)
{
    pthread_mutex_lock(&trace_lock);
    strncat(trace, what, sizeof trace - strlen(trace) - 1);
    strncat(trace, " ", sizeof trace - strlen(trace) - 1);
    strncat(keys, key, sizeof keys - strlen(keys) - 1);
    strncat(keys, " ", sizeof keys - strlen(keys) - 1);
    pthread_mutex_unlock(&trace_lock);
}

/* Whether compensation `i` fails this time (counts down fail_comp_times). */
static bool comp_fails(int i)
{
    pthread_mutex_lock(&trace_lock);
    bool f = fail_comp == i && fail_comp_times != 0;
    if (f && fail_comp_times > 0) fail_comp_times--;
    pthread_mutex_unlock(&trace_lock);
    return f;
}

#define STEP(i)                                                                                    \
    static int act##i(void *ud, const json_t *d, const char *key, const char *reason,              \
                      struct ag_err *err)                                                          \
    {                                                                                              \
        AG_UNUSED(ud), AG_UNUSED(d), AG_UNUSED(reason);                                            \
        note("do" #i, key);                                                                        \
        if (unavailable_once == i) {                                                               \
            unavailable_once = -1;                                                                 \
            return ag_err_set(err, AG_EUNAVAILABLE, "store down");                                 \
        }                                                                                          \
        return fail_step == i ? ag_err_set(err, AG_EDOMAIN, "step %d said no", i) : 0;             \
    }                                                                                              \
    static int undo##i(void *ud, const json_t *d, const char *key, const char *reason,             \
                       struct ag_err *err)                                                         \
    {                                                                                              \
        AG_UNUSED(ud), AG_UNUSED(d), AG_UNUSED(reason);                                            \
        note("undo" #i, key);                                                                      \
        if (exists_comp == i) return ag_err_set(err, AG_EEXISTS, "step %d is there for good", i);  \
        return comp_fails(i) ? ag_err_set(err, AG_EIO, "undo %d broken", i) : 0;                   \
    }
STEP(1)
STEP(2)
STEP(3)

static const struct ag_saga_step steps[] = {
    {"One", act1, undo1, {0}, NULL},
    {"Two", act2, undo2, {0}, NULL},
    {"Three", act3, undo3, {0}, NULL},
};
static const struct ag_saga_def def = {
    .type = "Test", .steps = steps, .nsteps = 3, .comp_attempts = 2, .comp_backoff_ns = 1000000};

static void setup(void)
{
    strcpy(dir, "/tmp/agora-saga-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    struct ag_store_options o = {.no_sync = true};
    cr_assert_eq(ag_store_log_open(dir, &o, &store, NULL), 0);
    trace[0] = keys[0] = sleeps[0] = 0;
    fail_step = fail_comp = fail_comp_times = exists_comp = unavailable_once = -1;
    ag_fake_clock_init(&fclock, 1800000000000000000ull);
    rng_value = ~0ull; /* ag_rng_double → just under 1: no injected fault fires */
}

static void teardown(void)
{
    ag_store_close(store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* The type of a saga's last event. */
static char *last_type(const char *saga)
{
    static char type[64];
    char stream[128];
    snprintf(stream, sizeof stream, "saga-%s", saga);
    struct ag_event_page p;
    type[0] = 0;
    if (ag_store_read_stream(store, stream, strlen(stream), -1, AG_READ_BACKWARD, 1, &p, NULL) ==
        0) {
        if (p.count)
            snprintf(type, sizeof type, "%.*s", (int)p.events[0].type_len, p.events[0].type);
        ag_event_page_free(&p);
    }
    return type;
}

static struct ag_saga_engine *engine_of(const struct ag_saga_def *d)
{
    struct ag_saga_engine_config cfg = {.store = store,
                                        .defs = d,
                                        .ndefs = 1,
                                        .threads = 2,
                                        .clock = &fclock.clock,
                                        .rng = &rng,
                                        .sleep = fake_sleep};
    struct ag_saga_engine *e;
    cr_assert_eq(ag_saga_engine_start(&cfg, &e, NULL), 0);
    return e;
}

static struct ag_saga_engine *engine(void)
{
    return engine_of(&def);
}

/* Wait until the engine has run everything it can run now. */
static void settle(struct ag_saga_engine *e)
{
    cr_assert_eq(ag_saga_engine_wait_idle(e, 10000), 0, "the engine never went idle");
}

/* The types of a saga's events, space-separated. */
static const char *types(const char *saga)
{
    static char out[1024];
    char stream[128];
    snprintf(stream, sizeof stream, "saga-%s", saga);
    out[0] = 0;
    struct ag_event_page p;
    cr_assert_eq(
        ag_store_read_stream(store, stream, strlen(stream), 0, AG_READ_FORWARD, 100, &p, NULL), 0);
    for (size_t i = 0; i < p.count; i++) {
        snprintf(out + strlen(out), sizeof out - strlen(out), "%.*s ", (int)p.events[i].type_len,
                 p.events[i].type);
    }
    ag_event_page_free(&p);
    return out;
}

/* The data of a saga's last event (caller decrefs). */
static json_t *last_data(const char *saga)
{
    char stream[128];
    snprintf(stream, sizeof stream, "saga-%s", saga);
    struct ag_event_page p;
    cr_assert_eq(
        ag_store_read_stream(store, stream, strlen(stream), -1, AG_READ_BACKWARD, 1, &p, NULL), 0);
    json_t *d = json_loadb(p.events[0].data, p.events[0].data_len, 0, NULL);
    ag_event_page_free(&p);
    cr_assert_not_null(d);
    return d;
}

/* The names in a SagaFailed's failedCompensations, space-separated. */
static const char *failed_names(const json_t *d)
{
    static char out[256];
    out[0] = 0;
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(d, "failedCompensations"), i, f)
        snprintf(out + strlen(out), sizeof out - strlen(out), "%s ",
                 json_string_value(json_object_get(f, "name")));
    return out;
}

static void append(const char *saga, const char *const *evs, size_t n)
{
    char stream[128];
    snprintf(stream, sizeof stream, "saga-%s", saga);
    struct ag_event_data ev[16];
    for (size_t i = 0; i < n; i++) {
        const char *sp = strchr(evs[i], ' ');
        ev[i] = (struct ag_event_data){.type = evs[i],
                                       .type_len = (size_t)(sp - evs[i]),
                                       .data = sp + 1,
                                       .data_len = strlen(sp + 1)};
    }
    cr_assert_eq(
        ag_store_append(store, stream, strlen(stream), AG_STORE_NO_STREAM, ev, n, NULL, NULL), 0);
}

static void run(const char *id)
{
    struct ag_saga_engine *e = engine();
    json_t *d = json_pack("{s:s}", "orderId", "o-1");
    cr_assert_eq(ag_saga_start(e, "Test", id, d, NULL, NULL), 0);
    json_decref(d);
    settle(e);
    ag_saga_engine_stop(e);
}

TestSuite(saga, .init = setup, .fini = teardown);

Test(saga, all_steps_succeed)
{
    run("s1");
    cr_assert_str_eq(last_type("s1"), "SagaCompleted");
    cr_assert_str_eq(trace, "do1 do2 do3 ");
    cr_assert_str_eq(keys, "s1:One s1:Two s1:Three ", "idempotency keys <sagaId>:<step>");
}

/* The seeds' test: a failure at step 3 compensates steps 2 and 1 in reverse. agora
 * also runs the failed step's own compensation first (a no-op when the step left
 * nothing behind): after a crash, a re-run step may have taken effect the first
 * time. */
Test(saga, failure_at_step_three_compensates_two_then_one)
{
    fail_step = 3;
    run("s2");
    cr_assert_str_eq(last_type("s2"), "SagaCompensated");
    cr_assert_str_eq(trace, "do1 do2 do3 undo3 undo2 undo1 ", "got %s", trace);
}

Test(saga, failure_at_the_first_step_undoes_only_itself)
{
    fail_step = 1;
    run("s3");
    cr_assert_str_eq(last_type("s3"), "SagaCompensated");
    cr_assert_str_eq(trace, "do1 undo1 ", "got %s", trace);
}

Test(saga, a_compensation_that_keeps_failing_does_not_stop_the_others)
{
    fail_step = 3;
    fail_comp = 2;
    run("s4");
    cr_assert_str_eq(last_type("s4"), "SagaFailed");
    cr_assert_str_eq(trace, "do1 do2 do3 undo3 undo2 undo2 undo1 ",
                     "undo2 tried comp_attempts times, then undo1 still runs; got %s", trace);
    cr_assert_str_eq(sleeps, "1 ", "one backoff (comp_backoff_ns) between the two attempts");
    cr_assert_str_eq(types("s4"),
                     "SagaStarted StepSucceeded StepSucceeded StepFailed CompensationSucceeded "
                     "CompensationFailed CompensationSucceeded SagaFailed ");
    json_t *f = last_data("s4");
    cr_assert_str_eq(json_string_value(json_object_get(f, "reason")), "step 3 said no");
    cr_assert_str_eq(failed_names(f), "Two ", "the log names exactly the failed compensation");
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(f, "failedCompensations"), 0), "error")),
                     "undo 2 broken");
    json_decref(f);
}

Test(saga, an_unfinished_saga_resumes_where_it_stopped)
{
    /* a saga whose process died after step One succeeded */
    const char *evs[] = {"SagaStarted {\"type\":\"Test\",\"data\":{}}",
                         "StepSucceeded {\"step\":0,\"name\":\"One\"}"};
    append("r1", evs, 2);
    struct ag_saga_engine *e = engine();
    settle(e);
    cr_assert_str_eq(last_type("r1"), "SagaCompleted");
    struct ag_saga_engine_stats st;
    ag_saga_engine_stats(e, &st);
    cr_assert_eq(st.resumed, 1);
    ag_saga_engine_stop(e);
    cr_assert_str_eq(trace, "do2 do3 ", "step One is not run again");
}

Test(saga, starting_twice_runs_once)
{
    struct ag_saga_engine *e = engine();
    json_t *d = json_object();
    cr_assert_eq(ag_saga_start(e, "Test", "d1", d, NULL, NULL), 0);
    cr_assert_eq(ag_saga_start(e, "Test", "d1", d, NULL, NULL), 0);
    json_decref(d);
    settle(e);
    ag_saga_engine_stop(e);
    cr_assert_str_eq(trace, "do1 do2 do3 ");
    cr_assert_str_eq(types("d1"), "SagaStarted StepSucceeded StepSucceeded StepSucceeded "
                                  "SagaCompleted ");
}

/* A saga's row in the sagas read model, rebuilt from the log. */
struct saga_rec {
    char status[32], steps[1024], reason[256];
    bool found;
};

static int saga_rec_row(const struct ag_rm_row *r, void *ud)
{
    struct saga_rec *o = ud;
    snprintf(o->status, sizeof o->status, "%s", ag_rm_text(r, 0) ?: "");
    json_t *objs = ag_saga_steps_json(ag_rm_text(r, 1)); /* the column is compact */
    char *text = json_dumps(objs, JSON_COMPACT);
    snprintf(o->steps, sizeof o->steps, "%s", text ?: "");
    free(text);
    json_decref(objs);
    snprintf(o->reason, sizeof o->reason, "%s", ag_rm_text(r, 2) ?: "");
    o->found = true;
    return 1;
}

static struct saga_rec saga_row(const char *id)
{
    char rm[128];
    snprintf(rm, sizeof rm, "%s/rm", dir);
    struct ag_projection proj;
    ag_saga_projection(&def, 1, &proj);
    cr_assert_eq(ag_projection_rebuild(store, rm, &proj, NULL, NULL, NULL), 0);
    struct ag_rm *db;
    cr_assert_eq(ag_rm_open(rm, "sagas", AG_RM_READONLY, &db, NULL), 0);
    struct saga_rec rec = {.found = false};
    uint8_t idb[16];
    struct ag_rm_arg arg = ag_rm_id_arg(id, idb);
    cr_assert_eq(ag_rm_query(db, "SELECT status, steps, reason FROM sagas WHERE id=?1", &arg, 1,
                             saga_rec_row, &rec, NULL),
                 0);
    ag_rm_close(db);
    cr_assert(rec.found, "saga %s is in the read model", id);
    return rec;
}

Test(saga, the_read_model_tracks_status_and_steps)
{
    fail_step = 2;
    run("m1");
    struct saga_rec st = saga_row("m1");
    cr_assert_str_eq(st.status, "compensated");
    cr_assert_str_eq(
        st.steps,
        "[{\"name\":\"One\",\"status\":\"compensated\"},{\"name\":\"Two\",\"status\":\"failed\","
        "\"error\":\"step 2 said no\"},{\"name\":\"Three\",\"status\":\"pending\"}]");
    cr_assert_str_eq(st.reason, "step 2 said no");
}

static void start(struct ag_saga_engine *e, const char *id)
{
    json_t *d = json_object();
    cr_assert_eq(ag_saga_start(e, "Test", id, d, NULL, NULL), 0);
    json_decref(d);
    settle(e);
}

static void reset_trace(void)
{
    pthread_mutex_lock(&trace_lock);
    trace[0] = keys[0] = 0;
    pthread_mutex_unlock(&trace_lock);
}

/* A compensation that fails 3 times (2 attempts per run): the saga ends failed with
 * the others run; a retry re-runs only it, with the same key (its first attempt
 * fails for the third time, the second succeeds), and the saga is compensated. */
Test(saga, a_failed_saga_retried_ends_compensated)
{
    fail_step = 3;
    fail_comp = 2;
    fail_comp_times = 3;
    struct ag_saga_engine *e = engine();
    start(e, "t1");
    cr_assert_str_eq(last_type("t1"), "SagaFailed");
    cr_assert_str_eq(trace, "do1 do2 do3 undo3 undo2 undo2 undo1 ", "got %s", trace);
    reset_trace();
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_saga_retry(e, "t1", &err), 0, "%s", err.msg);
    settle(e);
    cr_assert_str_eq(last_type("t1"), "SagaCompensated");
    ag_saga_engine_stop(e);
    cr_assert_str_eq(trace, "undo2 undo2 ", "only the failed compensation runs again; got %s",
                     trace);
    cr_assert_str_eq(keys, "t1:Two:compensate t1:Two:compensate ", "with its own idempotency key");
    cr_assert_str_eq(types("t1"),
                     "SagaStarted StepSucceeded StepSucceeded StepFailed CompensationSucceeded "
                     "CompensationFailed CompensationSucceeded SagaFailed SagaRetried "
                     "CompensationSucceeded SagaCompensated ");
    json_t *d = last_data("t1");
    cr_assert_str_eq(json_string_value(json_object_get(d, "reason")), "step 3 said no");
    json_decref(d);
}

/* A retry whose compensation fails again ends failed again; the next one succeeds. */
Test(saga, a_retry_that_fails_again_leaves_the_saga_failed)
{
    fail_step = 2;
    fail_comp = 1;
    fail_comp_times = 4;
    struct ag_saga_engine *e = engine();
    start(e, "t2");
    cr_assert_str_eq(last_type("t2"), "SagaFailed");
    cr_assert_eq(ag_saga_retry(e, "t2", NULL), 0);
    settle(e);
    cr_assert_str_eq(last_type("t2"), "SagaFailed");
    json_t *d = last_data("t2");
    cr_assert_str_eq(failed_names(d), "One ");
    json_decref(d);
    cr_assert_eq(ag_saga_retry(e, "t2", NULL), 0);
    settle(e);
    cr_assert_str_eq(last_type("t2"), "SagaCompensated");
    ag_saga_engine_stop(e);
    cr_assert_str_eq(trace, "do1 do2 undo2 undo1 undo1 undo1 undo1 undo1 ", "got %s", trace);
}

Test(saga, only_a_failed_saga_can_be_retried)
{
    struct ag_saga_engine *e = engine();
    start(e, "ok1");
    cr_assert_str_eq(last_type("ok1"), "SagaCompleted");
    struct ag_err err;
    ag_err_clear(&err);
    cr_assert_eq(ag_saga_retry(e, "ok1", &err), AG_EREJECTED);
    cr_assert(strstr(err.msg, "completed"), "%s", err.msg);
    fail_step = 1;
    start(e, "cp1");
    cr_assert_str_eq(last_type("cp1"), "SagaCompensated");
    cr_assert_eq(ag_saga_retry(e, "cp1", &err), AG_EREJECTED);
    cr_assert(strstr(err.msg, "compensated"), "%s", err.msg);
    /* a running saga (its log appended behind the engine's back: no worker has it) */
    const char *run1[] = {"SagaStarted {\"type\":\"Test\",\"data\":{}}",
                          "StepSucceeded {\"step\":0,\"name\":\"One\"}"};
    append("run1", run1, 2);
    cr_assert_eq(ag_saga_retry(e, "run1", &err), AG_EREJECTED);
    cr_assert(strstr(err.msg, "running"), "%s", err.msg);
    cr_assert_eq(ag_saga_retry(e, "nope", &err), AG_ENOTFOUND);
    ag_saga_engine_stop(e);
    cr_assert_str_eq(types("ok1"),
                     "SagaStarted StepSucceeded StepSucceeded StepSucceeded "
                     "SagaCompleted ",
                     "a refused retry records nothing");
    cr_assert_str_eq(types("run1"), "SagaStarted StepSucceeded ");
}

/* Killed right after recording a failed compensation: on restart the saga goes on
 * with the compensations before it, then ends failed; a retry finishes it. */
Test(saga, a_crash_mid_compensation_resumes_with_the_next_compensation)
{
    const char *evs[] = {
        "SagaStarted {\"type\":\"Test\",\"data\":{}}",
        "StepSucceeded {\"step\":0,\"name\":\"One\"}",
        "StepSucceeded {\"step\":1,\"name\":\"Two\"}",
        "StepFailed {\"step\":2,\"name\":\"Three\",\"error\":\"boom\"}",
        "CompensationFailed {\"step\":2,\"name\":\"Three\",\"error\":\"undo 3 broken\"}",
    };
    append("c1", evs, 5);
    struct ag_saga_engine *e = engine();
    settle(e);
    cr_assert_str_eq(last_type("c1"), "SagaFailed");
    cr_assert_str_eq(trace, "undo2 undo1 ", "got %s", trace);
    json_t *d = last_data("c1");
    cr_assert_str_eq(failed_names(d), "Three ", "the failure recorded before the crash counts");
    cr_assert_str_eq(json_string_value(json_object_get(d, "reason")), "boom");
    json_decref(d);
    reset_trace();
    cr_assert_eq(ag_saga_retry(e, "c1", NULL), 0);
    settle(e);
    cr_assert_str_eq(last_type("c1"), "SagaCompensated");
    ag_saga_engine_stop(e);
    cr_assert_str_eq(trace, "undo3 ", "got %s", trace);
}

/* Killed after SagaRetried was recorded: the retry resumes on restart. */
Test(saga, a_retry_interrupted_by_a_crash_resumes)
{
    const char *evs[] = {
        "SagaStarted {\"type\":\"Test\",\"data\":{}}",
        "StepFailed {\"step\":0,\"name\":\"One\",\"error\":\"boom\"}",
        "CompensationFailed {\"step\":0,\"name\":\"One\",\"error\":\"undo 1 broken\"}",
        "SagaFailed {\"reason\":\"boom\",\"error\":\"undo 1 broken\"}",
        "SagaRetried {\"attempt\":1}",
    };
    append("c2", evs, 5);
    struct ag_saga_engine *e = engine();
    settle(e);
    cr_assert_str_eq(last_type("c2"), "SagaCompensated");
    ag_saga_engine_stop(e);
    cr_assert_str_eq(trace, "undo1 ", "got %s", trace);
    cr_assert_str_eq(keys, "c2:One:compensate ");
}

/* A saga an older engine left failed at its first failing compensation, the ones
 * before it never run (stock stranded): a retry runs those too. */
Test(saga, a_retry_runs_the_compensations_an_older_engine_skipped)
{
    const char *evs[] = {
        "SagaStarted {\"type\":\"Test\",\"data\":{}}",
        "StepSucceeded {\"step\":0,\"name\":\"One\"}",
        "StepSucceeded {\"step\":1,\"name\":\"Two\"}",
        "StepFailed {\"step\":2,\"name\":\"Three\",\"error\":\"boom\"}",
        "CompensationFailed {\"step\":2,\"name\":\"Three\",\"error\":\"undo 3 broken\"}",
        "SagaFailed {\"reason\":\"boom\",\"error\":\"undo 3 broken\"}",
    };
    append("old1", evs, 6);
    struct ag_saga_engine *e = engine();
    cr_assert_eq(ag_saga_retry(e, "old1", NULL), 0);
    settle(e);
    cr_assert_str_eq(last_type("old1"), "SagaCompensated");
    ag_saga_engine_stop(e);
    cr_assert_str_eq(trace, "undo3 undo2 undo1 ", "got %s", trace);
}

/* The failed step's compensation finds its effect there for good: forward again. */
Test(saga, a_failed_step_found_done_goes_forward)
{
    fail_step = 3;
    exists_comp = 3;
    run("f1");
    cr_assert_str_eq(last_type("f1"), "SagaCompleted");
    cr_assert_str_eq(trace, "do1 do2 do3 undo3 ", "got %s", trace);
}

Test(saga, the_read_model_names_the_failed_compensations_then_the_retry)
{
    fail_step = 3;
    fail_comp = 2;
    fail_comp_times = 2;
    struct ag_saga_engine *e = engine();
    start(e, "m2");
    cr_assert_str_eq(last_type("m2"), "SagaFailed");
    struct saga_rec st = saga_row("m2");
    cr_assert_str_eq(st.status, "failed");
    cr_assert_str_eq(
        st.steps,
        "[{\"name\":\"One\",\"status\":\"compensated\"},{\"name\":\"Two\",\"status\":"
        "\"compensation_failed\",\"compensationError\":\"undo 2 broken\"},{\"name\":\"Three\","
        "\"status\":\"failed\",\"error\":\"step 3 said no\"}]");
    cr_assert_str_eq(st.reason, "step 3 said no; compensation failed: Two (undo 2 broken)");
    cr_assert_eq(ag_saga_retry(e, "m2", NULL), 0);
    settle(e);
    cr_assert_str_eq(last_type("m2"), "SagaCompensated");
    ag_saga_engine_stop(e);
    st = saga_row("m2");
    cr_assert_str_eq(st.status, "compensated");
    cr_assert_str_eq(st.steps,
                     "[{\"name\":\"One\",\"status\":\"compensated\"},{\"name\":\"Two\",\"status\":"
                     "\"compensated\"},{\"name\":\"Three\",\"status\":\"failed\",\"error\":"
                     "\"step 3 said no\"}]");
    cr_assert_str_eq(st.reason, "step 3 said no");
}

/* ---- metadata ---- */

/* An event's whole metadata, as readers get it (stored compactly since issue 19:
 * the saga-wide part on SagaStarted, `started`; the cause is `prev`'s id). */
static json_t *meta_of(const struct ag_event *ev, const struct ag_event *started,
                       const struct ag_event *prev)
{
    json_t *m = ag_saga_event_meta_at(ev, started, prev);
    cr_assert(json_is_object(m), "%.*s", (int)ev->metadata_len, ev->metadata);
    return m;
}

static const char *str_at(json_t *o, const char *a, const char *b)
{
    json_t *v = json_object_get(o, a);
    return json_string_value(b ? json_object_get(v, b) : v);
}

/* Every saga event: correlated by the saga id, caused by the event before it (the
 * starting event for SagaStarted), acted by the saga on behalf of the starter,
 * in the starter's trace. */
Test(saga, saga_events_carry_correlation_causation_trace_and_actor)
{
    static const char tp[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    char cause_meta[512];
    snprintf(cause_meta, sizeof cause_meta,
             "{\"actor\":{\"sub\":\"cust-1\",\"roles\":[\"customer\"]},\"requestId\":\"r-1\","
             "\"traceparent\":\"%s\"}",
             tp);
    struct ag_event cause = {.metadata = cause_meta, .metadata_len = strlen(cause_meta)};
    cr_assert_eq(ag_uuid_parse("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b", 36, &cause.id), 0);
    fail_step = 2; /* forward, failure and compensation events alike */
    struct ag_saga_engine *e = engine();
    json_t *d = json_object();
    cr_assert_eq(ag_saga_start(e, "Test", "md1", d, &cause, NULL), 0);
    json_decref(d);
    settle(e);
    ag_saga_engine_stop(e);

    struct ag_event_page p;
    cr_assert_eq(ag_store_read_stream(store, "saga-md1", 8, 0, AG_READ_FORWARD, 100, &p, NULL), 0);
    cr_assert_eq(p.count, 6, "Started, Succeeded, Failed, 2 compensations, Compensated");
    char prev[AG_UUID_STRLEN + 1] = "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";
    for (size_t i = 0; i < p.count; i++) {
        json_t *m = meta_of(&p.events[i], &p.events[0], i ? &p.events[i - 1] : NULL);
        cr_assert_str_eq(str_at(m, "correlationId", NULL), "md1");
        cr_assert_str_eq(str_at(m, "causationId", NULL), prev, "event %zu", i);
        cr_assert_str_eq(str_at(m, "traceparent", NULL), tp);
        cr_assert_str_eq(str_at(m, "requestId", NULL), "r-1");
        json_t *actor = json_object_get(m, "actor");
        cr_assert_str_eq(str_at(actor, "sub", NULL), "saga:Test");
        cr_assert_str_eq(json_string_value(json_array_get(json_object_get(actor, "roles"), 0)),
                         "system");
        cr_assert_str_eq(str_at(actor, "onBehalfOf", "sub"), "cust-1");
        ag_uuid_format(&p.events[i].id, prev);
        json_decref(m);
    }
    ag_event_page_free(&p);
}

/* What is stored: the saga-wide metadata and the cause once, on SagaStarted; no
 * later event stores any (its cause is the event before it); the correlation id
 * (the stream's) nowhere. Reading it back without SagaStarted or the event
 * before at hand (ag_saga_event_meta_read) gives the whole of it. */
Test(saga, saga_metadata_is_stored_once)
{
    char cause_meta[] = "{\"actor\":{\"sub\":\"cust-1\"},\"requestId\":\"r-1\"}";
    struct ag_event cause = {.metadata = cause_meta, .metadata_len = strlen(cause_meta)};
    struct ag_saga_engine *e = engine();
    json_t *d = json_object();
    cr_assert_eq(ag_saga_start(e, "Test", "md3", d, &cause, NULL), 0);
    json_decref(d);
    settle(e);
    ag_saga_engine_stop(e);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_stream(store, "saga-md3", 8, 0, AG_READ_FORWARD, 100, &p, NULL), 0);
    cr_assert_gt(p.count, 2);
    json_t *m0 = json_loadb(p.events[0].metadata, p.events[0].metadata_len, 0, NULL);
    cr_assert_str_eq(str_at(m0, "requestId", NULL), "r-1");
    cr_assert_null(json_object_get(m0, "correlationId"));
    json_decref(m0);
    for (size_t i = 1; i < p.count; i++) {
        const struct ag_event *ev = &p.events[i]; /* none: the store reads it as {} */
        cr_assert(ev->metadata_len == 0 ||
                      (ev->metadata_len == 2 && memcmp(ev->metadata, "{}", 2) == 0),
                  "%.*s", (int)ev->metadata_len, ev->metadata);
        json_t *whole = NULL;
        cr_assert_eq(ag_saga_event_meta_read(store, &p.events[i], &whole, NULL), 0);
        char prev[AG_UUID_STRLEN + 1];
        ag_uuid_format(&p.events[i - 1].id, prev);
        cr_assert_str_eq(str_at(whole, "causationId", NULL), prev);
        cr_assert_str_eq(str_at(whole, "correlationId", NULL), "md3");
        cr_assert_str_eq(str_at(whole, "requestId", NULL), "r-1");
        cr_assert_str_eq(str_at(whole, "actor", "sub"), "saga:Test");
        cr_assert_str_eq(str_at(json_object_get(whole, "actor"), "onBehalfOf", "sub"), "cust-1");
        json_decref(whole);
    }
    ag_event_page_free(&p);
}

/* The metadata a reader gets for an event stored without any (since issue 19) is
 * exactly what it got when the event stored {causationId: the event before}: the
 * same event with that older metadata, read alongside, gives an equal object, by
 * ag_saga_event_meta_at and by ag_saga_event_meta_read. */
Test(saga, reconstructed_metadata_equals_the_stored_form_before)
{
    char cause_meta[] = "{\"actor\":{\"sub\":\"cust-9\",\"roles\":[\"customer\"]},"
                        "\"requestId\":\"r-9\",\"traceparent\":"
                        "\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"}";
    struct ag_event cause = {.metadata = cause_meta, .metadata_len = strlen(cause_meta)};
    cr_assert_eq(ag_uuid_parse("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2c", 36, &cause.id), 0);
    fail_step = 2;
    struct ag_saga_engine *e = engine();
    json_t *d = json_object();
    cr_assert_eq(ag_saga_start(e, "Test", "md4", d, &cause, NULL), 0);
    json_decref(d);
    settle(e);
    ag_saga_engine_stop(e);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_stream(store, "saga-md4", 8, 0, AG_READ_FORWARD, 100, &p, NULL), 0);
    cr_assert_gt(p.count, 3);
    for (size_t i = 1; i < p.count; i++) {
        char old[64];
        char prev[AG_UUID_STRLEN + 1];
        ag_uuid_format(&p.events[i - 1].id, prev);
        snprintf(old, sizeof old, "{\"causationId\":\"%s\"}", prev);
        struct ag_event before = p.events[i]; /* as the engine stored it before */
        before.metadata = old, before.metadata_len = strlen(old);
        json_t *want = ag_saga_event_meta(&before, &p.events[0]);
        json_t *now = ag_saga_event_meta_at(&p.events[i], &p.events[0], &p.events[i - 1]);
        json_t *read = NULL;
        cr_assert_eq(ag_saga_event_meta_read(store, &p.events[i], &read, NULL), 0);
        cr_assert_eq(json_object_size(want), 5, "correlation, causation, actor, trace, request");
        cr_assert(json_equal(want, now), "event %zu", i);
        cr_assert(json_equal(want, read), "event %zu", i);
        json_t *stored_before = NULL; /* an old log's event reads as it did */
        cr_assert_eq(ag_saga_event_meta_read(store, &before, &stored_before, NULL), 0);
        cr_assert(json_equal(want, stored_before), "event %zu", i);
        json_decref(want), json_decref(now), json_decref(read), json_decref(stored_before);
    }
    ag_event_page_free(&p);
}

/* A saga resumed from a log without metadata (older engine): the events the engine
 * adds are still correlated, caused by the event before them and acted by the saga. */
Test(saga, a_resumed_saga_without_metadata_gets_it)
{
    const char *evs[] = {"SagaStarted {\"type\":\"Test\",\"data\":{}}",
                         "StepSucceeded {\"step\":0,\"name\":\"One\"}"};
    append("md2", evs, 2);
    struct ag_saga_engine *e = engine();
    settle(e);
    ag_saga_engine_stop(e);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_stream(store, "saga-md2", 8, 0, AG_READ_FORWARD, 100, &p, NULL), 0);
    cr_assert_eq(p.count, 5);
    char prev[AG_UUID_STRLEN + 1];
    ag_uuid_format(&p.events[1].id, prev);
    json_t *m = meta_of(&p.events[2], &p.events[0], &p.events[1]);
    cr_assert_str_eq(str_at(m, "correlationId", NULL), "md2");
    cr_assert_str_eq(str_at(m, "causationId", NULL), prev);
    cr_assert_str_eq(str_at(m, "actor", "sub"), "saga:Test");
    cr_assert_null(json_object_get(json_object_get(m, "actor"), "onBehalfOf"));
    json_decref(m);
    ag_event_page_free(&p);
}

/* ---- injected faults, on the engine's RNG and sleep ---- */

static const struct ag_saga_step fault_steps[] = {
    {"One", act1, undo1, {0}, NULL},
    {"Two", act2, undo2, {.error_rate = 0.5, .latency_ms = 7}, NULL},
};
static const struct ag_saga_def fault_def = {
    .type = "Test", .steps = fault_steps, .nsteps = 2, .comp_attempts = 2};

Test(saga, injected_faults_use_the_engines_rng_and_sleep)
{
    rng_value = 1ull << 62; /* ag_rng_double = 0.25 < 0.5: the fault fires */
    struct ag_saga_engine *e = engine_of(&fault_def);
    json_t *d = json_object();
    cr_assert_eq(ag_saga_start(e, "Test", "fi1", d, NULL, NULL), 0);
    settle(e);
    cr_assert_str_eq(last_type("fi1"), "SagaCompensated");
    cr_assert_str_eq(trace, "do1 undo2 undo1 ", "Two never ran: the fault came first; got %s",
                     trace);
    cr_assert_str_eq(sleeps, "7 ", "the step's latency, slept through the engine");
    json_t *f = last_data("fi1");
    cr_assert_str_eq(json_string_value(json_object_get(f, "reason")), "injected fault in Two");
    json_decref(f);
    rng_value = 3ull << 62; /* 0.75 ≥ 0.5: no fault */
    reset_trace();
    cr_assert_eq(ag_saga_start(e, "Test", "fi2", d, NULL, NULL), 0);
    json_decref(d);
    settle(e);
    ag_saga_engine_stop(e);
    cr_assert_str_eq(last_type("fi2"), "SagaCompleted");
    cr_assert_str_eq(trace, "do1 do2 ", "got %s", trace);
}

/* ---- interruptions, on the engine's clock ---- */

/* A step that fails because the store cannot write interrupts the saga (nothing
 * recorded); it runs again 200 ms later on the engine's clock, not before. */
Test(saga, an_interrupted_saga_runs_again_when_its_time_comes)
{
    unavailable_once = 2;
    struct ag_saga_engine *e = engine();
    json_t *d = json_object();
    cr_assert_eq(ag_saga_start(e, "Test", "u1", d, NULL, NULL), 0);
    json_decref(d);
    settle(e);
    cr_assert_str_eq(types("u1"), "SagaStarted StepSucceeded ", "interrupted, not failed");
    cr_assert_str_eq(trace, "do1 do2 ");
    ag_fake_clock_advance(&fclock, 199000000ull);
    settle(e); /* not due yet: idle at once */
    cr_assert_str_eq(types("u1"), "SagaStarted StepSucceeded ");
    ag_fake_clock_advance(&fclock, 1000000ull);
    settle(e); /* due: the retry thread queues it, a worker finishes it */
    ag_saga_engine_stop(e);
    cr_assert_str_eq(types("u1"), "SagaStarted StepSucceeded StepSucceeded StepSucceeded "
                                  "SagaCompleted ");
    cr_assert_str_eq(trace, "do1 do2 do2 do3 ", "got %s", trace);
}

/* ---- many sagas on few threads; the per-step histogram ---- */

/* Two hundred sagas on the engine's two workers: each worker runs a step and
 * moves on while the saga's event is appended, so all of them complete, each
 * with its whole history in order. */
Test(saga, many_sagas_in_flight_on_two_workers)
{
    struct ag_saga_engine *e = engine();
    char id[32];
    json_t *d = json_pack("{s:s}", "orderId", "o-1");
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof id, "m%d", i);
        cr_assert_eq(ag_saga_start_async(e, "Test", id, d, NULL, NULL), 0);
    }
    json_decref(d);
    cr_assert_eq(ag_saga_wait_starts(e, 10000), 0);
    settle(e);
    struct ag_saga_engine_stats st;
    ag_saga_engine_stats(e, &st);
    ag_saga_engine_stop(e);
    cr_assert_eq(st.started, 200);
    cr_assert_eq(st.completed, 200);
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof id, "m%d", i);
        cr_assert_str_eq(types(id),
                         "SagaStarted StepSucceeded StepSucceeded StepSucceeded SagaCompleted ");
    }
}

static int slow_act(void *ud, const json_t *d, const char *key, const char *reason,
                    struct ag_err *err)
{
    AG_UNUSED(ud), AG_UNUSED(d), AG_UNUSED(reason);
    ag_fake_clock_advance(&fclock, 3000000); /* the participant takes 3 ms */
    return fail_step == 2 && strstr(key, ":B") ? ag_err_set(err, AG_EDOMAIN, "no") : 0;
}

static int slow_undo(void *ud, const json_t *d, const char *key, const char *reason,
                     struct ag_err *err)
{
    AG_UNUSED(ud), AG_UNUSED(d), AG_UNUSED(key), AG_UNUSED(reason), AG_UNUSED(err);
    ag_fake_clock_advance(&fclock, 3000000);
    return 0;
}

static double step_hist(struct ag_obs_registry *r, const char *step, uint64_t *count)
{
    static const char *const labels[] = {"saga", "step"};
    struct ag_obs_family_spec spec = {AG_OBS_HISTOGRAM, "agora_saga_step_duration_seconds", NULL, 2,
                                      labels};
    struct ag_obs_family *f;
    struct ag_obs_series *s;
    cr_assert_eq(ag_obs_family_define(r, &spec, &f), 0);
    const char *values[] = {"Timed", step};
    cr_assert_eq(ag_obs_series_get(f, values, &s), 0);
    double sum = 0;
    ag_obs_histogram_value(s, NULL, &sum, count);
    return sum;
}

/* agora_saga_step_duration_seconds{saga,step}: one observation per action and per
 * compensation ("<Step>/compensate"), the time the participant call took on the
 * engine's clock. */
Test(saga, step_durations_go_to_the_histogram)
{
    static const struct ag_saga_step timed[] = {{"A", slow_act, slow_undo, {0}, NULL},
                                                {"B", slow_act, slow_undo, {0}, NULL}};
    static const struct ag_saga_def tdef = {.type = "Timed", .steps = timed, .nsteps = 2};
    struct ag_obs_registry *r;
    cr_assert_eq(ag_obs_registry_new(&r), 0);
    struct ag_saga_engine_config cfg = {.store = store,
                                        .defs = &tdef,
                                        .ndefs = 1,
                                        .threads = 2,
                                        .clock = &fclock.clock,
                                        .rng = &rng,
                                        .sleep = fake_sleep,
                                        .metrics = r};
    struct ag_saga_engine *e;
    cr_assert_eq(ag_saga_engine_start(&cfg, &e, NULL), 0);
    json_t *d = json_object();
    cr_assert_eq(ag_saga_start(e, "Timed", "t1", d, NULL, NULL), 0);
    settle(e);
    fail_step = 2; /* B fails: B and A are compensated */
    cr_assert_eq(ag_saga_start(e, "Timed", "t2", d, NULL, NULL), 0);
    settle(e);
    json_decref(d);
    ag_saga_engine_stop(e);
    uint64_t n = 0;
    cr_assert_float_eq(step_hist(r, "A", &n), 0.006, 1e-9);
    cr_assert_eq(n, 2);
    cr_assert_float_eq(step_hist(r, "B", &n), 0.006, 1e-9);
    cr_assert_eq(n, 2);
    cr_assert_float_eq(step_hist(r, "B/compensate", &n), 0.003, 1e-9);
    cr_assert_eq(n, 1);
    cr_assert_float_eq(step_hist(r, "A/compensate", &n), 0.003, 1e-9);
    cr_assert_eq(n, 1);
    ag_obs_registry_free(r);
}

/* The `steps` column: a succeeded step is its name alone, any other a compact
 * array; both read back as the API's objects (rows written before read too). */
Test(saga, steps_column_round_trips_compactly)
{
    json_t *objs = json_pack("[{s:s, s:s}, {s:s, s:s, s:s}, {s:s, s:s}]", "name", "One", "status",
                             "succeeded", "name", "Two", "status", "failed", "error", "no", "name",
                             "Three", "status", "pending");
    char *text = ag_saga_steps_text(objs);
    cr_assert_str_eq(text, "[\"One\",[\"Two\",\"failed\",\"no\"],[\"Three\",\"pending\"]]");
    json_t *back = ag_saga_steps_json(text);
    cr_assert(json_equal(back, objs));
    json_decref(back);
    back = ag_saga_steps_json("[[\"One\",\"succeeded\"]]"); /* the form before */
    cr_assert_str_eq(str_at(json_array_get(back, 0), "status", NULL), "succeeded");
    json_decref(back);
    free(text);
    json_decref(objs);
}

struct raw_row {
    char status[32], steps[256], current[32];
};

static int raw_row_cb(const struct ag_rm_row *r, void *ud)
{
    struct raw_row *o = ud;
    snprintf(o->status, sizeof o->status, "%s", ag_rm_text(r, 0) ?: "");
    snprintf(o->steps, sizeof o->steps, "%s", ag_rm_text(r, 1) ?: "");
    snprintf(o->current, sizeof o->current, "%s", ag_rm_text(r, 2) ?: "(null)");
    return 1;
}

/* The sagas projection writes a saga's common events (SagaStarted, a pending
 * step that succeeds, SagaCompleted) on the compact text itself: the column reads
 * exactly as ag_saga_steps_text writes it, after every event. */
Test(saga, the_common_events_write_the_compact_steps_directly)
{
    struct ag_saga_engine *e = engine();
    json_t *d = json_object();
    cr_assert_eq(ag_saga_start(e, "Test", "c1", d, NULL, NULL), 0);
    json_decref(d);
    settle(e);
    ag_saga_engine_stop(e);
    static const char *const want[][3] = {
        {"running", "[[\"One\",\"pending\"],[\"Two\",\"pending\"],[\"Three\",\"pending\"]]", "One"},
        {"running", "[\"One\",[\"Two\",\"pending\"],[\"Three\",\"pending\"]]", "Two"},
        {"running", "[\"One\",\"Two\",[\"Three\",\"pending\"]]", "Three"},
        {"running", "[\"One\",\"Two\",\"Three\"]", "(null)"},
        {"completed", "[\"One\",\"Two\",\"Three\"]", "(null)"},
    };
    char rm[128];
    snprintf(rm, sizeof rm, "%s/rm", dir);
    struct ag_projection proj;
    ag_saga_projection(&def, 1, &proj);
    struct ag_event_page pg;
    cr_assert_eq(ag_store_read_stream(store, "saga-c1", 7, 0, AG_READ_FORWARD, 10, &pg, NULL), 0);
    cr_assert_eq(pg.count, 5);
    for (size_t i = 0; i < pg.count; i++) {
        struct ag_rm *db;
        cr_assert_eq(ag_rm_open(rm, "sagas", AG_RM_READWRITE, &db, NULL), 0);
        if (i == 0) cr_assert_eq(ag_rm_script(db, proj.schema, NULL), 0);
        json_t *data = json_loadb(pg.events[i].data, pg.events[i].data_len, 0, NULL);
        cr_assert_eq(proj.apply(db, &pg.events[i], data, proj.ud), 0);
        json_decref(data);
        struct raw_row row = {""};
        uint8_t idb[16];
        struct ag_rm_arg arg = ag_rm_id_arg("c1", idb);
        cr_assert_eq(ag_rm_query(db, "SELECT status, steps, current_step FROM sagas WHERE id=?1",
                                 &arg, 1, raw_row_cb, &row, NULL),
                     0);
        ag_rm_close(db);
        cr_assert_str_eq(row.status, want[i][0], "after event %zu", i);
        cr_assert_str_eq(row.steps, want[i][1], "after event %zu", i);
        cr_assert_str_eq(row.current, want[i][2], "after event %zu", i);
    }
    ag_event_page_free(&pg);
}
