/*
 * The synchronous pipeline: fallback(ratelimit(bulkhead(circuit(retry(timeout(op)))))).
 *
 * Each layer is a function calling the next, in the seeds' order. The breaker
 * sees one outcome per call, after retries; the bulkhead slot is held across
 * retries. Deadlines are absolute monotonic instants: the overall deadline is the
 * earlier of the caller's ctx->deadline_ns and now + overall_timeout_ns, and each
 * attempt's deadline is the earlier of that and now + attempt_timeout_ns. The op
 * receives its attempt deadline in a child ctx, and passes it on to what it calls.
 * A synchronous op cannot be interrupted, so timeouts are cooperative: an attempt
 * that fails after its deadline is reported as AG_ETIMEDOUT, no attempt starts
 * after the overall deadline, and no retry is scheduled that would start after it.
 */
#include <string.h>
#include <time.h>

#include "resil/internal.h"

/* ---- deadlines ---- */

uint64_t ag_resil_remaining(const struct ag_resil_ctx *ctx, const struct ag_clock *clock)
{
    if (!ctx->deadline_ns) return UINT64_MAX;
    uint64_t now = ag_clock_mono(ag__resil_clock(clock));
    return now >= ctx->deadline_ns ? 0 : ctx->deadline_ns - now;
}

static uint64_t earlier(uint64_t a, uint64_t b)
{
    if (!a) return b;
    if (!b) return a;
    return a < b ? a : b;
}

void ag_resil_ctx_child(const struct ag_resil_ctx *parent, const struct ag_clock *clock,
                        uint64_t timeout_ns, struct ag_resil_ctx *child)
{
    *child = *parent;
    child->retry_after_ns = 0;
    if (timeout_ns)
        child->deadline_ns = earlier(
            parent->deadline_ns, ag__sat_add(ag_clock_mono(ag__resil_clock(clock)), timeout_ns));
}

/* ---- layers ---- */

struct run {
    const struct ag_pipeline *p;  /* the policies */
    const struct ag_clock *clock; /* resolved env clock */
    ag_resil_op_fn op;            /* the operation */
    void *arg;                    /* its argument */
    struct ag_resil_ctx *ctx;     /* the caller's context */
    uint64_t deadline;            /* overall deadline, 0 = none */
};

