/* ag_es_execute_multi_async, and multi commands sharing aggregates with
 * synchronous and asynchronous single-aggregate commands: one append holds every
 * aggregate's events and the extra parts (a saga's record); an aggregate
 * conflict re-decides, an extra part's conflict fails; commands queued behind a
 * multi command's lead are run when it lets go; racing threads mixing every kind
 * of command on the same aggregates neither deadlock nor lose an update. A
 * counter aggregate stands in for the domain. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agora/es.h"
#include "agora/store_log.h"

struct cnt {
    long long total;
};
static void c_init(void *s)
{
    memset(s, 0, sizeof(struct cnt));
}
static void c_free(void *s)
{
    AG_UNUSED(s);
}
static int c_evolve(void *s, const char *type, const json_t *d)
{
    if (strcmp(type, "Added") == 0)
        ((struct cnt *)s)->total += json_integer_value(json_object_get(d, "n"));
    return 0;
}
static json_t *c_snapshot(const void *s)
{
    return json_pack("{s:I}", "total", (json_int_t)((const struct cnt *)s)->total);
}
static int c_restore(void *s, const json_t *j)
{
    ((struct cnt *)s)->total = json_integer_value(json_object_get(j, "total"));
    return 0;
}
static const struct ag_es_type cnt_type = {"cnt",    sizeof(struct cnt), c_init,   c_free,
                                           c_evolve, c_snapshot,         c_restore};

static char dir[64];
static struct ag_store *store;
static struct ag_es_repo *repo;
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

static void setup(void)
{
    strcpy(dir, "/tmp/agora-esma-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    struct ag_store_options o = {.no_sync = true};
    cr_assert_eq(ag_store_log_open(dir, &o, &store, NULL), 0);
    struct ag_es_repo_config rc = {.store = store, .snapshot_every = 10};
    cr_assert_eq(ag_es_repo_new(&rc, &repo), 0);
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(uv_async_init(&loop, &stopper, stop_cb), 0);
    cr_assert_eq(ag_store_loop_init(store, &loop, &sloop), 0);
    cr_assert_eq(pthread_create(&loop_thread, NULL, loop_main, NULL), 0);
}

static void teardown(void)
{
    uv_async_send(&stopper);
    pthread_join(loop_thread, NULL);
    uv_loop_close(&loop);
    ag_es_repo_free(repo);
    ag_store_close(store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(multi_async, .init = setup, .fini = teardown, .timeout = 60);

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
    if (rc) snprintf(o->msg, sizeof o->msg, "%s", err ? err->msg : "?");
    o->thread = pthread_self();
    o->calls++;
    pthread_cond_broadcast(&o->c);
    pthread_mutex_unlock(&o->m);
}

/* Wait for `n` completions (a 20 s cap, so a lost completion fails the test). */
static void wait_calls(struct outcome *o, int n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 20;
    pthread_mutex_lock(&o->m);
    while (o->calls < n && pthread_cond_timedwait(&o->c, &o->m, &ts) == 0) {
    }
    int got = o->calls;
    pthread_mutex_unlock(&o->m);
    cr_assert_eq(got, n, "%d of %d completions", got, n);
}

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
        cr_assert_eq(ag_store_append(store, "cnt-a", 5, AG_STORE_ANY, &ev, 1, NULL, NULL), 0);
    }
    if (a->limit && ((const struct cnt *)states[0])->total + a->n[0] > a->limit)
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

static const struct ag_es_part AB[] = {{&cnt_type, "cnt-a"}, {&cnt_type, "cnt-b"}};
static const struct ag_es_part BA[] = {{&cnt_type, "cnt-b"}, {&cnt_type, "cnt-a"}};

static void multi_async(const struct ag_es_part *parts, size_t n, struct madd *a, struct outcome *o,
                        const struct ag_append_part *extra, size_t nextra)
{
    struct ag_es_multi_cmd c = {parts, n, decide_madd, a, NULL};
    struct ag_es_async as = {sloop, extra, nextra, on_done, o};
    cr_assert_eq(ag_es_execute_multi_async(repo, &c, &as), 0);
}

