/* GCRA, token bucket and the keyed limiter on a fake clock. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "unit/resil/resil_test.h"

static struct tclock tc;
static void setup(void)
{
    tclock_init(&tc);
}
TestSuite(gcra, .init = setup);
TestSuite(tbucket, .init = setup);
TestSuite(ratelimit, .init = setup);

Test(gcra, burst_then_one_per_interval_with_exact_wait)
{
    struct ag_gcra g;
    struct ag_rate r = {.limit = 10, .period_ns = SEC, .burst = 5};
    cr_assert_eq(ag_gcra_init(&g, &r, &tc.clock), 0);
    uint64_t wait = 1;
    for (int i = 0; i < 5; i++) cr_assert_eq(ag_gcra_acquire(&g, 1, &wait), 0, "burst call %d", i);
    cr_assert_eq(wait, 0);
    cr_assert_eq(ag_gcra_acquire(&g, 1, &wait), AG_ERATE_LIMITED);
    cr_assert_eq(wait, 100 * MS);
    tclock_advance(&tc, 100 * MS - 1);
    cr_assert_eq(ag_gcra_acquire(&g, 1, &wait), AG_ERATE_LIMITED);
    cr_assert_eq(wait, 1);
    tclock_advance(&tc, 1);
    cr_assert_eq(ag_gcra_acquire(&g, 1, &wait), 0);
    cr_assert_eq(ag_gcra_acquire(&g, 1, &wait), AG_ERATE_LIMITED);
    /* weighted: 3 units need 300 ms of credit */
    tclock_advance(&tc, 200 * MS);
    cr_assert_eq(ag_gcra_acquire(&g, 3, &wait), AG_ERATE_LIMITED);
    cr_assert_eq(wait, 100 * MS);
    tclock_advance(&tc, 100 * MS);
    cr_assert_eq(ag_gcra_acquire(&g, 3, &wait), 0);
}

Test(gcra, idle_time_refills_only_up_to_burst)
{
    struct ag_gcra g;
    struct ag_rate r = {.limit = 100, .period_ns = SEC, .burst = 3};
    ag_gcra_init(&g, &r, &tc.clock);
    tclock_advance(&tc, 3600 * SEC);
    int ok = 0;
    while (ag_gcra_acquire(&g, 1, NULL) == 0) ok++;
    cr_assert_eq(ok, 3);
}

Test(gcra, never_admits_more_than_rate_times_time_plus_burst)
{
    struct ag_gcra g;
    struct ag_rate r = {.limit = 7, .period_ns = SEC, .burst = 4}; /* T rounds up: 142857143 ns */
    ag_gcra_init(&g, &r, &tc.clock);
    struct ag_xoshiro x;
    ag_xoshiro_seed(&x, 42);
    uint64_t start = ag_clock_mono(&tc.clock), admitted = 0;
    for (int i = 0; i < 200000; i++) {
        tclock_advance(&tc, ag_rng_below(&x.rng, 2 * MS));
        if (ag_gcra_acquire(&g, 1, NULL) == 0) admitted++;
        uint64_t elapsed = ag_clock_mono(&tc.clock) - start;
        cr_assert_leq(admitted, 4 + elapsed * 7 / SEC, "over-admitted at step %d", i);
    }
    uint64_t elapsed = ag_clock_mono(&tc.clock) - start;
    cr_assert_geq(admitted, elapsed * 7 / SEC, "under-admitted: %llu",
                  (unsigned long long)admitted);
}

Test(gcra, invalid_arguments)
{
    struct ag_gcra g;
    cr_assert_eq(
        ag_gcra_init(&g, &(struct ag_rate){.limit = 0, .period_ns = SEC, .burst = 1}, &tc.clock),
        AG_EINVAL);
    cr_assert_eq(
        ag_gcra_init(&g, &(struct ag_rate){.limit = 1, .period_ns = SEC, .burst = 0}, &tc.clock),
        AG_EINVAL);
    ag_gcra_init(&g, &(struct ag_rate){.limit = 1, .period_ns = SEC, .burst = 2}, &tc.clock);
    cr_assert_eq(ag_gcra_acquire(&g, 3, NULL), AG_EINVAL);
    cr_assert_eq(ag_gcra_acquire(&g, 0, NULL), AG_EINVAL);
}

Test(tbucket, starts_full_refills_continuously_and_caps)
{
    struct ag_tbucket *tb;
    cr_assert_eq(
        ag_tbucket_new(&(struct ag_rate){.limit = 4, .period_ns = SEC, .burst = 8}, &tc.clock, &tb),
        0);
    cr_assert_eq(ag_tbucket_available(tb), 8);
    cr_assert_eq(ag_tbucket_acquire(tb, 6, NULL), 0);
    uint64_t wait;
    cr_assert_eq(ag_tbucket_acquire(tb, 3, &wait), AG_ERATE_LIMITED);
    cr_assert_eq(wait, 250 * MS);
    tclock_advance(&tc, 250 * MS);
    cr_assert_eq(ag_tbucket_acquire(tb, 3, &wait), 0);
    cr_assert_eq(ag_tbucket_available(tb), 0);
    tclock_advance(&tc, 100 * SEC);
    cr_assert_eq(ag_tbucket_available(tb), 8);
    cr_assert_eq(ag_tbucket_acquire(tb, 9, NULL), AG_EINVAL);
    ag_tbucket_free(tb);
}

