/*
 * Circuit breaker.
 *
 * State word. Everything a caller needs to be admitted lives in one 64-bit atomic:
 *
 *     bits  0..2   state (enum ag_cb_state)
 *     bits  3..17  half-open probes admitted in this epoch
 *     bits 18..32  half-open successes recorded in this epoch
 *     bits 33..63  epoch: +1 on every transition
 *
 * ag_cb_allow is one acquire load in CLOSED/DISABLED; in HALF_OPEN a CAS that bumps
 * the admitted count only while it is below the permitted number, so concurrent
 * callers can never be admitted beyond it. The OPEN -> HALF_OPEN edge is a
 * transition whose new word already counts the caller that made it as the first
 * probe, so the edge cannot over-admit either.
 *
 * Transitions (rare) take `lock`, re-check that the word still shows the state and
 * epoch they were decided on, write the side data (`until_ns`, windows) and then
 * publish the new word with a release CAS; readers load the word (acquire) before
 * the side data and re-check it afterwards. A permit carries the word it was
 * admitted under: results from an older epoch are not counted, so a slow call
 * admitted while CLOSED cannot close or reopen a breaker that has moved on.
 *
 * One benign race remains at the OPEN -> HALF_OPEN edge: a caller that read
 * until_ns just as the edge was being made may see the new half-open deadline and
 * be rejected with a too-long wait; it is never admitted beyond the permits.
 *
 * Trip rules in CLOSED: the consecutive-failure counter is a lone atomic (the
 * fast path when it is the only rule). Window rules run under `lock`: a
 * count-based ring of per-call outcome bytes, or a time-based ring of buckets,
 * both keeping running totals that are decremented as entries are evicted (O(1)
 * per call). "N failures within T" keeps the timestamps of the last N failures in
 * a ring: it trips when the oldest of them is within T of now (exact).
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "resil/internal.h"

/* ---- the state word ---- */

#define W_STATE_BITS  3
#define W_COUNT_BITS  15
#define W_COUNT_MAX   ((1u << W_COUNT_BITS) - 1)
#define W_ADM_SHIFT   W_STATE_BITS
#define W_SUC_SHIFT   (W_ADM_SHIFT + W_COUNT_BITS)
#define W_EPOCH_SHIFT (W_SUC_SHIFT + W_COUNT_BITS)

static inline enum ag_cb_state w_state(uint64_t w)
{
    return (enum ag_cb_state)(w & 7u);
}
static inline uint32_t w_admitted(uint64_t w)
{
    return (uint32_t)(w >> W_ADM_SHIFT) & W_COUNT_MAX;
}
static inline uint32_t w_successes(uint64_t w)
{
    return (uint32_t)(w >> W_SUC_SHIFT) & W_COUNT_MAX;
}
static inline uint64_t w_epoch(uint64_t w)
{
    return w >> W_EPOCH_SHIFT;
}
static inline uint64_t w_make(enum ag_cb_state s, uint64_t epoch, uint32_t adm, uint32_t suc)
{
    return (uint64_t)s | ((uint64_t)adm << W_ADM_SHIFT) | ((uint64_t)suc << W_SUC_SHIFT) |
           (epoch << W_EPOCH_SHIFT);
}
/* Same state and epoch: the counters may differ. */
static inline bool w_same_phase(uint64_t a, uint64_t b)
{
    return w_state(a) == w_state(b) && w_epoch(a) == w_epoch(b);
}

/* ---- windows ---- */

#define OUT_FAIL 1u
#define OUT_SLOW 2u

struct time_bucket {
    uint64_t idx;                   /* now / width when this bucket was (re)started */
    uint32_t calls, failures, slow; /* counts in this bucket */
};

struct window {
    enum ag_cb_window_type type;
    uint8_t *ring;                  /* COUNT: one OUT_* byte per call */
    struct time_bucket *buckets;    /* TIME: ring of buckets */
    uint32_t size;                  /* ring length (calls or buckets) */
    uint32_t head;                  /* COUNT: next slot to write */
    uint32_t filled;                /* COUNT: slots holding a call */
    uint64_t width_ns;              /* TIME: bucket width */
    uint64_t last_idx;              /* TIME: newest bucket index seen */
    uint64_t calls, failures, slow; /* running totals over the window */
};

