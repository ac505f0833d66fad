/* The synchronous pipeline, bulkhead, timeouts, deadlines and fallback. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>

#include "unit/resil/resil_test.h"

static struct tclock tc;
static struct hook_log hl;
static struct ag_resil_hooks hooks;
static struct ag_xoshiro xr;

static void setup(void)
{
    tclock_init(&tc);
    memset(&hl, 0, sizeof hl);
    hooks = hook_log_hooks(&hl);
    ag_xoshiro_seed(&xr, 1);
}
TestSuite(pipeline, .init = setup);
TestSuite(bulkhead, .init = setup);

/* A scripted dependency: returns script[i] on call i, taking `took` ns each. */
struct dep {
    int script[16];
    int n;         /* script length; later calls return the last entry */
    int calls;     /* calls made */
    uint64_t took; /* fake time each call takes */
    uint64_t hint; /* Retry-After to report on failure */
    uint64_t seen_deadline[16];
    int value; /* written to ctx->result on success */
};

static int dep_op(void *arg, struct ag_resil_ctx *ctx)
{
    struct dep *d = arg;
    int i = d->calls++;
    if (i < 16) d->seen_deadline[i] = ctx->deadline_ns;
    tclock_advance(&tc, d->took);
    int rc = d->script[i < d->n ? i : d->n - 1];
    if (rc && d->hint) ctx->retry_after_ns = d->hint;
    if (!rc && ctx->result) *(int *)ctx->result = d->value;
    return rc;
}

static struct ag_pipeline base_pipeline(void)
{
    struct ag_pipeline p = {.name = "inventory", .hooks = &hooks};
    p.env.clock = &tc.clock;
    p.env.rng = &xr.rng;
    p.env.sleep = tclock_sleep;
    p.env.sleep_ctx = &tc;
    p.retry = (struct ag_retry_config){.max_attempts = 4,
                                       .backoff = AG_BACKOFF_EXPONENTIAL,
                                       .base_ns = 100 * MS,
                                       .cap_ns = 5 * SEC,
                                       .multiplier = 2};
    return p;
}

Test(pipeline, retries_until_success_with_backoff_on_fake_clock)
{
    struct ag_pipeline p = base_pipeline();
    struct dep d = {.script = {AG_ETIMEDOUT, AG_ECONNECT, 0}, .n = 3, .value = 42};
    int out = 0;
    struct ag_resil_ctx ctx = {.result = &out, .result_size = sizeof out};
    uint64_t t0 = ag_clock_mono(&tc.clock);
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &d, &ctx), 0);
    cr_assert_eq(out, 42);
    cr_assert_eq(d.calls, 3);
    cr_assert_eq(ag_clock_mono(&tc.clock) - t0, 300 * MS, "slept 100 + 200 ms");
    cr_assert_eq(hl.retries, 2);
    cr_assert_eq(hl.retry_delays[1], 200 * MS);
    cr_assert_eq(hl.outcomes[AG_RESIL_SUCCESS], 1);
}

Test(pipeline, non_retryable_error_is_not_retried)
{
    struct ag_pipeline p = base_pipeline();
    struct dep d = {.script = {AG_EDOMAIN}, .n = 1};
    struct ag_resil_ctx ctx = {0};
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &d, &ctx), AG_EDOMAIN);
    cr_assert_eq(d.calls, 1);
    cr_assert_eq(hl.outcomes[AG_RESIL_FAILURE], 1);
}

static bool only_upstream(void *ctx, int rc)
{
    (void)ctx;
    return rc == AG_EUPSTREAM;
}

Test(pipeline, custom_predicate_and_max_attempts)
{
    struct ag_pipeline p = base_pipeline();
    p.retry.retryable = only_upstream;
    p.retry.max_attempts = 3;
    struct dep d = {.script = {AG_EUPSTREAM}, .n = 1};
    struct ag_resil_ctx ctx = {0};
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &d, &ctx), AG_EUPSTREAM);
    cr_assert_eq(d.calls, 3);
    struct dep e = {.script = {AG_ETIMEDOUT}, .n = 1};
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &e, &ctx), AG_ETIMEDOUT);
    cr_assert_eq(e.calls, 1);
}