static struct ag_ratelimit *mk(enum ag_rl_algo algo, uint32_t max_keys, uint32_t shards)
{
    struct ag_ratelimit_config c = {.algo = algo,
                                    .rate = {.limit = 1, .period_ns = SEC, .burst = 2},
                                    .max_keys = max_keys,
                                    .shards = shards,
                                    .clock = &tc.clock};
    struct ag_ratelimit *rl = NULL;
    struct ag_err err;
    cr_assert_eq(ag_ratelimit_new(&c, &rl, &err), 0, "%s", err.msg);
    return rl;
}

static void keys_are_independent(enum ag_rl_algo algo)
{
    struct ag_ratelimit *rl = mk(algo, 64, 4);
    uint64_t wait;
    cr_assert_eq(ag_ratelimit_acquire(rl, "alice", 5, 1, NULL), 0);
    cr_assert_eq(ag_ratelimit_acquire(rl, "alice", 5, 1, NULL), 0);
    cr_assert_eq(ag_ratelimit_acquire(rl, "alice", 5, 1, &wait), AG_ERATE_LIMITED);
    cr_assert_eq(wait, SEC);
    cr_assert_eq(ag_ratelimit_acquire(rl, "bob", 3, 2, NULL), 0);
    cr_assert_eq(ag_ratelimit_keys(rl), 2);
    tclock_advance(&tc, SEC);
    cr_assert_eq(ag_ratelimit_acquire(rl, "alice", 5, 1, NULL), 0);
    cr_assert_eq(ag_ratelimit_acquire(rl, "alice", 5, 1, NULL), AG_ERATE_LIMITED);
    ag_ratelimit_free(rl);
}

Test(ratelimit, gcra_keys_are_independent)
{
    keys_are_independent(AG_RL_GCRA);
}
Test(ratelimit, token_bucket_keys_are_independent)
{
    keys_are_independent(AG_RL_TOKEN_BUCKET);
}

static void memory_is_bounded(enum ag_rl_algo algo)
{
    struct ag_ratelimit *rl = mk(algo, 4, 1);
    char key[16];
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "k%d", i);
        cr_assert_eq(ag_ratelimit_acquire(rl, key, strlen(key), 1, NULL), 0);
    }
    /* every key is busy (owes time): a fifth is refused, nobody's debt is forgotten */
    uint64_t wait = 0;
    cr_assert_eq(ag_ratelimit_acquire(rl, "new", 3, 1, &wait), AG_ERATE_LIMITED);
    cr_assert_eq(wait, SEC);
    cr_assert_eq(ag_ratelimit_keys(rl), 4);
    /* k0 stays recent; after a second the others are at rest and can be evicted */
    tclock_advance(&tc, SEC);
    cr_assert_eq(ag_ratelimit_acquire(rl, "k0", 2, 2, NULL), 0);
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof key, "n%d", i);
        cr_assert_eq(ag_ratelimit_acquire(rl, key, strlen(key), 1, NULL), 0, "new key %d", i);
    }
    cr_assert_eq(ag_ratelimit_keys(rl), 4);
    /* k0 was not evicted: it still owes its debt */
    cr_assert_eq(ag_ratelimit_acquire(rl, "k0", 2, 1, NULL), AG_ERATE_LIMITED);
    ag_ratelimit_free(rl);
}

Test(ratelimit, gcra_memory_bounded_idle_keys_evicted)
{
    memory_is_bounded(AG_RL_GCRA);
}
Test(ratelimit, token_bucket_memory_bounded_idle_keys_evicted)
{
    memory_is_bounded(AG_RL_TOKEN_BUCKET);
}

Test(ratelimit, config_and_allocation_failures)
{
    struct ag_ratelimit *rl;
    struct ag_ratelimit_config c = {.rate = {.limit = 1, .period_ns = SEC, .burst = 1},
                                    .shards = 3};
    cr_assert_eq(ag_ratelimit_new(&c, &rl, NULL), AG_EINVAL);
    c.shards = 4;
    c.rate.burst = 0;
    cr_assert_eq(ag_ratelimit_new(&c, &rl, NULL), AG_EINVAL);
    c.rate.burst = 1;
    c.max_keys = 64;
    for (long n = 1; n <= 6; n++) {
        ag_alloc_fail_at(n);
        int rc = ag_ratelimit_new(&c, &rl, NULL);
        ag_alloc_fail_at(0);
        cr_assert_eq(rc, AG_ENOMEM, "allocation %ld", n);
    }
    cr_assert_eq(ag_ratelimit_new(&c, &rl, NULL), 0);
    cr_assert_eq(ag_ratelimit_acquire(rl, "x", 1, 2, NULL), AG_EINVAL);
    ag_ratelimit_free(rl);
}
