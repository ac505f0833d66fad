/* Circuit breaker state machine: every transition and option, on a fake clock. */
#include <criterion/criterion.h>

#include "unit/resil/resil_test.h"

static struct tclock tc;
static struct hook_log hl;
static struct ag_resil_hooks hooks;

static void setup(void)
{
    tclock_init(&tc);
    memset(&hl, 0, sizeof hl);
    hooks = hook_log_hooks(&hl);
}

TestSuite(breaker, .init = setup);

static struct ag_cb *mk(struct ag_cb_config c)
{
    c.clock = &tc.clock;
    c.hooks = &hooks;
    struct ag_cb *cb = NULL;
    struct ag_err err;
    int rc = ag_cb_new(&c, &cb, &err);
    cr_assert_eq(rc, 0, "ag_cb_new: %s", err.msg);
    return cb;
}

/* One call through the breaker: allow, then record rc. Returns allow's result. */
static int call(struct ag_cb *cb, int rc)
{
    struct ag_cb_permit p;
    int a = ag_cb_allow(cb, &p, NULL, NULL);
    if (a == 0) ag_cb_record(cb, &p, rc);
    return a;
}

/* The seeds' two tests, ported. */
Test(breaker, seeds_opens_after_threshold_and_rejects_fourth)
{
    struct ag_cb *cb = mk(
        (struct ag_cb_config){.failure_threshold = 3, .success_threshold = 2, .open_ns = 1 * SEC});
    for (int i = 0; i < 3; i++) cr_assert_eq(call(cb, AG_EUPSTREAM), 0, "call %d admitted", i);
    cr_assert_eq(ag_cb_state(cb), AG_CB_OPEN);
    cr_assert_eq(call(cb, 0), AG_ECIRCUIT_OPEN);
    ag_cb_free(cb);
}

Test(breaker, seeds_closes_after_two_successes_in_half_open)
{
    struct ag_cb *cb = mk(
        (struct ag_cb_config){.failure_threshold = 3, .success_threshold = 2, .open_ns = 1 * SEC});
    for (int i = 0; i < 3; i++) call(cb, AG_EUPSTREAM);
    tclock_advance(&tc, 1100 * MS);
    cr_assert_eq(call(cb, 0), 0);
    cr_assert_eq(ag_cb_state(cb), AG_CB_HALF_OPEN);
    cr_assert_eq(call(cb, 0), 0);
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED);
    cr_assert_eq(hl.transitions, 3); /* closed->open->half_open->closed */
    cr_assert_eq(hl.last_from, AG_CB_HALF_OPEN);
    cr_assert_eq(hl.last_to, AG_CB_CLOSED);
    ag_cb_free(cb);
}

Test(breaker, rejection_carries_time_until_next_probe)
{
    struct ag_cb *cb =
        mk((struct ag_cb_config){.name = "payments", .failure_threshold = 1, .open_ns = 5 * SEC});
    call(cb, AG_ETIMEDOUT);
    tclock_advance(&tc, 2 * SEC);
    struct ag_cb_permit p;
    struct ag_err err;
    uint64_t wait = 0;
    cr_assert_eq(ag_cb_allow(cb, &p, &wait, &err), AG_ECIRCUIT_OPEN);
    cr_assert_eq(wait, 3 * SEC);
    cr_assert_eq(err.aux, (long long)(3 * SEC));
    cr_assert(strstr(err.msg, "payments") != NULL, "message names the breaker: %s", err.msg);
    cr_assert_eq(hl.rejected, 1);
    cr_assert_eq(hl.last_reject_code, AG_ECIRCUIT_OPEN);
    tclock_advance(&tc, 3 * SEC - 1);
    cr_assert_eq(ag_cb_allow(cb, &p, &wait, NULL), AG_ECIRCUIT_OPEN);
    cr_assert_eq(wait, 1);
    tclock_advance(&tc, 1);
    cr_assert_eq(ag_cb_allow(cb, &p, &wait, NULL), 0);
    ag_cb_free(cb);
}

Test(breaker, consecutive_failures_reset_by_success)
{
    struct ag_cb *cb = mk((struct ag_cb_config){.failure_threshold = 3});
    call(cb, AG_EIO);
    call(cb, AG_EIO);
    call(cb, 0);
    call(cb, AG_EIO);
    call(cb, AG_EIO);
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED);
    call(cb, AG_EIO);
    cr_assert_eq(ag_cb_state(cb), AG_CB_OPEN);
    ag_cb_free(cb);
}

