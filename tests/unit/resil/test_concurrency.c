/* Several threads hammering one breaker and one rate limiter: no over-admission,
 * no lost counts. Run under ThreadSanitizer by `make tsan`. */
#include <criterion/criterion.h>
#include <pthread.h>

#include "unit/resil/resil_test.h"

#define THREADS 4

static struct tclock tc;
static void setup(void)
{
    tclock_init(&tc);
}
TestSuite(concurrency, .init = setup, .timeout = 120);

struct hammer {
    pthread_barrier_t *start; /* all threads begin together */
    void *obj;                /* breaker or limiter */
    int iters;                /* operations per thread */
    int id;                   /* thread index */
    _Atomic long *admitted;   /* shared admission counter */
};

static void run_threads(void *(*fn)(void *), struct hammer *h, int n)
{
    pthread_t t[THREADS];
    for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, fn, &h[i]);
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}

static void hammer_init(struct hammer *h, pthread_barrier_t *b, void *obj, int iters,
                        _Atomic long *adm)
{
    pthread_barrier_init(b, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) h[i] = (struct hammer){b, obj, iters, i, adm};
}

/* ---- breaker: every record lands in the window ---- */

static void *breaker_counts(void *p)
{
    struct hammer *h = p;
    pthread_barrier_wait(h->start);
    for (int i = 0; i < h->iters; i++) {
        struct ag_cb_permit pm;
        if (ag_cb_allow(h->obj, &pm, NULL, NULL) == 0) {
            atomic_fetch_add(h->admitted, 1);
            ag_cb_record(h->obj, &pm, (i % 3 == 0) ? AG_EUPSTREAM : 0);
        }
    }
    return NULL;
}

Test(concurrency, breaker_loses_no_counts)
{
    struct ag_cb *cb;
    struct ag_cb_config c = {.window_type = AG_CB_WINDOW_COUNT,
                             .window_size = 1 << 20,
                             .min_calls = 1 << 20,
                             .failure_rate_pct = 99,
                             .failure_threshold = 1000000,
                             .clock = &tc.clock};
    cr_assert_eq(ag_cb_new(&c, &cb, NULL), 0);
    struct hammer h[THREADS];
    pthread_barrier_t b;
    _Atomic long adm = 0;
    hammer_init(h, &b, cb, 20000, &adm);
    run_threads(breaker_counts, h, THREADS);
    struct ag_cb_stats st;
    ag_cb_stats(cb, &st);
    cr_assert_eq(adm, THREADS * 20000);
    cr_assert_eq(st.window_calls, THREADS * 20000);
    cr_assert_eq(st.window_failures, THREADS * ((20000 + 2) / 3));
    cr_assert_eq(st.state, AG_CB_CLOSED);
    pthread_barrier_destroy(&b);
    ag_cb_free(cb);
}

/* ---- breaker: the OPEN -> HALF_OPEN edge never over-admits ---- */

static void *breaker_probe(void *p)
{
    struct hammer *h = p;
    pthread_barrier_wait(h->start);
    for (int i = 0; i < h->iters; i++) {
        struct ag_cb_permit pm;
        if (ag_cb_allow(h->obj, &pm, NULL, NULL) == 0) atomic_fetch_add(h->admitted, 1);
    }
    return NULL;
}

Test(concurrency, half_open_edge_admits_exactly_the_permits)
{
    struct ag_cb *cb;
    struct ag_cb_config c = {.failure_threshold = 1,
                             .half_open_permits = 3,
                             .open_ns = SEC,
                             .half_open_max_ns = 3600 * SEC,
                             .clock = &tc.clock};
    cr_assert_eq(ag_cb_new(&c, &cb, NULL), 0);
    for (int round = 0; round < 200; round++) {
        ag_cb_transition(cb, AG_CB_OPEN);
        tclock_advance(&tc, SEC);
        struct hammer h[THREADS];
        pthread_barrier_t b;
        _Atomic long adm = 0;
        hammer_init(h, &b, cb, 50, &adm);
        run_threads(breaker_probe, h, THREADS);
        pthread_barrier_destroy(&b);
        cr_assert_eq(adm, 3, "round %d admitted %ld probes", round, (long)adm);
        cr_assert_eq(ag_cb_state(cb), AG_CB_HALF_OPEN);
    }
    ag_cb_free(cb);
}

