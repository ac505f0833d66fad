/*
 * agora resilience policies: circuit breaker, retry (backoff + jitter + retry
 * budget), bulkhead, timeout (deadlines), fallback and rate limiters (GCRA, token
 * bucket, keyed with bounded memory), composed into a per-dependency pipeline
 *
 *     fallback(bulkhead(circuit(retry(timeout(op)))))
 *
 * that runs synchronously on a worker thread (ag_pipeline_run) or asynchronously on
 * a libuv loop (ag_pipeline_start; timers, never sleeping).
 *
 * Time and randomness are injected: every object takes a `struct ag_clock` (NULL =
 * the system clock) and, where it needs one, a `struct ag_rng` (NULL = the system
 * RNG). All durations are nanoseconds; all instants are the clock's monotonic ns.
 *
 * Ownership: `*_new` functions return an owned object the caller frees with the
 * matching `*_free`. Config structs are copied at creation, except pointers marked
 * "borrowed", which must outlive the object. Breakers, limiters, budgets and
 * bulkheads are thread-safe and meant to be shared by every caller of one
 * dependency; a pipeline is an immutable description and may be shared too.
 *
 * Metrics: policies report through `struct ag_resil_hooks` (a table of optional
 * callbacks) so that any metrics registry can be plugged in; this module never
 * depends on one.
 */
#ifndef AGORA_RESIL_H
#define AGORA_RESIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/base.h"

/* ---- shared vocabulary ---- */

/* How one call ended, as seen by the policies (and reported to hooks). */
enum ag_resil_outcome {
    AG_RESIL_SUCCESS,  /* the dependency answered well */
    AG_RESIL_FAILURE,  /* the dependency failed (counts against its health) */
    AG_RESIL_IGNORED,  /* neither: e.g. canceled by the caller */
    AG_RESIL_REJECTED, /* a policy refused the call before it was made */
    AG_RESIL_TIMEOUT,  /* the deadline passed */
    AG_RESIL_FALLBACK, /* the call failed and a fallback answered */
};

/* Circuit breaker states. */
enum ag_cb_state {
    AG_CB_CLOSED,      /* calls flow; outcomes are counted */
    AG_CB_OPEN,        /* calls are rejected until the open duration ends */
    AG_CB_HALF_OPEN,   /* a bounded number of probe calls decide close or reopen */
    AG_CB_DISABLED,    /* always admits, counts nothing (manual) */
    AG_CB_FORCED_OPEN, /* always rejects (manual) */
};

/* Optional metrics callbacks; any member may be NULL. Called synchronously on the
 * thread that caused the event; they must be quick and must not call back into
 * the object that reported them. `name` is the policy's name (borrowed). */
struct ag_resil_hooks {
    /* breaker state gauge: a transition happened */
    void (*state_change)(void *ctx, const char *name, enum ag_cb_state from, enum ag_cb_state to);
    /* one call finished with this outcome (breaker records, pipeline results) */
    void (*call)(void *ctx, const char *name, enum ag_resil_outcome outcome);
    /* a policy rejected a call; `code` is AG_ECIRCUIT_OPEN, AG_EBULKHEAD_FULL, ... */
    void (*rejected)(void *ctx, const char *name, int code);
    /* a retry is scheduled: `attempt` is the attempt about to run (2 = first retry) */
    void (*retry)(void *ctx, const char *name, unsigned attempt, uint64_t delay_ns);
    void *ctx; /* passed back to every callback */
};

/* The call context handed to an operation and to everything it calls: the deadline
 * to honour (and pass down), the attempt number, and the slots through which the
 * operation reports a result and a server's Retry-After hint. */
struct ag_resil_ctx {
    uint64_t deadline_ns;    /* absolute mono deadline for this attempt; 0 = none */
    unsigned attempt;        /* 1-based attempt number */
    uint64_t retry_after_ns; /* OUT (set by the op): server asked to wait this long */
    void *result;            /* caller's result buffer (borrowed), may be NULL */
    size_t result_size;      /* its size in bytes */
    struct ag_err *err;      /* where the op may describe its failure; may be NULL */
};

/* Time left before ctx's deadline on `clock` (NULL = system); UINT64_MAX when there
 * is no deadline, 0 when it has passed. */