Test(breaker, half_open_failure_reopens_and_open_duration_grows)
{
    struct ag_cb *cb = mk((struct ag_cb_config){.failure_threshold = 1,
                                                .open_ns = 1 * SEC,
                                                .open_multiplier = 2.0,
                                                .open_max_ns = 3 * SEC});
    uint64_t wait;
    struct ag_cb_permit p;
    uint64_t expect[] = {1 * SEC, 2 * SEC, 3 * SEC, 3 * SEC};
    call(cb, AG_EIO);
    for (size_t i = 0; i < AG_ARRAY_SIZE(expect); i++) {
        cr_assert_eq(ag_cb_allow(cb, &p, &wait, NULL), AG_ECIRCUIT_OPEN);
        cr_assert_eq(wait, expect[i], "opening %zu lasts %llu", i + 1, (unsigned long long)wait);
        tclock_advance(&tc, wait);
        cr_assert_eq(call(cb, AG_EIO), 0); /* the probe fails: reopen, longer */
        cr_assert_eq(ag_cb_state(cb), AG_CB_OPEN);
    }
    /* closing resets the growth */
    tclock_advance(&tc, 3 * SEC);
    cr_assert_eq(call(cb, 0), 0);
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED);
    call(cb, AG_EIO);
    cr_assert_eq(ag_cb_allow(cb, &p, &wait, NULL), AG_ECIRCUIT_OPEN);
    cr_assert_eq(wait, 1 * SEC);
    ag_cb_free(cb);
}

static uint64_t tenfold(void *ctx, uint32_t n)
{
    (void)ctx;
    return n * 10 * SEC;
}

Test(breaker, interval_function_decides_open_duration)
{
    struct ag_cb *cb = mk((struct ag_cb_config){.failure_threshold = 1, .open_interval = tenfold});
    uint64_t wait;
    struct ag_cb_permit p;
    call(cb, AG_EIO);
    ag_cb_allow(cb, &p, &wait, NULL);
    cr_assert_eq(wait, 10 * SEC);
    tclock_advance(&tc, 10 * SEC);
    call(cb, AG_EIO);
    ag_cb_allow(cb, &p, &wait, NULL);
    cr_assert_eq(wait, 20 * SEC);
    ag_cb_free(cb);
}

Test(breaker, half_open_admits_only_permitted_probes)
{
    struct ag_cb *cb =
        mk((struct ag_cb_config){.failure_threshold = 1, .half_open_permits = 2, .open_ns = SEC});
    call(cb, AG_EIO);
    tclock_advance(&tc, SEC);
    struct ag_cb_permit p1, p2, p3;
    cr_assert_eq(ag_cb_allow(cb, &p1, NULL, NULL), 0);
    cr_assert_eq(ag_cb_allow(cb, &p2, NULL, NULL), 0);
    cr_assert_eq(ag_cb_allow(cb, &p3, NULL, NULL), AG_ECIRCUIT_OPEN);
    /* an ignored probe gives its permit back */
    ag_cb_record(cb, &p1, AG_ECANCELED);
    cr_assert_eq(ag_cb_allow(cb, &p3, NULL, NULL), 0);
    ag_cb_record(cb, &p2, 0);
    cr_assert_eq(ag_cb_state(cb), AG_CB_HALF_OPEN);
    ag_cb_record(cb, &p3, 0);
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED);
    ag_cb_free(cb);
}

Test(breaker, success_threshold_below_permits_closes_early)
{
    struct ag_cb *cb = mk((struct ag_cb_config){
        .failure_threshold = 1, .half_open_permits = 5, .success_threshold = 2, .open_ns = SEC});
    call(cb, AG_EIO);
    tclock_advance(&tc, SEC);
    cr_assert_eq(call(cb, 0), 0);
    cr_assert_eq(ag_cb_state(cb), AG_CB_HALF_OPEN);
    cr_assert_eq(call(cb, 0), 0);
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED);
    ag_cb_free(cb);
}

