/* Private declarations shared by the resil module's files. */
#ifndef AGORA_RESIL_INTERNAL_H
#define AGORA_RESIL_INTERNAL_H

#include <stdatomic.h>

#include "agora/resil.h"

static inline const struct ag_clock *ag__resil_clock(const struct ag_clock *c)
{
    return c ? c : ag_clock_system();
}

static inline const struct ag_rng *ag__resil_rng(const struct ag_rng *r)
{
    return r ? r : ag_rng_system();
}

static inline uint64_t ag__sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* Hook helpers: each is a no-op when the hook or the table is missing. */
static inline void ag__hook_call(const struct ag_resil_hooks *h, const char *name,
                                 enum ag_resil_outcome o)
{
    if (h && h->call) h->call(h->ctx, name, o);
}
static inline void ag__hook_rejected(const struct ag_resil_hooks *h, const char *name, int code)
{
    if (h && h->rejected) h->rejected(h->ctx, name, code);
}

/* ---- async bulkhead waiters (bulkhead.c, used by async.c) ---- */

/* A queued asynchronous caller. Granted on the thread that releases a slot; an
 * async pipeline's bulkhead is therefore used from its loop thread only. */
struct ag__bh_waiter {
    struct ag__bh_waiter *next;               /* FIFO link */
    void (*granted)(struct ag__bh_waiter *w); /* the slot is now ours */
};
/* 0: slot taken now; 1: queued (granted later); AG_EBULKHEAD_FULL: queue full. */
int ag__bulkhead_enqueue(struct ag_bulkhead *bh, struct ag__bh_waiter *w);
/* Remove a still-queued waiter; true when it was queued (so never granted). */
bool ag__bulkhead_cancel(struct ag_bulkhead *bh, struct ag__bh_waiter *w);
const char *ag__bulkhead_name(const struct ag_bulkhead *bh);
const struct ag_resil_hooks *ag__bulkhead_hooks(const struct ag_bulkhead *bh);
uint64_t ag__bulkhead_max_wait(const struct ag_bulkhead *bh);

/* ---- pipeline pieces shared by the sync (pipeline.c) and async (async.c) runs ---- */

/* Apply the fallback to a failed call; returns the final code. */
int ag__resil_fallback(const struct ag_fallback *f, int rc, struct ag_resil_ctx *ctx);
/* The outcome to report for a call that ended with first_rc, then final_rc. */
enum ag_resil_outcome ag__resil_outcome(int first_rc, int final_rc);
/* The earlier of ctx's deadline and now + overall_timeout_ns (0 = none). */
uint64_t ag__resil_overall_deadline(const struct ag_pipeline *p, const struct ag_resil_ctx *ctx);
/* The wait before the attempt after `attempt` failed with rc, or 0 to stop.
 * `prev` carries the previous delay (decorrelated jitter); consumes the budget. */
uint64_t ag__resil_next_delay(const struct ag_pipeline *p, unsigned attempt, uint64_t *prev, int rc,
                              uint64_t retry_after_ns, uint64_t deadline);

#endif