AG_EXTERN uint64_t ag_resil_remaining(const struct ag_resil_ctx *ctx, const struct ag_clock *clock);
/* A child context for an inner call: same result slots, deadline = the earlier of
 * the parent's and now + timeout_ns (timeout_ns 0 = inherit). */
AG_EXTERN void ag_resil_ctx_child(const struct ag_resil_ctx *parent, const struct ag_clock *clock,
                                  uint64_t timeout_ns, struct ag_resil_ctx *child /* OUT */);

/* ---- circuit breaker ---- */

enum ag_cb_window_type {
    AG_CB_WINDOW_NONE,  /* no rate rules */
    AG_CB_WINDOW_COUNT, /* the last `window_size` calls */
    AG_CB_WINDOW_TIME,  /* calls in the last `window_ns`, in `window_buckets` buckets */
};

/* Decide how a call's return code counts. */
typedef enum ag_resil_outcome (*ag_cb_classify_fn)(void *ctx, int rc);
/* Open duration for the n-th consecutive opening (n >= 1). */
typedef uint64_t (*ag_cb_interval_fn)(void *ctx, uint32_t n);

struct ag_cb_config {
    const char *name; /* copied; names the breaker in hooks and errors */
    /* trip rules (any combination; a zero turns a rule off) */
    uint32_t failure_threshold; /* consecutive failures that open (seeds' failureThreshold) */
    enum ag_cb_window_type window_type;
    uint32_t window_size;      /* COUNT window: number of calls */
    uint64_t window_ns;        /* TIME window: length */
    uint32_t window_buckets;   /* TIME window: buckets (default 10, max 1024) */
    uint32_t min_calls;        /* rate rules wait for this many calls in the window */
    uint32_t failure_rate_pct; /* open when failures/calls >= pct (1..100) */
    uint32_t slow_rate_pct;    /* open when slow/calls >= pct (1..100) */
    uint64_t slow_call_ns;     /* a call at least this long is slow */
    uint32_t burst_failures;   /* open after this many failures ... */
    uint64_t burst_window_ns;  /* ... within this much time (exact, not bucketed) */
    /* half-open */
    uint32_t half_open_permits; /* probes admitted (default 1, max 32767) */
    uint32_t success_threshold; /* successes that close (default = permits) */
    uint64_t half_open_max_ns;  /* reopen when stuck longer (default = open_ns) */
    /* open duration: open_ns * multiplier^(n-1) capped by open_max_ns, or a function */
    uint64_t open_ns;                /* default 60 s */
    double open_multiplier;          /* <= 1: fixed */
    uint64_t open_max_ns;            /* cap for growth; 0 = no cap */
    ag_cb_interval_fn open_interval; /* overrides the three above when set */
    void *open_interval_ctx;
    /* which return codes count (default ag_cb_classify_default) */
    ag_cb_classify_fn classify;
    void *classify_ctx;
    const struct ag_clock *clock;       /* borrowed; NULL = system */
    const struct ag_resil_hooks *hooks; /* borrowed; NULL = none */
};

/* What allow hands out and record takes back. Plain data: copy freely. */
struct ag_cb_permit {
    uint64_t word;     /* the breaker's state word at admission (state + epoch) */
    uint64_t start_ns; /* admission time when the breaker measures durations, else 0 */
};

struct ag_cb;

/* The default classifier: 0 is a success; answers that prove the dependency is up
 * (AG_EINVAL, AG_ENOTFOUND, AG_EEXISTS, AG_ECONFLICT, AG_EIDEMPOTENCY, AG_EDOMAIN)
 * are successes; AG_ECANCELED and rejections by other policies (AG_ECIRCUIT_OPEN,
 * AG_EBULKHEAD_FULL, AG_ERATE_LIMITED) are ignored; everything else is a failure. */
AG_EXTERN enum ag_resil_outcome ag_cb_classify_default(void *ctx, int rc);

/* Create a breaker (owned; ag_cb_free). AG_EINVAL/AG_ENOMEM with `err` filled. */
AG_EXTERN int ag_cb_new(const struct ag_cb_config *cfg, struct ag_cb **out /* OUT */,
                        struct ag_err *err);