Test(breaker, half_open_max_wait_never_stuck)
{
    struct ag_cb *cb = mk(
        (struct ag_cb_config){.failure_threshold = 1, .open_ns = SEC, .half_open_max_ns = 4 * SEC});
    call(cb, AG_EIO);
    tclock_advance(&tc, SEC);
    struct ag_cb_permit lost, p;
    cr_assert_eq(ag_cb_allow(cb, &lost, NULL, NULL), 0); /* a probe that never reports */
    uint64_t wait;
    cr_assert_eq(ag_cb_allow(cb, &p, &wait, NULL), AG_ECIRCUIT_OPEN);
    cr_assert_eq(wait, 4 * SEC);
    tclock_advance(&tc, 4 * SEC);
    /* give up on the lost probe: back to OPEN, then a fresh half-open */
    cr_assert_eq(ag_cb_allow(cb, &p, &wait, NULL), AG_ECIRCUIT_OPEN);
    cr_assert_eq(ag_cb_state(cb), AG_CB_OPEN);
    tclock_advance(&tc, wait);
    cr_assert_eq(call(cb, 0), 0);
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED);
    /* the lost probe reporting late changes nothing */
    ag_cb_record(cb, &lost, AG_EIO);
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED);
    ag_cb_free(cb);
}

Test(breaker, stale_permit_from_closed_is_not_counted)
{
    struct ag_cb *cb = mk((struct ag_cb_config){.failure_threshold = 1, .open_ns = SEC});
    struct ag_cb_permit slow;
    cr_assert_eq(ag_cb_allow(cb, &slow, NULL, NULL), 0);
    call(cb, AG_EIO); /* opens */
    tclock_advance(&tc, SEC);
    struct ag_cb_permit probe;
    cr_assert_eq(ag_cb_allow(cb, &probe, NULL, NULL), 0);
    ag_cb_record(cb, &slow, 0); /* success from the old epoch must not close it */
    cr_assert_eq(ag_cb_state(cb), AG_CB_HALF_OPEN);
    ag_cb_record(cb, &probe, 0);
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED);
    ag_cb_free(cb);
}

Test(breaker, count_window_failure_rate_with_min_calls)
{
    struct ag_cb *cb = mk((struct ag_cb_config){.window_type = AG_CB_WINDOW_COUNT,
                                                .window_size = 10,
                                                .min_calls = 5,
                                                .failure_rate_pct = 50});
    for (int i = 0; i < 4; i++) call(cb, AG_EIO);
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED, "below min_calls never opens");
    call(cb, AG_EIO);
    cr_assert_eq(ag_cb_state(cb), AG_CB_OPEN);
    ag_cb_free(cb);
}

Test(breaker, count_window_subtracts_evicted_calls)
{
    struct ag_cb *cb = mk((struct ag_cb_config){.window_type = AG_CB_WINDOW_COUNT,
                                                .window_size = 4,
                                                .min_calls = 4,
                                                .failure_rate_pct = 75});
    struct ag_cb_stats st;
    call(cb, AG_EIO);
    call(cb, AG_EIO);
    call(cb, 0);
    call(cb, 0); /* F F S S: 50% */
    ag_cb_stats(cb, &st);
    cr_assert_eq(st.window_calls, 4);
    cr_assert_eq(st.window_failures, 2);
    call(cb, 0);      /* evicts an F: F S S S */
    call(cb, AG_EIO); /* evicts an F: S S S F */
    ag_cb_stats(cb, &st);
    cr_assert_eq(st.window_calls, 4);
    cr_assert_eq(st.window_failures, 1);
    call(cb, AG_EIO); /* S S F F: 50% */
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED);
    call(cb, AG_EIO); /* S F F F: 75% */
    cr_assert_eq(ag_cb_state(cb), AG_CB_OPEN);
    ag_cb_free(cb);
}

Test(breaker, time_window_forgets_old_failures)
{
    struct ag_cb *cb = mk((struct ag_cb_config){.window_type = AG_CB_WINDOW_TIME,
                                                .window_ns = 10 * SEC,
                                                .window_buckets = 10,
                                                .min_calls = 4,
                                                .failure_rate_pct = 50});
    struct ag_cb_stats st;
    call(cb, AG_EIO);
    call(cb, AG_EIO);
    call(cb, AG_EIO);
    tclock_advance(&tc, 11 * SEC);
    call(cb, 0);
    ag_cb_stats(cb, &st);
    cr_assert_eq(st.window_calls, 1, "old bucket evicted, calls=%llu",
                 (unsigned long long)st.window_calls);
    cr_assert_eq(st.window_failures, 0);
    call(cb, 0);
    call(cb, AG_EIO);
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED);
    tclock_advance(&tc, 5 * SEC);
    call(cb, AG_EIO); /* 2 of 4 in the last 10 s */
    cr_assert_eq(ag_cb_state(cb), AG_CB_OPEN);
    ag_cb_free(cb);
}

