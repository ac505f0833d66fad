/*
 * The asynchronous pipeline on a libuv loop, and libuv timers for it.
 *
 * A call is a small state machine driven by one timer and by the op's completion:
 *
 *   BEGIN --(rate limit, bulkhead)--> QUEUED --grant--> GRANTED
 *     \___________________________________________________/
 *                              | breaker allow
 *                              v
 *        +--> ATTEMPT --done / attempt deadline--> result
 *        |                                           | retryable, budget, time left
 *     BACKOFF <--------------------------------------+
 *                                                    | else
 *                                                  DONE (record, release, fallback, done cb)
 *
 * The timer is re-armed for whichever wait the phase has: the 0-delay start
 * (so `done` never runs inside ag_pipeline_start), the bulkhead's max wait, the
 * attempt deadline (earlier of per-attempt and overall), or the backoff delay.
 * Nothing sleeps.
 *
 * Lifetime: the call holds one reference for itself and one per attempt object.
 * An attempt that timed out is abandoned (the call moves on) but stays allocated
 * until the op reports it done, so a late completion is harmless. When the last
 * reference goes, the timer is released and the call is freed after the timer
 * implementation says its memory is no longer used (libuv: after close_cb).
 *
 * Threading: everything runs on the loop thread of `timers`, including bulkhead
 * grants, which arrive from ag_bulkhead_release on that thread.
 */
#include <string.h>
#include <uv.h>

#include "resil/internal.h"

enum phase { PH_BEGIN, PH_QUEUED, PH_GRANTED, PH_ATTEMPT, PH_BACKOFF, PH_DONE };

struct call {
    const struct ag_pipeline *p;    /* the policies (borrowed) */
    struct ag_resil_timers *timers; /* borrowed */
    struct ag_resil_async_op op;    /* copy */
    struct ag_resil_ctx ctx;        /* the caller's ctx (copy) */
    ag_resil_done_fn done;          /* final callback */
    void *done_arg;
    uint64_t deadline;           /* overall, 0 = none */
    struct ag_resil_timer timer; /* the one timer */
    enum phase phase;            /* what the timer means now */
    struct ag__bh_waiter waiter; /* bulkhead queue node */
    bool holds_slot;             /* a bulkhead slot is ours */
    bool has_permit;             /* a breaker permit is ours */
    struct ag_cb_permit permit;
    unsigned attempt;             /* attempts started */
    uint64_t prev_delay;          /* for decorrelated jitter */
    struct ag_resil_attempt *cur; /* the attempt in flight, NULL when none */
    int refs;                     /* 1 for the call + 1 per live attempt */
};

struct ag_resil_attempt {
    struct call *call;       /* owner (kept alive by our reference) */
    struct ag_resil_ctx ctx; /* the op's context */
    bool abandoned;          /* timed out: the result is ignored */
};

static void call_free(void *arg)
{
    ag_free(arg);
}

static void call_unref(struct call *c)
{
    if (--c->refs > 0) return;
    c->timers->release(c->timers->ctx, &c->timer, call_free, c);
}

static void arm(struct call *c, enum phase ph, uint64_t delay)
{
    c->phase = ph;
    /* a timer that cannot start leaves the call to the op and the other events */
    c->timers->start(c->timers->ctx, &c->timer, delay);
}

static void finish(struct call *c, int rc)
{
    const struct ag_pipeline *p = c->p;
    c->phase = PH_DONE;
    c->timers->stop(c->timers->ctx, &c->timer);
    if (c->has_permit) ag_cb_record(p->breaker, &c->permit, rc);
    if (c->holds_slot) ag_bulkhead_release(p->bulkhead);
    c->has_permit = c->holds_slot = false;
    int final = ag__resil_fallback(&p->fallback, rc, &c->ctx);
    ag__hook_call(p->hooks, p->name, ag__resil_outcome(rc, final));
    c->done(c->done_arg, final, &c->ctx);
    call_unref(c);
}

/* ---- attempts ---- */

static void attempt_result(struct call *c, int rc)
{
    const struct ag_pipeline *p = c->p;
    if (rc == 0) {
        finish(c, 0);
        return;
    }
    uint64_t delay =
        ag__resil_next_delay(p, c->attempt, &c->prev_delay, rc, c->ctx.retry_after_ns, c->deadline);
    if (!delay) {
        finish(c, rc);
        return;
    }
    if (p->hooks && p->hooks->retry) p->hooks->retry(p->hooks->ctx, p->name, c->attempt + 1, delay);
    arm(c, PH_BACKOFF, delay);
}

