/* Asynchronous repository commands (ag_es_execute_async): completion on the store
 * loop's thread, batching with synchronous commands, a conflict reloaded and
 * retried, a store that cannot write, a decide error, and extra parts (another
 * stream's events) committed in the same multi-stream append. A counter
 * aggregate stands in for the domain; "another process" is a direct append to
 * the store from inside decide, between the load and the append. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agora/es.h"
#include "agora/store_log.h"
#include "store/internal.h"

struct tally {
    long long total;
};
static void t_init(void *s)
{
    memset(s, 0, sizeof(struct tally));
}
static void t_free(void *s)
{
    AG_UNUSED(s);
}
static int t_evolve(void *s, const char *type, const json_t *d)
{
    if (strcmp(type, "Added") == 0)
        ((struct tally *)s)->total += json_integer_value(json_object_get(d, "n"));
    return 0;
}
static json_t *t_snapshot(const void *s)
{
    return json_pack("{s:I}", "total", (json_int_t)((const struct tally *)s)->total);
}
static int t_restore(void *s, const json_t *j)
{
    ((struct tally *)s)->total = json_integer_value(json_object_get(j, "total"));
    return 0;
}
static const struct ag_es_type tally_type = {"tally",  sizeof(struct tally), t_init,   t_free,
                                             t_evolve, t_snapshot,           t_restore};

static char adir[64];
static struct ag_store *astore;
static const struct ag_store_ops *real_ops;
static struct ag_store_ops broken_ops; /* append_async answers AG_EUNAVAILABLE */
static struct ag_es_repo *arepo;
static uv_loop_t loop;
static uv_async_t stopper;
static pthread_t loop_thread;
static struct ag_store_loop *sloop;

static void stop_cb(uv_async_t *a)
{
    ag_store_loop_close(sloop);
    uv_close((uv_handle_t *)a, NULL);
}
static void *loop_main(void *arg)
{
    AG_UNUSED(arg);
    uv_run(&loop, UV_RUN_DEFAULT);
    return NULL;
}

static void asetup(void)
{
    strcpy(adir, "/tmp/agora-esa-XXXXXX");
    cr_assert_not_null(mkdtemp(adir));
    struct ag_store_options o = {.no_sync = true};
    cr_assert_eq(ag_store_log_open(adir, &o, &astore, NULL), 0);
    real_ops = astore->ops;
    struct ag_es_repo_config rc = {.store = astore};
    cr_assert_eq(ag_es_repo_new(&rc, &arepo), 0);
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(uv_async_init(&loop, &stopper, stop_cb), 0);
    cr_assert_eq(ag_store_loop_init(astore, &loop, &sloop), 0);
    cr_assert_eq(pthread_create(&loop_thread, NULL, loop_main, NULL), 0);
}

static void ateardown(void)
{
    uv_async_send(&stopper);
    pthread_join(loop_thread, NULL);
    uv_loop_close(&loop);
    ag_es_repo_free(arepo);
    astore->ops = real_ops;
    ag_store_close(astore);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", adir);
    cr_assert_eq(system(cmd), 0);
}

/* What `done` saw. */
struct outcome {
    pthread_mutex_t m;
    pthread_cond_t c;
    int calls, failures, last_rc;
    struct ag_es_result res;
    char msg[512];
    pthread_t thread;
};
#define OUTCOME                                                                                    \
    {                                                                                              \
        PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, {0}, "", 0                   \
    }

static void on_done(void *ud, int rc, const struct ag_es_result *res, const struct ag_err *err)
{
    struct outcome *o = ud;
    pthread_mutex_lock(&o->m);
    o->last_rc = rc;
    o->failures += rc != 0;
    if (res) o->res = *res;
    snprintf(o->msg, sizeof o->msg, "%s", rc && err ? err->msg : "");
    o->thread = pthread_self();
    o->calls++;
    pthread_cond_broadcast(&o->c);
    pthread_mutex_unlock(&o->m);
}

/* Wait for `n` completions (a 10 s cap, so a lost completion fails the test). */
static void wait_calls(struct outcome *o, int n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&o->m);
    while (o->calls < n && pthread_cond_timedwait(&o->c, &o->m, &ts) == 0) {
    }
    int got = o->calls;
    pthread_mutex_unlock(&o->m);
    cr_assert_eq(got, n, "%d of %d completions", got, n);
}

/* decide: add `n`; `meddle` times first, another process appends 100 in between;
 * `limit` is a business rule. */
struct add {
    int n;
    long long limit;
    int meddle;
    int decides;
};