Test(breaker, slow_call_rate_opens)
{
    struct ag_cb *cb = mk((struct ag_cb_config){.window_type = AG_CB_WINDOW_COUNT,
                                                .window_size = 4,
                                                .min_calls = 4,
                                                .slow_rate_pct = 50,
                                                .slow_call_ns = 100 * MS,
                                                .open_ns = SEC});
    struct ag_cb_permit p;
    for (int i = 0; i < 3; i++) {
        ag_cb_allow(cb, &p, NULL, NULL);
        tclock_advance(&tc, i == 0 ? 150 * MS : 10 * MS);
        ag_cb_record(cb, &p, 0);
    }
    ag_cb_allow(cb, &p, NULL, NULL);
    tclock_advance(&tc, 100 * MS); /* exactly the slow duration counts as slow */
    ag_cb_record(cb, &p, 0);
    cr_assert_eq(ag_cb_state(cb), AG_CB_OPEN);
    struct ag_cb_stats st;
    ag_cb_stats(cb, &st);
    cr_assert_eq(st.window_calls, 4);
    cr_assert_eq(st.window_slow, 2);
    cr_assert_eq(st.window_failures, 0);
    ag_cb_free(cb);
}

Test(breaker, slow_probe_reopens_when_slow_rule_on)
{
    struct ag_cb *cb = mk((struct ag_cb_config){.failure_threshold = 1,
                                                .window_type = AG_CB_WINDOW_COUNT,
                                                .window_size = 4,
                                                .min_calls = 4,
                                                .slow_rate_pct = 50,
                                                .slow_call_ns = 100 * MS,
                                                .open_ns = SEC});
    call(cb, AG_EIO);
    tclock_advance(&tc, SEC);
    struct ag_cb_permit p;
    cr_assert_eq(ag_cb_allow(cb, &p, NULL, NULL), 0);
    tclock_advance(&tc, 200 * MS);
    ag_cb_record(cb, &p, 0);
    cr_assert_eq(ag_cb_state(cb), AG_CB_OPEN);
    ag_cb_free(cb);
}

Test(breaker, n_failures_within_time_window)
{
    struct ag_cb *cb = mk((struct ag_cb_config){.burst_failures = 3, .burst_window_ns = SEC});
    call(cb, AG_EIO);
    tclock_advance(&tc, 600 * MS);
    call(cb, AG_EIO);
    tclock_advance(&tc, 600 * MS);
    call(cb, AG_EIO); /* three failures over 1.2 s */
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED);
    call(cb, 0);
    tclock_advance(&tc, 300 * MS);
    call(cb, AG_EIO); /* the last three within 0.9 s */
    cr_assert_eq(ag_cb_state(cb), AG_CB_OPEN);
    ag_cb_free(cb);
}

Test(breaker, disabled_and_forced_open)
{
    struct ag_cb *cb = mk((struct ag_cb_config){.failure_threshold = 1});
    cr_assert_eq(ag_cb_transition(cb, AG_CB_DISABLED), 0);
    for (int i = 0; i < 10; i++) cr_assert_eq(call(cb, AG_EIO), 0);
    cr_assert_eq(ag_cb_state(cb), AG_CB_DISABLED);
    ag_cb_transition(cb, AG_CB_FORCED_OPEN);
    uint64_t wait = 0;
    struct ag_cb_permit p;
    tclock_advance(&tc, 3600 * SEC);
    cr_assert_eq(ag_cb_allow(cb, &p, &wait, NULL), AG_ECIRCUIT_OPEN);
    cr_assert_eq(wait, UINT64_MAX);
    ag_cb_transition(cb, AG_CB_CLOSED);
    cr_assert_eq(call(cb, 0), 0);
    cr_assert_eq(hl.transitions, 3);
    cr_assert_eq(ag_cb_transition(cb, (enum ag_cb_state)9), AG_EINVAL);
    ag_cb_free(cb);
}

Test(breaker, manual_half_open_admits_full_permits)
{
    struct ag_cb *cb = mk((struct ag_cb_config){.failure_threshold = 1, .half_open_permits = 2});
    ag_cb_transition(cb, AG_CB_HALF_OPEN);
    struct ag_cb_permit a, b, c;
    cr_assert_eq(ag_cb_allow(cb, &a, NULL, NULL), 0);
    cr_assert_eq(ag_cb_allow(cb, &b, NULL, NULL), 0);
    cr_assert_eq(ag_cb_allow(cb, &c, NULL, NULL), AG_ECIRCUIT_OPEN);
    ag_cb_free(cb);
}