AG_EXTERN void ag_cb_free(struct ag_cb *cb);

/* Ask to make a call. 0 with a permit to pass to ag_cb_record, or AG_ECIRCUIT_OPEN
 * with err->aux (and *wait_ns when not NULL) = ns until the next probe may be
 * admitted (UINT64_MAX when FORCED_OPEN). Lock-free except at state transitions. */
AG_EXTERN int ag_cb_allow(struct ag_cb *cb, struct ag_cb_permit *permit /* OUT */,
                          uint64_t *wait_ns /* OUT, may be NULL */, struct ag_err *err);
/* Report how the admitted call ended (`rc` goes through the classifier). Every
 * permit must be recorded exactly once; results admitted under an earlier state
 * (before a transition) are not counted. */
AG_EXTERN void ag_cb_record(struct ag_cb *cb, const struct ag_cb_permit *permit, int rc);
/* Current state (a snapshot). */
AG_EXTERN enum ag_cb_state ag_cb_state(struct ag_cb *cb);
/* Manual transition: to DISABLED or FORCED_OPEN to pin it, to CLOSED to reset, or
 * to OPEN / HALF_OPEN. Fires the state-change hook. */
AG_EXTERN int ag_cb_transition(struct ag_cb *cb, enum ag_cb_state to);
AG_EXTERN const char *ag_cb_state_name(enum ag_cb_state s);
AG_EXTERN const char *ag_cb_name(const struct ag_cb *cb); /* borrowed */

/* Counters of the current closed-state window (for /admin/circuit-breakers). */
struct ag_cb_stats {
    enum ag_cb_state state;
    uint32_t consecutive_failures;
    uint64_t window_calls, window_failures, window_slow;
    uint32_t half_open_admitted, half_open_successes;
    uint32_t times_opened; /* consecutive openings since last closed */
};
AG_EXTERN void ag_cb_stats(struct ag_cb *cb, struct ag_cb_stats *out /* OUT */);

/* ---- rate limiters ---- */

/* `limit` requests per `period_ns`, with bursts of up to `burst` (>= 1) at once.
 * Over any interval t the limiter admits at most burst + t * limit / period. */
struct ag_rate {
    uint64_t limit;
    uint64_t period_ns;
    uint32_t burst;
};

/* GCRA on one 64-bit theoretical arrival time, updated by a CAS loop: lock-free,
 * exact under concurrency. Embed it; no allocation. */
struct ag_gcra {
    _Alignas(64) _Atomic uint64_t tat; /* theoretical arrival time (mono ns) */
    uint64_t interval_ns;              /* emission interval T = ceil(period / limit) */
    uint64_t tolerance_ns;             /* burst * T: how far tat may run ahead of now */
    uint32_t burst;                    /* largest single acquire */
    const struct ag_clock *clock;      /* borrowed */
};
AG_EXTERN int ag_gcra_init(struct ag_gcra *g, const struct ag_rate *rate,
                           const struct ag_clock *clock);
/* Take `n` (1..burst) units now. 0, or AG_ERATE_LIMITED with *wait_ns = how long
 * until the same request would be admitted (for Retry-After). */
AG_EXTERN int ag_gcra_acquire(struct ag_gcra *g, uint32_t n,
                              uint64_t *wait_ns /* OUT, may be NULL */);

/* A token bucket: capacity `burst` tokens, refilled continuously at limit/period.
 * Guarded by a mutex (two words of state); exact under concurrency. */
struct ag_tbucket;
AG_EXTERN int ag_tbucket_new(const struct ag_rate *rate, const struct ag_clock *clock,
                             struct ag_tbucket **out /* OUT */);
AG_EXTERN void ag_tbucket_free(struct ag_tbucket *tb);
AG_EXTERN int ag_tbucket_acquire(struct ag_tbucket *tb, uint32_t n, uint64_t *wait_ns /* OUT */);
/* Tokens available now (rounded down). */
AG_EXTERN uint64_t ag_tbucket_available(struct ag_tbucket *tb);

enum ag_rl_algo { AG_RL_GCRA, AG_RL_TOKEN_BUCKET };