/* ---- breaker: concurrent failures open it exactly once ---- */

static void *breaker_fail(void *p)
{
    struct hammer *h = p;
    pthread_barrier_wait(h->start);
    for (int i = 0; i < h->iters; i++) {
        struct ag_cb_permit pm;
        if (ag_cb_allow(h->obj, &pm, NULL, NULL) == 0) ag_cb_record(h->obj, &pm, AG_EUPSTREAM);
    }
    return NULL;
}

Test(concurrency, concurrent_failures_open_once)
{
    struct hook_log hl = {0};
    struct ag_resil_hooks hooks = hook_log_hooks(&hl);
    struct ag_cb *cb;
    struct ag_cb_config c = {
        .failure_threshold = 50, .open_ns = 3600 * SEC, .clock = &tc.clock, .hooks = &hooks};
    cr_assert_eq(ag_cb_new(&c, &cb, NULL), 0);
    struct hammer h[THREADS];
    pthread_barrier_t b;
    hammer_init(h, &b, cb, 1000, NULL);
    run_threads(breaker_fail, h, THREADS);
    cr_assert_eq(ag_cb_state(cb), AG_CB_OPEN);
    cr_assert_eq(hl.transitions, 1);
    pthread_barrier_destroy(&b);
    ag_cb_free(cb);
}

/* ---- GCRA and the keyed limiter: never more than burst + rate * time ---- */

static void *gcra_hammer(void *p)
{
    struct hammer *h = p;
    pthread_barrier_wait(h->start);
    for (int i = 0; i < h->iters; i++) {
        if (ag_gcra_acquire(h->obj, 1, NULL) == 0) atomic_fetch_add(h->admitted, 1);
        /* thread 0 moves time forward 1 ms every 8 calls */
        if (h->id == 0 && i % 8 == 0) tclock_advance(&tc, MS);
    }
    return NULL;
}

Test(concurrency, gcra_exact_under_contention)
{
    struct ag_gcra g;
    ag_gcra_init(&g, &(struct ag_rate){.limit = 100, .period_ns = SEC, .burst = 10}, &tc.clock);
    uint64_t t0 = ag_clock_mono(&tc.clock);
    struct hammer h[THREADS];
    pthread_barrier_t b;
    _Atomic long adm = 0;
    hammer_init(h, &b, &g, 40000, &adm);
    run_threads(gcra_hammer, h, THREADS);
    uint64_t elapsed = ag_clock_mono(&tc.clock) - t0; /* 5000 ms */
    long bound = 10 + (long)(elapsed * 100 / SEC);
    cr_assert_leq(adm, bound, "admitted %ld > %ld", (long)adm, bound);
    /* callers are always waiting, so every slot is used (up to the last interval) */
    cr_assert_geq(adm, bound * 9 / 10, "admitted %ld, expected ~%ld", (long)adm, bound);
    pthread_barrier_destroy(&b);
}

Test(concurrency, gcra_frozen_clock_admits_exactly_burst)
{
    struct ag_gcra g;
    ag_gcra_init(&g, &(struct ag_rate){.limit = 1, .period_ns = SEC, .burst = 37}, &tc.clock);
    struct hammer h[THREADS];
    pthread_barrier_t b;
    _Atomic long adm = 0;
    hammer_init(h, &b, &g, 5000, &adm);
    for (int i = 0; i < THREADS; i++) h[i].id = 1; /* nobody moves the clock */
    run_threads(gcra_hammer, h, THREADS);
    cr_assert_eq(adm, 37);
    pthread_barrier_destroy(&b);
}

static void *keyed_hammer(void *p)
{
    struct hammer *h = p;
    pthread_barrier_wait(h->start);
    char key[8];
    for (int i = 0; i < h->iters; i++) {
        int k = i % 5;
        key[0] = (char)('a' + k);
        if (ag_ratelimit_acquire(h->obj, key, 1, 1, NULL) == 0)
            atomic_fetch_add(&h->admitted[k], 1);
    }
    return NULL;
}

