/*
 * Rate limiters: GCRA, token bucket, and a keyed table with bounded memory.
 *
 * GCRA (the Generic Cell Rate Algorithm, as in ATM and redis-cell) keeps one number
 * per limiter: the theoretical arrival time `tat`. With emission interval
 * T = ceil(period / limit) and tolerance tau = burst * T, a request of n units at
 * `now` is admitted iff  max(tat, now) + n*T - now <= tau,  and then sets
 * tat = max(tat, now) + n*T. Rounding T up means the limiter never admits more
 * than burst + t/T <= burst + t*limit/period in any interval t. When refused, the
 * caller waits exactly  max(tat, now) + n*T - tau - now.  The unkeyed `struct
 * ag_gcra` updates tat with a CAS loop, so concurrent callers are exact and never
 * block.
 *
 * The token bucket holds a level in "ns of refill" (one token = T ns), capped at
 * burst * T, plus the time of the last refill; it is the same contract as GCRA
 * stated as a level, kept under a mutex because it has two words of state.
 *
 * Keyed limiter: `shards` lock stripes, each a fixed pool of max_keys/shards
 * entries, a chained hash index and an LRU list (all indices, no pointers, one
 * allocation per shard). A key is its seeded 64-bit XXH3. A key at rest (GCRA:
 * tat <= now; bucket: full) carries no information, so evicting it is exact;
 * the LRU tail is evicted when it is at rest, else the new key is refused.
 */
#include <pthread.h>
#include <string.h>

#include "resil/internal.h"

#define NIL UINT32_MAX

static int rate_params(const struct ag_rate *r, uint64_t *interval, uint64_t *tolerance)
{
    if (!r || r->limit == 0 || r->period_ns == 0 || r->burst == 0) return AG_EINVAL;
    uint64_t t = r->period_ns / r->limit + (r->period_ns % r->limit != 0);
    if (t > UINT64_MAX / r->burst) return AG_EINVAL;
    *interval = t;
    *tolerance = t * r->burst;
    return 0;
}

/* ---- GCRA ---- */

int ag_gcra_init(struct ag_gcra *g, const struct ag_rate *rate, const struct ag_clock *clock)
{
    int rc = rate_params(rate, &g->interval_ns, &g->tolerance_ns);
    if (rc) return rc;
    atomic_init(&g->tat, 0);
    g->burst = rate->burst;
    g->clock = ag__resil_clock(clock);
    return 0;
}

/* One GCRA decision: the new tat, or 0 with *wait set when refused. */
static inline uint64_t gcra_step(uint64_t tat, uint64_t now, uint64_t cost, uint64_t tol,
                                 uint64_t *wait)
{
    uint64_t base = tat > now ? tat : now;
    uint64_t next = base + cost;
    if (next - now > tol) {
        *wait = next - now - tol;
        return 0;
    }
    return next;
}

