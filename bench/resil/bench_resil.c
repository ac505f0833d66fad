/*
 * Resilience micro-benchmarks: breaker allow+record, GCRA acquire (1 and 2
 * threads on one limiter), and the full synchronous pipeline around a no-op.
 *
 * Usage: bench_resil <breaker|gcra|pipeline> [threads] [iterations]
 * Prints one line "ns_per_op <value>" for run.sh, which adds the callgrind
 * instruction count and formats the JSON result lines. Uses the system clock
 * (the real cost of reading time is part of what is measured).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agora/resil.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static volatile int sink;

static double bench_breaker(long iters)
{
    struct ag_cb *cb;
    struct ag_cb_config c = {.name = "bench",
                             .failure_threshold = 5,
                             .window_type = AG_CB_WINDOW_COUNT,
                             .window_size = 100,
                             .min_calls = 20,
                             .failure_rate_pct = 50};
    if (ag_cb_new(&c, &cb, NULL)) exit(1);
    uint64_t t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        struct ag_cb_permit p;
        if (ag_cb_allow(cb, &p, NULL, NULL) == 0) ag_cb_record(cb, &p, 0);
    }
    double ns = (double)(now_ns() - t0) / (double)iters;
    ag_cb_free(cb);
    return ns;
}

struct gcra_arg {
    struct ag_gcra *g; /* shared limiter */
    long iters;        /* acquires per thread */
    long ok;           /* admitted */
};

static void *gcra_worker(void *p)
{
    struct gcra_arg *a = p;
    for (long i = 0; i < a->iters; i++) a->ok += ag_gcra_acquire(a->g, 1, NULL) == 0;
    return NULL;
}

static double bench_gcra(int threads, long iters)
{
    struct ag_gcra g;
    /* a rate high enough that most calls are admitted: the CAS path is exercised */
    ag_gcra_init(&g,
                 &(struct ag_rate){.limit = 1000000000, .period_ns = 1000000000ull, .burst = 1000},
                 NULL);
    pthread_t t[16];
    struct gcra_arg a[16];
    uint64_t t0 = now_ns();
    for (int i = 0; i < threads; i++) {
        a[i] = (struct gcra_arg){&g, iters, 0};
        pthread_create(&t[i], NULL, gcra_worker, &a[i]);
    }
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    /* wall time per acquire seen by one thread */
    return (double)(now_ns() - t0) / (double)iters;
}

static int noop(void *arg, struct ag_resil_ctx *ctx)
{
    (void)arg;
    (void)ctx;
    return 0;
}

static double bench_pipeline(long iters)
{
    struct ag_cb *cb;
    struct ag_bulkhead *bh;
    struct ag_retry_budget *budget;
    ag_cb_new(&(struct ag_cb_config){.name = "bench", .failure_threshold = 5}, &cb, NULL);
    ag_bulkhead_new(&(struct ag_bulkhead_config){.name = "bench", .max_concurrent = 64}, &bh, NULL);
    ag_retry_budget_new(&(struct ag_retry_budget_config){.ratio = 0.2, .min_per_sec = 10}, &budget);
    static const int fallback_value = 0;
    struct ag_pipeline p = {.name = "bench",
                            .breaker = cb,
                            .bulkhead = bh,
                            .fallback = {.on = AG_FALLBACK_ON_REJECTED,
                                         .value = &fallback_value,
                                         .value_size = sizeof(int)},
                            .retry = {.max_attempts = 3,
                                      .backoff = AG_BACKOFF_EXPONENTIAL,
                                      .jitter = AG_JITTER_FULL,
                                      .budget = budget},
                            .attempt_timeout_ns = 1000000000ull,
                            .overall_timeout_ns = 3000000000ull};
    int result = 0;
    uint64_t t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        struct ag_resil_ctx ctx = {.result = &result, .result_size = sizeof result};
        sink = ag_pipeline_run(&p, noop, NULL, &ctx);
    }
    double ns = (double)(now_ns() - t0) / (double)iters;
    ag_cb_free(cb);
    ag_bulkhead_free(bh);
    ag_retry_budget_free(budget);
    return ns;
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "breaker";
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    long iters = argc > 3 ? atol(argv[3]) : 20000000;
    if (threads < 1 || threads > 16 || iters < 1) return 2;
    double ns;
    if (!strcmp(what, "breaker"))
        ns = bench_breaker(iters);
    else if (!strcmp(what, "gcra"))
        ns = bench_gcra(threads, iters);
    else if (!strcmp(what, "pipeline"))
        ns = bench_pipeline(iters);
    else
        return 2;
    printf("ns_per_op %.2f\n", ns);
    return 0;
}