Test(pipeline, retry_after_hint_is_honoured_or_ends_retrying)
{
    struct ag_pipeline p = base_pipeline();
    p.retry.honor_retry_after = true;
    p.retry.max_retry_after_ns = 3 * SEC;
    struct dep d = {.script = {AG_ERATE_LIMITED, 0}, .n = 2, .hint = 2 * SEC};
    struct ag_resil_ctx ctx = {0};
    uint64_t t0 = ag_clock_mono(&tc.clock);
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &d, &ctx), 0);
    cr_assert_eq(ag_clock_mono(&tc.clock) - t0, 2 * SEC, "waited the server's 2 s, not 100 ms");
    struct dep e = {.script = {AG_ERATE_LIMITED, 0}, .n = 2, .hint = 30 * SEC};
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &e, &ctx), AG_ERATE_LIMITED);
    cr_assert_eq(e.calls, 1, "a hint beyond max_retry_after ends retrying");
    cr_assert_eq(ctx.retry_after_ns, 30 * SEC, "the hint reaches the caller");
}

Test(pipeline, attempt_timeout_and_overall_deadline)
{
    struct ag_pipeline p = base_pipeline();
    p.attempt_timeout_ns = 50 * MS;
    p.overall_timeout_ns = 400 * MS;
    /* each call fails after 80 ms: past its 50 ms attempt deadline -> AG_ETIMEDOUT */
    struct dep d = {.script = {AG_EUPSTREAM}, .n = 1, .took = 80 * MS};
    struct ag_resil_ctx ctx = {0};
    uint64_t t0 = ag_clock_mono(&tc.clock);
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &d, &ctx), AG_ETIMEDOUT);
    /* t=0 try(80) sleep 100 -> t=180 try(80) sleep 200 -> t=460 > 400: no third retry
     * is scheduled past the deadline: after the 2nd attempt (t=260) + 200 >= 400 */
    cr_assert_eq(d.calls, 2);
    cr_assert_eq(d.seen_deadline[0], t0 + 50 * MS);
    cr_assert_eq(d.seen_deadline[1], t0 + 180 * MS + 50 * MS);
    cr_assert_eq(hl.outcomes[AG_RESIL_TIMEOUT], 1);
}

Test(pipeline, caller_deadline_propagates_and_bounds_attempts)
{
    struct ag_pipeline p = base_pipeline();
    p.attempt_timeout_ns = 10 * SEC;
    struct dep d = {.script = {0}, .n = 1};
    uint64_t now = ag_clock_mono(&tc.clock);
    struct ag_resil_ctx ctx = {.deadline_ns = now + 1 * SEC};
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &d, &ctx), 0);
    cr_assert_eq(d.seen_deadline[0], now + 1 * SEC, "the tighter caller deadline wins");
    /* child contexts for inner calls */
    struct ag_resil_ctx child;
    ag_resil_ctx_child(&ctx, &tc.clock, 200 * MS, &child);
    cr_assert_eq(child.deadline_ns, now + 200 * MS);
    ag_resil_ctx_child(&ctx, &tc.clock, 5 * SEC, &child);
    cr_assert_eq(child.deadline_ns, now + 1 * SEC);
    cr_assert_eq(ag_resil_remaining(&child, &tc.clock), 1 * SEC);
    tclock_advance(&tc, 2 * SEC);
    cr_assert_eq(ag_resil_remaining(&child, &tc.clock), 0);
    struct ag_resil_ctx none = {0};
    cr_assert_eq(ag_resil_remaining(&none, &tc.clock), UINT64_MAX);
    /* a deadline already passed: the op is never called */
    struct dep e = {.script = {0}, .n = 1};
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &e, &ctx), AG_ETIMEDOUT);
    cr_assert_eq(e.calls, 0);
}

Test(pipeline, breaker_sees_one_outcome_per_call_and_rejects_with_wait)
{
    struct ag_pipeline p = base_pipeline();
    struct ag_cb *cb;
    ag_cb_new(
        &(struct ag_cb_config){.failure_threshold = 2, .open_ns = 30 * SEC, .clock = &tc.clock},
        &cb, NULL);
    p.breaker = cb;
    struct dep d = {.script = {AG_EUPSTREAM}, .n = 1};
    struct ag_resil_ctx ctx = {0};
    ag_pipeline_run(&p, dep_op, &d, &ctx);
    cr_assert_eq(d.calls, 4);
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED, "4 attempts count as one failure");
    ag_pipeline_run(&p, dep_op, &d, &ctx);
    cr_assert_eq(ag_cb_state(cb), AG_CB_OPEN);
    struct ag_err err;
    ctx.err = &err;
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &d, &ctx), AG_ECIRCUIT_OPEN);
    cr_assert_eq(d.calls, 8);
    cr_assert_eq(ctx.retry_after_ns, 30 * SEC);
    cr_assert_eq(hl.outcomes[AG_RESIL_REJECTED], 1);
    ag_cb_free(cb);
}