static void keyed_exact(enum ag_rl_algo algo)
{
    struct ag_ratelimit *rl;
    struct ag_ratelimit_config c = {.algo = algo,
                                    .rate = {.limit = 1, .period_ns = SEC, .burst = 25},
                                    .max_keys = 64,
                                    .shards = 4,
                                    .clock = &tc.clock};
    cr_assert_eq(ag_ratelimit_new(&c, &rl, NULL), 0);
    struct hammer h[THREADS];
    pthread_barrier_t b;
    _Atomic long adm[5] = {0};
    hammer_init(h, &b, rl, 10000, adm);
    run_threads(keyed_hammer, h, THREADS);
    for (int k = 0; k < 5; k++) cr_assert_eq(adm[k], 25, "key %d admitted %ld", k, (long)adm[k]);
    cr_assert_eq(ag_ratelimit_keys(rl), 5);
    pthread_barrier_destroy(&b);
    ag_ratelimit_free(rl);
}

Test(concurrency, keyed_gcra_exact_per_key)
{
    keyed_exact(AG_RL_GCRA);
}
Test(concurrency, keyed_token_bucket_exact_per_key)
{
    keyed_exact(AG_RL_TOKEN_BUCKET);
}

static void *tb_hammer(void *p)
{
    struct hammer *h = p;
    pthread_barrier_wait(h->start);
    for (int i = 0; i < h->iters; i++)
        if (ag_tbucket_acquire(h->obj, 1, NULL) == 0) atomic_fetch_add(h->admitted, 1);
    return NULL;
}

Test(concurrency, token_bucket_exact)
{
    struct ag_tbucket *tb;
    ag_tbucket_new(&(struct ag_rate){.limit = 1, .period_ns = SEC, .burst = 50}, &tc.clock, &tb);
    struct hammer h[THREADS];
    pthread_barrier_t b;
    _Atomic long adm = 0;
    hammer_init(h, &b, tb, 5000, &adm);
    run_threads(tb_hammer, h, THREADS);
    cr_assert_eq(adm, 50);
    pthread_barrier_destroy(&b);
    ag_tbucket_free(tb);
}

/* ---- retry budget and bulkhead counters under contention ---- */

static void *budget_hammer(void *p)
{
    struct hammer *h = p;
    pthread_barrier_wait(h->start);
    for (int i = 0; i < h->iters; i++) {
        ag_retry_budget_deposit(h->obj);
        if (ag_retry_budget_withdraw(h->obj)) atomic_fetch_add(h->admitted, 1);
    }
    return NULL;
}

Test(concurrency, retry_budget_exact)
{
    struct ag_retry_budget *rb;
    ag_retry_budget_new(
        &(struct ag_retry_budget_config){.ratio = 0.25, .min_per_sec = 0, .clock = &tc.clock}, &rb);
    struct hammer h[THREADS];
    pthread_barrier_t b;
    _Atomic long adm = 0;
    hammer_init(h, &b, rb, 4000, &adm);
    run_threads(budget_hammer, h, THREADS);
    cr_assert_leq(adm, THREADS * 4000 / 4);
    cr_assert_geq(adm, THREADS * 4000 / 4 - THREADS);
    pthread_barrier_destroy(&b);
    ag_retry_budget_free(rb);
}

static void *bulkhead_hammer(void *p)
{
    struct hammer *h = p;
    pthread_barrier_wait(h->start);
    for (int i = 0; i < h->iters; i++) {
        if (ag_bulkhead_acquire(h->obj, 0, NULL) != 0) continue;
        struct ag_bulkhead_stats st;
        ag_bulkhead_stats(h->obj, &st);
        if (st.active > 2) atomic_fetch_add(h->admitted, 1); /* a violation */
        ag_bulkhead_release(h->obj);
    }
    return NULL;
}

Test(concurrency, bulkhead_never_exceeds_max_concurrent)
{
    struct ag_bulkhead *bh;
    ag_bulkhead_new(
        &(struct ag_bulkhead_config){.max_concurrent = 2, .max_queue = THREADS, .clock = &tc.clock},
        &bh, NULL);
    struct hammer h[THREADS];
    pthread_barrier_t b;
    _Atomic long violations = 0;
    hammer_init(h, &b, bh, 5000, &violations);
    run_threads(bulkhead_hammer, h, THREADS);
    cr_assert_eq(violations, 0);
    struct ag_bulkhead_stats st;
    ag_bulkhead_stats(bh, &st);
    cr_assert_eq(st.active, 0);
    cr_assert_eq(st.waiting, 0);
    pthread_barrier_destroy(&b);
    ag_bulkhead_free(bh);
}
