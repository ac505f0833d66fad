/* Many sagas at once on several loops, for ThreadSanitizer (`make tsan` runs this
 * folder) as much as for the ordinary run: three engines on one log store, each
 * with its recorder loop and two workers, two with inline moves; a participant
 * thread with a libuv loop of its own that commits each asynchronous step's
 * effect together with the step's record (ag_store_append_multi_async on ITS
 * loop, so ag_saga_call_done runs there); a step answered before its start
 * returns; synchronous steps and compensations on the workers; every saga started
 * asynchronously from the test thread while the others run.
 *
 * Saga i of engine k: Reserve (synchronous), Charge (asynchronous, answered by the
 * participant with the effect), Ship (asynchronous, answered at once; it fails for
 * every fifth saga, which then compensates Ship (nothing to undo, recorded all
 * the same), Charge asynchronously and Reserve synchronously). The test checks the counts and the
 * streams. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agora/saga.h"
#include "agora/store_log.h"

enum { ENGINES = 3, PER_ENGINE = 300, FAIL_EVERY = 5 };

static char cdir[64];
static struct ag_store *cstore;

/* ---- the participant: its own loop, fed through an async handle ---- */

struct job {
    struct job *next;
    struct ag_saga_call *call;
    char stream[64]; /* effect-<saga> */
    struct ag_event_data ev[1];
    struct ag_append_part parts[2];
    struct ag_append_multi_req req;
};

static struct {
    uv_loop_t loop;
    uv_async_t wake;
    struct ag_store_loop *sloop;
    pthread_t thread;
    pthread_mutex_t mu;
    struct job *jobs; /* waiting for the loop */
    bool stopping;
} part;

static pthread_mutex_t count_mu = PTHREAD_MUTEX_INITIALIZER;
static int reserves, undo_reserves; /* synchronous calls, any worker */

static void effect_done(void *ud, int status, const struct ag_append_result *res,
                        const struct ag_err *err)
{
    AG_UNUSED(res);
    struct job *j = ud;
    ag_saga_call_done(j->call, status, err, status == 0);
    free(j);
}

static void submit_job(struct job *j)
{
    const struct ag_append_part *rec = ag_saga_call_record(j->call);
    if (!rec) {
        ag_saga_call_done(j->call, 0, NULL, false);
        free(j);
        return;
    }
    j->ev[0] = (struct ag_event_data){.type = "Done", .type_len = 4, .data = "{}", .data_len = 2};
    j->parts[0] = (struct ag_append_part){j->stream, strlen(j->stream), AG_STORE_ANY, j->ev, 1};
    j->parts[1] = *rec;
    j->req =
        (struct ag_append_multi_req){.parts = j->parts, .nparts = 2, .cb = effect_done, .ud = j};
    cr_assert_eq(ag_store_append_multi_async(part.sloop, &j->req), 0);
}

static void wake_cb(uv_async_t *a)
{
    pthread_mutex_lock(&part.mu);
    struct job *list = part.jobs;
    part.jobs = NULL;
    bool stop = part.stopping;
    pthread_mutex_unlock(&part.mu);
    while (list) {
        struct job *j = list;
        list = j->next;
        submit_job(j);
    }
    if (stop) {
        ag_store_loop_close(part.sloop);
        uv_close((uv_handle_t *)a, NULL);
    }
}

static void *part_main(void *arg)
{
    AG_UNUSED(arg);
    uv_run(&part.loop, UV_RUN_DEFAULT);
    return NULL;
}

static void part_start(void)
{
    part.jobs = NULL;
    part.stopping = false;
    pthread_mutex_init(&part.mu, NULL);
    cr_assert_eq(uv_loop_init(&part.loop), 0);
    cr_assert_eq(uv_async_init(&part.loop, &part.wake, wake_cb), 0);
    cr_assert_eq(ag_store_loop_init(cstore, &part.loop, &part.sloop), 0);
    cr_assert_eq(pthread_create(&part.thread, NULL, part_main, NULL), 0);
}

static void part_stop(void)
{
    pthread_mutex_lock(&part.mu);
    part.stopping = true;
    pthread_mutex_unlock(&part.mu);
    uv_async_send(&part.wake);
    pthread_join(part.thread, NULL);
    uv_loop_close(&part.loop);
    pthread_mutex_destroy(&part.mu);
}

/* ---- the steps ---- */

static int reserve(void *ud, const json_t *d, const char *key, const char *reason,
                   struct ag_err *err)
{
    AG_UNUSED(ud), AG_UNUSED(d), AG_UNUSED(key), AG_UNUSED(err);
    pthread_mutex_lock(&count_mu);
    if (reason)
        undo_reserves++;
    else
        reserves++;
    pthread_mutex_unlock(&count_mu);
    return 0;
}

/* Charge and its compensation: handed to the participant's loop. */
static void charge_async(void *ud, const json_t *d, const char *key, const char *reason,
                         struct ag_saga_call *call)
{
    AG_UNUSED(ud), AG_UNUSED(d), AG_UNUSED(reason);
    struct job *j = calloc(1, sizeof *j);
    cr_assert_not_null(j);
    j->call = call;
    snprintf(j->stream, sizeof j->stream, "effect-%.*s", (int)strcspn(key, ":"), key);
    pthread_mutex_lock(&part.mu);
    j->next = part.jobs;
    part.jobs = j;
    pthread_mutex_unlock(&part.mu);
    uv_async_send(&part.wake);
}