static void start_attempt(struct call *c)
{
    const struct ag_clock *clock = ag__resil_clock(c->p->env.clock);
    uint64_t now = ag_clock_mono(clock);
    c->attempt++;
    if (c->deadline && now >= c->deadline) {
        finish(c, AG_ETIMEDOUT);
        return;
    }
    struct ag_resil_attempt *a = ag_malloc(sizeof *a);
    if (!a) {
        finish(c, AG_ENOMEM);
        return;
    }
    a->call = c;
    a->abandoned = false;
    a->ctx = c->ctx;
    a->ctx.attempt = c->attempt;
    a->ctx.retry_after_ns = 0;
    a->ctx.deadline_ns = c->deadline;
    if (c->p->attempt_timeout_ns) {
        uint64_t d = ag__sat_add(now, c->p->attempt_timeout_ns);
        if (!a->ctx.deadline_ns || d < a->ctx.deadline_ns) a->ctx.deadline_ns = d;
    }
    c->refs++;
    c->cur = a;
    c->phase = PH_ATTEMPT;
    if (a->ctx.deadline_ns) arm(c, PH_ATTEMPT, a->ctx.deadline_ns - now);
    c->op.start(c->op.arg, a);
}

struct ag_resil_ctx *ag_resil_attempt_ctx(struct ag_resil_attempt *a)
{
    return &a->ctx;
}

void ag_resil_attempt_done(struct ag_resil_attempt *a, int rc)
{
    struct call *c = a->call;
    if (!a->abandoned && c->cur == a) {
        c->cur = NULL;
        c->timers->stop(c->timers->ctx, &c->timer);
        c->ctx.retry_after_ns = a->ctx.retry_after_ns;
        attempt_result(c, rc);
    }
    ag_free(a);
    call_unref(c);
}

static void attempt_timed_out(struct call *c)
{
    struct ag_resil_attempt *a = c->cur;
    c->cur = NULL;
    a->abandoned = true;
    if (c->op.cancel) c->op.cancel(c->op.arg, a);
    attempt_result(c, AG_ETIMEDOUT);
}

/* ---- admission ---- */

static void admitted(struct call *c)
{
    const struct ag_pipeline *p = c->p;
    if (p->breaker) {
        uint64_t wait = 0;
        int rc = ag_cb_allow(p->breaker, &c->permit, &wait, c->ctx.err);
        if (rc) {
            c->ctx.retry_after_ns = wait;
            finish(c, rc);
            return;
        }
        c->has_permit = true;
    }
    if (p->retry.budget) ag_retry_budget_deposit(p->retry.budget);
    start_attempt(c);
}

static void granted(struct ag__bh_waiter *w)
{
    struct call *c = (struct call *)((char *)w - offsetof(struct call, waiter));
    c->holds_slot = true;
    arm(c, PH_GRANTED, 0);
}

static void begin(struct call *c)
{
    const struct ag_pipeline *p = c->p;
    if (p->limiter) {
        uint64_t wait = 0;
        if (ag_gcra_acquire(p->limiter, 1, &wait)) {
            c->ctx.retry_after_ns = wait;
            ag__hook_rejected(p->hooks, p->name, AG_ERATE_LIMITED);
            finish(c, AG_ERATE_LIMITED);
            return;
        }
    }
    if (!p->bulkhead) {
        admitted(c);
        return;
    }
    c->waiter.granted = granted;
    int rc = ag__bulkhead_enqueue(p->bulkhead, &c->waiter);
    if (rc < 0) {
        finish(c, rc);
    } else if (rc == 0) {
        c->holds_slot = true;
        admitted(c);
    } else {
        uint64_t wait = ag__bulkhead_max_wait(p->bulkhead);
        if (c->deadline) {
            uint64_t now = ag_clock_mono(ag__resil_clock(p->env.clock));
            uint64_t left = c->deadline > now ? c->deadline - now : 0;
            if (!wait || left < wait) wait = left;
        }
        c->phase = PH_QUEUED;
        if (wait) arm(c, PH_QUEUED, wait);
    }
}

