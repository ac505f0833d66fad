/* Clock jumps: durations follow the monotonic clock, never the wall clock. With
 * base's ag_fake_clock the wall clock jumps hours backwards and forwards (NTP
 * step, a VM resumed, an operator's `date -s`) while the monotonic clock advances
 * normally; the breaker's open time, the rate limiters, the retry backoff and
 * deadlines, and the retry budget's window must all behave by the monotonic clock. */
#include <criterion/criterion.h>

#include "unit/resil/resil_test.h"

#define HOUR (3600 * SEC)

static struct ag_fake_clock fc;
static struct hook_log hl;
static struct ag_resil_hooks hooks;
static struct ag_xoshiro xr;

static void setup(void)
{
    ag_fake_clock_init(&fc, 1800000000ull * SEC);
    memset(&hl, 0, sizeof hl);
    hooks = hook_log_hooks(&hl);
    ag_xoshiro_seed(&xr, 7);
}
TestSuite(clockjump, .init = setup);

/* the wall clock steps by `d` ns; the monotonic clock does not move */
static void wall_jump(int64_t d)
{
    fc.now_ns = (uint64_t)((int64_t)fc.now_ns + d);
}
/* time passes: both clocks advance */
static void tick(uint64_t ns)
{
    ag_fake_clock_advance(&fc, ns);
}

Test(clockjump, breaker_open_time_is_monotonic)
{
    struct ag_cb_config cfg = {
        .name = "dep", .failure_threshold = 1, .open_ns = 10 * SEC, .clock = &fc.clock};
    struct ag_cb *cb;
    struct ag_err err;
    cr_assert_eq(ag_cb_new(&cfg, &cb, &err), 0, "%s", err.msg);
    struct ag_cb_permit pm;
    cr_assert_eq(ag_cb_allow(cb, &pm, NULL, NULL), 0);
    ag_cb_record(cb, &pm, AG_ECONNECT);
    uint64_t wait = 0;
    cr_assert_eq(ag_cb_allow(cb, &pm, &wait, NULL), AG_ECIRCUIT_OPEN);
    cr_assert_eq(wait, 10 * SEC);
    wall_jump(+5 * (int64_t)HOUR); /* forwards: must not end the open time */
    cr_assert_eq(ag_cb_allow(cb, &pm, &wait, NULL), AG_ECIRCUIT_OPEN);
    cr_assert_eq(wait, 10 * SEC, "the wall clock moved, the open time did not");
    tick(4 * SEC);
    wall_jump(-10 * (int64_t)HOUR); /* backwards: must not stretch it */
    cr_assert_eq(ag_cb_allow(cb, &pm, &wait, NULL), AG_ECIRCUIT_OPEN);
    cr_assert_eq(wait, 6 * SEC);
    tick(6 * SEC);
    cr_assert_eq(ag_cb_allow(cb, &pm, NULL, NULL), 0, "open for exactly 10 s of monotonic time");
    struct ag_cb_stats st;
    ag_cb_stats(cb, &st);
    cr_assert_eq(st.state, AG_CB_HALF_OPEN);
    ag_cb_record(cb, &pm, 0);
    ag_cb_free(cb);
}

Test(clockjump, gcra_and_token_bucket_are_monotonic)
{
    struct ag_rate r = {.limit = 10, .period_ns = SEC, .burst = 2};
    struct ag_gcra g;
    struct ag_tbucket *tb;
    cr_assert_eq(ag_gcra_init(&g, &r, &fc.clock), 0);
    cr_assert_eq(ag_tbucket_new(&r, &fc.clock, &tb), 0);
    uint64_t wait;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(ag_gcra_acquire(&g, 1, &wait), 0);
        cr_assert_eq(ag_tbucket_acquire(tb, 1, &wait), 0);
    }
    wall_jump(+3 * (int64_t)HOUR); /* forwards: no refill */
    cr_assert_eq(ag_gcra_acquire(&g, 1, &wait), AG_ERATE_LIMITED);
    cr_assert_eq(wait, 100 * MS);
    cr_assert_eq(ag_tbucket_acquire(tb, 1, &wait), AG_ERATE_LIMITED);
    wall_jump(-6 * (int64_t)HOUR); /* backwards: no hours-long lockout */
    tick(100 * MS);
    cr_assert_eq(ag_gcra_acquire(&g, 1, &wait), 0, "one more after 100 ms of monotonic time");
    cr_assert_eq(ag_tbucket_acquire(tb, 1, &wait), 0);
    cr_assert_eq(ag_gcra_acquire(&g, 1, &wait), AG_ERATE_LIMITED);
    cr_assert_eq(wait, 100 * MS);
    ag_tbucket_free(tb);
}