static void default_sleep(void *ctx, uint64_t ns)
{
    AG_UNUSED(ctx);
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* timeout(op): one attempt. */
static int run_attempt(struct run *r, unsigned attempt)
{
    uint64_t now = ag_clock_mono(r->clock);
    if (r->deadline && now >= r->deadline) return AG_ETIMEDOUT;
    uint64_t attempt_deadline = r->deadline;
    if (r->p->attempt_timeout_ns)
        attempt_deadline = earlier(r->deadline, ag__sat_add(now, r->p->attempt_timeout_ns));
    struct ag_resil_ctx child = *r->ctx;
    child.deadline_ns = attempt_deadline;
    child.attempt = attempt;
    child.retry_after_ns = 0;
    int rc = r->op(r->arg, &child);
    r->ctx->retry_after_ns = child.retry_after_ns;
    if (rc && attempt_deadline && ag_clock_mono(r->clock) >= attempt_deadline) rc = AG_ETIMEDOUT;
    return rc;
}

uint64_t ag__resil_next_delay(const struct ag_pipeline *p, unsigned attempt, uint64_t *prev, int rc,
                              uint64_t hint, uint64_t deadline)
{
    const struct ag_retry_config *c = &p->retry;
    ag_retry_pred_fn pred = c->retryable ? c->retryable : ag_retry_default_retryable;
    if (attempt >= c->max_attempts || !pred(c->retryable_ctx, rc)) return 0;
    uint64_t delay = ag_retry_delay(c, attempt, *prev, p->env.rng);
    *prev = delay;
    if (c->honor_retry_after && hint) {
        uint64_t max = c->max_retry_after_ns ? c->max_retry_after_ns
                                             : (c->cap_ns ? c->cap_ns : 10000000000ull);
        if (hint > max) return 0;
        if (hint > delay) delay = hint;
    }
    if (deadline && ag__sat_add(ag_clock_mono(ag__resil_clock(p->env.clock)), delay) >= deadline)
        return 0;
    if (c->budget && !ag_retry_budget_withdraw(c->budget)) return 0;
    return delay ? delay : 1; /* 0 means stop: a zero delay becomes 1 ns */
}

/* retry(timeout(op)). */
static int run_retry(struct run *r)
{
    const struct ag_pipeline *p = r->p;
    if (p->retry.budget) ag_retry_budget_deposit(p->retry.budget);
    uint64_t prev = 0;
    for (unsigned attempt = 1;; attempt++) {
        int rc = run_attempt(r, attempt);
        if (rc == 0) return 0;
        uint64_t delay =
            ag__resil_next_delay(p, attempt, &prev, rc, r->ctx->retry_after_ns, r->deadline);
        if (!delay) return rc;
        if (p->hooks && p->hooks->retry)
            p->hooks->retry(p->hooks->ctx, p->name, attempt + 1, delay);
        if (p->env.sleep)
            p->env.sleep(p->env.sleep_ctx, delay);
        else
            default_sleep(NULL, delay);
    }
}

/* circuit(retry(...)). */
static int run_breaker(struct run *r)
{
    struct ag_cb *cb = r->p->breaker;
    if (!cb) return run_retry(r);
    struct ag_cb_permit permit;
    uint64_t wait = 0;
    int rc = ag_cb_allow(cb, &permit, &wait, r->ctx->err);
    if (rc) {
        r->ctx->retry_after_ns = wait;
        return rc;
    }
    rc = run_retry(r);
    ag_cb_record(cb, &permit, rc);
    return rc;
}

/* ratelimit(bulkhead(...)). */
static int run_guarded(struct run *r)
{
    const struct ag_pipeline *p = r->p;
    if (p->limiter) {
        uint64_t wait = 0;
        if (ag_gcra_acquire(p->limiter, 1, &wait)) {
            r->ctx->retry_after_ns = wait;
            ag__hook_rejected(p->hooks, p->name, AG_ERATE_LIMITED);
            return ag_err_set(r->ctx->err, AG_ERATE_LIMITED, "'%s': rate limited",
                              p->name ? p->name : "pipeline");
        }
    }
    if (!p->bulkhead) return run_breaker(r);
    int rc = ag_bulkhead_acquire(p->bulkhead, r->deadline, r->ctx->err);
    if (rc) return rc;
    rc = run_breaker(r);
    ag_bulkhead_release(p->bulkhead);
    return rc;
}

/* ---- fallback and outcome ---- */

static bool is_rejection(int rc)
{
    return rc == AG_ECIRCUIT_OPEN || rc == AG_EBULKHEAD_FULL || rc == AG_ERATE_LIMITED;
}

static bool fallback_applies(const struct ag_fallback *f, int rc)
{
    if (is_rejection(rc)) return f->on & AG_FALLBACK_ON_REJECTED;
    if (rc == AG_ETIMEDOUT) return f->on & AG_FALLBACK_ON_TIMEOUT;
    return f->on & AG_FALLBACK_ON_FAILURE;
}

/* Try the fallback for a failed call; returns the final code. */
int ag__resil_fallback(const struct ag_fallback *f, int rc, struct ag_resil_ctx *ctx)
{
    if (!rc || !f->on || !fallback_applies(f, rc)) return rc;
    if (f->fn) return f->fn(f->fn_ctx, rc, ctx);
    if (!f->value || !ctx->result || ctx->result_size != f->value_size) return rc;
    memcpy(ctx->result, f->value, f->value_size);
    return 0;
}

enum ag_resil_outcome ag__resil_outcome(int first_rc, int final_rc)
{
    if (first_rc == 0) return AG_RESIL_SUCCESS;
    if (final_rc == 0) return AG_RESIL_FALLBACK;
    if (is_rejection(final_rc)) return AG_RESIL_REJECTED;
    return final_rc == AG_ETIMEDOUT ? AG_RESIL_TIMEOUT : AG_RESIL_FAILURE;
}

uint64_t ag__resil_overall_deadline(const struct ag_pipeline *p, const struct ag_resil_ctx *ctx)
{
    if (!p->overall_timeout_ns) return ctx->deadline_ns;
    uint64_t now = ag_clock_mono(ag__resil_clock(p->env.clock));
    return earlier(ctx->deadline_ns, ag__sat_add(now, p->overall_timeout_ns));
}

int ag_pipeline_run(const struct ag_pipeline *p, ag_resil_op_fn op, void *arg,
                    struct ag_resil_ctx *ctx)
{
    struct run r = {p, ag__resil_clock(p->env.clock), op, arg, ctx, 0};
    r.deadline = ag__resil_overall_deadline(p, ctx);
    ctx->retry_after_ns = 0;
    int rc = run_guarded(&r);
    int final = ag__resil_fallback(&p->fallback, rc, ctx);
    ag__hook_call(p->hooks, p->name, ag__resil_outcome(rc, final));
    return final;
}