Test(pipeline, retry_budget_caps_retries_during_outage)
{
    struct ag_retry_budget *b;
    ag_retry_budget_new(
        &(struct ag_retry_budget_config){
            .ratio = 0.2, .min_per_sec = 1, .ttl_ns = 10 * SEC, .clock = &tc.clock},
        &b);
    struct ag_pipeline p = base_pipeline();
    p.retry.base_ns = 1 * MS;
    p.retry.cap_ns = 1 * MS;
    p.retry.budget = b;
    struct dep d = {.script = {AG_EUPSTREAM}, .n = 1};
    struct ag_resil_ctx ctx = {0};
    /* 1000 calls within one 10 s window, all failing; without a budget: 4000 attempts */
    for (int i = 0; i < 1000; i++) {
        ag_pipeline_run(&p, dep_op, &d, &ctx);
        tclock_advance(&tc, 5 * MS);
    }
    int retries = d.calls - 1000;
    cr_assert_leq(retries, 200 + 10, "retries %d above ratio*requests + reserve", retries);
    cr_assert_geq(retries, 150, "the budget still allows some retries: %d", retries);
    /* a long outage: over 60 s at 100 calls/s retries stay near ratio * calls + min */
    d.calls = 0;
    for (int i = 0; i < 6000; i++) {
        ag_pipeline_run(&p, dep_op, &d, &ctx);
        tclock_advance(&tc, 10 * MS);
    }
    retries = d.calls - 6000;
    cr_assert_leq(retries, 6000 / 5 + 60 + 210, "long outage: %d retries", retries);
    ag_retry_budget_free(b);
}

static int fb_fn(void *fctx, int rc, struct ag_resil_ctx *ctx)
{
    *(int *)ctx->result = -1;
    *(int *)fctx = rc;
    return 0;
}

Test(pipeline, fallback_static_value_and_function_for_chosen_classes)
{
    struct ag_pipeline p = base_pipeline();
    p.retry.max_attempts = 1;
    static const int cached = 7;
    p.fallback = (struct ag_fallback){.on = AG_FALLBACK_ON_REJECTED | AG_FALLBACK_ON_FAILURE,
                                      .value = &cached,
                                      .value_size = sizeof cached};
    struct dep d = {.script = {AG_EUPSTREAM}, .n = 1};
    int out = 0;
    struct ag_resil_ctx ctx = {.result = &out, .result_size = sizeof out};
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &d, &ctx), 0);
    cr_assert_eq(out, 7);
    cr_assert_eq(hl.outcomes[AG_RESIL_FALLBACK], 1);
    /* timeouts are not chosen: the error passes through */
    struct dep t = {.script = {AG_ETIMEDOUT}, .n = 1};
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &t, &ctx), AG_ETIMEDOUT);
    /* a wrong-size result buffer gets no static value */
    short small;
    struct ag_resil_ctx bad = {.result = &small, .result_size = sizeof small};
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &d, &bad), AG_EUPSTREAM);
    /* function fallback sees the error */
    int seen = 0;
    p.fallback = (struct ag_fallback){.on = AG_FALLBACK_ON_TIMEOUT, .fn = fb_fn, .fn_ctx = &seen};
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &t, &ctx), 0);
    cr_assert_eq(out, -1);
    cr_assert_eq(seen, AG_ETIMEDOUT);
}

Test(pipeline, rate_limiter_rejects_with_wait)
{
    struct ag_gcra g;
    ag_gcra_init(&g, &(struct ag_rate){.limit = 1, .period_ns = SEC, .burst = 1}, &tc.clock);
    struct ag_pipeline p = base_pipeline();
    p.limiter = &g;
    struct dep d = {.script = {0}, .n = 1};
    struct ag_resil_ctx ctx = {0};
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &d, &ctx), 0);
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &d, &ctx), AG_ERATE_LIMITED);
    cr_assert_eq(ctx.retry_after_ns, SEC);
    cr_assert_eq(d.calls, 1);
    cr_assert_eq(hl.last_reject_code, AG_ERATE_LIMITED);
}

/* ---- bulkhead ---- */

static struct ag_bulkhead *mkbh(uint32_t conc, uint32_t queue, uint64_t wait)
{
    struct ag_bulkhead *bh;
    struct ag_bulkhead_config c = {.name = "db",
                                   .max_concurrent = conc,
                                   .max_queue = queue,
                                   .max_wait_ns = wait,
                                   .clock = &tc.clock,
                                   .hooks = &hooks};
    cr_assert_eq(ag_bulkhead_new(&c, &bh, NULL), 0);
    return bh;
}