struct ag_cb {
    _Alignas(64) _Atomic uint64_t word; /* see the design comment */
    _Atomic uint32_t consecutive;       /* consecutive failures in this closed epoch */
    _Atomic uint64_t until_ns;          /* OPEN: first probe time; HALF_OPEN: give-up time */
    _Alignas(64) pthread_mutex_t lock;  /* transitions and windows */
    struct window win;                  /* failure/slow-rate window (under lock) */
    uint64_t *burst_ring;               /* times of the last burst_failures failures */
    uint32_t burst_head, burst_filled;  /* ring cursor and fill (under lock) */
    uint32_t times_opened;              /* consecutive openings (under lock) */
    bool needs_lock;                    /* some window rule is on */
    bool timed;                         /* record needs call durations */
    struct ag_cb_config cfg;            /* copy, defaults applied */
    char *name;                         /* owned copy of cfg.name */
};

static void window_reset(struct window *w)
{
    if (w->ring) memset(w->ring, 0, w->size);
    if (w->buckets) memset(w->buckets, 0, sizeof *w->buckets * w->size);
    w->head = w->filled = 0;
    w->last_idx = 0;
    w->calls = w->failures = w->slow = 0;
}

static void totals_sub(struct window *w, uint32_t calls, uint32_t failures, uint32_t slow)
{
    w->calls -= calls;
    w->failures -= failures;
    w->slow -= slow;
}

static void window_add_count(struct window *w, unsigned out)
{
    if (w->filled == w->size) {
        unsigned old = w->ring[w->head];
        totals_sub(w, 1, !!(old & OUT_FAIL), !!(old & OUT_SLOW));
    } else {
        w->filled++;
    }
    w->ring[w->head] = (uint8_t)out;
    w->head = (w->head + 1) % w->size;
}

/* Drop buckets that fell out of the window before writing into bucket `idx`. */
static void window_advance_time(struct window *w, uint64_t idx)
{
    if (idx <= w->last_idx) return;
    uint64_t n = idx - w->last_idx;
    if (n > w->size) n = w->size;
    for (uint64_t i = 1; i <= n; i++) {
        struct time_bucket *b = &w->buckets[(w->last_idx + i) % w->size];
        totals_sub(w, b->calls, b->failures, b->slow);
        memset(b, 0, sizeof *b);
        b->idx = w->last_idx + i;
    }
    w->last_idx = idx;
}

static void window_add_time(struct window *w, unsigned out, uint64_t now)
{
    uint64_t idx = now / w->width_ns;
    window_advance_time(w, idx);
    /* a clock that went backwards: count into the newest bucket */
    struct time_bucket *b = &w->buckets[w->last_idx % w->size];
    b->calls++;
    b->failures += !!(out & OUT_FAIL);
    b->slow += !!(out & OUT_SLOW);
}

static void window_add(struct window *w, unsigned out, uint64_t now)
{
    if (w->type == AG_CB_WINDOW_COUNT)
        window_add_count(w, out);
    else
        window_add_time(w, out, now);
    w->calls++;
    w->failures += !!(out & OUT_FAIL);
    w->slow += !!(out & OUT_SLOW);
}

/* ---- configuration ---- */

static int config_check(const struct ag_cb_config *c, struct ag_err *err)
{
    bool rates = c->failure_rate_pct || c->slow_rate_pct;
    if (c->failure_rate_pct > 100 || c->slow_rate_pct > 100)
        return ag_err_set(err, AG_EINVAL, "breaker: rate percentages must be 0..100");
    if (rates && c->window_type == AG_CB_WINDOW_NONE)
        return ag_err_set(err, AG_EINVAL, "breaker: rate rules need a sliding window");
    if (c->window_type == AG_CB_WINDOW_COUNT &&
        (c->window_size == 0 || c->window_size > (1u << 24)))
        return ag_err_set(err, AG_EINVAL, "breaker: count window size must be 1..16777216");
    if (c->window_type == AG_CB_WINDOW_TIME && (c->window_ns == 0 || c->window_buckets > 1024))
        return ag_err_set(err, AG_EINVAL,
                          "breaker: time window needs window_ns and <= 1024 buckets");
    if (c->slow_rate_pct && c->slow_call_ns == 0)
        return ag_err_set(err, AG_EINVAL, "breaker: slow-call rate needs slow_call_ns");
    if (c->burst_failures && (c->burst_window_ns == 0 || c->burst_failures > (1u << 20)))
        return ag_err_set(err, AG_EINVAL,
                          "breaker: burst rule needs burst_window_ns and <= 2^20 failures");
    if (c->half_open_permits > W_COUNT_MAX)
        return ag_err_set(err, AG_EINVAL, "breaker: at most %u half-open permits", W_COUNT_MAX);
    if (c->success_threshold > W_COUNT_MAX)
        return ag_err_set(err, AG_EINVAL, "breaker: success threshold too large");
    if (c->half_open_permits && c->success_threshold > c->half_open_permits)
        return ag_err_set(err, AG_EINVAL, "breaker: success threshold above half-open permits");
    return 0;
}