static int decide_add(const void *state, int64_t version, void *ud, struct ag_es_batch *out,
                      struct ag_err *err)
{
    AG_UNUSED(version);
    struct add *a = ud;
    a->decides++;
    if (a->limit && ((const struct tally *)state)->total + a->n > a->limit)
        return ag_err_set(err, AG_EDOMAIN, "limit %lld reached", a->limit);
    if (a->meddle) {
        a->meddle--;
        struct ag_event_data ev = {
            .type = "Added", .type_len = 5, .data = "{\"n\":100}", .data_len = 9};
        cr_assert_eq(ag_store_append(astore, "tally-k", 7, AG_STORE_ANY, &ev, 1, NULL, NULL), 0);
    }
    return a->n ? ag_es_batch_push(out, "Added", json_pack("{s:i}", "n", a->n)) : 0;
}

static void view_total(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    *(long long *)ud = ((const struct tally *)state)->total;
}

static long long total_of(const char *stream)
{
    long long t = -1;
    cr_assert_eq(ag_es_read(arepo, &tally_type, stream, view_total, &t, NULL), 0);
    return t;
}

static int64_t version_of(const char *stream)
{
    int64_t v;
    ag_store_stream_version(astore, stream, strlen(stream), &v);
    return v;
}

static void exec_async(struct add *a, struct outcome *o, const struct ag_append_part *extra,
                       size_t nextra)
{
    struct ag_es_cmd cmd = {&tally_type, "tally-k", decide_add, a, NULL, NULL, NULL};
    struct ag_es_async as = {sloop, extra, nextra, on_done, o};
    cr_assert_eq(ag_es_execute_async(arepo, &cmd, &as), 0);
}

TestSuite(repo_async, .init = asetup, .fini = ateardown);

Test(repo_async, a_command_completes_on_the_loop_thread)
{
    struct add a = {5, 0, 0, 0};
    struct outcome o = OUTCOME;
    exec_async(&a, &o, NULL, 0);
    wait_calls(&o, 1);
    cr_assert_eq(o.last_rc, 0, "%s", o.msg);
    cr_assert_eq(o.res.version, 0);
    cr_assert_eq(o.res.appended, 1);
    cr_assert(pthread_equal(o.thread, loop_thread));
    cr_assert_eq(total_of("tally-k"), 5);
}

Test(repo_async, many_commands_with_synchronous_reads_between_lose_nothing)
{
    enum { N = 300 };
    static struct add adds[N];
    struct outcome o = OUTCOME;
    for (int i = 0; i < N; i++) {
        adds[i] = (struct add){i + 1, 0, 0, 0};
        exec_async(&adds[i], &o, NULL, 0);
        if (i % 50 == 0) total_of("tally-k"); /* a synchronous command in the same queue */
    }
    wait_calls(&o, N);
    cr_assert_eq(o.failures, 0, "%s", o.msg);
    cr_assert_eq(total_of("tally-k"), (long long)N * (N + 1) / 2);
    cr_assert_eq(version_of("tally-k"), N - 1);
}

Test(repo_async, a_conflict_is_reloaded_and_retried)
{
    struct add first = {1, 0, 0, 0};
    struct outcome o = OUTCOME;
    exec_async(&first, &o, NULL, 0);
    wait_calls(&o, 1);
    struct add a = {7, 0, 1, 0}; /* another process appends once between load and append */
    exec_async(&a, &o, NULL, 0);
    wait_calls(&o, 2);
    cr_assert_eq(o.last_rc, 0, "%s", o.msg);
    cr_assert_eq(a.decides, 2, "decided again on fresh state");
    cr_assert_eq(o.res.version, 2);
    cr_assert_eq(total_of("tally-k"), 108);
}

Test(repo_async, a_conflict_that_keeps_coming_gives_up)
{
    struct add a = {7, 0, 1000, 0};
    struct outcome o = OUTCOME;
    exec_async(&a, &o, NULL, 0);
    wait_calls(&o, 1);
    cr_assert_eq(o.last_rc, AG_ECONFLICT);
    cr_assert_eq(a.decides, 6, "the first try and 5 retries, got %d", a.decides);
    cr_assert_eq(total_of("tally-k"), 600, "only the other process's events");
}

static int unavailable_append(struct ag_store *s, struct ag_append_req *req)
{
    AG_UNUSED(s);
    req->status = ag_err_set(&req->err, AG_EUNAVAILABLE, "No space left on device");
    ag__store_loop_complete(req);
    return 0;
}

