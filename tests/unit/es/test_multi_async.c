/* ag_es_execute_multi_async, and multi commands sharing aggregates with
 * synchronous and asynchronous single-aggregate commands: one append holds every
 * aggregate's events and the extra parts (a saga's record); an aggregate
 * conflict re-decides, an extra part's conflict fails; commands queued behind a
 * multi command's lead are run when it lets go; racing threads mixing every kind
 * of command on the same aggregates neither deadlock nor lose an update. A
 * counter aggregate stands in for the domain. */
#include "async_fixture.h"

static void setup(void)
{
    fx_open(10);
}

static void teardown(void)
{
    fx_close(NULL);
}

TestSuite(multi_async, .init = setup, .fini = teardown, .timeout = 60);

/* Add n[i] to part i; refuse when part 0 would pass `limit`; `sneak` times,
 * another process appends 100 to "cnt-a" between the load and the append;
 * `inside` runs once from inside the decision (while the leads are held). */
struct madd {
    int n[3];
    long long limit;
    int sneak;
    int calls;
    void (*inside)(void);
};

static int decide_madd(void *const *states, const int64_t *versions, void *ud,
                       struct ag_es_batch *outs, struct ag_err *err)
{
    AG_UNUSED(versions);
    struct madd *a = ud;
    a->calls++;
    if (a->inside) {
        a->inside();
        a->inside = NULL;
    }
    if (a->sneak) {
        a->sneak--;
        struct ag_event_data ev = {
            .type = "Added", .type_len = 5, .data = "{\"n\":100}", .data_len = 9};
        cr_assert_eq(ag_store_append(fx.es.store, "cnt-a", 5, AG_STORE_ANY, &ev, 1, NULL, NULL), 0);
    }
    if (a->limit && ((const struct counter *)states[0])->total + a->n[0] > a->limit)
        return ag_err_set(err, AG_EDOMAIN, "limit %lld reached", a->limit);
    for (int i = 0; i < 3; i++)
        if (a->n[i] && ag_es_batch_push(&outs[i], "Added", json_pack("{s:i}", "n", a->n[i])))
            return ag_err_set(err, AG_ENOMEM, "out of memory");
    return 0;
}

static int decide_one(const void *state, int64_t version, void *ud, struct ag_es_batch *out,
                      struct ag_err *err)
{
    AG_UNUSED(state), AG_UNUSED(version), AG_UNUSED(ud), AG_UNUSED(err);
    return ag_es_batch_push(out, "Added", json_pack("{s:i}", "n", 1));
}

static const struct ag_es_part AB[] = {{&counter_type, "cnt-a"}, {&counter_type, "cnt-b"}};
static const struct ag_es_part BA[] = {{&counter_type, "cnt-b"}, {&counter_type, "cnt-a"}};

static void multi_async(const struct ag_es_part *parts, size_t n, struct madd *a, struct outcome *o,
                        const struct ag_append_part *extra, size_t nextra)
{
    struct ag_es_multi_cmd c = {parts, n, decide_madd, a, NULL};
    struct ag_es_async as = {fx.sloop, extra, nextra, on_done, o};
    cr_assert_eq(ag_es_execute_multi_async(fx.es.repo, &c, &as), 0);
}

static void view_total(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    *(long long *)ud = ((const struct counter *)state)->total;
}

static long long total_of(const char *s)
{
    long long t = -1;
    cr_assert_eq(ag_es_read(fx.es.repo, &counter_type, s, view_total, &t, NULL), 0);
    return t;
}

static int64_t version_of(const char *s)
{
    int64_t v;
    ag_store_stream_version(fx.es.store, s, strlen(s), &v);
    return v;
}

static struct ag_event_data step_ev = {
    .type = "StepSucceeded", .type_len = 13, .data = "{\"step\":1}", .data_len = 10};