static void config_defaults(struct ag_cb_config *c)
{
    if (c->half_open_permits == 0)
        c->half_open_permits = c->success_threshold ? c->success_threshold : 1;
    if (c->success_threshold == 0) c->success_threshold = c->half_open_permits;
    if (c->open_ns == 0) c->open_ns = 60ull * 1000000000ull;
    if (c->half_open_max_ns == 0) c->half_open_max_ns = c->open_ns;
    if (c->window_type == AG_CB_WINDOW_TIME && c->window_buckets == 0) c->window_buckets = 10;
    if (!c->classify) c->classify = ag_cb_classify_default;
    c->clock = ag__resil_clock(c->clock);
}

static int window_init(struct window *w, const struct ag_cb_config *c)
{
    memset(w, 0, sizeof *w);
    w->type = c->window_type;
    if (w->type == AG_CB_WINDOW_COUNT) {
        w->size = c->window_size;
        w->ring = ag_calloc(w->size, 1);
        return w->ring ? 0 : AG_ENOMEM;
    }
    if (w->type == AG_CB_WINDOW_TIME) {
        w->size = c->window_buckets;
        w->width_ns = c->window_ns / w->size ? c->window_ns / w->size : 1;
        w->buckets = ag_calloc(w->size, sizeof *w->buckets);
        return w->buckets ? 0 : AG_ENOMEM;
    }
    return 0;
}

int ag_cb_new(const struct ag_cb_config *cfg, struct ag_cb **out, struct ag_err *err)
{
    int rc = config_check(cfg, err);
    if (rc) return rc;
    struct ag_cb *cb = ag_calloc(1, sizeof *cb);
    if (!cb) return ag_err_set(err, AG_ENOMEM, "breaker: out of memory");
    cb->cfg = *cfg;
    config_defaults(&cb->cfg);
    cb->name = ag_strdup(cfg->name ? cfg->name : "breaker");
    if (!cb->name) goto out_free_cb;
    cb->cfg.name = cb->name;
    if (window_init(&cb->win, &cb->cfg)) goto out_free_window;
    if (cfg->burst_failures) {
        cb->burst_ring = ag_calloc(cfg->burst_failures, sizeof *cb->burst_ring);
        if (!cb->burst_ring) goto out_free_window;
    }
    if (pthread_mutex_init(&cb->lock, NULL)) goto out_free_window;
    cb->needs_lock = cb->win.type != AG_CB_WINDOW_NONE || cfg->burst_failures;
    cb->timed = cb->cfg.slow_call_ns != 0;
    atomic_init(&cb->word, w_make(AG_CB_CLOSED, 0, 0, 0));
    *out = cb;
    return 0;
out_free_window:
    ag_free(cb->burst_ring);
    ag_free(cb->win.ring);
    ag_free(cb->win.buckets);
    ag_free(cb->name);
out_free_cb:
    ag_free(cb);
    return ag_err_set(err, AG_ENOMEM, "breaker: out of memory");
}

void ag_cb_free(struct ag_cb *cb)
{
    if (!cb) return;
    pthread_mutex_destroy(&cb->lock);
    ag_free(cb->burst_ring);
    ag_free(cb->win.ring);
    ag_free(cb->win.buckets);
    ag_free(cb->name);
    ag_free(cb);
}

enum ag_resil_outcome ag_cb_classify_default(void *ctx, int rc)
{
    AG_UNUSED(ctx);
    switch (rc) {
    case 0:
    case AG_EINVAL:
    case AG_ENOTFOUND:
    case AG_EEXISTS:
    case AG_ECONFLICT:
    case AG_EIDEMPOTENCY:
    case AG_EDOMAIN:
        return AG_RESIL_SUCCESS;
    case AG_ECANCELED:
    case AG_ECIRCUIT_OPEN:
    case AG_EBULKHEAD_FULL:
    case AG_ERATE_LIMITED:
        return AG_RESIL_IGNORED;
    default:
        return AG_RESIL_FAILURE;
    }
}

/* ---- transitions ---- */

