/* The saga engine: forward run, reverse compensation (the seeds' test), failing
 * compensations (the others still run), resume of an unfinished saga (also
 * mid-compensation), retry of a failed saga, idempotency keys, the read model. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    trace[0] = keys[0] = 0;
    fail_step = fail_comp = fail_comp_times = exists_comp = -1;
}

static void teardown(void)
{
    ag_store_close(store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

static char *last_type(const char *saga)
{
    static char type[64];
    char stream[128];
    snprintf(stream, sizeof stream, "saga-%s", saga);
    for (int i = 0; i < 500; i++) { /* up to 5 s for the workers */
        struct ag_event_page p;
        type[0] = 0;
        if (ag_store_read_stream(store, stream, strlen(stream), -1, AG_READ_BACKWARD, 1, &p,
                                 NULL) == 0) {
            snprintf(type, sizeof type, "%.*s", (int)p.events[0].type_len, p.events[0].type);
            ag_event_page_free(&p);
        }
        if (strstr("SagaCompleted SagaCompensated SagaFailed", type) && type[0]) return type;
        usleep(10000);
    }
    return type;
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
    struct ag_saga_engine *e;
    cr_assert_eq(ag_saga_engine_start(store, &def, 1, 2, &e, NULL), 0);
    json_t *d = json_pack("{s:s}", "orderId", "o-1");
    cr_assert_eq(ag_saga_start(e, "Test", id, d, NULL), 0);
    json_decref(d);
    last_type(id);
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
    struct ag_event_data ev[2] = {
        {.type = "SagaStarted",
         .type_len = 11,
         .data = "{\"type\":\"Test\",\"data\":{}}",
         .data_len = 25},
        {.type = "StepSucceeded",
         .type_len = 13,
         .data = "{\"step\":0,\"name\":\"One\"}",
         .data_len = 23},
    };
    cr_assert_eq(ag_store_append(store, "saga-r1", 7, AG_STORE_NO_STREAM, ev, 2, NULL, NULL), 0);
    struct ag_saga_engine *e;
    cr_assert_eq(ag_saga_engine_start(store, &def, 1, 2, &e, NULL), 0);
    cr_assert_str_eq(last_type("r1"), "SagaCompleted");
    struct ag_saga_engine_stats st;
    ag_saga_engine_stats(e, &st);
    cr_assert_eq(st.resumed, 1);
    ag_saga_engine_stop(e);
    cr_assert_str_eq(trace, "do2 do3 ", "step One is not run again");
}

Test(saga, starting_twice_runs_once)
{
    struct ag_saga_engine *e;
    cr_assert_eq(ag_saga_engine_start(store, &def, 1, 2, &e, NULL), 0);
    json_t *d = json_object();
    cr_assert_eq(ag_saga_start(e, "Test", "d1", d, NULL), 0);
    cr_assert_eq(ag_saga_start(e, "Test", "d1", d, NULL), 0);
    json_decref(d);
    last_type("d1");
    ag_saga_engine_stop(e);
    cr_assert_str_eq(trace, "do1 do2 do3 ");
    struct ag_err err;
    AG_UNUSED(err);
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
    snprintf(o->steps, sizeof o->steps, "%s", ag_rm_text(r, 1) ?: "");
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
    struct ag_rm_arg arg = AG_RM_TEXT(id);
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

static struct ag_saga_engine *engine(void)
{
    struct ag_saga_engine *e;
    cr_assert_eq(ag_saga_engine_start(store, &def, 1, 2, &e, NULL), 0);
    return e;
}

static void start(struct ag_saga_engine *e, const char *id)
{
    json_t *d = json_object();
    cr_assert_eq(ag_saga_start(e, "Test", id, d, NULL), 0);
    json_decref(d);
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
    cr_assert_str_eq(last_type("t2"), "SagaFailed");
    json_t *d = last_data("t2");
    cr_assert_str_eq(failed_names(d), "One ");
    json_decref(d);
    cr_assert_eq(ag_saga_retry(e, "t2", NULL), 0);
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
    cr_assert_str_eq(last_type("c1"), "SagaFailed");
    cr_assert_str_eq(trace, "undo2 undo1 ", "got %s", trace);
    json_t *d = last_data("c1");
    cr_assert_str_eq(failed_names(d), "Three ", "the failure recorded before the crash counts");
    cr_assert_str_eq(json_string_value(json_object_get(d, "reason")), "boom");
    json_decref(d);
    reset_trace();
    cr_assert_eq(ag_saga_retry(e, "c1", NULL), 0);
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
