/* Backoff schedules, jitter distributions and the retry budget. */
#include <criterion/criterion.h>

#include "unit/resil/resil_test.h"

static struct tclock tc;
static struct ag_xoshiro xr;
static void setup(void)
{
    tclock_init(&tc);
    ag_xoshiro_seed(&xr, 7);
}
TestSuite(retry, .init = setup);

Test(retry, backoff_schedules_without_jitter)
{
    struct ag_retry_config c = {
        .backoff = AG_BACKOFF_EXPONENTIAL, .base_ns = 100 * MS, .cap_ns = 1 * SEC, .multiplier = 2};
    uint64_t exp[] = {100 * MS, 200 * MS, 400 * MS, 800 * MS, 1 * SEC, 1 * SEC};
    for (unsigned a = 1; a <= 6; a++)
        cr_assert_eq(ag_retry_delay(&c, a, 0, &xr.rng), exp[a - 1], "attempt %u", a);
    c.backoff = AG_BACKOFF_LINEAR;
    cr_assert_eq(ag_retry_delay(&c, 3, 0, &xr.rng), 300 * MS);
    cr_assert_eq(ag_retry_delay(&c, 30, 0, &xr.rng), 1 * SEC);
    c.backoff = AG_BACKOFF_CONSTANT;
    cr_assert_eq(ag_retry_delay(&c, 9, 0, &xr.rng), 100 * MS);
    c.backoff = AG_BACKOFF_EXPONENTIAL;
    c.multiplier = 3;
    cr_assert_eq(ag_retry_delay(&c, 3, 0, &xr.rng), 900 * MS);
}

/* Draw many delays; check bounds and that the mean lands near the theory. */
static void check_jitter(enum ag_jitter j, unsigned attempt, uint64_t lo, uint64_t hi, double mean)
{
    struct ag_retry_config c = {.backoff = AG_BACKOFF_EXPONENTIAL,
                                .base_ns = 100 * MS,
                                .cap_ns = 10 * SEC,
                                .multiplier = 2,
                                .jitter = j};
    double sum = 0;
    uint64_t mn = UINT64_MAX, mx = 0;
    const int n = 20000;
    for (int i = 0; i < n; i++) {
        uint64_t d = ag_retry_delay(&c, attempt, 0, &xr.rng);
        cr_assert(d >= lo && d <= hi, "jitter %d: %llu outside [%llu, %llu]", j,
                  (unsigned long long)d, (unsigned long long)lo, (unsigned long long)hi);
        sum += (double)d;
        mn = d < mn ? d : mn;
        mx = d > mx ? d : mx;
    }
    double m = sum / n;
    cr_assert(m > mean * 0.97 && m < mean * 1.03, "jitter %d: mean %.0f, expected %.0f", j, m,
              mean);
    /* the draws actually spread over the range */
    cr_assert_lt(mn, lo + (hi - lo) / 20);
    cr_assert_gt(mx, hi - (hi - lo) / 20);
}

Test(retry, full_jitter_uniform_in_0_d)
{
    check_jitter(AG_JITTER_FULL, 4, 0, 800 * MS, 400e6);
}

Test(retry, equal_jitter_uniform_in_half_d_d)
{
    check_jitter(AG_JITTER_EQUAL, 4, 400 * MS, 800 * MS, 600e6);
}

Test(retry, decorrelated_jitter_between_base_and_three_times_previous)
{
    struct ag_retry_config c = {
        .base_ns = 100 * MS, .cap_ns = 2 * SEC, .jitter = AG_JITTER_DECORRELATED};
    uint64_t prev = 0;
    bool hit_cap = false;
    for (int i = 0; i < 10000; i++) {
        uint64_t d = ag_retry_delay(&c, (unsigned)(i % 8) + 1, prev, &xr.rng);
        uint64_t hi = prev ? prev * 3 : 300 * MS;
        if (hi > 2 * SEC) hi = 2 * SEC;
        cr_assert(d >= 100 * MS && d <= hi, "%llu not in [base, min(cap, 3*prev)]",
                  (unsigned long long)d);
        hit_cap |= d > 1900 * MS;
        prev = d;
    }
    cr_assert(hit_cap, "decorrelated jitter grows towards the cap");
    /* first delay: uniform in [base, 3 * base] */
    double sum = 0;
    for (int i = 0; i < 20000; i++) sum += (double)ag_retry_delay(&c, 1, 0, &xr.rng);
    cr_assert(sum / 20000 > 190e6 && sum / 20000 < 210e6, "mean %.0f", sum / 20000);
}

Test(retry, default_retryable)
{
    cr_assert(ag_retry_default_retryable(NULL, AG_ETIMEDOUT));
    cr_assert(ag_retry_default_retryable(NULL, AG_ECONNECT));
    cr_assert(ag_retry_default_retryable(NULL, AG_EUPSTREAM));
    cr_assert_not(ag_retry_default_retryable(NULL, AG_EDOMAIN));
    cr_assert_not(ag_retry_default_retryable(NULL, AG_EINVAL));
    cr_assert_not(ag_retry_default_retryable(NULL, AG_ECIRCUIT_OPEN));
}

Test(retry, budget_reserve_then_ratio_and_window)
{
    struct ag_retry_budget *b;
    struct ag_retry_budget_config c = {
        .ratio = 0.1, .min_per_sec = 1, .ttl_ns = 10 * SEC, .clock = &tc.clock};
    cr_assert_eq(ag_retry_budget_new(&c, &b), 0);
    cr_assert_eq(ag_retry_budget_balance(b), 10);
    for (int i = 0; i < 10; i++) cr_assert(ag_retry_budget_withdraw(b));
    cr_assert_not(ag_retry_budget_withdraw(b));
    for (int i = 0; i < 20; i++) ag_retry_budget_deposit(b);
    cr_assert_eq(ag_retry_budget_balance(b), 2);
    cr_assert(ag_retry_budget_withdraw(b));
    cr_assert(ag_retry_budget_withdraw(b));
    cr_assert_not(ag_retry_budget_withdraw(b));
    /* everything ages out of the window: back to the reserve */
    tclock_advance(&tc, 11 * SEC);
    cr_assert_eq(ag_retry_budget_balance(b), 10);
    ag_retry_budget_free(b);
    c.ratio = -1;
    cr_assert_eq(ag_retry_budget_new(&c, &b), AG_EINVAL);
}