Test(multi_async, every_part_and_the_extra_commit_in_one_unit)
{
    struct ag_append_part saga = {"saga-x", 6, AG_STORE_NO_STREAM, &step_ev, 1};
    struct madd a = {{2, 3}, 0, 0, 0, NULL};
    struct outcome o = OUTCOME;
    multi_async(BA, 2, &a, &o, &saga, 1);
    wait_calls(&o, 1);
    cr_assert_eq(o.last_rc, 0, "%s", o.msg);
    cr_assert(pthread_equal(o.thread, fx.thread), "done after the append, on the loop");
    cr_assert_eq(o.res.appended, 2);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_all(fx.es.store, 0, AG_READ_FORWARD, 10, &p, NULL), 0);
    cr_assert_eq(p.count, 3, "one unit: both aggregates' events and the saga's");
    cr_assert_eq(p.events[0].stream_len, 5);
    cr_assert(memcmp(p.events[2].stream, "saga-x", 6) == 0);
    ag_event_page_free(&p);
    cr_assert_eq(total_of("cnt-b"), 2);
    cr_assert_eq(total_of("cnt-a"), 3);
}

Test(multi_async, an_aggregate_conflict_is_decided_again_with_the_extra_once)
{
    struct ag_append_part saga = {"saga-y", 6, AG_STORE_NO_STREAM, &step_ev, 1};
    struct madd a = {{1, 1}, 0, 1, 0, NULL};
    struct outcome o = OUTCOME;
    multi_async(AB, 2, &a, &o, &saga, 1);
    wait_calls(&o, 1);
    cr_assert_eq(o.last_rc, 0, "%s", o.msg);
    cr_assert_eq(a.calls, 2, "decided again on fresh state");
    cr_assert_eq(version_of("saga-y"), 0, "the extra part once");
    cr_assert_eq(total_of("cnt-a"), 101);
    cr_assert_eq(total_of("cnt-b"), 1);
}

Test(multi_async, an_extra_part_conflict_fails_without_retry_and_writes_nothing)
{
    struct ag_append_part saga = {"saga-z", 6, AG_STORE_NO_STREAM, &step_ev, 1};
    cr_assert_eq(ag_store_append(fx.es.store, "saga-z", 6, AG_STORE_ANY, &step_ev, 1, NULL, NULL),
                 0);
    struct madd a = {{1, 1}, 0, 0, 0, NULL};
    struct outcome o = OUTCOME;
    multi_async(AB, 2, &a, &o, &saga, 1);
    wait_calls(&o, 1);
    cr_assert_eq(o.last_rc, AG_ECONFLICT);
    cr_assert(strstr(o.msg, "saga-z"), "%s", o.msg);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(version_of("cnt-a"), -1);
    cr_assert_eq(version_of("cnt-b"), -1);

    /* nothing decided: the extra part is committed alone */
    saga.expected_version = 0;
    struct madd none = {{0, 0}, 0, 0, 0, NULL};
    multi_async(AB, 2, &none, &o, &saga, 1);
    wait_calls(&o, 2);
    cr_assert_eq(o.last_rc, 0, "%s", o.msg);
    cr_assert_eq(version_of("saga-z"), 1);
    cr_assert_eq(version_of("cnt-a"), -1);
}

Test(multi_async, a_decide_error_completes_before_the_call_returns)
{
    struct madd a = {{5, 1}, 3, 0, 0, NULL};
    struct outcome o = OUTCOME;
    multi_async(AB, 2, &a, &o, NULL, 0);
    cr_assert_eq(o.calls, 1, "done ran inline: nothing reached the store");
    cr_assert(pthread_equal(o.thread, pthread_self()));
    cr_assert_eq(o.last_rc, AG_EDOMAIN);
    cr_assert(strstr(o.msg, "limit 3 reached"), "%s", o.msg);
    struct ag_es_part twice[] = {{&counter_type, "cnt-a"}, {&counter_type, "cnt-a"}};
    struct ag_es_multi_cmd c = {twice, 2, decide_madd, &a, NULL};
    struct ag_es_async as = {fx.sloop, NULL, 0, on_done, &o};
    cr_assert_eq(ag_es_execute_multi_async(fx.es.repo, &c, &as), AG_EINVAL);
    cr_assert_eq(o.calls, 1, "no done for a refused command");
}

/* Commands queued while a multi command holds the leads of cnt-a and cnt-b (from
 * inside its decision): an asynchronous one on cnt-a, asynchronous multi ones on
 * (cnt-a, cnt-c) and (cnt-b, cnt-a). Nobody else leads: letting go must run them. */