static void view_total(const void *state, int64_t version, void *ud)
{
    AG_UNUSED(version);
    *(long long *)ud = ((const struct cnt *)state)->total;
}

static long long total_of(const char *s)
{
    long long t = -1;
    cr_assert_eq(ag_es_read(repo, &cnt_type, s, view_total, &t, NULL), 0);
    return t;
}

static int64_t version_of(const char *s)
{
    int64_t v;
    ag_store_stream_version(store, s, strlen(s), &v);
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
    cr_assert(pthread_equal(o.thread, loop_thread), "done after the append, on the loop");
    cr_assert_eq(o.res.appended, 2);
    struct ag_event_page p;
    cr_assert_eq(ag_store_read_all(store, 0, AG_READ_FORWARD, 10, &p, NULL), 0);
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
    cr_assert_eq(ag_store_append(store, "saga-z", 6, AG_STORE_ANY, &step_ev, 1, NULL, NULL), 0);
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
    struct ag_es_part twice[] = {{&cnt_type, "cnt-a"}, {&cnt_type, "cnt-a"}};
    struct ag_es_multi_cmd c = {twice, 2, decide_madd, &a, NULL};
    struct ag_es_async as = {sloop, NULL, 0, on_done, &o};
    cr_assert_eq(ag_es_execute_multi_async(repo, &c, &as), AG_EINVAL);
    cr_assert_eq(o.calls, 1, "no done for a refused command");
}

/* Commands queued while a multi command holds the leads of cnt-a and cnt-b (from
 * inside its decision): an asynchronous one on cnt-a, asynchronous multi ones on
 * (cnt-a, cnt-c) and (cnt-b, cnt-a). Nobody else leads: letting go must run them. */
static struct outcome queued = OUTCOME;
static struct madd q_ac = {{10, 20}, 0, 0, 0, NULL}, q_ba = {{100, 1000}, 0, 0, 0, NULL};
static void queue_behind(void)
{
    struct ag_es_cmd c = {&cnt_type, "cnt-a", decide_one, NULL, NULL, NULL, NULL};
    struct ag_es_async as = {sloop, NULL, 0, on_done, &queued};
    cr_assert_eq(ag_es_execute_async(repo, &c, &as), 0);
    static const struct ag_es_part ac[] = {{&cnt_type, "cnt-a"}, {&cnt_type, "cnt-c"}};
    multi_async(ac, 2, &q_ac, &queued, NULL, 0);
    multi_async(BA, 2, &q_ba, &queued, NULL, 0);
    cr_assert_eq(queued.calls, 0, "all three wait for the leads");
}

Test(multi_async, commands_queued_behind_a_multi_command_run_when_it_lets_go)
{
    struct madd a = {{1, 1}, 0, 0, 0, queue_behind};
    struct ag_err err;
    struct ag_es_multi_cmd c = {AB, 2, decide_madd, &a, NULL};
    cr_assert_eq(ag_es_execute_multi(repo, &c, NULL, &err), 0, "%s", err.msg);
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
            struct ag_es_cmd c = {&cnt_type, "cnt-a", decide_one, NULL, NULL, NULL, NULL};
            cr_assert_eq(ag_es_execute(repo, &c, NULL, NULL), 0);
            on_done(&raced, 0, NULL, NULL);
            break;
        }
        case 1: { /* asynchronous, cnt-a alone */
            struct ag_es_cmd c = {&cnt_type, "cnt-a", decide_one, NULL, NULL, NULL, NULL};
            struct ag_es_async as = {sloop, NULL, 0, on_done, &raced};
            cr_assert_eq(ag_es_execute_async(repo, &c, &as), 0);
            break;
        }
        case 2: { /* synchronous multi, (b, a) */
            *a = (struct madd){{10, 1}, 0, 0, 0, NULL};
            struct ag_es_multi_cmd c = {BA, 2, decide_madd, a, NULL};
            cr_assert_eq(ag_es_execute_multi(repo, &c, NULL, NULL), 0);
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