Test(bulkhead, limits_concurrency_without_queue)
{
    struct ag_bulkhead *bh = mkbh(2, 0, 0);
    struct ag_err err;
    cr_assert_eq(ag_bulkhead_acquire(bh, 0, NULL), 0);
    cr_assert_eq(ag_bulkhead_try_acquire(bh), 0);
    cr_assert_eq(ag_bulkhead_acquire(bh, 0, &err), AG_EBULKHEAD_FULL);
    cr_assert(strstr(err.msg, "db") != NULL);
    cr_assert_eq(ag_bulkhead_try_acquire(bh), AG_EBULKHEAD_FULL);
    cr_assert_eq(hl.rejected, 2);
    ag_bulkhead_release(bh);
    cr_assert_eq(ag_bulkhead_try_acquire(bh), 0);
    struct ag_bulkhead_stats st;
    ag_bulkhead_stats(bh, &st);
    cr_assert_eq(st.active, 2);
    ag_bulkhead_free(bh);
    cr_assert_eq(ag_bulkhead_new(&(struct ag_bulkhead_config){0}, &bh, NULL), AG_EINVAL);
}

struct waiter_arg {
    struct ag_bulkhead *bh;
    int rc;
};

static void *waiter(void *p)
{
    struct waiter_arg *w = p;
    w->rc = ag_bulkhead_acquire(w->bh, 0, NULL);
    return NULL;
}

static void wait_until_queued(struct ag_bulkhead *bh, uint32_t n)
{
    struct ag_bulkhead_stats st;
    do {
        sched_yield();
        ag_bulkhead_stats(bh, &st);
    } while (st.waiting < n);
}

Test(bulkhead, queued_caller_gets_the_released_slot)
{
    struct ag_bulkhead *bh = mkbh(1, 1, 0);
    cr_assert_eq(ag_bulkhead_acquire(bh, 0, NULL), 0);
    struct waiter_arg w = {bh, 1};
    pthread_t t;
    pthread_create(&t, NULL, waiter, &w);
    wait_until_queued(bh, 1);
    cr_assert_eq(ag_bulkhead_acquire(bh, 0, NULL), AG_EBULKHEAD_FULL, "queue of 1 is full");
    cr_assert_eq(ag_bulkhead_try_acquire(bh), AG_EBULKHEAD_FULL, "no overtaking a waiter");
    ag_bulkhead_release(bh);
    pthread_join(t, NULL);
    cr_assert_eq(w.rc, 0);
    struct ag_bulkhead_stats st;
    ag_bulkhead_stats(bh, &st);
    cr_assert_eq(st.active, 1);
    cr_assert_eq(st.waiting, 0);
    ag_bulkhead_release(bh);
    ag_bulkhead_free(bh);
}

Test(bulkhead, queued_caller_gives_up_after_max_wait_on_fake_clock)
{
    struct ag_bulkhead *bh = mkbh(1, 4, 500 * MS);
    cr_assert_eq(ag_bulkhead_acquire(bh, 0, NULL), 0);
    struct waiter_arg w = {bh, 1};
    pthread_t t;
    pthread_create(&t, NULL, waiter, &w);
    wait_until_queued(bh, 1);
    tclock_advance(&tc, 500 * MS);
    ag_bulkhead_wake(bh);
    pthread_join(t, NULL);
    cr_assert_eq(w.rc, AG_EBULKHEAD_FULL);
    struct ag_bulkhead_stats st;
    ag_bulkhead_stats(bh, &st);
    cr_assert_eq(st.waiting, 0);
    cr_assert_eq(st.active, 1);
    ag_bulkhead_release(bh);
    ag_bulkhead_free(bh);
}

Test(pipeline, bulkhead_full_goes_to_fallback)
{
    struct ag_bulkhead *bh = mkbh(1, 0, 0);
    struct ag_pipeline p = base_pipeline();
    p.bulkhead = bh;
    static const int v = 5;
    p.fallback =
        (struct ag_fallback){.on = AG_FALLBACK_ON_REJECTED, .value = &v, .value_size = sizeof v};
    ag_bulkhead_acquire(bh, 0, NULL);
    struct dep d = {.script = {0}, .n = 1, .value = 1};
    int out = 0;
    struct ag_resil_ctx ctx = {.result = &out, .result_size = sizeof out};
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &d, &ctx), 0);
    cr_assert_eq(out, 5);
    cr_assert_eq(d.calls, 0);
    ag_bulkhead_release(bh);
    cr_assert_eq(ag_pipeline_run(&p, dep_op, &d, &ctx), 0);
    cr_assert_eq(out, 1);
    struct ag_bulkhead_stats st;
    ag_bulkhead_stats(bh, &st);
    cr_assert_eq(st.active, 0, "the pipeline released its slot");
    ag_bulkhead_free(bh);
}