static enum ag_resil_outcome only_timeouts(void *ctx, int rc)
{
    (void)ctx;
    if (rc == 0) return AG_RESIL_SUCCESS;
    return rc == AG_ETIMEDOUT ? AG_RESIL_FAILURE : AG_RESIL_IGNORED;
}

Test(breaker, classifier_decides_what_counts)
{
    struct ag_cb *cb = mk((struct ag_cb_config){.failure_threshold = 2, .classify = only_timeouts});
    call(cb, AG_ETIMEDOUT);
    call(cb, AG_EUPSTREAM); /* ignored: neither resets nor counts */
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED);
    call(cb, AG_ETIMEDOUT);
    cr_assert_eq(ag_cb_state(cb), AG_CB_OPEN);
    cr_assert_eq(hl.outcomes[AG_RESIL_FAILURE], 2);
    cr_assert_eq(hl.outcomes[AG_RESIL_IGNORED], 1);
    ag_cb_free(cb);
}

Test(breaker, default_classifier)
{
    cr_assert_eq(ag_cb_classify_default(NULL, 0), AG_RESIL_SUCCESS);
    cr_assert_eq(ag_cb_classify_default(NULL, AG_EDOMAIN), AG_RESIL_SUCCESS);
    cr_assert_eq(ag_cb_classify_default(NULL, AG_ENOTFOUND), AG_RESIL_SUCCESS);
    cr_assert_eq(ag_cb_classify_default(NULL, AG_ECANCELED), AG_RESIL_IGNORED);
    cr_assert_eq(ag_cb_classify_default(NULL, AG_EBULKHEAD_FULL), AG_RESIL_IGNORED);
    cr_assert_eq(ag_cb_classify_default(NULL, AG_ETIMEDOUT), AG_RESIL_FAILURE);
    cr_assert_eq(ag_cb_classify_default(NULL, AG_ECONNECT), AG_RESIL_FAILURE);
    /* a business error proves the dependency is up: it resets the streak */
    struct ag_cb *cb = mk((struct ag_cb_config){.failure_threshold = 2});
    call(cb, AG_EUPSTREAM);
    call(cb, AG_EDOMAIN);
    call(cb, AG_EUPSTREAM);
    cr_assert_eq(ag_cb_state(cb), AG_CB_CLOSED);
    ag_cb_free(cb);
}

Test(breaker, config_validation)
{
    struct ag_cb *cb = NULL;
    struct ag_err err;
    struct ag_cb_config bad[] = {
        {.failure_rate_pct = 50},                                    /* no window */
        {.window_type = AG_CB_WINDOW_COUNT, .failure_rate_pct = 50}, /* size 0 */
        {.window_type = AG_CB_WINDOW_TIME, .window_ns = SEC, .failure_rate_pct = 101},
        {.window_type = AG_CB_WINDOW_COUNT,
         .window_size = 5,
         .slow_rate_pct = 10}, /* no slow_call_ns */
        {.burst_failures = 3}, /* no burst window */
        {.half_open_permits = 2, .success_threshold = 3},
        {.half_open_permits = 40000},
    };
    for (size_t i = 0; i < AG_ARRAY_SIZE(bad); i++) {
        cr_assert_eq(ag_cb_new(&bad[i], &cb, &err), AG_EINVAL, "config %zu accepted", i);
        cr_assert_neq(err.msg[0], '\0');
    }
}

Test(breaker, allocation_failures_are_reported)
{
    struct ag_cb_config c = {.window_type = AG_CB_WINDOW_COUNT,
                             .window_size = 8,
                             .failure_rate_pct = 50,
                             .burst_failures = 2,
                             .burst_window_ns = SEC};
    for (long n = 1; n <= 4; n++) {
        struct ag_cb *cb = NULL;
        ag_alloc_fail_at(n);
        int rc = ag_cb_new(&c, &cb, NULL);
        ag_alloc_fail_at(0);
        cr_assert_eq(rc, AG_ENOMEM, "allocation %ld failing gives %d", n, rc);
    }
    struct ag_cb *cb = NULL;
    cr_assert_eq(ag_cb_new(&c, &cb, NULL), 0);
    ag_cb_free(cb);
}

Test(breaker, names)
{
    struct ag_cb *cb = mk((struct ag_cb_config){.name = "inventory"});
    cr_assert_str_eq(ag_cb_name(cb), "inventory");
    cr_assert_str_eq(ag_cb_state_name(AG_CB_HALF_OPEN), "half_open");
    cr_assert_str_eq(ag_cb_state_name(AG_CB_FORCED_OPEN), "forced_open");
    ag_cb_free(cb);
}
