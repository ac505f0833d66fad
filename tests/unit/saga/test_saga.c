/* The saga engine: forward run, reverse compensation (the seeds' test), failing
 * compensations, resume of an unfinished saga, idempotency keys, the read model. */
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
static int fail_step = -1; /* the action that fails */
static int fail_comp = -1; /* the compensation that always fails */

static void note(const char *what, const char *key)
{
    pthread_mutex_lock(&trace_lock);
    strncat(trace, what, sizeof trace - strlen(trace) - 1);
    strncat(trace, " ", sizeof trace - strlen(trace) - 1);
    strncat(keys, key, sizeof keys - strlen(keys) - 1);
    strncat(keys, " ", sizeof keys - strlen(keys) - 1);
    pthread_mutex_unlock(&trace_lock);
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
        return fail_comp == i ? ag_err_set(err, AG_EIO, "undo %d broken", i) : 0;                  \
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
    fail_step = fail_comp = -1;
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

Test(saga, a_compensation_that_keeps_failing_leaves_the_saga_failed)
{
    fail_step = 3;
    fail_comp = 2;
    run("s4");
    cr_assert_str_eq(last_type("s4"), "SagaFailed");
    cr_assert_str_eq(trace, "do1 do2 do3 undo3 undo2 undo2 ",
                     "retried comp_attempts times, then stopped; got %s", trace);
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

Test(saga, the_read_model_tracks_status_and_steps)
{
    fail_step = 2;
    run("m1");
    char rm[128];
    snprintf(rm, sizeof rm, "%s/rm", dir);
    struct ag_projection proj;
    ag_saga_projection(&def, 1, &proj);
    cr_assert_eq(ag_projection_rebuild(store, rm, &proj, NULL, NULL, NULL), 0);
    sqlite3 *db;
    cr_assert_eq(ag_projection_open_ro(rm, "sagas", &db), 0);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT status, steps, reason FROM sagas WHERE id='m1'", -1, &st, NULL);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "compensated");
    cr_assert_str_eq(
        (const char *)sqlite3_column_text(st, 1),
        "[{\"name\":\"One\",\"status\":\"compensated\"},{\"name\":\"Two\",\"status\":\"failed\"},"
        "{\"name\":\"Three\",\"status\":\"pending\"}]");
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 2), "step 2 said no");
    sqlite3_finalize(st);
    sqlite3_close(db);
}