struct ag_ratelimit_config {
    enum ag_rl_algo algo;
    struct ag_rate rate;          /* per key */
    uint32_t max_keys;            /* memory bound (default 65536); preallocated */
    uint32_t shards;              /* lock stripes (default 16, power of two) */
    const struct ag_clock *clock; /* borrowed; NULL = system */
};

/* A keyed limiter (client id, API key, IP...). Keys are identified by a seeded
 * 64-bit XXH3 of their bytes. A key whose state is back at rest (GCRA: tat <= now;
 * bucket: full) is idle and evicted first when its shard needs room: evicting it
 * loses nothing. When a shard is full of busy keys a new key is rejected with
 * AG_ERATE_LIMITED (fail closed) rather than forgetting another key's debt. */
struct ag_ratelimit;
AG_EXTERN int ag_ratelimit_new(const struct ag_ratelimit_config *cfg,
                               struct ag_ratelimit **out /* OUT */, struct ag_err *err);
AG_EXTERN void ag_ratelimit_free(struct ag_ratelimit *rl);
AG_EXTERN int ag_ratelimit_acquire(struct ag_ratelimit *rl, const void *key, size_t key_len,
                                   uint32_t n, uint64_t *wait_ns /* OUT, may be NULL */);
/* Keys currently held. */
AG_EXTERN size_t ag_ratelimit_keys(struct ag_ratelimit *rl);

/* ---- retry ---- */

enum ag_backoff { AG_BACKOFF_CONSTANT, AG_BACKOFF_LINEAR, AG_BACKOFF_EXPONENTIAL };
/* AWS Architecture Blog, "Exponential Backoff And Jitter" (2015):
 * NONE: d; FULL: rand(0, d); EQUAL: d/2 + rand(0, d/2);
 * DECORRELATED: min(cap, rand(base, prev * 3)), prev starting at base. */
enum ag_jitter { AG_JITTER_NONE, AG_JITTER_FULL, AG_JITTER_EQUAL, AG_JITTER_DECORRELATED };

/* Decide whether a failed attempt may be retried. */
typedef bool (*ag_retry_pred_fn)(void *ctx, int rc);

struct ag_retry_budget;

struct ag_retry_config {
    unsigned max_attempts;   /* total attempts including the first; 0 or 1 = no retry */
    enum ag_backoff backoff; /* how the un-jittered delay grows */
    uint64_t base_ns;        /* first delay (default 100 ms) */
    uint64_t cap_ns;         /* never wait longer (default 10 s) */
    double multiplier;       /* EXPONENTIAL growth factor (default 2) */
    enum ag_jitter jitter;
    ag_retry_pred_fn retryable; /* NULL = ag_retry_default_retryable */
    void *retryable_ctx;
    bool honor_retry_after;         /* wait at least the op's retry_after_ns hint */
    uint64_t max_retry_after_ns;    /* a longer hint ends retrying (0 = cap_ns) */
    struct ag_retry_budget *budget; /* borrowed, shared per dependency; NULL = none */
};

/* Default predicate: retry timeouts, connection and upstream errors, AG_EAGAIN,
 * AG_EIO, AG_ERATE_LIMITED and AG_EPOOL_TIMEOUT; never business errors. */
AG_EXTERN bool ag_retry_default_retryable(void *ctx, int rc);
/* The delay before attempt `attempt` + 1 (attempt >= 1 is the one that just
 * failed); `prev_ns` is the previous delay (decorrelated jitter), 0 at first. */
AG_EXTERN uint64_t ag_retry_delay(const struct ag_retry_config *cfg, unsigned attempt,
                                  uint64_t prev_ns, const struct ag_rng *rng);

/* A retry budget (Finagle RetryBudget / Envoy retry budgets): over a sliding `ttl`,
 * retries may not exceed ratio * requests + min_per_sec * ttl seconds. */
struct ag_retry_budget_config {
    double ratio;                 /* retries allowed per request (e.g. 0.2) */
    uint32_t min_per_sec;         /* floor so low-traffic callers can still retry */
    uint64_t ttl_ns;              /* window (default 10 s) */
    const struct ag_clock *clock; /* borrowed; NULL = system */
};
AG_EXTERN int ag_retry_budget_new(const struct ag_retry_budget_config *cfg,
                                  struct ag_retry_budget **out /* OUT */);
