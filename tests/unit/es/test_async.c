/* Asynchronous repository commands (ag_es_execute_async): completion on the store
 * loop's thread, batching with synchronous commands, a conflict reloaded and
 * retried, a store that cannot write, a decide error, and extra parts (another
 * stream's events) committed in the same multi-stream append. A counter
 * aggregate stands in for the domain; "another process" is a direct append to
 * the store from inside decide, between the load and the append. */
#include "async_fixture.h"
#include "store/internal.h"

static const struct ag_store_ops *real_ops;
static struct ag_store_ops broken_ops; /* append_async answers AG_EUNAVAILABLE */

static void asetup(void)
{
    fx_open(0);
    real_ops = fx.es.store->ops;
}

static void ateardown(void)
{
    fx_close(real_ops);
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
    if (a->limit && ((const struct counter *)state)->total + a->n > a->limit)
        return ag_err_set(err, AG_EDOMAIN, "limit %lld reached", a->limit);
    if (a->meddle) {
        a->meddle--;
        struct ag_event_data ev = {
            .type = "Added", .type_len = 5, .data = "{\"n\":100}", .data_len = 9};
        cr_assert_eq(ag_store_append(fx.es.store, "tally-k", 7, AG_STORE_ANY, &ev, 1, NULL, NULL),
                     0);
    }
    return a->n ? ag_es_batch_push(out, "Added", json_pack("{s:i}", "n", a->n)) : 0;
}

static void view_total(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    *(long long *)ud = ((const struct counter *)state)->total;
}

static long long total_of(const char *stream)
{
    long long t = -1;
    cr_assert_eq(ag_es_read(fx.es.repo, &counter_type, stream, view_total, &t, NULL), 0);
    return t;
}

static int64_t version_of(const char *stream)
{
    int64_t v;
    ag_store_stream_version(fx.es.store, stream, strlen(stream), &v);
    return v;
}

static void exec_async(struct add *a, struct outcome *o, const struct ag_append_part *extra,
                       size_t nextra)
{
    struct ag_es_cmd cmd = {&counter_type, "tally-k", decide_add, a, NULL, NULL, NULL};
    struct ag_es_async as = {fx.sloop, extra, nextra, on_done, o};
    cr_assert_eq(ag_es_execute_async(fx.es.repo, &cmd, &as), 0);
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
    cr_assert(pthread_equal(o.thread, fx.thread));
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
    fx.es.store->ops = &broken_ops;
    struct add b = {9, 0, 0, 0};
    exec_async(&b, &o, NULL, 0);
    wait_calls(&o, 2);
    fx.es.store->ops = real_ops;
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
    cr_assert_eq(ag_store_read_all(fx.es.store, 0, AG_READ_FORWARD, 10, &p, NULL), 0);
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