static uint64_t open_duration(struct ag_cb *cb, uint32_t n)
{
    const struct ag_cb_config *c = &cb->cfg;
    if (c->open_interval) return c->open_interval(c->open_interval_ctx, n);
    if (c->open_multiplier <= 1.0 || n <= 1) return c->open_ns;
    double d = (double)c->open_ns * pow(c->open_multiplier, (double)(n - 1));
    double cap = c->open_max_ns ? (double)c->open_max_ns : 1.8e19;
    return d >= cap ? (uint64_t)cap : (uint64_t)d;
}

/* Side effects of entering `to` (under the lock, before the word is published). */
static void enter_state(struct ag_cb *cb, enum ag_cb_state to, uint64_t now)
{
    switch (to) {
    case AG_CB_OPEN:
        cb->times_opened++;
        atomic_store_explicit(&cb->until_ns, ag__sat_add(now, open_duration(cb, cb->times_opened)),
                              memory_order_relaxed);
        break;
    case AG_CB_HALF_OPEN:
        atomic_store_explicit(&cb->until_ns, ag__sat_add(now, cb->cfg.half_open_max_ns),
                              memory_order_relaxed);
        break;
    case AG_CB_CLOSED:
        cb->times_opened = 0;
        atomic_store_explicit(&cb->consecutive, 0, memory_order_relaxed);
        window_reset(&cb->win);
        cb->burst_head = cb->burst_filled = 0;
        break;
    default:
        break;
    }
}

/* Move from the phase of `seen` to `to`, with `adm` probes already admitted (1 when
 * the caller making the OPEN -> HALF_OPEN edge is itself the first probe). Caller
 * holds the lock. On success the new word goes to *out (when not NULL) and true is
 * returned; false when another thread already moved the breaker on. */
static bool transition_locked(struct ag_cb *cb, uint64_t seen, enum ag_cb_state to, uint32_t adm,
                              uint64_t now, uint64_t *out)
{
    uint64_t w = atomic_load_explicit(&cb->word, memory_order_acquire);
    if (!w_same_phase(w, seen)) return false;
    enter_state(cb, to, now);
    uint64_t next = w_make(to, w_epoch(w) + 1, adm, 0);
    /* only the lock-free probe counters can change under us: retry over them */
    while (!atomic_compare_exchange_weak_explicit(&cb->word, &w, next, memory_order_acq_rel,
                                                  memory_order_acquire)) {
        if (!w_same_phase(w, seen)) abort(); /* phases change only under the lock */
    }
    const struct ag_resil_hooks *h = cb->cfg.hooks;
    if (h && h->state_change) h->state_change(h->ctx, cb->name, w_state(seen), to);
    if (out) *out = next;
    return true;
}

static bool transition(struct ag_cb *cb, uint64_t seen, enum ag_cb_state to, uint32_t adm,
                       uint64_t now, uint64_t *out)
{
    pthread_mutex_lock(&cb->lock);
    bool ok = transition_locked(cb, seen, to, adm, now, out);
    pthread_mutex_unlock(&cb->lock);
    return ok;
}

int ag_cb_transition(struct ag_cb *cb, enum ag_cb_state to)
{
    if ((unsigned)to > AG_CB_FORCED_OPEN) return AG_EINVAL;
    uint64_t now = ag_clock_mono(cb->cfg.clock);
    pthread_mutex_lock(&cb->lock);
    uint64_t w = atomic_load_explicit(&cb->word, memory_order_acquire);
    transition_locked(cb, w, to, 0, now, NULL);
    pthread_mutex_unlock(&cb->lock);
    return 0;
}

/* ---- allow ---- */

static int reject(struct ag_cb *cb, uint64_t wait, uint64_t *wait_ns, struct ag_err *err)
{
    if (wait_ns) *wait_ns = wait;
    ag__hook_rejected(cb->cfg.hooks, cb->name, AG_ECIRCUIT_OPEN);
    if (!err) return AG_ECIRCUIT_OPEN;
    ag_err_set(err, AG_ECIRCUIT_OPEN, "circuit breaker '%s' is open", cb->name);
    err->aux = wait > (uint64_t)INT64_MAX ? INT64_MAX : (long long)wait;
    return AG_ECIRCUIT_OPEN;
}

/* OPEN: reject until until_ns, then try to make the OPEN -> HALF_OPEN edge.
 * Returns 1 when the caller should look at the word again, 0 when it became the
 * first probe (*w updated), or the rejection code. */