AG_EXTERN void ag_retry_budget_free(struct ag_retry_budget *b);
/* Count one original request (done once per call by the retry policy). */
AG_EXTERN void ag_retry_budget_deposit(struct ag_retry_budget *b);
/* Take one retry; false when the budget is spent. */
AG_EXTERN bool ag_retry_budget_withdraw(struct ag_retry_budget *b);
/* Retries available now (floor). */
AG_EXTERN uint64_t ag_retry_budget_balance(struct ag_retry_budget *b);

/* ---- bulkhead ---- */

struct ag_bulkhead_config {
    const char *name;                   /* copied */
    uint32_t max_concurrent;            /* calls running at once (>= 1) */
    uint32_t max_queue;                 /* calls allowed to wait for a slot (0 = none) */
    uint64_t max_wait_ns;               /* longest wait in the queue (0 with a queue = forever) */
    const struct ag_clock *clock;       /* borrowed; NULL = system */
    const struct ag_resil_hooks *hooks; /* borrowed; NULL = none */
};
struct ag_bulkhead;
AG_EXTERN int ag_bulkhead_new(const struct ag_bulkhead_config *cfg,
                              struct ag_bulkhead **out /* OUT */, struct ag_err *err);
AG_EXTERN void ag_bulkhead_free(struct ag_bulkhead *bh);
/* Take a slot, waiting in the FIFO queue (blocking this thread) up to max_wait or
 * `deadline_ns` (absolute mono, 0 = none), whichever is first. AG_EBULKHEAD_FULL
 * when the queue is full or the wait ran out. */
AG_EXTERN int ag_bulkhead_acquire(struct ag_bulkhead *bh, uint64_t deadline_ns, struct ag_err *err);
/* Take a slot only if one is free now. */
AG_EXTERN int ag_bulkhead_try_acquire(struct ag_bulkhead *bh);
AG_EXTERN void ag_bulkhead_release(struct ag_bulkhead *bh);
/* Wake blocked waiters so they re-read the (possibly fake) clock. */
AG_EXTERN void ag_bulkhead_wake(struct ag_bulkhead *bh);
struct ag_bulkhead_stats {
    uint32_t active;  /* slots in use */
    uint32_t waiting; /* callers queued */
};
AG_EXTERN void ag_bulkhead_stats(struct ag_bulkhead *bh, struct ag_bulkhead_stats *out /* OUT */);

/* ---- fallback ---- */

/* Which failures a fallback answers, as a bit set. */
enum ag_fallback_on {
    AG_FALLBACK_ON_REJECTED = 1 << 0, /* circuit open, bulkhead full, rate limited */
    AG_FALLBACK_ON_TIMEOUT = 1 << 1,  /* AG_ETIMEDOUT */
    AG_FALLBACK_ON_FAILURE = 1 << 2,  /* any other error */
};
/* Produce a fallback answer into ctx->result; return 0 or an error. */
typedef int (*ag_fallback_fn)(void *ctx, int rc, struct ag_resil_ctx *call);
struct ag_fallback {
    unsigned on;       /* enum ag_fallback_on bits; 0 = no fallback */
    ag_fallback_fn fn; /* used when set ... */
    void *fn_ctx;
    const void *value; /* ... else this static value is copied into ctx->result */
    size_t value_size; /* must equal ctx->result_size */
};

/* ---- pipeline ---- */

/* A synchronous operation: do the work, honour ctx->deadline_ns, return 0 or AG_E*. */
typedef int (*ag_resil_op_fn)(void *arg, struct ag_resil_ctx *ctx);

/* The environment a pipeline runs in. `sleep` is used by the synchronous variant
 * between retries (NULL = nanosleep); tests pass one that advances a fake clock. */
struct ag_resil_env {
    const struct ag_clock *clock; /* borrowed; NULL = system */
    const struct ag_rng *rng;     /* borrowed; NULL = system */
    void (*sleep)(void *ctx, uint64_t ns);
    void *sleep_ctx;
};