Test(repo_async, a_store_that_cannot_write_fails_the_command_and_keeps_nothing)
{
    struct add a = {5, 0, 0, 0};
    struct outcome o = OUTCOME;
    exec_async(&a, &o, NULL, 0);
    wait_calls(&o, 1);
    broken_ops = *real_ops;
    broken_ops.append_async = unavailable_append;
    astore->ops = &broken_ops;
    struct add b = {9, 0, 0, 0};
    exec_async(&b, &o, NULL, 0);
    wait_calls(&o, 2);
    astore->ops = real_ops;
    cr_assert_eq(o.last_rc, AG_EUNAVAILABLE);
    cr_assert_eq(b.decides, 1, "an outage is not retried here");
    cr_assert_eq(total_of("tally-k"), 5, "the tentative state was dropped");
    exec_async(&b, &o, NULL, 0);
    wait_calls(&o, 3);
    cr_assert_eq(o.last_rc, 0, "%s", o.msg);
    cr_assert_eq(total_of("tally-k"), 14);
}

Test(repo_async, a_decide_error_completes_before_the_call_returns)
{
    struct add a = {5, 3, 0, 0};
    struct outcome o = OUTCOME;
    exec_async(&a, &o, NULL, 0);
    cr_assert_eq(o.calls, 1, "done ran inline: nothing reached the store");
    cr_assert(pthread_equal(o.thread, pthread_self()));
    cr_assert_eq(o.last_rc, AG_EDOMAIN);
    cr_assert(strstr(o.msg, "limit 3 reached"), "%s", o.msg);
    cr_assert_eq(version_of("tally-k"), -1);
}

static struct ag_event_data step_ev = {
    .type = "StepSucceeded", .type_len = 13, .data = "{\"step\":1}", .data_len = 10};

Test(repo_async, extra_parts_commit_with_the_events_or_not_at_all)
{
    struct ag_append_part saga = {"saga-x", 6, AG_STORE_NO_STREAM, &step_ev, 1};
    struct add a = {5, 0, 0, 0};
    struct outcome o = OUTCOME;
    exec_async(&a, &o, &saga, 1);
    wait_calls(&o, 1);
    cr_assert_eq(o.last_rc, 0, "%s", o.msg);
    cr_assert_eq(version_of("saga-x"), 0);
    cr_assert_eq(version_of("tally-k"), 0);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_all(astore, 0, AG_READ_FORWARD, 10, &p, NULL), 0);
    cr_assert_eq(p.count, 2, "one unit: the aggregate's event, then the saga's");
    cr_assert_eq(p.events[1].stream_len, 6);
    ag_event_page_free(&p);

    /* the saga moved on meanwhile (another driver): no retry, nothing written */
    struct add b = {9, 0, 0, 0};
    exec_async(&b, &o, &saga, 1);
    wait_calls(&o, 2);
    cr_assert_eq(o.last_rc, AG_ECONFLICT);
    cr_assert(strstr(o.msg, "saga-x"), "%s", o.msg);
    cr_assert_eq(b.decides, 1);
    cr_assert_eq(version_of("tally-k"), 0);
    cr_assert_eq(total_of("tally-k"), 5);

    /* a command that decides nothing still commits its extra part */
    saga.expected_version = 0;
    struct add none = {0, 0, 0, 0};
    exec_async(&none, &o, &saga, 1);
    wait_calls(&o, 3);
    cr_assert_eq(o.last_rc, 0, "%s", o.msg);
    cr_assert_eq(version_of("saga-x"), 1);
    cr_assert_eq(version_of("tally-k"), 0);
}

/* The aggregate conflicts (another process), the extra part does not: the batch
 * is re-decided and the unit committed once, the extra part with it. */
Test(repo_async, an_aggregate_conflict_retries_the_unit_with_its_extra_part)
{
    struct add first = {1, 0, 0, 0};
    struct outcome o = OUTCOME;
    exec_async(&first, &o, NULL, 0);
    wait_calls(&o, 1);
    struct ag_append_part saga = {"saga-y", 6, AG_STORE_NO_STREAM, &step_ev, 1};
    struct add a = {2, 0, 1, 0};
    exec_async(&a, &o, &saga, 1);
    wait_calls(&o, 2);
    cr_assert_eq(o.last_rc, 0, "%s", o.msg);
    cr_assert_eq(a.decides, 2);
    cr_assert_eq(version_of("saga-y"), 0, "the extra part once");
    cr_assert_eq(total_of("tally-k"), 103);
}