static struct outcome queued = OUTCOME;
static struct madd q_ac = {{10, 20}, 0, 0, 0, NULL}, q_ba = {{100, 1000}, 0, 0, 0, NULL};
static void queue_behind(void)
{
    struct ag_es_cmd c = {&counter_type, "cnt-a", decide_one, NULL, NULL, NULL, NULL};
    struct ag_es_async as = {fx.sloop, NULL, 0, on_done, &queued};
    cr_assert_eq(ag_es_execute_async(fx.es.repo, &c, &as), 0);
    static const struct ag_es_part ac[] = {{&counter_type, "cnt-a"}, {&counter_type, "cnt-c"}};
    multi_async(ac, 2, &q_ac, &queued, NULL, 0);
    multi_async(BA, 2, &q_ba, &queued, NULL, 0);
    cr_assert_eq(queued.calls, 0, "all three wait for the leads");
}

Test(multi_async, commands_queued_behind_a_multi_command_run_when_it_lets_go)
{
    struct madd a = {{1, 1}, 0, 0, 0, queue_behind};
    struct ag_err err;
    struct ag_es_multi_cmd c = {AB, 2, decide_madd, &a, NULL};
    cr_assert_eq(ag_es_execute_multi(fx.es.repo, &c, NULL, &err), 0, "%s", err.msg);
    wait_calls(&queued, 3);
    cr_assert_eq(queued.failures, 0, "%s", queued.msg);
    cr_assert_eq(total_of("cnt-a"), 1 + 1 + 10 + 1000);
    cr_assert_eq(total_of("cnt-b"), 1 + 100);
    cr_assert_eq(total_of("cnt-c"), 20);
}

/* Threads racing on cnt-a and cnt-b with every kind of command. */
#define ROUNDS 120
#define KINDS  3
static struct madd racing[KINDS][ROUNDS];
static struct outcome raced = OUTCOME;

static void *racer(void *arg)
{
    int kind = (int)(intptr_t)arg;
    for (int i = 0; i < ROUNDS; i++) {
        struct madd *a = &racing[kind][i];
        switch ((kind + i) % 5) {
        case 0: { /* synchronous, cnt-a alone */
            struct ag_es_cmd c = {&counter_type, "cnt-a", decide_one, NULL, NULL, NULL, NULL};
            cr_assert_eq(ag_es_execute(fx.es.repo, &c, NULL, NULL), 0);
            on_done(&raced, 0, NULL, NULL);
            break;
        }
        case 1: { /* asynchronous, cnt-a alone */
            struct ag_es_cmd c = {&counter_type, "cnt-a", decide_one, NULL, NULL, NULL, NULL};
            struct ag_es_async as = {fx.sloop, NULL, 0, on_done, &raced};
            cr_assert_eq(ag_es_execute_async(fx.es.repo, &c, &as), 0);
            break;
        }
        case 2: { /* synchronous multi, (b, a) */
            *a = (struct madd){{10, 1}, 0, 0, 0, NULL};
            struct ag_es_multi_cmd c = {BA, 2, decide_madd, a, NULL};
            cr_assert_eq(ag_es_execute_multi(fx.es.repo, &c, NULL, NULL), 0);
            on_done(&raced, 0, NULL, NULL);
            break;
        }
        default: /* asynchronous multi, (a, b) and (b, a) */
            *a = i % 2 ? (struct madd){{1, 10}, 0, 0, 0, NULL}
                       : (struct madd){{10, 1}, 0, 0, 0, NULL};
            multi_async(i % 2 ? AB : BA, 2, a, &raced, NULL, 0);
            break;
        }
    }
    return NULL;
}

Test(multi_async, racing_sync_async_and_multi_commands_neither_deadlock_nor_lose_updates)
{
    pthread_t t[KINDS];
    for (int i = 0; i < KINDS; i++) pthread_create(&t[i], NULL, racer, (void *)(intptr_t)i);
    for (int i = 0; i < KINDS; i++) pthread_join(t[i], NULL);
    wait_calls(&raced, KINDS * ROUNDS);
    cr_assert_eq(raced.failures, 0, "%s", raced.msg);
    /* every command adds 1 to cnt-a; multi ones add 10 to cnt-b */
    long long multis = 0;
    for (int k = 0; k < KINDS; k++)
        for (int i = 0; i < ROUNDS; i++) multis += (k + i) % 5 >= 2;
    cr_assert_eq(total_of("cnt-a"), KINDS * ROUNDS);
    cr_assert_eq(total_of("cnt-b"), 10 * multis);
    cr_assert_eq(version_of("cnt-a"), KINDS * ROUNDS - 1);
}
