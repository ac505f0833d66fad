/* Shared by the asynchronous repository tests (test_async.c, test_multi_async.c):
 * a counter aggregate ("Added" events with an "n"), a log store in a temporary
 * directory with a repository over it, a store loop running on its own thread
 * (where asynchronous completions are called), and an `outcome` that records
 * what a completion saw so a test can wait for it. Header-only (static), over
 * es_fixture.h's directory, store and repository. */
#ifndef AG_TEST_ES_ASYNC_FIXTURE_H
#define AG_TEST_ES_ASYNC_FIXTURE_H

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "agora/es.h"
#include "agora/store_log.h"
#include "es_fixture.h"

struct counter {
    long long total;
};
static void counter_init(void *s)
{
    memset(s, 0, sizeof(struct counter));
}
static void counter_free(void *s)
{
    AG_UNUSED(s);
}
static int counter_evolve(void *s, const char *type, const json_t *d)
{
    if (strcmp(type, "Added") == 0)
        ((struct counter *)s)->total += json_integer_value(json_object_get(d, "n"));
    return 0;
}
static json_t *counter_snapshot(const void *s)
{
    return json_pack("{s:I}", "total", (json_int_t)((const struct counter *)s)->total);
}
static int counter_restore(void *s, const json_t *j)
{
    ((struct counter *)s)->total = json_integer_value(json_object_get(j, "total"));
    return 0;
}
static const struct ag_es_type counter_type = {
    "counter",      sizeof(struct counter), counter_init,   counter_free,
    counter_evolve, counter_snapshot,       counter_restore};

/* The fixture: one per test (Criterion runs each test in its own process). */
static struct {
    struct es_fx es; /* the directory, the log store and the repository */
    uv_loop_t loop;
    uv_async_t stopper;
    pthread_t thread;
    struct ag_store_loop *sloop;
} fx;

static void fx_stop_cb(uv_async_t *a)
{
    ag_store_loop_close(fx.sloop);
    uv_close((uv_handle_t *)a, NULL);
}
static void *fx_loop_main(void *arg)
{
    AG_UNUSED(arg);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    return NULL;
}

/* Open the store (no fsync) and the repository (`snapshot_every` 0: the default),
 * and start the store loop's thread. */
static void fx_open(int snapshot_every)
{
    es_fx_open(&fx.es, "esa", (struct ag_es_repo_config){.snapshot_every = snapshot_every});
    cr_assert_eq(uv_loop_init(&fx.loop), 0);
    cr_assert_eq(uv_async_init(&fx.loop, &fx.stopper, fx_stop_cb), 0);
    cr_assert_eq(ag_store_loop_init(fx.es.store, &fx.loop, &fx.sloop), 0);
    cr_assert_eq(pthread_create(&fx.thread, NULL, fx_loop_main, NULL), 0);
}

/* Stop the loop's thread (the store loop closes on it), then free everything;
 * `ops`, when set, is put back as the store's operations before it closes. */
static void fx_close(const struct ag_store_ops *ops)
{
    uv_async_send(&fx.stopper);
    pthread_join(fx.thread, NULL);
    uv_loop_close(&fx.loop);
    if (ops) fx.es.store->ops = ops;
    es_fx_close(&fx.es);
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
    snprintf(o->msg, sizeof o->msg, "%s", rc ? (err ? err->msg : "?") : "");
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

#endif
