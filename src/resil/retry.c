/*
 * Retry: backoff schedules with jitter, the default retryable predicate, and the
 * retry budget.
 *
 * Delays follow the AWS Architecture Blog's "Exponential Backoff And Jitter":
 * the un-jittered delay d(attempt) is base (constant), base * attempt (linear) or
 * base * multiplier^(attempt-1) (exponential), always capped at cap. Jitter then
 * draws from [0, d] (full), [d/2, d] (equal) or, for decorrelated jitter,
 * [base, 3 * previous] capped at cap, which ignores d altogether.
 *
 * Retry budget (Finagle's RetryBudget, Envoy's retry_budget): requests and
 * retries are counted in a ring of 10 time buckets covering `ttl`; a retry is
 * allowed while  retries + 1 <= min_per_sec * ttl_s + ratio * requests.  In a
 * sustained outage this caps the extra load retries add at `ratio` plus a small
 * constant, whatever max_attempts says. Counters are guarded by a mutex: the
 * budget is touched once per request and once per retry, never per byte.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "resil/internal.h"

/* ---- delays ---- */

bool ag_retry_default_retryable(void *ctx, int rc)
{
    AG_UNUSED(ctx);
    switch (rc) {
    case AG_ETIMEDOUT:
    case AG_ECONNECT:
    case AG_ERESET:
    case AG_EUPSTREAM:
    case AG_EAGAIN:
    case AG_EIO:
    case AG_ERATE_LIMITED:
    case AG_EPOOL_TIMEOUT:
        return true;
    default:
        return false;
    }
}

/* Un-jittered delay before the retry that follows failed attempt `attempt`. */
static uint64_t backoff(const struct ag_retry_config *c, unsigned attempt, uint64_t base,
                        uint64_t cap)
{
    double d;
    switch (c->backoff) {
    case AG_BACKOFF_CONSTANT:
        d = (double)base;
        break;
    case AG_BACKOFF_LINEAR:
        d = (double)base * attempt;
        break;
    default:
        d = (double)base * pow(c->multiplier > 0 ? c->multiplier : 2.0, (double)(attempt - 1));
        break;
    }
    return d >= (double)cap ? cap : (uint64_t)d;
}

/* Uniform in [lo, hi]. */
static uint64_t uniform(const struct ag_rng *rng, uint64_t lo, uint64_t hi)
{
    if (hi <= lo) return lo;
    uint64_t span = hi - lo;
    return lo + (span == UINT64_MAX ? ag_rng_next(rng) : ag_rng_below(rng, span + 1));
}

uint64_t ag_retry_delay(const struct ag_retry_config *cfg, unsigned attempt, uint64_t prev_ns,
                        const struct ag_rng *rng)
{
    uint64_t base = cfg->base_ns ? cfg->base_ns : 100 * 1000000ull;
    uint64_t cap = cfg->cap_ns ? cfg->cap_ns : 10 * 1000000000ull;
    if (base > cap) base = cap;
    if (attempt == 0) attempt = 1;
    rng = ag__resil_rng(rng);
    uint64_t d = backoff(cfg, attempt, base, cap);
    switch (cfg->jitter) {
    case AG_JITTER_FULL:
        return uniform(rng, 0, d);
    case AG_JITTER_EQUAL:
        return d / 2 + uniform(rng, 0, d - d / 2);
    case AG_JITTER_DECORRELATED: {
        uint64_t prev = prev_ns ? prev_ns : base;
        uint64_t hi = prev > cap / 3 ? cap : prev * 3;
        return uniform(rng, base, hi);
    }
    default:
        return d;
    }
}

/* ---- retry budget ---- */

#define BUDGET_BUCKETS 10

struct budget_bucket {
    uint64_t idx;      /* time index (now / width) this bucket counts */
    uint64_t requests; /* deposits */
    uint64_t retries;  /* withdrawals */
};

struct ag_retry_budget {
    pthread_mutex_t lock;                         /* guards the buckets and totals */
    struct budget_bucket buckets[BUDGET_BUCKETS]; /* ring over ttl */
    uint64_t width_ns;                            /* ttl / BUDGET_BUCKETS */
    uint64_t last_idx;                            /* newest bucket index */
    uint64_t requests, retries;                   /* totals over the ring */
    double reserve;                               /* min_per_sec * ttl in seconds */
    double ratio;                                 /* retries per request */
    const struct ag_clock *clock;                 /* borrowed */
};

int ag_retry_budget_new(const struct ag_retry_budget_config *cfg, struct ag_retry_budget **out)
{
    if (cfg->ratio < 0 || cfg->ratio > 1000) return AG_EINVAL;
    struct ag_retry_budget *b = ag_calloc(1, sizeof *b);
    if (!b) return AG_ENOMEM;
    if (pthread_mutex_init(&b->lock, NULL)) {
        ag_free(b);
        return AG_ENOMEM;
    }
    uint64_t ttl = cfg->ttl_ns ? cfg->ttl_ns : 10 * 1000000000ull;
    b->width_ns = ttl / BUDGET_BUCKETS ? ttl / BUDGET_BUCKETS : 1;
    b->reserve = (double)cfg->min_per_sec * (double)ttl / 1e9;
    b->ratio = cfg->ratio;
    b->clock = ag__resil_clock(cfg->clock);
    *out = b;
    return 0;
}

void ag_retry_budget_free(struct ag_retry_budget *b)
{
    if (!b) return;
    pthread_mutex_destroy(&b->lock);
    ag_free(b);
}

/* Expire buckets older than the window; returns the current bucket. */
static struct budget_bucket *budget_advance(struct ag_retry_budget *b)
{
    uint64_t idx = ag_clock_mono(b->clock) / b->width_ns;
    if (idx > b->last_idx) {
        uint64_t n = idx - b->last_idx;
        if (n > BUDGET_BUCKETS) n = BUDGET_BUCKETS;
        for (uint64_t i = 1; i <= n; i++) {
            struct budget_bucket *k = &b->buckets[(b->last_idx + i) % BUDGET_BUCKETS];
            b->requests -= k->requests;
            b->retries -= k->retries;
            k->requests = k->retries = 0;
            k->idx = b->last_idx + i;
        }
        b->last_idx = idx;
    }
    return &b->buckets[b->last_idx % BUDGET_BUCKETS];
}

static double budget_left(const struct ag_retry_budget *b)
{
    return b->reserve + b->ratio * (double)b->requests - (double)b->retries;
}

void ag_retry_budget_deposit(struct ag_retry_budget *b)
{
    pthread_mutex_lock(&b->lock);
    budget_advance(b)->requests++;
    b->requests++;
    pthread_mutex_unlock(&b->lock);
}

bool ag_retry_budget_withdraw(struct ag_retry_budget *b)
{
    pthread_mutex_lock(&b->lock);
    struct budget_bucket *k = budget_advance(b);
    bool ok = budget_left(b) >= 1.0;
    if (ok) {
        k->retries++;
        b->retries++;
    }
    pthread_mutex_unlock(&b->lock);
    return ok;
}

uint64_t ag_retry_budget_balance(struct ag_retry_budget *b)
{
    pthread_mutex_lock(&b->lock);
    budget_advance(b);
    double left = budget_left(b);
    pthread_mutex_unlock(&b->lock);
    return left >= 1.0 ? (uint64_t)left : 0;
}
