/* The asynchronous pipeline: on fake timers driven by the fake clock, and on a
 * real libuv loop with zero-length timers. Nothing sleeps. */
#include <criterion/criterion.h>
#include <uv.h>

#include "unit/resil/resil_test.h"

static struct tclock tc;
static struct ag_xoshiro xr;

/* ---- fake timers: armed timers fire when the fake clock reaches them ---- */

#define MAXT 8
struct ftimers {
    struct ag_resil_timers ops;
    struct ag_resil_timer *t[MAXT]; /* armed timers */
    uint64_t due[MAXT];             /* their due times */
};
static struct ftimers ft;

static int ft_start(void *ctx, struct ag_resil_timer *t, uint64_t delay)
{
    struct ftimers *f = ctx;
    int free_slot = -1;
    for (int i = 0; i < MAXT; i++) {
        if (f->t[i] == t) free_slot = i;
        if (!f->t[i] && free_slot < 0) free_slot = i;
    }
    cr_assert_geq(free_slot, 0);
    f->t[free_slot] = t;
    f->due[free_slot] = ag_clock_mono(&tc.clock) + delay;
    return 0;
}

static void ft_stop(void *ctx, struct ag_resil_timer *t)
{
    struct ftimers *f = ctx;
    for (int i = 0; i < MAXT; i++)
        if (f->t[i] == t) f->t[i] = NULL;
}

static void ft_release(void *ctx, struct ag_resil_timer *t, void (*done)(void *), void *arg)
{
    ft_stop(ctx, t);
    done(arg);
}

/* Fire everything due now; then, while something is armed, jump the clock to it. */
static void ft_run(void)
{
    for (;;) {
        int best = -1;
        for (int i = 0; i < MAXT; i++)
            if (ft.t[i] && (best < 0 || ft.due[i] < ft.due[best])) best = i;
        if (best < 0) return;
        uint64_t now = ag_clock_mono(&tc.clock);
        if (ft.due[best] > now) tclock_advance(&tc, ft.due[best] - now);
        struct ag_resil_timer *t = ft.t[best];
        ft.t[best] = NULL;
        t->cb(t);
    }
}

static void setup(void)
{
    tclock_init(&tc);
    ag_xoshiro_seed(&xr, 3);
    memset(&ft, 0, sizeof ft);
    ft.ops = (struct ag_resil_timers){ft_start, ft_stop, ft_release, &ft};
}
TestSuite(async, .init = setup);

/* ---- an async dependency ---- */

struct adep {
    int script[8];
    int n;
    int starts, cancels;
    bool hang;                        /* never completes by itself */
    struct ag_resil_attempt *pending; /* a hanging attempt */
};

static void adep_start(void *arg, struct ag_resil_attempt *a)
{
    struct adep *d = arg;
    int i = d->starts++;
    if (d->hang) {
        d->pending = a;
        return;
    }
    int rc = d->script[i < d->n ? i : d->n - 1];
    if (!rc && ag_resil_attempt_ctx(a)->result) *(int *)ag_resil_attempt_ctx(a)->result = 99;
    ag_resil_attempt_done(a, rc);
}

static void adep_cancel(void *arg, struct ag_resil_attempt *a)
{
    struct adep *d = arg;
    d->cancels++;
    cr_assert_eq(a, d->pending);
    d->pending = NULL;
    ag_resil_attempt_done(a, AG_ECANCELED);
}

struct result {
    int calls;
    int rc;
};
static void on_done(void *arg, int rc, struct ag_resil_ctx *ctx)
{
    struct result *r = arg;
    (void)ctx;
    r->calls++;
    r->rc = rc;
}

static struct ag_pipeline base(void)
{
    struct ag_pipeline p = {.name = "shipping"};
    p.env.clock = &tc.clock;
    p.env.rng = &xr.rng;
    p.retry = (struct ag_retry_config){.max_attempts = 3,
                                       .backoff = AG_BACKOFF_EXPONENTIAL,
                                       .base_ns = 100 * MS,
                                       .cap_ns = SEC,
                                       .multiplier = 2};
    return p;
}

Test(async, retries_on_timers_and_never_completes_inside_start)
{
    struct ag_pipeline p = base();
    struct adep d = {.script = {AG_EUPSTREAM, AG_EUPSTREAM, 0}, .n = 3};
    struct ag_resil_async_op op = {adep_start, NULL, &d};
    int out = 0;
    struct ag_resil_ctx ctx = {.result = &out, .result_size = sizeof out};
    struct result r = {0};
    uint64_t t0 = ag_clock_mono(&tc.clock);
    cr_assert_eq(ag_pipeline_start(&p, &ft.ops, &op, &ctx, on_done, &r), 0);
    cr_assert_eq(r.calls, 0);
    cr_assert_eq(d.starts, 0);
    ft_run();
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.rc, 0);
    cr_assert_eq(out, 99);
    cr_assert_eq(d.starts, 3);
    cr_assert_eq(ag_clock_mono(&tc.clock) - t0, 300 * MS);
}

Test(async, attempt_timeout_cancels_and_retries_late_completion_ignored)
{
    struct ag_pipeline p = base();
    p.attempt_timeout_ns = 50 * MS;
    p.retry.max_attempts = 2;
    struct adep d = {.hang = true};
    struct ag_resil_async_op op = {adep_start, adep_cancel, &d};
    struct ag_resil_ctx ctx = {0};
    struct result r = {0};
    ag_pipeline_start(&p, &ft.ops, &op, &ctx, on_done, &r);
    ft_run();
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.rc, AG_ETIMEDOUT);
    cr_assert_eq(d.starts, 2);
    cr_assert_eq(d.cancels, 2);
}

