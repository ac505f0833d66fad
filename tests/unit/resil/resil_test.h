/* Shared helpers for the resil tests: a fake clock safe to read from many threads
 * (base's ag_fake_clock is for single-threaded tests) and hook recorders. */
#ifndef AGORA_TESTS_RESIL_TEST_H
#define AGORA_TESTS_RESIL_TEST_H

#include <stdatomic.h>

#include "agora/resil.h"

#define MS  1000000ull
#define SEC 1000000000ull

struct tclock {
    struct ag_clock clock; /* pass &tc.clock */
    _Atomic uint64_t mono; /* monotonic ns */
};

static uint64_t tclock_read(void *ctx)
{
    return atomic_load(&((struct tclock *)ctx)->mono);
}

static inline void tclock_init(struct tclock *tc)
{
    tc->clock.now_ns = tclock_read;
    tc->clock.mono_ns = tclock_read;
    tc->clock.ctx = tc;
    atomic_init(&tc->mono, 1000 * SEC);
}

static inline void tclock_advance(struct tclock *tc, uint64_t ns)
{
    atomic_fetch_add(&tc->mono, ns);
}

/* A sleep for ag_resil_env that advances the fake clock instead of waiting. */
static inline void tclock_sleep(void *ctx, uint64_t ns)
{
    tclock_advance(ctx, ns);
}

/* Counts what hooks report. */
struct hook_log {
    _Atomic int transitions;        /* state_change calls */
    _Atomic int last_from, last_to; /* enum ag_cb_state of the last transition */
    _Atomic int outcomes[6];        /* call() by outcome */
    _Atomic int rejected;           /* rejected() calls */
    _Atomic int last_reject_code;
    _Atomic int retries;       /* retry() calls */
    uint64_t retry_delays[16]; /* delays of the first retries (single-threaded tests) */
};

static void hl_state(void *ctx, const char *name, enum ag_cb_state from, enum ag_cb_state to)
{
    struct hook_log *l = ctx;
    (void)name;
    l->last_from = from;
    l->last_to = to;
    atomic_fetch_add(&l->transitions, 1);
}
static void hl_call(void *ctx, const char *name, enum ag_resil_outcome o)
{
    (void)name;
    atomic_fetch_add(&((struct hook_log *)ctx)->outcomes[o], 1);
}
static void hl_rejected(void *ctx, const char *name, int code)
{
    struct hook_log *l = ctx;
    (void)name;
    l->last_reject_code = code;
    atomic_fetch_add(&l->rejected, 1);
}
static void hl_retry(void *ctx, const char *name, unsigned attempt, uint64_t delay)
{
    struct hook_log *l = ctx;
    (void)name;
    int i = atomic_fetch_add(&l->retries, 1);
    if (i < 16) l->retry_delays[i] = delay;
    (void)attempt;
}

static inline struct ag_resil_hooks hook_log_hooks(struct hook_log *l)
{
    struct ag_resil_hooks h = {hl_state, hl_call, hl_rejected, hl_retry, l};
    return h;
}

#endif