int ag_gcra_acquire(struct ag_gcra *g, uint32_t n, uint64_t *wait_ns)
{
    if (AG_UNLIKELY(n == 0 || n > g->burst)) return AG_EINVAL;
    uint64_t now = ag_clock_mono(g->clock);
    uint64_t cost = (uint64_t)n * g->interval_ns;
    uint64_t tat = atomic_load_explicit(&g->tat, memory_order_relaxed);
    for (;;) {
        uint64_t wait = 0;
        uint64_t next = gcra_step(tat, now, cost, g->tolerance_ns, &wait);
        if (!next) {
            if (wait_ns) *wait_ns = wait;
            return AG_ERATE_LIMITED;
        }
        if (atomic_compare_exchange_weak_explicit(&g->tat, &tat, next, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            if (wait_ns) *wait_ns = 0;
            return 0;
        }
    }
}

/* ---- token bucket ---- */

struct tb_state {
    uint64_t level; /* tokens * T, at most burst * T */
    uint64_t last;  /* mono ns of the last refill */
};

struct ag_tbucket {
    pthread_mutex_t lock;         /* guards st */
    struct tb_state st;           /* the bucket */
    uint64_t interval_ns;         /* T: ns per token */
    uint64_t capacity;            /* burst * T */
    uint32_t burst;               /* capacity in tokens */
    const struct ag_clock *clock; /* borrowed */
};

static void tb_refill(struct tb_state *s, uint64_t cap, uint64_t now)
{
    if (now > s->last) {
        uint64_t add = now - s->last;
        s->level = add >= cap - s->level ? cap : s->level + add;
        s->last = now;
    }
}

/* Take `cost` from a bucket; 0 or AG_ERATE_LIMITED with *wait. */
static int tb_take(struct tb_state *s, uint64_t cap, uint64_t cost, uint64_t now, uint64_t *wait)
{
    tb_refill(s, cap, now);
    if (s->level >= cost) {
        s->level -= cost;
        *wait = 0;
        return 0;
    }
    *wait = cost - s->level;
    return AG_ERATE_LIMITED;
}

int ag_tbucket_new(const struct ag_rate *rate, const struct ag_clock *clock,
                   struct ag_tbucket **out)
{
    struct ag_tbucket *tb = ag_calloc(1, sizeof *tb);
    if (!tb) return AG_ENOMEM;
    int rc = rate_params(rate, &tb->interval_ns, &tb->capacity);
    if (rc || pthread_mutex_init(&tb->lock, NULL)) {
        ag_free(tb);
        return rc ? rc : AG_ENOMEM;
    }
    tb->burst = rate->burst;
    tb->clock = ag__resil_clock(clock);
    tb->st.level = tb->capacity; /* starts full: a burst is available at once */
    tb->st.last = ag_clock_mono(tb->clock);
    *out = tb;
    return 0;
}

void ag_tbucket_free(struct ag_tbucket *tb)
{
    if (!tb) return;
    pthread_mutex_destroy(&tb->lock);
    ag_free(tb);
}

int ag_tbucket_acquire(struct ag_tbucket *tb, uint32_t n, uint64_t *wait_ns)
{
    if (n == 0 || n > tb->burst) return AG_EINVAL;
    uint64_t wait;
    pthread_mutex_lock(&tb->lock);
    int rc = tb_take(&tb->st, tb->capacity, (uint64_t)n * tb->interval_ns, ag_clock_mono(tb->clock),
                     &wait);
    pthread_mutex_unlock(&tb->lock);
    if (wait_ns) *wait_ns = wait;
    return rc;
}

uint64_t ag_tbucket_available(struct ag_tbucket *tb)
{
    pthread_mutex_lock(&tb->lock);
    tb_refill(&tb->st, tb->capacity, ag_clock_mono(tb->clock));
    uint64_t n = tb->st.level / tb->interval_ns;
    pthread_mutex_unlock(&tb->lock);
    return n;
}

/* ---- keyed limiter ---- */

struct rl_entry {
    uint64_t key;        /* seeded XXH3 of the key bytes */
    struct tb_state st;  /* GCRA: st.level holds tat; bucket: level + last */
    uint32_t chain;      /* next entry in the same hash slot */
    uint32_t prev, next; /* LRU list: head = most recent */
};

struct rl_shard {
    _Alignas(64) pthread_mutex_t lock; /* guards everything below */
    struct rl_entry *entries;          /* the pool */
    uint32_t *slots;                   /* hash index: first entry per slot, NIL = empty */
    uint32_t cap, nslots, used;        /* pool size, index size (power of two), entries in use */
    uint32_t lru_head, lru_tail;       /* LRU ends */
};

struct ag_ratelimit {
    struct rl_shard *shards;      /* `nshards` stripes */
    uint32_t nshards;             /* power of two */
    enum ag_rl_algo algo;         /* GCRA or token bucket */
    uint64_t interval_ns;         /* T */
    uint64_t tolerance_ns;        /* burst * T */
    uint32_t burst;               /* largest single acquire */
    uint64_t seed;                /* XXH3 seed */
    const struct ag_clock *clock; /* borrowed */
};

static void lru_unlink(struct rl_shard *s, uint32_t i)
{
    struct rl_entry *e = &s->entries[i];
    if (e->prev != NIL)
        s->entries[e->prev].next = e->next;
    else
        s->lru_head = e->next;
    if (e->next != NIL)
        s->entries[e->next].prev = e->prev;
    else
        s->lru_tail = e->prev;
}

static void lru_push_front(struct rl_shard *s, uint32_t i)
{
    struct rl_entry *e = &s->entries[i];
    e->prev = NIL;
    e->next = s->lru_head;
    if (s->lru_head != NIL) s->entries[s->lru_head].prev = i;
    s->lru_head = i;
    if (s->lru_tail == NIL) s->lru_tail = i;
}

static uint32_t *slot_of(struct rl_shard *s, uint64_t key)
{
    return &s->slots[(key >> 7) & (s->nslots - 1)];
}

static uint32_t shard_find(struct rl_shard *s, uint64_t key)
{
    for (uint32_t i = *slot_of(s, key); i != NIL; i = s->entries[i].chain)
        if (s->entries[i].key == key) return i;
    return NIL;
}

static void shard_unindex(struct rl_shard *s, uint32_t i)
{
    uint32_t *p = slot_of(s, s->entries[i].key);
    while (*p != i) p = &s->entries[*p].chain;
    *p = s->entries[i].chain;
}

static bool at_rest(const struct ag_ratelimit *rl, const struct tb_state *st, uint64_t now)
{
    if (rl->algo == AG_RL_GCRA) return st->level <= now;
    return st->level + (now > st->last ? now - st->last : 0) >= rl->tolerance_ns;
}

/* Find a free entry for a new key: unused pool, else the LRU tail if at rest.
 * NIL when every entry is busy (*wait = when the tail comes to rest). */
static uint32_t shard_alloc(struct ag_ratelimit *rl, struct rl_shard *s, uint64_t now,
                            uint64_t *wait)
{
    if (s->used < s->cap) return s->used++;
    uint32_t t = s->lru_tail;
    struct tb_state *st = &s->entries[t].st;
    if (!at_rest(rl, st, now)) {
        *wait = rl->algo == AG_RL_GCRA ? st->level - now
                                       : rl->tolerance_ns - st->level - (now - st->last);
        return NIL;
    }
    lru_unlink(s, t);
    shard_unindex(s, t);
    return t;
}

static void entry_init(struct ag_ratelimit *rl, struct rl_shard *s, uint32_t i, uint64_t key,
                       uint64_t now)
{
    struct rl_entry *e = &s->entries[i];
    e->key = key;
    e->st.level = rl->algo == AG_RL_GCRA ? 0 : rl->tolerance_ns;
    e->st.last = now;
    uint32_t *slot = slot_of(s, key);
    e->chain = *slot;
    *slot = i;
    lru_push_front(s, i);
}

static int entry_take(struct ag_ratelimit *rl, struct rl_entry *e, uint64_t cost, uint64_t now,
                      uint64_t *wait)
{
    if (rl->algo == AG_RL_TOKEN_BUCKET) return tb_take(&e->st, rl->tolerance_ns, cost, now, wait);
    uint64_t next = gcra_step(e->st.level, now, cost, rl->tolerance_ns, wait);
    if (!next) return AG_ERATE_LIMITED;
    e->st.level = next;
    *wait = 0;
    return 0;
}

int ag_ratelimit_acquire(struct ag_ratelimit *rl, const void *key, size_t key_len, uint32_t n,
                         uint64_t *wait_ns)
{
    if (n == 0 || n > rl->burst) return AG_EINVAL;
    uint64_t h = ag_xxh3_seed(key, key_len, rl->seed);
    struct rl_shard *s = &rl->shards[h & (rl->nshards - 1)];
    uint64_t wait = 0;
    int rc = AG_ERATE_LIMITED;
    pthread_mutex_lock(&s->lock);
    uint64_t now = ag_clock_mono(rl->clock);
    uint32_t i = shard_find(s, h);
    if (i == NIL) {
        i = shard_alloc(rl, s, now, &wait);
        if (i == NIL) goto out_unlock;
        entry_init(rl, s, i, h, now);
    } else if (i != s->lru_head) {
        lru_unlink(s, i);
        lru_push_front(s, i);
    }
    rc = entry_take(rl, &s->entries[i], (uint64_t)n * rl->interval_ns, now, &wait);
out_unlock:
    pthread_mutex_unlock(&s->lock);
    if (wait_ns) *wait_ns = wait;
    return rc;
}

size_t ag_ratelimit_keys(struct ag_ratelimit *rl)
{
    size_t n = 0;
    for (uint32_t i = 0; i < rl->nshards; i++) {
        pthread_mutex_lock(&rl->shards[i].lock);
        n += rl->shards[i].used;
        pthread_mutex_unlock(&rl->shards[i].lock);
    }
    return n;
}

static int shard_init(struct rl_shard *s, uint32_t cap)
{
    s->cap = cap;
    s->nslots = 1;
    while (s->nslots < cap) s->nslots <<= 1;
    s->entries = ag_calloc(cap, sizeof *s->entries);
    s->slots = ag_malloc(sizeof *s->slots * s->nslots);
    if (!s->entries || !s->slots) return AG_ENOMEM;
    memset(s->slots, 0xff, sizeof *s->slots * s->nslots);
    s->lru_head = s->lru_tail = NIL;
    return pthread_mutex_init(&s->lock, NULL) ? AG_ENOMEM : 0;
}

void ag_ratelimit_free(struct ag_ratelimit *rl)
{
    if (!rl) return;
    for (uint32_t i = 0; rl->shards && i < rl->nshards; i++) {
        if (rl->shards[i].entries && rl->shards[i].slots)
            pthread_mutex_destroy(&rl->shards[i].lock);
        ag_free(rl->shards[i].entries);
        ag_free(rl->shards[i].slots);
    }
    ag_free(rl->shards);
    ag_free(rl);
}

int ag_ratelimit_new(const struct ag_ratelimit_config *cfg, struct ag_ratelimit **out,
                     struct ag_err *err)
{
    uint32_t nshards = cfg->shards ? cfg->shards : 16;
    uint32_t max_keys = cfg->max_keys ? cfg->max_keys : 65536;
    if (nshards & (nshards - 1) || nshards > max_keys)
        return ag_err_set(err, AG_EINVAL,
                          "rate limiter: shards must be a power of two <= max_keys");
    struct ag_ratelimit *rl = ag_calloc(1, sizeof *rl);
    if (!rl) return ag_err_set(err, AG_ENOMEM, "rate limiter: out of memory");
    if (rate_params(&cfg->rate, &rl->interval_ns, &rl->tolerance_ns)) {
        ag_free(rl);
        return ag_err_set(err, AG_EINVAL, "rate limiter: limit, period and burst must be > 0");
    }
    rl->algo = cfg->algo;
    rl->burst = cfg->rate.burst;
    rl->clock = ag__resil_clock(cfg->clock);
    rl->seed = ag_rng_next(ag_rng_system());
    rl->nshards = nshards;
    rl->shards = ag_calloc(nshards, sizeof *rl->shards);
    if (!rl->shards) goto out_free_rl;
    for (uint32_t i = 0; i < nshards; i++) {
        uint32_t cap = max_keys / nshards + (i < max_keys % nshards);
        if (shard_init(&rl->shards[i], cap)) goto out_free_rl;
    }
    *out = rl;
    return 0;
out_free_rl:
    ag_ratelimit_free(rl);
    return ag_err_set(err, AG_ENOMEM, "rate limiter: out of memory");
}