Test(async, abandoned_attempt_completing_late_is_harmless)
{
    struct ag_pipeline p = base();
    p.attempt_timeout_ns = 50 * MS;
    p.retry.max_attempts = 1;
    struct adep d = {.hang = true};
    struct ag_resil_async_op op = {adep_start, NULL, &d}; /* no cancel */
    struct ag_resil_ctx ctx = {0};
    struct result r = {0};
    ag_pipeline_start(&p, &ft.ops, &op, &ctx, on_done, &r);
    ft_run();
    cr_assert_eq(r.rc, AG_ETIMEDOUT);
    cr_assert_not_null(d.pending);
    ag_resil_attempt_done(d.pending, 0); /* frees the call (ASan checks) */
    cr_assert_eq(r.calls, 1);
}

Test(async, breaker_and_fallback)
{
    struct ag_cb *cb;
    ag_cb_new(&(struct ag_cb_config){.failure_threshold = 1, .open_ns = SEC, .clock = &tc.clock},
              &cb, NULL);
    struct ag_pipeline p = base();
    p.retry.max_attempts = 1;
    p.breaker = cb;
    static const int v = 11;
    p.fallback =
        (struct ag_fallback){.on = AG_FALLBACK_ON_REJECTED, .value = &v, .value_size = sizeof v};
    struct adep d = {.script = {AG_EUPSTREAM}, .n = 1};
    struct ag_resil_async_op op = {adep_start, NULL, &d};
    int out = 0;
    struct ag_resil_ctx ctx = {.result = &out, .result_size = sizeof out};
    struct result r = {0};
    ag_pipeline_start(&p, &ft.ops, &op, &ctx, on_done, &r);
    ft_run();
    cr_assert_eq(r.rc, AG_EUPSTREAM);
    cr_assert_eq(ag_cb_state(cb), AG_CB_OPEN);
    ag_pipeline_start(&p, &ft.ops, &op, &ctx, on_done, &r);
    ft_run();
    cr_assert_eq(r.rc, 0);
    cr_assert_eq(out, 11);
    cr_assert_eq(d.starts, 1);
    ag_cb_free(cb);
}

Test(async, bulkhead_queues_without_blocking_and_times_out)
{
    struct ag_bulkhead *bh;
    ag_bulkhead_new(
        &(struct ag_bulkhead_config){
            .max_concurrent = 1, .max_queue = 1, .max_wait_ns = 200 * MS, .clock = &tc.clock},
        &bh, NULL);
    struct ag_pipeline p = base();
    p.retry.max_attempts = 1;
    p.bulkhead = bh;
    struct adep hang = {.hang = true}, quick = {.script = {0}, .n = 1};
    struct ag_resil_async_op op_hang = {adep_start, NULL, &hang},
                             op_quick = {adep_start, NULL, &quick};
    struct ag_resil_ctx ctx = {0};
    struct result r1 = {0}, r2 = {0}, r3 = {0}, r4 = {0};
    ag_pipeline_start(&p, &ft.ops, &op_hang, &ctx, on_done, &r1);  /* holds the slot */
    ag_pipeline_start(&p, &ft.ops, &op_quick, &ctx, on_done, &r2); /* queued */
    ag_pipeline_start(&p, &ft.ops, &op_quick, &ctx, on_done, &r3); /* queue full */
    ft_run();                                                      /* r2 waits 200 ms, gives up */
    cr_assert_eq(r3.rc, AG_EBULKHEAD_FULL);
    cr_assert_eq(r2.rc, AG_EBULKHEAD_FULL);
    cr_assert_eq(r1.calls, 0);
    ag_pipeline_start(&p, &ft.ops, &op_quick, &ctx, on_done, &r4); /* queued again */
    uint64_t before = ag_clock_mono(&tc.clock);
    struct ag_resil_timer *armed = ft.t[0] ? ft.t[0] : ft.t[1];
    ft.t[0] = ft.t[1] = NULL;
    armed->cb(armed);                       /* begin: queues */
    ag_resil_attempt_done(hang.pending, 0); /* r1 ends, its slot passes to r4 */
    cr_assert_eq(r1.rc, 0);
    ft_run();
    cr_assert_eq(r4.calls, 1);
    cr_assert_eq(r4.rc, 0);
    cr_assert_eq(ag_clock_mono(&tc.clock), before, "granted at once, not after max wait");
    struct ag_bulkhead_stats st;
    ag_bulkhead_stats(bh, &st);
    cr_assert_eq(st.active, 0);
    cr_assert_eq(st.waiting, 0);
    ag_bulkhead_free(bh);
}

/* ---- real libuv ---- */

Test(async, runs_on_a_libuv_loop)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct ag_resil_timers *timers;
    cr_assert_eq(ag_resil_timers_uv_new(&loop, &timers), 0);
    struct ag_pipeline p = base();
    p.retry.base_ns = 1; /* rounds up to 1 ms libuv timers */
    p.retry.cap_ns = 1;
    struct adep d = {.script = {AG_EUPSTREAM, 0}, .n = 2};
    struct ag_resil_async_op op = {adep_start, NULL, &d};
    int out = 0;
    struct ag_resil_ctx ctx = {.result = &out, .result_size = sizeof out};
    struct result r = {0};
    cr_assert_eq(ag_pipeline_start(&p, timers, &op, &ctx, on_done, &r), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.rc, 0);
    cr_assert_eq(d.starts, 2);
    cr_assert_eq(out, 99);
    cr_assert_eq(uv_loop_close(&loop), 0, "every handle closed");
    ag_resil_timers_uv_free(timers);
}