static int allow_open(struct ag_cb *cb, uint64_t *w, uint64_t *wait_ns, struct ag_err *err)
{
    uint64_t until = atomic_load_explicit(&cb->until_ns, memory_order_relaxed);
    if (atomic_load_explicit(&cb->word, memory_order_acquire) != *w) return 1;
    uint64_t now = ag_clock_mono(cb->cfg.clock);
    if (now < until) return reject(cb, until - now, wait_ns, err);
    return transition(cb, *w, AG_CB_HALF_OPEN, 1, now, w) ? 0 : 1;
}

/* HALF_OPEN: take a probe permit if one is left. Same return convention. */
static int allow_half_open(struct ag_cb *cb, uint64_t *w, uint64_t *wait_ns, struct ag_err *err)
{
    if (w_admitted(*w) < cb->cfg.half_open_permits) {
        uint64_t next = *w + (1ull << W_ADM_SHIFT);
        if (atomic_compare_exchange_weak_explicit(&cb->word, w, next, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            *w = next;
            return 0;
        }
        return 1;
    }
    uint64_t until = atomic_load_explicit(&cb->until_ns, memory_order_relaxed);
    if (atomic_load_explicit(&cb->word, memory_order_acquire) != *w) return 1;
    uint64_t now = ag_clock_mono(cb->cfg.clock);
    if (now < until) return reject(cb, until - now, wait_ns, err);
    /* stuck: the probes never reported; reopen so a fresh half-open can start */
    transition(cb, *w, AG_CB_OPEN, 0, now, NULL);
    return 1;
}

int ag_cb_allow(struct ag_cb *cb, struct ag_cb_permit *permit, uint64_t *wait_ns,
                struct ag_err *err)
{
    uint64_t w = atomic_load_explicit(&cb->word, memory_order_acquire);
    for (;;) {
        int rc = 0;
        switch (w_state(w)) {
        case AG_CB_CLOSED:
        case AG_CB_DISABLED:
            break;
        case AG_CB_FORCED_OPEN:
            return reject(cb, UINT64_MAX, wait_ns, err);
        case AG_CB_OPEN:
            rc = allow_open(cb, &w, wait_ns, err);
            break;
        case AG_CB_HALF_OPEN:
            rc = allow_half_open(cb, &w, wait_ns, err);
            break;
        }
        if (rc < 0) return rc;
        if (rc == 0) break;
        w = atomic_load_explicit(&cb->word, memory_order_acquire);
    }
    permit->word = w;
    permit->start_ns = cb->timed ? ag_clock_mono(cb->cfg.clock) : 0;
    return 0;
}

/* ---- record ---- */

/* Evaluate the window rules after adding a call; true when the breaker must open. */
static bool window_trips(struct ag_cb *cb)
{
    const struct ag_cb_config *c = &cb->cfg;
    const struct window *w = &cb->win;
    if (w->type == AG_CB_WINDOW_NONE || w->calls == 0 || w->calls < c->min_calls) return false;
    if (c->failure_rate_pct && w->failures * 100 >= (uint64_t)c->failure_rate_pct * w->calls)
        return true;
    if (c->slow_rate_pct && w->slow * 100 >= (uint64_t)c->slow_rate_pct * w->calls) return true;
    return false;
}

/* Record a failure time; true when burst_failures happened within burst_window_ns. */
static bool burst_trips(struct ag_cb *cb, uint64_t now)
{
    uint32_t n = cb->cfg.burst_failures;
    cb->burst_ring[cb->burst_head] = now;
    cb->burst_head = (cb->burst_head + 1) % n;
    if (cb->burst_filled < n) cb->burst_filled++;
    if (cb->burst_filled < n) return false;
    uint64_t oldest = cb->burst_ring[cb->burst_head];
    return now - oldest <= cb->cfg.burst_window_ns;
}

static void record_windows(struct ag_cb *cb, uint64_t seen, unsigned out, uint64_t now)
{
    pthread_mutex_lock(&cb->lock);
    uint64_t w = atomic_load_explicit(&cb->word, memory_order_acquire);
    if (!w_same_phase(w, seen)) goto out_unlock;
    bool trip = false;
    if (cb->win.type != AG_CB_WINDOW_NONE) {
        window_add(&cb->win, out, now);
        trip = window_trips(cb);
    }
    if (cb->cfg.burst_failures && (out & OUT_FAIL)) trip |= burst_trips(cb, now);
    if (trip) transition_locked(cb, w, AG_CB_OPEN, 0, now, NULL);
out_unlock:
    pthread_mutex_unlock(&cb->lock);
}

static void record_closed(struct ag_cb *cb, uint64_t seen, unsigned out, uint64_t now)
{
    uint64_t w = atomic_load_explicit(&cb->word, memory_order_acquire);
    if (!w_same_phase(w, seen)) return; /* admitted before a transition: stale */
    uint32_t threshold = cb->cfg.failure_threshold;
    if (threshold) {
        if (out & OUT_FAIL) {
            uint32_t n = atomic_fetch_add_explicit(&cb->consecutive, 1, memory_order_relaxed) + 1;
            if (n >= threshold)
                transition(cb, w, AG_CB_OPEN, 0, now ? now : ag_clock_mono(cb->cfg.clock), NULL);
        } else if (atomic_load_explicit(&cb->consecutive, memory_order_relaxed) != 0) {
            atomic_store_explicit(&cb->consecutive, 0, memory_order_relaxed);
        }
    }
    if (cb->needs_lock) record_windows(cb, w, out, now);
}

static void record_half_open(struct ag_cb *cb, uint64_t seen, enum ag_resil_outcome o, uint64_t now)
{
    uint64_t w = atomic_load_explicit(&cb->word, memory_order_acquire);
    while (w_same_phase(w, seen)) {
        if (o == AG_RESIL_FAILURE) {
            transition(cb, w, AG_CB_OPEN, 0, now ? now : ag_clock_mono(cb->cfg.clock), NULL);
            return;
        }
        uint64_t next =
            o == AG_RESIL_IGNORED ? w - (1ull << W_ADM_SHIFT) : w + (1ull << W_SUC_SHIFT);
        if (o == AG_RESIL_IGNORED && w_admitted(w) == 0) return;
        if (atomic_compare_exchange_weak_explicit(&cb->word, &w, next, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            if (o == AG_RESIL_SUCCESS && w_successes(next) >= cb->cfg.success_threshold)
                transition(cb, next, AG_CB_CLOSED, 0, now ? now : ag_clock_mono(cb->cfg.clock),
                           NULL);
            return;
        }
    }
}

void ag_cb_record(struct ag_cb *cb, const struct ag_cb_permit *permit, int rc)
{
    enum ag_resil_outcome o = cb->cfg.classify(cb->cfg.classify_ctx, rc);
    ag__hook_call(cb->cfg.hooks, cb->name, o);
    enum ag_cb_state s = w_state(permit->word);
    if (o == AG_RESIL_IGNORED && s != AG_CB_HALF_OPEN) return;
    uint64_t now = 0;
    unsigned out = o == AG_RESIL_FAILURE ? OUT_FAIL : 0;
    if (cb->timed || cb->needs_lock) now = ag_clock_mono(cb->cfg.clock);
    if (cb->timed && now - permit->start_ns >= cb->cfg.slow_call_ns) out |= OUT_SLOW;
    if (s == AG_CB_CLOSED) {
        record_closed(cb, permit->word, out, now);
    } else if (s == AG_CB_HALF_OPEN) {
        /* a slow probe is not a healthy one */
        if (o == AG_RESIL_SUCCESS && (out & OUT_SLOW) && cb->cfg.slow_rate_pct)
            o = AG_RESIL_FAILURE;
        record_half_open(cb, permit->word, o, now);
    }
}

/* ---- inspection ---- */

enum ag_cb_state ag_cb_state(struct ag_cb *cb)
{
    return w_state(atomic_load_explicit(&cb->word, memory_order_acquire));
}

const char *ag_cb_state_name(enum ag_cb_state s)
{
    static const char *const names[] = {"closed", "open", "half_open", "disabled", "forced_open"};
    return (unsigned)s < AG_ARRAY_SIZE(names) ? names[s] : "unknown";
}

const char *ag_cb_name(const struct ag_cb *cb)
{
    return cb->name;
}

void ag_cb_stats(struct ag_cb *cb, struct ag_cb_stats *out)
{
    pthread_mutex_lock(&cb->lock);
    uint64_t w = atomic_load_explicit(&cb->word, memory_order_acquire);
    out->state = w_state(w);
    out->consecutive_failures = atomic_load_explicit(&cb->consecutive, memory_order_relaxed);
    out->window_calls = cb->win.calls;
    out->window_failures = cb->win.failures;
    out->window_slow = cb->win.slow;
    out->half_open_admitted = w_state(w) == AG_CB_HALF_OPEN ? w_admitted(w) : 0;
    out->half_open_successes = w_state(w) == AG_CB_HALF_OPEN ? w_successes(w) : 0;
    out->times_opened = cb->times_opened;
    pthread_mutex_unlock(&cb->lock);
}