static void queue_timed_out(struct call *c)
{
    if (!ag__bulkhead_cancel(c->p->bulkhead, &c->waiter)) return; /* granted meanwhile */
    ag__hook_rejected(ag__bulkhead_hooks(c->p->bulkhead), ag__bulkhead_name(c->p->bulkhead),
                      AG_EBULKHEAD_FULL);
    finish(c, AG_EBULKHEAD_FULL);
}

static void on_timer(struct ag_resil_timer *t)
{
    struct call *c = (struct call *)((char *)t - offsetof(struct call, timer));
    c->refs++; /* callbacks below may drop the last other reference */
    switch (c->phase) {
    case PH_BEGIN:
        begin(c);
        break;
    case PH_QUEUED:
        queue_timed_out(c);
        break;
    case PH_GRANTED:
        admitted(c);
        break;
    case PH_ATTEMPT:
        if (c->cur) attempt_timed_out(c);
        break;
    case PH_BACKOFF:
        start_attempt(c);
        break;
    case PH_DONE:
        break;
    }
    call_unref(c);
}

int ag_pipeline_start(const struct ag_pipeline *p, struct ag_resil_timers *timers,
                      const struct ag_resil_async_op *op, const struct ag_resil_ctx *ctx,
                      ag_resil_done_fn done, void *done_arg)
{
    struct call *c = ag_calloc(1, sizeof *c);
    if (!c) return AG_ENOMEM;
    c->p = p;
    c->timers = timers;
    c->op = *op;
    c->ctx = *ctx;
    c->ctx.retry_after_ns = 0;
    c->done = done;
    c->done_arg = done_arg;
    c->deadline = ag__resil_overall_deadline(p, ctx);
    c->timer.cb = on_timer;
    c->refs = 1;
    c->phase = PH_BEGIN;
    int rc = timers->start(timers->ctx, &c->timer, 0);
    if (rc) {
        timers->release(timers->ctx, &c->timer, call_free, c);
        return rc;
    }
    return 0;
}

/* ---- libuv timers ---- */

struct uv_timers {
    struct ag_resil_timers ops; /* first: handed out as the public struct */
    uv_loop_t *loop;            /* borrowed */
};

struct uv_slot {
    uv_timer_t handle;       /* handle.data = the ag_resil_timer */
    void (*done)(void *arg); /* release continuation */
    void *done_arg;
};

static void uvt_fire(uv_timer_t *h)
{
    ((struct ag_resil_timer *)h->data)->cb(h->data);
}

static int uvt_start(void *ctx, struct ag_resil_timer *t, uint64_t delay_ns)
{
    struct uv_timers *ut = ctx;
    struct uv_slot *s = t->impl;
    if (!s) {
        s = ag_calloc(1, sizeof *s);
        if (!s) return AG_ENOMEM;
        uv_timer_init(ut->loop, &s->handle);
        s->handle.data = t;
        t->impl = s;
    }
    uint64_t ms = delay_ns / 1000000ull + (delay_ns % 1000000ull != 0);
    return uv_timer_start(&s->handle, uvt_fire, ms, 0) ? AG_EINVAL : 0;
}

static void uvt_stop(void *ctx, struct ag_resil_timer *t)
{
    AG_UNUSED(ctx);
    if (t->impl) uv_timer_stop(&((struct uv_slot *)t->impl)->handle);
}

static void uvt_closed(uv_handle_t *h)
{
    struct uv_slot *s = (struct uv_slot *)h;
    if (s->done) s->done(s->done_arg);
    ag_free(s);
}

static void uvt_release(void *ctx, struct ag_resil_timer *t, void (*done)(void *arg), void *arg)
{
    AG_UNUSED(ctx);
    struct uv_slot *s = t->impl;
    if (!s) {
        if (done) done(arg);
        return;
    }
    t->impl = NULL;
    s->done = done;
    s->done_arg = arg;
    uv_close((uv_handle_t *)&s->handle, uvt_closed);
}

int ag_resil_timers_uv_new(struct uv_loop_s *loop, struct ag_resil_timers **out)
{
    struct uv_timers *ut = ag_calloc(1, sizeof *ut);
    if (!ut) return AG_ENOMEM;
    ut->loop = loop;
    ut->ops.start = uvt_start;
    ut->ops.stop = uvt_stop;
    ut->ops.release = uvt_release;
    ut->ops.ctx = ut;
    *out = &ut->ops;
    return 0;
}

void ag_resil_timers_uv_free(struct ag_resil_timers *t)
{
    ag_free(t);
}