/* fallback(ratelimit(bulkhead(circuit(retry(timeout(op)))))) for one dependency.
 * Every policy is optional (NULL / zero = skipped); shared objects are borrowed. */
struct ag_pipeline {
    const char *name;             /* borrowed; names the dependency in hooks */
    struct ag_fallback fallback;  /* outermost */
    struct ag_gcra *limiter;      /* borrowed; rejects with AG_ERATE_LIMITED */
    struct ag_bulkhead *bulkhead; /* borrowed */
    struct ag_cb *breaker;        /* borrowed; sees the result after retries */
    struct ag_retry_config retry; /* max_attempts <= 1 = no retry */
    uint64_t attempt_timeout_ns;  /* per attempt; 0 = none */
    uint64_t overall_timeout_ns;  /* whole call including retries; 0 = none */
    struct ag_resil_env env;
    const struct ag_resil_hooks *hooks; /* borrowed; retries, rejections, outcomes */
};

/* Run `op` through the pipeline on this thread. `ctx` is the caller's context:
 * its deadline (if any) bounds the whole call, its result slots are passed to op.
 * Timeouts are cooperative: op gets the attempt deadline in its ctx and must honour
 * it; an attempt that returns an error after its deadline counts as AG_ETIMEDOUT. */
AG_EXTERN int ag_pipeline_run(const struct ag_pipeline *p, ag_resil_op_fn op, void *arg,
                              struct ag_resil_ctx *ctx);

/* ---- asynchronous pipeline (libuv) ---- */

/* Timers the async pipeline runs on. ag_resil_timers_uv() gives real libuv timers;
 * tests plug in their own (driven by a fake clock). */
struct ag_resil_timer {
    void (*cb)(struct ag_resil_timer *t); /* called once when the timer fires */
    void *impl;                           /* owned by the timers implementation */
};
struct ag_resil_timers {
    /* (Re)arm `t` to fire after `delay_ns`. 0 or AG_E*. */
    int (*start)(void *ctx, struct ag_resil_timer *t, uint64_t delay_ns);
    void (*stop)(void *ctx, struct ag_resil_timer *t);
    /* Stop and free what `impl` holds; `done(arg)` runs once the memory of `t` may
     * be reused (libuv: after close_cb). */
    void (*release)(void *ctx, struct ag_resil_timer *t, void (*done)(void *arg), void *arg);
    void *ctx;
};
struct uv_loop_s;
/* Timers on a libuv loop (owned; free with ag_resil_timers_uv_free after every
 * call using them has completed and the loop has run their close callbacks). */
AG_EXTERN int ag_resil_timers_uv_new(struct uv_loop_s *loop,
                                     struct ag_resil_timers **out /* OUT */);
AG_EXTERN void ag_resil_timers_uv_free(struct ag_resil_timers *t);

struct ag_resil_attempt;
/* An asynchronous operation: start the work and, exactly once per start, call
 * ag_resil_attempt_done(a, rc) — also after a cancel. */
struct ag_resil_async_op {
    void (*start)(void *arg, struct ag_resil_attempt *a);
    /* Optional: the attempt timed out or the call ended; stop early if possible. */
    void (*cancel)(void *arg, struct ag_resil_attempt *a);
    void *arg;
};
/* The attempt's context (deadline, result slots, retry-after hint). Borrowed. */
AG_EXTERN struct ag_resil_ctx *ag_resil_attempt_ctx(struct ag_resil_attempt *a);
AG_EXTERN void ag_resil_attempt_done(struct ag_resil_attempt *a, int rc);

/* Called once with the final result. */
typedef void (*ag_resil_done_fn)(void *arg, int rc, struct ag_resil_ctx *ctx);

/* Start `op` through the pipeline on the loop thread that owns `timers`. `ctx` is
 * copied (its result buffer is borrowed until `done` runs). The bulkhead, if any,
 * queues the call without blocking. `done` runs on the loop, never from inside
 * this call. 0, or AG_ENOMEM (then `done` is not called). */
AG_EXTERN int ag_pipeline_start(const struct ag_pipeline *p, struct ag_resil_timers *timers,
                                const struct ag_resil_async_op *op, const struct ag_resil_ctx *ctx,
                                ag_resil_done_fn done, void *done_arg);

#endif