Test(clockjump, keyed_limiter_is_monotonic)
{
    struct ag_ratelimit_config c = {
        .algo = AG_RL_GCRA, .rate = {.limit = 1, .period_ns = SEC, .burst = 1}, .clock = &fc.clock};
    struct ag_ratelimit *rl;
    struct ag_err err;
    cr_assert_eq(ag_ratelimit_new(&c, &rl, &err), 0, "%s", err.msg);
    uint64_t wait;
    cr_assert_eq(ag_ratelimit_acquire(rl, "ip", 2, 1, &wait), 0);
    wall_jump(+2 * (int64_t)HOUR);
    cr_assert_eq(ag_ratelimit_acquire(rl, "ip", 2, 1, &wait), AG_ERATE_LIMITED);
    cr_assert_eq(wait, SEC);
    wall_jump(-4 * (int64_t)HOUR);
    tick(SEC);
    cr_assert_eq(ag_ratelimit_acquire(rl, "ip", 2, 1, &wait), 0);
    ag_ratelimit_free(rl);
}

/* a dependency that fails `fails` times, and whose every call sees the wall clock
 * jump by `jump` (alternating sign) */
struct jumpy {
    int calls, fails;
    int64_t jump;
};
static int jumpy_op(void *arg, struct ag_resil_ctx *ctx)
{
    AG_UNUSED(ctx);
    struct jumpy *d = arg;
    wall_jump(d->calls % 2 ? d->jump : -d->jump);
    tick(10 * MS);
    return d->calls++ < d->fails ? AG_ECONNECT : 0;
}
static void mono_sleep(void *ctx, uint64_t ns)
{
    AG_UNUSED(ctx);
    tick(ns);
}

Test(clockjump, retry_backoff_and_deadline_are_monotonic)
{
    struct ag_pipeline p = {.name = "dep", .hooks = &hooks};
    p.env = (struct ag_resil_env){&fc.clock, &xr.rng, mono_sleep, NULL};
    p.retry = (struct ag_retry_config){.max_attempts = 5,
                                       .backoff = AG_BACKOFF_EXPONENTIAL,
                                       .base_ns = 100 * MS,
                                       .cap_ns = 5 * SEC,
                                       .multiplier = 2};
    p.overall_timeout_ns = 2 * SEC;
    struct jumpy d = {.fails = 3, .jump = 7 * (int64_t)HOUR};
    struct ag_resil_ctx ctx = {0};
    uint64_t t0 = ag_clock_mono(&fc.clock);
    cr_assert_eq(ag_pipeline_run(&p, jumpy_op, &d, &ctx), 0,
                 "a wall jump must neither expire the 2 s deadline nor stall the backoff");
    cr_assert_eq(d.calls, 4);
    cr_assert_eq(hl.retries, 3);
    cr_assert_eq(hl.retry_delays[0], 100 * MS);
    cr_assert_eq(hl.retry_delays[1], 200 * MS);
    cr_assert_eq(hl.retry_delays[2], 400 * MS);
    cr_assert_eq(ag_clock_mono(&fc.clock) - t0, 700 * MS + 4 * 10 * MS);
    /* the deadline is monotonic too: 2 s of calls end it, whatever the wall says */
    struct jumpy slow = {.fails = 100, .jump = -(int64_t)HOUR};
    p.retry.max_attempts = 100;
    p.retry.cap_ns = 300 * MS;
    t0 = ag_clock_mono(&fc.clock);
    int rc = ag_pipeline_run(&p, jumpy_op, &slow, &ctx);
    cr_assert_neq(rc, 0);
    cr_assert_leq(ag_clock_mono(&fc.clock) - t0, 2 * SEC + 10 * MS, "stopped at the deadline");
    cr_assert_geq(ag_clock_mono(&fc.clock) - t0, 2 * SEC - 300 * MS);
}

Test(clockjump, retry_budget_window_is_monotonic)
{
    struct ag_retry_budget_config c = {
        .ratio = 0, .min_per_sec = 1, .ttl_ns = 10 * SEC, .clock = &fc.clock};
    struct ag_retry_budget *b;
    cr_assert_eq(ag_retry_budget_new(&c, &b), 0);
    uint64_t start = ag_retry_budget_balance(b);
    cr_assert_gt(start, 0);
    while (ag_retry_budget_withdraw(b)) continue;
    wall_jump(+12 * (int64_t)HOUR); /* the window does not slide on a wall jump */
    cr_assert(!ag_retry_budget_withdraw(b), "spent until 10 s of monotonic time pass");
    wall_jump(-24 * (int64_t)HOUR);
    tick(11 * SEC);
    cr_assert(ag_retry_budget_withdraw(b), "refilled once the window slid");
    ag_retry_budget_free(b);
}