static int charge_sync(void *ud, const json_t *d, const char *key, const char *reason,
                       struct ag_err *err)
{
    AG_UNUSED(ud), AG_UNUSED(d), AG_UNUSED(key), AG_UNUSED(reason);
    return ag_err_set(err, AG_EINVAL, "the async path answers every charge");
}

static bool fails(const json_t *d)
{
    return json_integer_value(json_object_get(d, "n")) % FAIL_EVERY == 0;
}

/* Ship: answered before it returns, on the thread that started it. */
static void ship_async(void *ud, const json_t *d, const char *key, const char *reason,
                       struct ag_saga_call *call)
{
    AG_UNUSED(ud), AG_UNUSED(key), AG_UNUSED(reason);
    if (fails(d)) { /* the engine goes the synchronous way, which fails for good */
        struct ag_err err;
        ag_saga_call_done(call, ag_err_set(&err, AG_EUPSTREAM, "carrier down"), &err, false);
        return;
    }
    ag_saga_call_done(call, 0, NULL, false);
}

static int ship_sync(void *ud, const json_t *d, const char *key, const char *reason,
                     struct ag_err *err)
{
    AG_UNUSED(ud), AG_UNUSED(key), AG_UNUSED(reason);
    return fails(d) ? ag_err_set(err, AG_EDOMAIN, "no carrier") : 0;
}

static const struct ag_saga_step csteps[] = {
    {"Reserve", reserve, reserve},
    {"Charge", charge_sync, charge_sync, {0}, NULL, charge_async, charge_async},
    {"Ship", ship_sync, NULL, {0}, NULL, ship_async},
};
static const struct ag_saga_def cdef = {.type = "Order", .steps = csteps, .nsteps = 3};

static void csetup(void)
{
    strcpy(cdir, "/tmp/agora-sagac-XXXXXX");
    cr_assert_not_null(mkdtemp(cdir));
    struct ag_store_options o = {.no_sync = true};
    cr_assert_eq(ag_store_log_open(cdir, &o, &cstore, NULL), 0);
    reserves = undo_reserves = 0;
    part_start();
}

static void cteardown(void)
{
    part_stop();
    ag_store_close(cstore);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", cdir);
    cr_assert_eq(system(cmd), 0);
}

static const char *types_of(const char *stream)
{
    static char out[512];
    out[0] = 0;
    struct ag_event_page p;
    if (ag_store_read_stream(cstore, stream, strlen(stream), 0, AG_READ_FORWARD, 100, &p, NULL))
        return out;
    for (size_t i = 0; i < p.count; i++)
        snprintf(out + strlen(out), sizeof out - strlen(out), "%.*s ", (int)p.events[i].type_len,
                 p.events[i].type);
    ag_event_page_free(&p);
    return out;
}

TestSuite(saga_concurrent, .init = csetup, .fini = cteardown);

Test(saga_concurrent, many_sagas_on_three_engines_and_a_participant_loop)
{
    struct ag_saga_engine *e[ENGINES];
    for (int k = 0; k < ENGINES; k++) {
        struct ag_saga_engine_config cfg = {.store = cstore,
                                            .defs = &cdef,
                                            .ndefs = 1,
                                            .threads = 2,
                                            .defer_resume = true, /* no engine takes another's */
                                            .inline_moves = k > 0};
        cr_assert_eq(ag_saga_engine_start(&cfg, &e[k], NULL), 0);
    }
    for (int i = 0; i < PER_ENGINE; i++) /* interleaved: all engines busy at once */
        for (int k = 0; k < ENGINES; k++) {
            char id[32];
            snprintf(id, sizeof id, "o%d-%d", k, i);
            json_t *d = json_pack("{si}", "n", i);
            cr_assert_eq(ag_saga_start_async(e[k], "Order", id, d, NULL, NULL), 0);
            json_decref(d);
        }
    uint64_t completed = 0, compensated = 0;
    for (int k = 0; k < ENGINES; k++) {
        cr_assert_eq(ag_saga_wait_starts(e[k], 30000), 0);
        cr_assert_eq(ag_saga_engine_wait_idle(e[k], 30000), 0);
        struct ag_saga_engine_stats st;
        ag_saga_engine_stats(e[k], &st);
        cr_assert_eq(st.failed, 0);
        completed += st.completed;
        compensated += st.compensated;
    }
    for (int k = 0; k < ENGINES; k++) ag_saga_engine_stop(e[k]);
    int nfail = ENGINES * (PER_ENGINE / FAIL_EVERY);
    cr_assert_eq(compensated, (uint64_t)nfail);
    cr_assert_eq(completed, (uint64_t)(ENGINES * PER_ENGINE - nfail));
    cr_assert_eq(reserves, ENGINES * PER_ENGINE);
    cr_assert_eq(undo_reserves, nfail);
    cr_assert_str_eq(types_of("saga-o1-7"),
                     "SagaStarted StepSucceeded StepSucceeded StepSucceeded SagaCompleted ");
    cr_assert_str_eq(types_of("effect-o1-7"), "Done ");
    cr_assert_str_eq(types_of("saga-o2-10"),
                     "SagaStarted StepSucceeded StepSucceeded StepFailed "
                     "CompensationSucceeded CompensationSucceeded CompensationSucceeded "
                     "SagaCompensated ");
    cr_assert_str_eq(types_of("effect-o2-10"), "Done Done ");
}
